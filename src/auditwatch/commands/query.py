"""``auditwatch query STORE``: find records by run, process tree, event, time, args."""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys

import click

from auditwatch.store.keys import StoreError
from auditwatch.store.query import StoredRecord, parse_time, query
from auditwatch.store.sqlite import Store


def _time_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _regex_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise click.BadParameter(
                f"{value!r} is not a valid regular expression: {exc}"
            ) from None
    return value


def format_line(rec: StoredRecord) -> str:
    """One line per record: time, run, seq, what happened."""
    when = (
        "?"
        if rec.ts is None
        else _dt.datetime.fromtimestamp(rec.ts / 1e9).isoformat(sep=" ", timespec="microseconds")
    )
    head = f"{when}  {(rec.run or '?')[:12]}  #{rec.seq}"
    try:
        data = rec.record()
    except ValueError:
        return f"{head}  (unparseable record)"
    kind = rec.kind
    if kind == "event":
        args = json.dumps(data.get("args"), ensure_ascii=False, separators=(",", ":"))
        action = data.get("action")
        mark = f"  [{action}]" if action in ("deny", "flush") else ""
        return f"{head}  {rec.event} {args}{mark}"
    if kind == "start":
        proc = data.get("proc") or {}
        argv = proc.get("argv") if isinstance(proc, dict) else None
        return f"{head}  start {' '.join(map(str, argv or []))}"
    if kind == "exit":
        return f"{head}  exit {json.dumps(data.get('status'), separators=(',', ':'))}"
    if kind == "alert":
        return f"{head}  ALERT {rec.alert}: {rec.event or ''}".rstrip()
    rest = {k: v for k, v in data.items() if k not in ("v", "seq", "ts", "run", "parent_run")}
    return f"{head}  {kind} {json.dumps(rest, separators=(',', ':'))}"


@click.command("query")
@click.argument("store", type=click.Path(dir_okay=True))
@click.option("--run", "runs", multiple=True, metavar="RUN", help="Records of this run.")
@click.option(
    "--tree", multiple=True, metavar="RUN", help="Records of this run and all runs it started."
)
@click.option(
    "--event", "events", multiple=True, metavar="GLOB", help="Event name glob, e.g. 'socket.*'."
)
@click.option("--since", callback=_time_option, help="From this time: epoch seconds or ISO 8601.")
@click.option("--until", callback=_time_option, help="Up to this time: epoch seconds or ISO 8601.")
@click.option("--contains", metavar="TEXT", help="Arguments (as JSON text) contain TEXT.")
@click.option(
    "--regex", callback=_regex_option, metavar="RE", help="Arguments (as JSON text) match RE."
)
@click.option("--alerts", is_flag=True, help="Alert records only.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON lines.")
@click.option("--limit", type=click.IntRange(min=0), help="At most N records.")
def command(
    store: str,
    runs: tuple[str, ...],
    tree: tuple[str, ...],
    events: tuple[str, ...],
    since: int | None,
    until: int | None,
    contains: str | None,
    regex: str | None,
    alerts: bool,
    as_json: bool,
    limit: int | None,
) -> None:
    """Print the records of STORE (a store file or run directory) matching every filter.

    RUN may be a unique prefix of a run id, as `auditwatch runs` shows it. A time
    without a zone is local time.
    """
    try:
        with Store.open(store, readonly=True) as st:
            found = query(
                st,
                runs=[st.resolve_run(r) for r in runs],
                tree=[st.resolve_run(r) for r in tree],
                events=events,
                since=since,
                until=until,
                contains=contains,
                regex=regex,
                alerts=alerts,
                limit=limit,
            )
            if as_json:
                out = sys.stdout.buffer
                for rec in found:
                    out.write(rec.raw if rec.raw.endswith(b"\n") else rec.raw + b"\n")
                out.flush()
            else:
                for rec in found:
                    click.echo(format_line(rec))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
