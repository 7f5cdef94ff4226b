"""Store throughput: sealed append and verify, against the same inserts unsealed.

    python benchmarks/bench_store.py [--records 500000] [--repeat 5]

Generates realistic records (open/import/exec events of several runs with start and
exit records), appends them in batches, and prints a markdown table: records/s as
the median of the repeats with the min-max spread, and the sealed/unsealed ratio.
Baseline and sealed runs alternate in one process, so both see the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional, Tuple

from auditwatch.store import PeerCred, Store, chunks, schema, verify
from auditwatch.store.rows import iter_rows

Item = Tuple[bytes, Dict[str, Any], Optional[PeerCred]]

_MODULES = ["json", "os", "re", "collections", "typing", "email.parser", "http.client", "ssl"]


def make_items(n: int, runs: int = 8) -> list[Item]:
    """``n`` records spread over ``runs`` runs, shaped as docs/schema.md describes."""
    peer = PeerCred(pid=4242, uid=1000, gid=1000)
    items: list[Item] = []
    per_run = max(n // runs, 3)
    t = 1_700_000_000_000_000_000
    parent = None
    for r in range(runs):
        run = f"{r + 1:032x}"
        common = {"v": 1, "run": run, "parent_run": parent, "pid": 1000 + r, "installed": "site"}
        seq = 0

        def add(kind: str, common: dict[str, Any] = common, **fields: Any) -> None:
            nonlocal seq, t
            seq += 1
            t += 1_000
            rec = {**common, "seq": seq, "ts": t, "kind": kind, **fields}
            items.append((json.dumps(rec, separators=(",", ":")).encode(), rec, peer))

        proc = {"exe": "/usr/bin/python3", "argv": ["python3", "-m", "pytest"], "cwd": "/src"}
        add("start", proc=proc)
        for i in range(per_run - 2):
            if len(items) >= n - 1:
                break
            kind = i % 3
            if kind == 0:
                mod = _MODULES[i % len(_MODULES)]
                ev, args = "import", [mod, None, ["/usr/lib/python3.11"], [], []]
            elif kind == 1:
                ev, args = (
                    "open",
                    [f"/usr/lib/python3.11/{_MODULES[i % 8]}/__init__.py", "r", 524288],
                )
            else:
                code = {"$": "code", "name": "<module>", "file": "/src/t.py", "line": 1}
                ev, args = "exec", [{**code, "sha256": f"{i:064x}"}]
            where = {
                "file": "/usr/lib/python3.11/importlib/_bootstrap.py",
                "line": 241,
                "func": "f",
            }
            add("event", tid=1000 + r, interp=0, event=ev, args=args, where=where, action="record")
        add("exit", status={"how": "exit", "code": 0})
        parent = run
        if len(items) >= n:
            break
    return items[:n]


def _fresh(tmp: str) -> str:
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    return os.path.join(tmp, "store.sqlite")


def bench_sealed(items: list[Item], batch: int, tmp: str) -> float:
    path = _fresh(tmp)
    store = Store.open(path)
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        store.append_many(items[i : i + batch])
    dt = time.perf_counter() - t0
    store.close()
    return len(items) / dt


def bench_plain(items: list[Item], batch: int, tmp: str) -> float:
    """The same chunks, tables, indexes and pragmas, without hash or MAC."""
    path = _fresh(tmp)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-32768")
    for version in schema.MIGRATIONS:
        for step in version:
            if isinstance(step, str):
                conn.execute(step)
    pos = 0

    def chunk_rows(part: list[Item]) -> list[tuple[Any, ...]]:
        nonlocal pos
        out = []
        for i in range(0, len(part), chunks.MAX_RECORDS):
            group = part[i : i + chunks.MAX_RECORDS]
            summary = chunks.Summary()
            for _raw, rec, _peer in group:
                summary.add(rec.get("run"), rec.get("ts"), rec.get("kind"), rec.get("event"))
            peer = group[0][2]
            uid, gid, ppid = (peer.uid, peer.gid, peer.pid) if peer else (None, None, None)
            raw = bytearray(chunks.pack_raw([r for r, _, _ in group]))
            zeros = bytearray(chunks.ENTRY * len(group))
            out.append((pos + 1, len(group), uid, gid, ppid, raw, zeros, *summary.finding()))
            pos += len(group)
        return out

    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(chunks.INSERT, chunk_rows(items[i : i + batch]))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return len(items) / dt


def bench_seal_only(items: list[Item], batch: int, tmp: str) -> float:
    """``Store.seal``: hash + MAC + chunk rows (the Python half of append), no SQLite."""
    store = Store.open(_fresh(tmp))
    head = store.head()
    t0 = time.perf_counter()
    for i in range(0, len(items), batch):
        head = store.seal(items[i : i + batch], head).end
    dt = time.perf_counter() - t0
    store.close()
    return len(items) / dt


def bench_verify(items: list[Item], tmp: str) -> float:
    path = os.path.join(tmp, "store.sqlite")
    report = verify(path)
    if not report.ok:
        raise SystemExit(f"verify failed on a clean store: {report.first}")
    return len(items) / report.seconds


def bench_scan(items: list[Item], tmp: str) -> float:
    """Baseline for verify: every record read and parsed, as readers do; no hashing."""
    conn = sqlite3.connect(os.path.join(tmp, "store.sqlite"))
    t0 = time.perf_counter()
    n = 0
    for _row in iter_rows(conn):
        n += 1
    dt = time.perf_counter() - t0
    conn.close()
    return n / dt


def _stats(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--batch", type=int, default=5_000)
    args = ap.parse_args(argv)

    items = make_items(args.records)
    avg = sum(len(i[0]) for i in items) / len(items)
    tmp = tempfile.mkdtemp(prefix="bench-store-")
    results: dict[str, list[float]] = {k: [] for k in ("plain", "sealed", "seal", "scan", "verify")}
    steps: list[tuple[str, Callable[[], float]]] = [
        ("plain", lambda: bench_plain(items, args.batch, tmp + "/p")),
        ("scan", lambda: bench_scan(items, tmp + "/p")),
        ("sealed", lambda: bench_sealed(items, args.batch, tmp + "/s")),
        ("verify", lambda: bench_verify(items, tmp + "/s")),
        ("seal", lambda: bench_seal_only(items, args.batch, tmp + "/x")),
    ]
    try:
        for _ in range(args.repeat):
            for name, fn in steps:
                results[name].append(fn())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"{len(items):,} records (mean {avg:.0f} bytes), batches of {args.batch:,}, "
        f"{args.repeat} repeats, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version}\n"
    )
    print("| operation | records/s (median) | min – max | µs/record | vs. baseline |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("append, unsealed (baseline)", "plain", "plain"),
        ("append, sealed (`Store.append_many`)", "sealed", "plain"),
        ("hash + MAC only, no SQLite (part of the above)", "seal", "plain"),
        ("read and parse all records (baseline)", "scan", "scan"),
        ("verify (`auditwatch verify`)", "verify", "scan"),
    ]
    for label, key, base in rows:
        med, lo, hi = _stats(results[key])
        ratio = med / statistics.median(results[base])
        us = 1e6 / med
        print(f"| {label} | {med:,.0f} | {lo:,.0f} – {hi:,.0f} | {us:.2f} | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
