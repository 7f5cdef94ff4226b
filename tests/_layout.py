"""Moving a store's records between its two layouts: a row per record (``records``,
stores before schema version 3) and chunks (``chunks``, written since).

Tamper tests edit records one row at a time in SQL. ``explode`` turns a store's
chunks into record rows (exactly what an older store holds), the test edits them,
and ``repack`` packs whatever the rows now say back into chunks, carrying every
edit over: the same tampering is then checked in both layouts. The search
columns of repacked chunks are computed from the records, as the writer does; a
test of edited search columns edits the chunks themselves.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from auditwatch.store.chunks import INSERT, Summary, pack_raw
from auditwatch.store.rows import as_bytes, iter_rows, parse_record

_ROW = (  # the columns in rows.Row's order
    "INSERT INTO records (pos, run, seq, ts, kind, event, pid, alert, raw, peer_uid, peer_gid,"
    " peer_pid, prev_hash, hash, mac) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)


def connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def explode(path: str) -> None:
    """Every chunk becomes record rows; the chunks table is left empty."""
    conn = connect(path)
    rows = list(iter_rows(conn))
    conn.execute("BEGIN")
    conn.execute("DELETE FROM chunks")
    conn.execute("DELETE FROM records")
    conn.executemany(_ROW, rows)
    conn.execute("COMMIT")
    conn.close()


def repack(path: str) -> None:
    """Every record row goes back into chunks: consecutive positions of one sender."""
    conn = connect(path)
    rows = conn.execute(
        "SELECT pos, peer_uid, peer_gid, peer_pid, raw, prev_hash, hash, mac FROM records"
        " ORDER BY pos"
    ).fetchall()
    groups: list[list[tuple]] = []
    for r in rows:
        last = groups[-1][-1] if groups else None
        if (
            last is not None
            and r[0] == last[0] + 1
            and r[1:4] == last[1:4]
            and b"\n" not in as_bytes(r[4])
            and b"\n" not in as_bytes(last[4])
        ):
            groups[-1].append(r)
        else:
            groups.append([r])
    conn.execute("BEGIN")
    conn.execute("DELETE FROM records")
    conn.executemany(INSERT, [_chunk(g) for g in groups])
    conn.execute("COMMIT")
    conn.close()


def _chunk(group: list[tuple]) -> tuple[Any, ...]:
    lines = [as_bytes(r[4]) for r in group]
    summary = Summary()
    for line in lines:
        rec = parse_record(line) or {}
        summary.add(rec.get("run"), rec.get("ts"), rec.get("kind"), rec.get("event"))
    seal = b"".join(_hash(r[5]) + _hash(r[6]) + _hash(r[7]) for r in group)
    return (group[0][0], len(group), *group[0][1:4], pack_raw(lines), seal, *summary.finding())


def _hash(value: Any) -> bytes:
    # A seal column edited to another size or type cannot keep its place in a chunk's
    # fixed-size entries; it is cut or padded, which breaks it all the same.
    data = value if isinstance(value, bytes) else str(value).encode()
    return data[:32].ljust(32, b"\0")
