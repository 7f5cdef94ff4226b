"""``auditwatch export STORE``: the records as JSON lines, byte for byte as received."""

from __future__ import annotations

import sys

import click

from auditwatch.store.export import export_jsonl
from auditwatch.store.keys import StoreError
from auditwatch.store.sqlite import Store


@click.command("export")
@click.argument("store", type=click.Path(dir_okay=True))
@click.option("--run", "runs", multiple=True, metavar="RUN", help="Only this run (repeatable).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl"]),
    default="jsonl",
    show_default=True,
    help="Output format: JSON lines exactly as the collector received them.",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File (default: stdout)."
)
def command(store: str, runs: tuple[str, ...], fmt: str, output: str | None) -> None:
    """Export records from a store (a store file or a run directory)."""
    try:
        with Store.open(store, readonly=True) as st:
            wanted = [st.resolve_run(r) for r in runs] if runs else None
            if output is None:
                export_jsonl(st, sys.stdout.buffer, wanted)
                sys.stdout.buffer.flush()
            else:
                try:
                    with open(output, "wb") as out:
                        export_jsonl(st, out, wanted)
                except OSError as exc:
                    raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
