"""The ``runs`` summary table: kept up to date per batch, rebuildable from records."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Dict, Iterable, NamedTuple, Tuple

# (run, kind, ts, parsed record) for the start and exit records of a batch.
Special = Tuple[str, str, int, Dict[str, Any]]

_AGGREGATE = """
    SELECT run, count(*), sum(kind = 'event'), sum(alert IS NOT NULL),
           min(ts), max(ts), min(pos), max(pos)
    FROM records NOT INDEXED WHERE pos > ? AND run IS NOT NULL GROUP BY run
"""
# NOT INDEXED: left to itself SQLite walks the whole (run, seq) index to group by
# run, which made every batch cost O(store size); the rowid range is the batch.


def update_runs(conn: sqlite3.Connection, after_pos: int, specials: Iterable[Special]) -> None:
    """Fold the records after ``after_pos`` into ``runs`` (inside the caller's transaction).

    Counting in SQL keeps the per-record Python cost of append at zero; only the
    few start and exit records are looked at one by one.
    """
    for run, n, events, alerts, first_ts, last_ts, first_pos, last_pos in conn.execute(
        _AGGREGATE, (after_pos,)
    ).fetchall():
        cur = conn.execute(
            "INSERT OR IGNORE INTO runs (run, first_ts, last_ts, first_pos, last_pos)"
            " VALUES (?, ?, ?, ?, ?)",
            (run, first_ts, last_ts, first_pos, last_pos),
        )
        if cur.rowcount == 1:
            # A new run: its lineage is on every record; take it from the first one.
            raw = conn.execute("SELECT raw FROM records WHERE pos = ?", (first_pos,)).fetchone()[0]
            rec = _parse(raw)
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
                   first_ts = min(coalesce(first_ts, ?), ?), last_ts = max(coalesce(last_ts, ?), ?),
                   last_pos = ?
               WHERE run = ?""",
            (n, events or 0, alerts or 0, first_ts, first_ts, last_ts, last_ts, last_pos, run),
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
                    ts,
                    run,
                ),
            )
        elif kind == "exit":
            status = rec.get("status")
            conn.execute(
                "UPDATE runs SET exit_ts = ?, exit_status = ? WHERE run = ?",
                (ts, json.dumps(status, ensure_ascii=False), run),
            )


def rebuild_runs(conn: sqlite3.Connection) -> None:
    """Recompute ``runs`` from the records (inside the caller's transaction)."""
    conn.execute("DELETE FROM runs")
    specials = []
    for run, kind, ts, raw in conn.execute(
        "SELECT run, kind, ts, raw FROM records WHERE kind IN ('start', 'exit') ORDER BY pos"
    ):
        if run is not None:
            specials.append((run, kind, ts, _parse(raw)))
    update_runs(conn, 0, specials)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except ValueError:
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
