"""``auditwatch tail``: the last records of a store, and with -f the ones that follow."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from typing import IO

import click

from auditwatch.collector.alerts import PRIORITY_STYLES
from auditwatch.store.keys import StoreError
from auditwatch.store.rows import Filters, as_bytes, iter_rows
from auditwatch.store.sqlite import Store

POLL = 0.25  # seconds between looks at the store when following


def start_position(store: Store, lines: int, filters: Filters) -> int:
    """The position after which the last ``lines`` matching records begin."""
    if lines <= 0:
        return store.last_pos()
    for n, row in enumerate(iter_rows(store.conn, filters, reverse=True), 1):
        if n == lines:
            return row.pos - 1
    return 0


def describe(row: tuple) -> tuple[str, str]:
    """(what, detail) for one stored row: the event name and its arguments, or the
    record kind and what matters about it."""
    kind, event, alert, raw = row[4], row[5], row[7], row[8]
    try:
        rec = json.loads(as_bytes(raw))
    except ValueError:
        return kind or "?", "(unparseable record)"
    if kind == "event":
        args = json.dumps(rec.get("args"), ensure_ascii=False, separators=(",", ":"))
        mark = f" [{rec.get('action')}]" if rec.get("action") in ("deny", "flush") else ""
        return str(event), args + mark
    if kind == "alert":
        return f"ALERT {rec.get('priority', '')}", f"{alert}: {rec.get('output', '')}"
    if kind == "collector":
        rest = {k: v for k, v in rec.items() if k not in ("v", "kind", "ts", "run", "what")}
        return f"collector {rec.get('what')}", json.dumps(rest, separators=(",", ":"))
    if kind == "start":
        proc = rec.get("proc") if isinstance(rec.get("proc"), dict) else {}
        return "start", " ".join(map(str, proc.get("argv") or []))
    if kind == "exit":
        return "exit", json.dumps(rec.get("status"), separators=(",", ":"))
    rest = {
        k: v for k, v in rec.items() if k not in ("v", "seq", "ts", "run", "parent_run", "kind")
    }
    return str(kind), json.dumps(rest, separators=(",", ":"))


class Printer:
    def __init__(self, out: IO[str], as_json: bool) -> None:
        from rich.console import Console

        self.as_json = as_json
        self.console = Console(file=out, highlight=False, soft_wrap=True)
        self.color = self.console.is_terminal

    def row(self, row: tuple) -> None:
        if self.as_json:
            raw = as_bytes(row[8])
            sys.stdout.buffer.write(raw if raw.endswith(b"\n") else raw + b"\n")
            return
        run, seq, ts, kind, pid = row[1], row[2], row[3], row[4], row[6]
        when = (
            "?" * 15
            if not isinstance(ts, int)
            else _dt.datetime.fromtimestamp(ts / 1e9).strftime("%H:%M:%S.%f")
        )
        what, detail = describe(row)
        head = f"{when}  {pid if pid is not None else '-':>7}  {(run or '-')[:8]:<8}  "
        head += f"{'#' + str(seq) if seq is not None else '':>7}  "
        if not self.color:
            self.console.out(f"{head}{what:<24} {detail}", highlight=False)
            return
        from rich.markup import escape

        style = "bold"
        if kind == "alert":
            style = PRIORITY_STYLES.get(what.split()[-1], "bold red")
        elif kind == "collector":
            style = "bold magenta"
        elif kind in ("start", "exit"):
            style = "green"
        self.console.print(
            f"[dim]{escape(head)}[/dim][{style}]{escape(what):<24}[/{style}] {escape(detail)}"
        )

    def flush(self) -> None:
        if self.as_json:
            sys.stdout.buffer.flush()
        else:
            self.console.file.flush()


@click.command("tail")
@click.argument("store", required=False, default=os.path.join(".auditwatch", "latest"))
@click.option("-f", "--follow", is_flag=True, help="Keep printing records as they are stored.")
@click.option("-n", "--lines", default=10, show_default=True, help="Start with the last N records.")
@click.option(
    "--event", "events", multiple=True, metavar="GLOB", help="Event name glob (repeatable)."
)
@click.option("--alerts", is_flag=True, help="Alert records only.")
@click.option("--json", "as_json", is_flag=True, help="The raw JSON lines, as stored.")
def command(
    store: str, follow: bool, lines: int, events: tuple[str, ...], alerts: bool, as_json: bool
) -> None:
    """Print the last records of STORE (a store file or run directory; default the
    latest run in ./.auditwatch), and with -f every record stored after them."""
    try:
        st = Store.open(store, readonly=True)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    filters = Filters(events=list(events), alerts=alerts)
    printer = Printer(sys.stdout, as_json)
    try:
        pos = start_position(st, lines, filters)
        while True:
            for row in iter_rows(st.conn, filters, after=pos):
                printer.row(row)
                pos = row.pos
            printer.flush()
            if not follow:
                return
            time.sleep(POLL)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        st.close()
