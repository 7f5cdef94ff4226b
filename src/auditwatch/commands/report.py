"""``auditwatch report [RUN] -o report.html``: one self-contained HTML page of a run."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("report")
@click.argument("run", required=False, type=click.Path(file_okay=True, dir_okay=True))
@click.option(
    "-o",
    "--output",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The HTML file to write.",
)
@click.option(
    "--rows",
    default=5000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows embedded per table; the rest are counted, and `auditwatch query` finds them.",
)
@click.option(
    "--context",
    default=5,
    show_default=True,
    type=click.IntRange(min=0, max=100),
    help="Records of the same process shown before and after each alert's record.",
)
@click.option("-q", "--quiet", is_flag=True, help="Do not say what was written.")
def command(run: str | None, output: str, rows: int, context: int, quiet: bool) -> None:
    """Write an HTML report of RUN: process tree, timeline, alerts, files, processes
    spawned, network peers, imports and code executed, with filters and search.

    RUN is a run directory of `auditwatch run`, or its output directory (the newest
    run, through its `latest` link); default ./.auditwatch/latest. The records are
    read from store.sqlite when the run has one, else from records.jsonl. The page
    is one file and fetches nothing from a network.
    """
    from auditwatch.report import ReportError, build_report

    started = time.monotonic()
    try:
        meta = build_report(run, Path(output), rows=rows, context=context)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    if not quiet:
        seconds = time.monotonic() - started
        click.echo(
            f"auditwatch: wrote {output} ({meta['records']:,} records, "
            f"{meta['processes']} process(es), {seconds:.1f} s)",
            err=True,
        )
