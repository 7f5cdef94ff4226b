"""``auditwatch runs STORE``: one line per process run, parents above their children."""

from __future__ import annotations

import datetime as _dt
import shlex
import signal
import sys
from typing import Any

import click

from auditwatch.store.keys import StoreError
from auditwatch.store.runs import RunSummary, list_runs
from auditwatch.store.sqlite import Store

HEADERS = ["run", "command", "start", "duration", "exit", "procs", "events", "alerts"]


def exit_text(status: dict[str, Any] | None) -> str:
    """The exit column: the code, the signal, or ``missing`` when no exit record came."""
    if not isinstance(status, dict):
        return "missing"
    how = status.get("how")
    if how == "signal":
        num = status.get("signal")
        try:
            return f"signal {signal.Signals(num).name}"  # type: ignore[arg-type]
        except (ValueError, TypeError):
            return f"signal {num}"
    if how == "exit":
        return str(status.get("code"))
    if how == "exec":
        return "exec"
    return f"{how} {status.get('code', '')}".strip()


def command_text(run: RunSummary, width: int = 60) -> str:
    words = run.argv or ([run.exe] if run.exe else [])
    text = " ".join(shlex.quote(str(w)) for w in words) if words else "?"
    text = "  " * run.depth + text
    return text if len(text) <= width else text[: width - 1] + "…"


def _start(ts: int | None) -> str:
    if ts is None:
        return "?"
    return _dt.datetime.fromtimestamp(ts / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: RunSummary) -> str:
    if run.start_ts is None or run.end_ts is None:
        return "?"
    s = max(run.end_ts - run.start_ts, 0) / 1e9
    if s < 60:
        return f"{s:.3f}s" if s < 10 else f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def table_rows(runs: list[RunSummary]) -> list[list[str]]:
    return [
        [
            r.run[:8],
            command_text(r),
            _start(r.start_ts),
            _duration(r),
            exit_text(r.exit_status),
            str(r.processes),
            str(r.events),
            str(r.alerts),
        ]
        for r in runs
    ]


def plain_table(rows: list[list[str]]) -> str:
    return plain_table_with(HEADERS, rows, right={3, 5, 6, 7})


def plain_table_with(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    """Aligned columns for pipes and files: the `right` columns (numbers) right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = []
    for r in [[h.upper() for h in headers], *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


@click.command("runs")
@click.argument("store", type=click.Path(dir_okay=True))
def command(store: str) -> None:
    """List the process runs in a store: command, start, duration, exit, processes
    (the run and its descendant runs), events and alerts.

    Child runs are indented under the run that started them. An exit of "missing"
    means no exit record arrived: the process was killed, crashed, or its recorder
    was blinded.
    """
    try:
        with Store.open(store, readonly=True) as st:
            runs = list_runs(st.conn)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    rows = table_rows(runs)
    if not rows:
        click.echo("no runs recorded")
        return
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        console = Console()
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
        # Only the command gives way (with an ellipsis) on a narrow terminal.
        room = console.width - (sum(widths) - widths[1]) - (len(HEADERS) - 1)
        for i, h in enumerate(HEADERS):
            table.add_column(
                h,
                justify="right" if i in (3, 5, 6, 7) else "left",
                no_wrap=True,
                overflow="ellipsis",
                min_width=widths[i] if i != 1 else None,
                max_width=max(room, 8) if i == 1 else None,
            )
        for r in rows:
            style = "red" if r[7] != "0" else ("yellow" if r[4] == "missing" else None)
            table.add_row(*r, style=style)
        console.print(table)
    else:
        click.echo(plain_table(rows))
