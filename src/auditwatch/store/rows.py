"""Reading stored records, one at a time, whichever way they are stored.

Stores before schema version 3 hold a row per record (table ``records``); since
then records are written by the chunk (``chunks``, see chunks.py). Positions run
on from one table to the other, so a store may hold both. Every reader (query,
tail, export, runs, verify) goes through :func:`iter_rows`, which narrows in SQL as
far as each layout allows and checks the rest record by record.
"""

from __future__ import annotations

import fnmatch
import sqlite3
from typing import Any, Iterator, NamedTuple, Sequence

from auditwatch.store.chunks import INT64_MAX, INT64_MIN, storable, unpack
from auditwatch.store.lines import parse


class Row(NamedTuple):
    """One stored record: where it is, what the readers index, and its seal."""

    pos: int
    run: Any
    seq: Any
    ts: Any
    kind: Any
    event: Any
    pid: Any
    alert: Any
    raw: bytes
    uid: Any
    gid: Any
    ppid: Any
    prev: Any
    hash: Any
    mac: Any


class Filters(NamedTuple):
    """What a reader wants; every filter given must hold. Globs are fnmatch-style
    and case-sensitive; ``contains`` pieces must appear verbatim in the raw line."""

    runs: Sequence[str] = ()
    events: Sequence[str] = ()
    since: int | None = None
    until: int | None = None
    alerts: bool = False
    contains: Sequence[bytes] = ()


NO_FILTERS = Filters()

_RECORD_COLUMNS = (
    "pos, run, seq, ts, kind, event, pid, alert, raw, peer_uid, peer_gid, peer_pid, "
    "prev_hash, hash, mac"
)


def iter_rows(
    conn: sqlite3.Connection,
    filters: Filters = NO_FILTERS,
    *,
    after: int = 0,
    reverse: bool = False,
) -> Iterator[Row]:
    """Records after position ``after`` that pass ``filters``, in store order (or
    from the end with ``reverse``)."""
    parts = [_legacy_rows(conn, filters, after, reverse)]
    if has_chunks(conn):
        parts.append(_chunk_rows(conn, filters, after, reverse))
    if reverse:
        parts.reverse()  # chunks always come after the rows of the old layout
    for part in parts:
        yield from part


def has_chunks(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chunks'"
        ).fetchone()
        is not None
    )


def fields(raw: bytes) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    """(run, seq, ts, kind, event, pid, alert) of a raw line, as the old layout's
    columns held them (see :func:`clean_column`); all None when it does not parse."""
    return columns_of(parse_record(raw))


def parse_record(raw: bytes) -> dict[str, Any] | None:
    try:
        rec = parse(raw)
    except (ValueError, RecursionError):
        return None
    return rec if isinstance(rec, dict) else None


def columns_of(rec: dict[str, Any] | None) -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    if rec is None:
        return (None,) * 7  # type: ignore[return-value]
    get = rec.get
    kind = get("kind")
    cols = (
        get("run"),
        get("seq"),
        get("ts"),
        kind,
        get("event"),
        get("pid"),
        alert_name(rec) if kind == "alert" else None,
    )
    # The common record needs no cleaning: ASCII names and 64-bit integers.
    for v in cols:
        t = type(v)
        if not (
            v is None
            or (t is str and v.isascii())  # type: ignore[union-attr]
            or (t is int and INT64_MIN <= v <= INT64_MAX)  # type: ignore[operator]
        ):
            return tuple(map(clean_column, cols))  # type: ignore[return-value]
    return cols


class _Layout(NamedTuple):
    """How one layout narrows by each filter in SQL. Chunk columns cover many records,
    so their clauses also let through what they cannot rule out (NULL: several runs,
    no integer ts, unnamed events); matches() then checks each record exactly."""

    table: str
    columns: str
    pos: str  # the SQL for "ends after position ?"
    run: str  # {marks}: one ? per run
    events: str  # {globs}: one event clause per pattern, OR-ed
    event: str  # one pattern's clause
    event_glob: str  # its parameter, from the pattern as GLOB writes it: {glob}
    since: str
    until: str
    alerts: str
    order: str


_ROWS = _Layout(
    "records",
    _RECORD_COLUMNS,
    "pos > ?",
    "run IN ({marks})",
    "({globs})",
    "event GLOB ?",
    "{glob}",
    "ts >= ?",
    "ts <= ?",
    "alert IS NOT NULL",
    "pos",
)
_CHUNKS = _Layout(
    "chunks",
    "first_pos, n, peer_uid, peer_gid, peer_pid, raw, seal",
    "first_pos + n - 1 > ?",
    "(run IS NULL OR run IN ({marks}))",
    "(events IS NULL OR {globs})",
    "events GLOB ?",
    "*\n{glob}\n*",
    "(max_ts IS NULL OR max_ts >= ?)",
    "(min_ts IS NULL OR min_ts <= ?)",
    "alerts > 0",
    "first_pos",
)


def _select(layout: _Layout, filters: Filters, after: int, reverse: bool) -> tuple[str, list]:
    where, params = [layout.pos], [after]
    if filters.runs:
        where.append(layout.run.format(marks=",".join("?" * len(filters.runs))))
        params.extend(filters.runs)
    if filters.events:
        globs = " OR ".join([layout.event] * len(filters.events))
        where.append(layout.events.format(globs=globs))
        params.extend(layout.event_glob.format(glob=glob_sql(p)) for p in filters.events)
    if filters.since is not None:
        where.append(layout.since)
        params.append(filters.since)
    if filters.until is not None:
        where.append(layout.until)
        params.append(filters.until)
    if filters.alerts:
        where.append(layout.alerts)
    for piece in filters.contains:
        where.append("instr(raw, ?) > 0")
        params.append(piece)
    order = f"{layout.order} DESC" if reverse else layout.order
    clauses = " AND ".join(where)
    return f"SELECT {layout.columns} FROM {layout.table} WHERE {clauses} ORDER BY {order}", params


def _legacy_rows(
    conn: sqlite3.Connection, filters: Filters, after: int, reverse: bool
) -> Iterator[Row]:
    for t in conn.execute(*_select(_ROWS, filters, after, reverse)):
        yield Row(*t[:8], as_bytes(t[8]), *t[9:])


def _chunk_rows(
    conn: sqlite3.Connection, filters: Filters, after: int, reverse: bool
) -> Iterator[Row]:
    exact = filters != NO_FILTERS
    for first, n, uid, gid, ppid, raw, seal in conn.execute(
        *_select(_CHUNKS, filters, after, reverse)
    ):
        rows = explode(first, n, uid, gid, ppid, raw, seal)
        if reverse:
            rows.reverse()
        for row in rows:
            if row.pos > after and (not exact or matches(row, filters)):
                yield row


def explode(first: int, n: int, uid: Any, gid: Any, ppid: Any, raw: Any, seal: Any) -> list[Row]:
    """The records of one chunk row (as much as a damaged one holds: chunks.unpack)."""
    records = unpack(as_bytes(raw), n, seal)[0]
    return [
        Row(first + i, *fields(line), line, uid, gid, ppid, prev, digest, mac)
        for i, (line, prev, digest, mac) in enumerate(records)
    ]


def matches(row: Row, filters: Filters) -> bool:
    """The exact check of a record against ``filters`` (the SQL only narrows)."""
    if filters.runs and row.run not in filters.runs:
        return False
    if filters.events and not (
        isinstance(row.event, str)
        and any(fnmatch.fnmatchcase(row.event, p) for p in filters.events)
    ):
        return False
    ts = row.ts
    if filters.since is not None and not (_number(ts) and ts >= filters.since):
        return False
    if filters.until is not None and not (_number(ts) and ts <= filters.until):
        return False
    if filters.alerts and row.alert is None:
        return False
    return all(piece in row.raw for piece in filters.contains)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and value == value


def glob_sql(pattern: str) -> str:
    # fnmatch's negated class [!x] is GLOB's [^x]; everything else means the same.
    return pattern.replace("[!", "[^")


def last_position(conn: sqlite3.Connection) -> int:
    """The highest stored position (0 for an empty store)."""
    best = conn.execute("SELECT max(pos) FROM records").fetchone()[0] or 0
    if has_chunks(conn):
        row = conn.execute(
            "SELECT first_pos + n - 1 FROM chunks ORDER BY first_pos DESC LIMIT 1"
        ).fetchone()
        if row and row[0] is not None:
            best = max(best, row[0])
    return int(best)


def record_count(conn: sqlite3.Connection) -> int:
    n = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    if has_chunks(conn):
        n += conn.execute("SELECT coalesce(sum(n), 0) FROM chunks").fetchone()[0]
    return int(n)


def last_link(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
    """(position, hash) of the last stored record, or None for an empty store."""
    if has_chunks(conn):
        row = conn.execute(
            "SELECT first_pos, n, seal FROM chunks ORDER BY first_pos DESC LIMIT 1"
        ).fetchone()
        if row is not None:
            first, n, seal = row
            return first + n - 1, bytes(seal[-64:-32])
    row = conn.execute("SELECT pos, hash FROM records ORDER BY pos DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def clean_column(value: Any) -> Any:
    """What an indexed column holds for a record value: the value itself when
    SQLite can store it faithfully, else an escaped string or NULL."""
    if value is None:
        return None
    if isinstance(value, int):  # bool included, stored as 0/1
        return value if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return None if value != value else value  # SQLite stores NaN as NULL
    if isinstance(value, str):
        if storable(value):
            return value
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


def as_bytes(raw: Any) -> bytes:
    """A raw line as bytes, even if someone rewrote the BLOB as TEXT (verify reports it)."""
    if isinstance(raw, bytes):
        return raw
    return str(raw).encode("utf-8", "surrogateescape")


def alert_name(rec: dict[str, Any]) -> str:
    # Alert records come from the rules engine; index them by rule name when present.
    for key in ("rule", "name", "alert"):
        value = rec.get(key)
        if isinstance(value, str) and value:
            return value
    return "alert"
