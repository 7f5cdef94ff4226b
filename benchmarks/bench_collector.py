"""Collector throughput, end to end: many sender processes -> real Unix socket ->
checks -> sealed SQLite store, against the same run into a null sink.

    python benchmarks/bench_collector.py [--senders 16] [--records 300000]
        [--repeat 3] [--rules] [--stdlib-json] [--cpu]

Senders are forked processes that write pre-made records (shaped like the hook's,
each with its own pid, so the SO_PEERCRED check passes) as fast as the socket takes
them; the clock runs from the moment they start sending until the last record is
committed. Configurations alternate within each repeat, so all see the same
machine. Prints a markdown table: records/s, median of the repeats, min-max.
--stdlib-json adds the null sink and the store with the standard library's JSON
parser instead of orjson, side by side. --cpu adds how the whole machine spent its
time while the records flowed (/proc/stat: user, system, idle, I/O wait), and the
CPU time of the collector's own process (all its threads) per record.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from auditwatch.collector.server import Collector
from auditwatch.collector.service import CollectorService
from auditwatch.store import Store

_WHERE = {"file": "/usr/lib/python3.11/importlib/_bootstrap.py", "line": 241, "func": "f"}


def make_lines(n: int) -> bytes:
    """``n`` records of one process run (this process's pid), as the hook writes them."""
    run = os.urandom(16).hex()
    pid = os.getpid()
    out = []
    t = time.time_ns()
    for seq in range(1, n + 1):
        rec: dict[str, Any] = {"v": 1, "seq": seq, "run": run, "parent_run": None, "pid": pid}
        rec.update({"installed": "site", "ts": t + seq, "tid": pid, "interp": 0})
        if seq == 1:
            rec.update(kind="start", proc={"exe": "/usr/bin/python3", "argv": ["python3"]})
        elif seq == n:
            rec.update(kind="exit", status={"how": "exit", "code": 0})
        elif seq % 3:
            rec.update(kind="event", event="open", args=[f"/srv/app/m{seq % 50}.py", "r", 524288])
            rec.update(where=_WHERE, action="record")
        else:
            rec.update(kind="event", event="import", args=[f"mod{seq % 80}", None, [], [], []])
            rec.update(where=_WHERE, action="record")
        out.append(json.dumps(rec, separators=(",", ":")))
    return ("\n".join(out) + "\n").encode()


def sender(path: str, n: int, ready_w: int, go_r: int) -> None:
    data = make_lines(n)
    os.write(ready_w, b"r")
    os.read(go_r, 1)  # wait for the start signal
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.sendall(data)
    os._exit(0)


class Count:
    def __init__(self) -> None:
        self.n = 0

    def accept(self, raw: bytes, record: dict, peer: object) -> None:
        self.n += 1

    def accept_span(self, span: Any) -> None:
        self.n += span.count


CPU_STATES = ("user", "system", "idle", "iowait")


def cpu_times() -> list[int]:
    """The machine's time in user (with nice), system, idle and I/O wait, in ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return [v[0] + v[1], v[2] + v[5] + v[6], v[3], v[4]]


def own_cpu() -> float:
    """CPU seconds (user + system) of this process, all its threads: the collector."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_once(
    kind: str, senders: int, per: int, tmp: str, cpu: list[list[float]] | None = None
) -> float:
    """Records/s for one configuration; with ``cpu``, appends the machine's shares of
    CPU_STATES over the timed part."""
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    path = os.path.join(tmp, "c.sock")
    count = Count()
    store = None
    finish: Callable[[], None]
    if kind == "null":
        coll = Collector(path, [count], lambda *a: None)
        coll.start()

        def finish() -> None:
            coll.stop(0)

    else:
        store = Store.open(os.path.join(tmp, "store.sqlite"))
        ruleset = None
        if kind == "store+rules":
            from auditwatch.rules import load

            ruleset = load()
        # "store" takes the build's default threading, so that compare_builds.py can
        # run this benchmark against an older build as that build ships.
        options = {"threaded_store": False} if kind == "store-1thread" else {}
        svc = CollectorService(path, store, ruleset, sinks=[count], log=lambda m: None, **options)
        svc.start()

        def finish() -> None:
            svc.store_sink.flush()
            svc.stop(0)

    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pids = []
    for _ in range(senders):
        pid = os.fork()
        if pid == 0:
            os.close(go_w)
            os.close(ready_r)
            sender(path, per, ready_w, go_r)
        pids.append(pid)
    os.close(go_r)
    os.close(ready_w)
    # The clock starts once every sender has made its records, so that making them
    # does not compete with the collector for the CPUs.
    ready = 0
    while ready < senders:
        got = os.read(ready_r, senders - ready)
        if not got:
            raise SystemExit("a sender died before it was ready")
        ready += len(got)
    os.close(ready_r)
    total = senders * per
    t0, ticks0, own0 = time.perf_counter(), cpu_times(), own_cpu()
    os.write(go_w, b"x" * senders)
    while count.n < total:
        time.sleep(0.002)
    finish()
    dt = time.perf_counter() - t0
    spent = [b - a for a, b in zip(ticks0, cpu_times())]
    if cpu is not None:
        shares = [100 * x / max(1, sum(spent)) for x in spent]
        cpu.append([*shares, 1e6 * (own_cpu() - own0) / total])
    os.close(go_w)
    for pid in pids:
        os.waitpid(pid, 0)
    if store is not None:
        stored = store.count()
        store.close()
        assert stored >= total, (stored, total)
    return total / dt


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--senders", type=int, default=16)
    ap.add_argument("--records", type=int, default=300_000, help="in all, per configuration")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rules", action="store_true", help="also: the default ruleset as a sink")
    ap.add_argument(
        "--stdlib-json", action="store_true", help="also: null sink and store parsing with json"
    )
    ap.add_argument("--cpu", action="store_true", help="also: the machine's CPU time, by state")
    args = ap.parse_args(argv)
    from auditwatch.store import lines  # here: older builds (compare_builds.py) lack it

    per = args.records // args.senders
    kinds = ["null", "store", "store-1thread"] + (["store+rules"] if args.rules else [])
    if args.stdlib_json:
        kinds += ["null/json", "store/json"]
    fast_loads = lines._fast_loads
    results: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[list[float]]] = {k: [] for k in kinds}
    tmp = tempfile.mkdtemp(prefix="bench-collector-")
    try:
        for _ in range(args.repeat):
            for kind in kinds:
                # ".../json": the collector's parser without orjson (its fallback).
                lines._fast_loads = None if kind.endswith("/json") else fast_loads
                config = kind.split("/")[0]
                shares = cpu[kind] if args.cpu else None
                results[kind].append(run_once(config, args.senders, per, tmp, shares))
    finally:
        lines._fast_loads = fast_loads
        shutil.rmtree(tmp, ignore_errors=True)
    import sqlite3

    print(
        f"{args.senders} senders x {per:,} records, {args.repeat} repeats, "
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs\n"
    )
    print("| sink | records/s (median) | min – max | µs/record | vs. null sink |")
    print("|---|---:|---:|---:|---:|")
    base = statistics.median(results["null"])
    names = {
        "null": "null sink (socket, scan, checks)",
        "store": "sealed store (default: sealing and SQLite in threads of their own)",
        "store-1thread": "sealed store, everything in the collector thread",
        "store+rules": "sealed store + default rules",
        "null/json": "null sink, standard-library JSON parser",
        "store/json": "sealed store, standard-library JSON parser",
    }
    for kind in kinds:
        xs = results[kind]
        med = statistics.median(xs)
        print(
            f"| {names[kind]} | {med:,.0f} | {min(xs):,.0f} – {max(xs):,.0f} "
            f"| {1e6 / med:.2f} | {med / base:.2f}× |"
        )

    if args.cpu:
        heads = [f"{state} %" for state in CPU_STATES] + ["collector CPU µs/record"]
        print("\n| sink (medians) | " + " | ".join(heads) + " |")
        print("|---|" + "---:|" * len(heads))
        for kind in kinds:
            columns = zip(*cpu[kind])
            cells = " | ".join(
                f"{statistics.median(c):.{2 if i == len(CPU_STATES) else 0}f}"
                for i, c in enumerate(columns)
            )
            print(f"| {names[kind]} | {cells} |")


if __name__ == "__main__":
    main()
