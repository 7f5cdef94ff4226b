"""``auditwatch events``: browse the catalogue of CPython audit events."""

from __future__ import annotations

import dataclasses
import difflib
import json

import click
from rich.console import Console
from rich.table import Table

from auditwatch import catalog
from auditwatch.catalog import Event


def versions_text(event: Event) -> str:
    """ "3.8+" while still raised, "3.8-3.11" when it stopped."""
    return f"{event.first}+" if event.last is None else f"{event.first}-{event.last}"


def args_text(event: Event) -> str:
    return ", ".join(f"{a.name}: {a.type}" if a.type else a.name for a in event.args)


def as_json(event: Event) -> dict:
    data = dataclasses.asdict(event)
    data["args"] = [{"name": a.name, "type": a.type} for a in event.args]
    data["platforms"] = list(event.platforms)
    return data


def select(python: str | None, category: str | None) -> list[Event]:
    events = catalog.events_for(python) if python else sorted(catalog.load().values(), key=_name)
    return [e for e in events if category is None or e.category == category]


def _name(event: Event) -> str:
    return event.name


def unknown_name(name: str) -> click.BadParameter:
    close = difflib.get_close_matches(name, catalog.load(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return click.BadParameter(
        f"{name!r} is not a known CPython audit event.{hint} Run `auditwatch events` for the list.",
        param_hint="NAME",
    )


def print_table(events: list[Event], console: Console) -> None:
    table = Table(show_lines=False, header_style="bold")
    for header in ("event", "category", "arguments", "versions"):
        table.add_column(header, overflow="fold")
    for event in events:
        name = (
            event.name
            if event.platforms == ("all",)
            else f"{event.name} ({', '.join(event.platforms)})"
        )
        table.add_row(name, event.category, args_text(event), versions_text(event))
    console.print(table)
    console.print(f"{len(events)} events")


def print_entry(event: Event, console: Console) -> None:
    aborts = {True: "yes", False: "no", None: "unknown"}[event.aborts]
    rows = [
        ("event", event.name),
        ("what it reveals", event.summary),
        ("category", event.category),
        ("arguments", args_text(event) or "(none)"),
        ("versions", versions_text(event)),
        ("platforms", ", ".join(event.platforms)),
        ("a raising hook aborts it", aborts),
        ("known gaps", event.gaps or "-"),
    ]
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


@click.command("events")
@click.option(
    "--python",
    "python",
    type=click.Choice(catalog.VERSIONS),
    help="Only events raised by this CPython version.",
)
@click.option(
    "--category", type=click.Choice(catalog.CATEGORIES), help="Only events of this category."
)
@click.option("--json", "as_json_output", is_flag=True, help="Print JSON instead of a table.")
@click.argument("name", required=False)
def command(python: str | None, category: str | None, as_json_output: bool, name: str | None):
    """List CPython's audit events, or show one event NAME in full."""
    console = Console(highlight=False)
    if name is not None:
        event = catalog.lookup(name)
        if event is None:
            raise unknown_name(name)
        if as_json_output:
            click.echo(json.dumps(as_json(event), indent=2))
        else:
            print_entry(event, console)
        return
    events = select(python, category)
    if as_json_output:
        click.echo(json.dumps([as_json(e) for e in events], indent=2))
    else:
        print_table(events, console)
