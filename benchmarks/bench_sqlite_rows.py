"""What a SQLite row per record costs, and why a second writer thread did not help:
why the store keeps records by the chunk since schema version 3 (docs/store.md).

    python benchmarks/bench_sqlite_rows.py [--rows 20000] [--repeat 3]

Hook-shaped records are inserted, pre-built and bound as the store binds them
(BLOBs as bytearray), into the old layout's records table (schema.V1): with its
four indexes, without them, and as a bare row (position, peer, raw line, hash,
MAC). Then the same full rows from a writer thread while another Python thread
keeps the GIL busy: with executemany, with 50 rows per statement, and with 50
rows and a 0.2 ms switch interval. Cases alternate within each repeat; the table
gives microseconds per row, median and min-max. The collector budget (200,000
records/s) leaves 5 µs a record for everything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Callable

from auditwatch.store.schema import V1
from bench_collector import make_lines

RECORDS_TABLE = next(s for s in V1 if isinstance(s, str) and "CREATE TABLE records" in s)
INDEXES = [s for s in V1 if isinstance(s, str) and s.startswith("CREATE INDEX records_")]
BARE_TABLE = """CREATE TABLE records (pos INTEGER PRIMARY KEY, peer_uid INTEGER,
    peer_gid INTEGER, peer_pid INTEGER, raw BLOB NOT NULL, hash BLOB NOT NULL,
    mac BLOB NOT NULL)"""
FULL_ROW = "(?,?,?,?,?,?,?,NULLIF(?,X''),?,?,?,?,?,?,?)"  # as store/sqlite.py inserts
BATCH = 5_000


def full_rows(n: int) -> list[tuple[Any, ...]]:
    h = os.urandom(32)
    out = []
    for i, line in enumerate(make_lines(n).split(b"\n")[:n]):
        r = json.loads(line)
        out.append(
            (i + 1, r["run"], r["seq"], r["ts"], r.get("kind"), r.get("event"), r["pid"],
             bytearray(), 1000, 1000, r["pid"], bytearray(line), bytearray(h),
             bytearray(h), bytearray(h))
        )  # fmt: skip
    return out


def connect(tmp: str, ddl: list[str]) -> sqlite3.Connection:
    path = os.path.join(tmp, f"{time.perf_counter_ns()}.sqlite")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-32768"):
        conn.execute(f"PRAGMA {pragma}")
    for statement in ddl:
        conn.execute(statement)
    return conn


def insert(conn: sqlite3.Connection, rows: list[tuple[Any, ...]], shape: str, per: int) -> None:
    """Insert in transactions of BATCH rows, ``per`` rows per statement."""
    for b in range(0, len(rows), BATCH):
        batch = rows[b : b + BATCH]
        conn.execute("BEGIN")
        full, rest = divmod(len(batch), per)
        stmt = f"INSERT INTO records VALUES {','.join([shape] * per)}"
        groups = (batch[i : i + per] for i in range(0, full * per, per))
        conn.executemany(stmt, (tuple(itertools.chain.from_iterable(g)) for g in groups))
        if rest:
            tail = f"INSERT INTO records VALUES {','.join([shape] * rest)}"
            conn.execute(tail, tuple(itertools.chain.from_iterable(batch[full * per :])))
        conn.execute("COMMIT")


def beside_busy_thread(work: Callable[[], None], switch: float | None) -> None:
    """Run ``work`` in a thread while another Python thread keeps the GIL busy."""
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            for _ in range(1000):
                x += 1

    old = sys.getswitchinterval()
    if switch is not None:
        sys.setswitchinterval(switch)
    busy = threading.Thread(target=spin)
    busy.start()
    try:
        writer = threading.Thread(target=work)
        writer.start()
        writer.join()
    finally:
        stop.set()
        busy.join()
        sys.setswitchinterval(old)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows per single-thread case")
    ap.add_argument("--thread-rows", type=int, default=2_000, help="rows per threaded case")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = full_rows(args.rows)
    bare = [(r[0], r[8], r[9], r[10], r[11], r[13], r[14]) for r in rows]
    few = rows[: args.thread_rows]
    bare_shape = "(?,?,?,?,?,?,?)"
    cases: dict[str, tuple[int, Callable[[sqlite3.Connection], None], list[str]]] = {
        "bare row (pos, peer, raw, hash, MAC)": (
            len(bare), lambda c: insert(c, bare, bare_shape, 1), [BARE_TABLE]),
        "store row, no index": (len(rows), lambda c: insert(c, rows, FULL_ROW, 1), [RECORDS_TABLE]),
        "store row, four indexes (the store)": (
            len(rows), lambda c: insert(c, rows, FULL_ROW, 1), [RECORDS_TABLE, *INDEXES]),
        "store, 50 rows per statement": (
            len(rows), lambda c: insert(c, rows, FULL_ROW, 50), [RECORDS_TABLE, *INDEXES]),
        "writer thread beside a busy thread": (
            len(few), lambda c: beside_busy_thread(lambda: insert(c, few, FULL_ROW, 1), None),
            [RECORDS_TABLE, *INDEXES]),
        "same, 50 rows per statement": (
            len(few), lambda c: beside_busy_thread(lambda: insert(c, few, FULL_ROW, 50), None),
            [RECORDS_TABLE, *INDEXES]),
        "same, 50 rows, 0.2 ms switch interval": (
            len(few), lambda c: beside_busy_thread(lambda: insert(c, few, FULL_ROW, 50), 2e-4),
            [RECORDS_TABLE, *INDEXES]),
    }  # fmt: skip
    results: dict[str, list[float]] = {name: [] for name in cases}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for name, (n, run, ddl) in cases.items():
                conn = connect(tmp, ddl)
                t0 = time.perf_counter()
                run(conn)
                results[name].append((time.perf_counter() - t0) / n * 1e6)
                conn.close()
    print(
        f"{args.rows:,} rows ({args.thread_rows:,} in the threaded cases), {args.repeat} "
        f"repeats, Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| case | µs per row (median) | min – max |")
    print("|---|---:|---:|")
    for name, xs in results.items():
        print(f"| {name} | {statistics.median(xs):,.1f} | {min(xs):,.1f} – {max(xs):,.1f} |")


if __name__ == "__main__":
    main()
