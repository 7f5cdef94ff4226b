"""The terminal summary printed at the end of ``auditwatch run``."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from rich.console import Console
from rich.table import Table

SHOW = 12  # rows per list before "... and N more"


def _more(console: Console, items: list, shown: int) -> None:
    if len(items) > shown:
        console.print(f"  [dim]... and {len(items) - shown} more (see summary.json)[/dim]")


def _exit_text(status: dict | None) -> str:
    if not status:
        return "[red]no exit record[/red]"
    if status.get("how") == "signal":
        return f"signal {status.get('signal')}"
    return f"{status.get('how')} {status.get('code')}"


def render_summary(result: dict, rundir: Path, stream: IO[str]) -> None:
    console = Console(file=stream, highlight=False)
    procs = result["processes"]
    console.print()
    console.rule("[bold]auditwatch[/bold] summary", style="dim")
    if not procs:
        console.print(
            "[yellow]No records arrived: no Python process in this command was audited.[/yellow]\n"
            "  The command's Python must have auditwatch installed (same interpreter and\n"
            "  version), and must not be started with -S, -I or a scrubbed environment."
        )
    console.print(
        f"{len(procs)} process(es), {result['records']} records, exit code {result['exit_code']}"
        f"  ->  {rundir}"
    )

    if procs:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for col in ("pid", "run", "hook", "events", "exit", "command"):
            table.add_column(col, overflow="fold" if col == "command" else "ellipsis")
        for p in procs[:SHOW]:
            table.add_row(
                str(p["pid"]),
                p["run"][:8],
                p["installed"],
                str(p["events"]),
                _exit_text(p["exit"]),
                " ".join(p["argv"])[:100],
            )
        console.print(table)
        _more(console, procs, SHOW)

    cats = result["events_by_category"]
    if cats:
        console.print("[bold]events[/bold]  " + ", ".join(f"{c} {n}" for c, n in cats.items()))
    code = result.get("code")
    if code and code["executed_by_origin"]:
        ran = ", ".join(f"{o} {n}" for o, n in code["executed_by_origin"].items())
        console.print(
            f"[bold]code[/bold]  {ran}; {code['files_read']} file(s) read, "
            f"{code['texts_stored']} text(s) kept  ->  {code['provenance']}"
        )
    sections = [
        ("files opened for writing", result["files_written"]),
        ("processes spawned", [s["command"] for s in result["spawned"]]),
        (
            "network peers",
            [f"connect {a} x{n}" for a, n in result["network"]["connected"].items()]
            + [f"bind {a} x{n}" for a, n in result["network"]["bound"].items()],
        ),
    ]
    for title, items in sections:
        if items:
            console.print(f"[bold]{title}[/bold] ({len(items)})")
            for item in items[:SHOW]:
                console.print(f"  {item}", markup=False)
            _more(console, items, SHOW)

    alerts = result.get("alerts") or {}
    if alerts.get("total"):
        by_rule = alerts.get("by_rule") or {}
        console.print(f"[bold]alerts[/bold] ({alerts['total']})")
        for rule, n in list(by_rule.items())[:SHOW]:
            console.print(f"  {n:>5}  {rule}", markup=False)
        if len(by_rule) > SHOW:
            console.print(f"  [dim]... and {len(by_rule) - SHOW} more rules[/dim]")
        if alerts.get("suppressed"):
            console.print(f"  [dim]{alerts['suppressed']} more held back by the rate limit[/dim]")

    problems = []
    if result["denied"]:
        problems.append(f"[red]{len(result['denied'])} operation(s) denied[/red]")
    if result["dropped"]:
        problems.append(f"[red]{result['dropped']} record(s) dropped (policy=drop)[/red]")
    if result["missing_exit"]:
        problems.append(
            f"[red]{len(result['missing_exit'])} process(es) with no exit record "
            "(killed, crashed, or the recorder was blinded)[/red]"
        )
    if result["still_running"]:
        problems.append(
            f"[yellow]{result['still_running']} process(es) still running "
            "after the command ended[/yellow]"
        )
    if result["rejected"]:
        total = sum(result["rejected"].values())
        problems.append(f"[red]{total} line(s) rejected (see rejected.jsonl)[/red]")
    notices = result.get("collector") or {}
    gaps, silent = notices.get("gap", 0), notices.get("silence", 0)
    if gaps or silent:
        problems.append(
            f"[red]collector noticed {gaps} sequence gap(s) and {silent} silent process(es) "
            "(kind: collector records in the store)[/red]"
        )
    if result.get("unstored"):
        problems.append(f"[red]{result['unstored']} record(s) could not be stored[/red]")
    for p in problems:
        console.print(p)
