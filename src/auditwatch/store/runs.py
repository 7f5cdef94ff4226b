"""The ``runs`` summary table: kept up to date per batch, rebuildable from records."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Dict, Iterable, NamedTuple, Tuple

from auditwatch.store.chunks import storable, widen
from auditwatch.store.lines import parse
from auditwatch.store.rows import iter_rows

# (run, kind, ts, parsed record) for the start and exit records of a batch.
Special = Tuple[str, str, int, Dict[str, Any]]


class Tally:
    """One run's share of a batch: what ``runs`` adds up. The writer fills it while
    sealing (it has every record parsed at hand), so no SQL runs per record."""

    __slots__ = ("alerts", "events", "first", "first_pos", "last_pos", "max_ts", "min_ts", "n")

    def __init__(self, pos: int, first: dict[str, Any] | bytes) -> None:
        self.n = self.events = self.alerts = 0
        self.min_ts: Any = None
        self.max_ts: Any = None
        self.first_pos = self.last_pos = pos
        # The run's first record in the batch, for its lineage: parsed, or the raw
        # line of a span's first record (parsed only if the run turns out new).
        self.first = first

    def add(self, pos: int, kind: Any, ts: Any) -> None:
        self.n += 1
        self.last_pos = pos
        if kind == "event":
            self.events += 1
        elif kind == "alert":
            self.alerts += 1
        self.min_ts, self.max_ts = widen(self.min_ts, self.max_ts, ts)

    def add_span(self, first_pos: int, span: Any) -> None:
        """A span (chunks.Span: plain events of this run) stored from ``first_pos``."""
        self.n += span.count
        self.events += span.count
        self.last_pos = first_pos + span.count - 1
        self.min_ts, self.max_ts = widen(self.min_ts, self.max_ts, span.min_ts)
        self.min_ts, self.max_ts = widen(self.min_ts, self.max_ts, span.max_ts)


def tally(tallies: dict[str, Tally], pos: int, rec: dict[str, Any]) -> None:
    """Count one record (at ``pos``) into its run's tally."""
    run = rec.get("run")
    if type(run) is not str:
        return
    t = tallies.get(run)
    if t is None:
        t = tallies[run] = Tally(pos, rec)
    t.add(pos, rec.get("kind"), rec.get("ts"))


def tally_span(tallies: dict[str, Tally], span: Any, first_pos: int) -> None:
    """Count a span (chunks.Span: plain events of one run) starting at ``first_pos``."""
    t = tallies.get(span.run)
    if t is None:
        t = tallies[span.run] = Tally(first_pos, span.lines[: span.lines.find(b"\n")])
    t.add_span(first_pos, span)


def update_runs(
    conn: sqlite3.Connection, tallies: dict[str, Tally], specials: Iterable[Special]
) -> None:
    """Fold a batch's tallies into ``runs`` (inside the caller's transaction); only
    the few start and exit records are looked at one by one."""
    for run, t in tallies.items():
        if not storable(run):
            continue  # a run id SQLite cannot store as text has no summary row
        cur = conn.execute(
            "INSERT OR IGNORE INTO runs (run, first_ts, last_ts, first_pos, last_pos)"
            " VALUES (?, ?, ?, ?, ?)",
            (run, t.min_ts, t.max_ts, t.first_pos, t.last_pos),
        )
        if cur.rowcount == 1:
            # A new run: its lineage is on every record; take it from the first one.
            rec = t.first if isinstance(t.first, dict) else _parse(t.first)
            conn.execute(
                "UPDATE runs SET parent_run = ?, pid = ?, installed = ? WHERE run = ?",
                (
                    _str(rec.get("parent_run")),
                    _int(rec.get("pid")),
                    _str(rec.get("installed")),
                    run,
                ),
            )
        conn.execute(
            """UPDATE runs SET records = records + ?, events = events + ?, alerts = alerts + ?,
                   first_ts = min(coalesce(first_ts, ?), coalesce(?, first_ts)),
                   last_ts = max(coalesce(last_ts, ?), coalesce(?, last_ts)),
                   last_pos = ?
               WHERE run = ?""",
            (t.n, t.events, t.alerts, t.min_ts, t.min_ts, t.max_ts, t.max_ts, t.last_pos, run),
        )
    for run, kind, ts, rec in specials:
        if kind == "start":
            proc = rec.get("proc") if isinstance(rec.get("proc"), dict) else {}
            argv = proc.get("argv")
            conn.execute(
                """UPDATE runs SET parent_run = ?, pid = ?, installed = ?, exe = ?, argv = ?,
                       cwd = ?, start_ts = ? WHERE run = ?""",
                (
                    _str(rec.get("parent_run")),
                    _int(rec.get("pid")),
                    _str(rec.get("installed")),
                    _str(proc.get("exe")),
                    json.dumps(argv, ensure_ascii=False) if isinstance(argv, list) else None,
                    _str(proc.get("cwd")),
                    _int(ts),
                    run,
                ),
            )
        elif kind == "exit":
            status = rec.get("status")
            conn.execute(
                "UPDATE runs SET exit_ts = ?, exit_status = ? WHERE run = ?",
                (_int(ts), json.dumps(status, ensure_ascii=False), run),
            )


def special(rec: dict[str, Any]) -> Special | None:
    """The (run, kind, ts, record) of a start or exit record, else None."""
    kind = rec.get("kind")
    run = rec.get("run")
    if (kind == "start" or kind == "exit") and type(run) is str:
        return (run, kind, rec.get("ts"), rec)
    return None


def rebuild_runs(conn: sqlite3.Connection) -> None:
    """Recompute ``runs`` from the records (inside the caller's transaction)."""
    conn.execute("DELETE FROM runs")
    tallies: dict[str, Tally] = {}
    specials = []
    for row in iter_rows(conn):
        rec = _parse(row.raw)
        tally(tallies, row.pos, rec)
        sp = special(rec)
        if sp is not None:
            specials.append(sp)
    update_runs(conn, tallies, specials)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        rec = parse(raw)
    except (ValueError, RecursionError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _str(value: Any) -> Any:
    return value if isinstance(value, str) else None


def _int(value: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class RunSummary(NamedTuple):
    run: str
    parent_run: str | None
    depth: int  # 0 for a run whose parent is not in the store
    argv: list[str] | None
    exe: str | None
    start_ts: int | None  # the start record's time, else the first record's
    end_ts: int | None  # the exit record's time, else the last record's
    exit_status: dict[str, Any] | None  # None: no exit record (killed, crashed, blinded)
    records: int
    events: int
    alerts: int
    processes: int  # the run and all its descendant runs


def list_runs(conn: sqlite3.Connection) -> list[RunSummary]:
    """Every run, parents before their children (depth-first, in start order)."""
    rows = conn.execute(
        "SELECT run, parent_run, argv, exe, coalesce(start_ts, first_ts),"
        " coalesce(exit_ts, last_ts), exit_status, records, events, alerts"
        " FROM runs ORDER BY coalesce(start_ts, first_ts), first_pos"
    ).fetchall()
    known = {r[0] for r in rows}
    children: dict[str | None, list[tuple]] = {}
    for r in rows:
        parent = r[1] if r[1] in known and r[1] != r[0] else None
        children.setdefault(parent, []).append(r)

    # An explicit stack, not recursion: process trees can be deep (fork loops), and a
    # tampered store may even hold a parent cycle, hence the visited set.
    order: list[tuple[tuple, int, str | None]] = []
    visited: set[str] = set()
    stack = [(r, 0, None) for r in reversed(children.get(None, []))]
    leftovers = list(rows)  # runs in a parent cycle never hang below None
    while stack or leftovers:
        if not stack:
            stack.append((leftovers.pop(0), 0, None))
        r, depth, up = stack.pop()
        if r[0] in visited:
            continue
        visited.add(r[0])
        order.append((r, depth, up))
        stack.extend((c, depth + 1, r[0]) for c in reversed(children.get(r[0], [])))

    size: dict[str, int] = {}
    for r, _depth, up in reversed(order):  # children come after their parent
        size[r[0]] = size.get(r[0], 0) + 1
        if up is not None:
            size[up] = size.get(up, 0) + size[r[0]]

    out: list[RunSummary] = []
    for r, depth, _up in order:
        argv = _loads(r[2])
        out.append(
            RunSummary(
                run=r[0],
                parent_run=r[1],
                depth=depth,
                argv=argv if isinstance(argv, list) else None,
                exe=r[3],
                start_ts=r[4],
                end_ts=r[5],
                exit_status=_loads(r[6]),
                records=r[7],
                events=r[8],
                alerts=r[9],
                processes=size[r[0]],
            )
        )
    return out


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
