"""The collector's per-record loops in Python against auditwatch._ingest, side by side.

    python benchmarks/bench_ingest.py [--records 20000] [--chunk 1000] [--repeat 5]

Run it with the Python of an environment where auditwatch is installed: the C
extension is built by pip, it is not under src/. The records are
bench_collector.make_lines' (one run, hook-shaped, about 320 bytes each).

- sealing: the store's loop (store/sqlite.py ``_rows``: hash and MAC per record through
  hashlib, the HMAC pads copied, not recomputed) against ``seal_chunk`` over chunks of
  --chunk records;
- checking: ``Sequencer.check`` per line (orjson.loads, then the shape, pid and
  sequence checks) against ``scan_lines`` over the same chunks. scan_lines leaves the
  sequence bookkeeping to its caller, once per run of lines rather than per line.

Python gets the lines as a list, C the chunks as bytes, as each would receive them.
Cases alternate within each repeat; the table gives microseconds per record, median
and min-max over the repeats, and the ratio of the medians. seal_chunk and scan_lines
release the GIL on bytes, so in the collector their time can overlap other threads';
the Python loops hold it throughout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable

from auditwatch import _ingest
from auditwatch.collector.sequence import Sequencer
from auditwatch.store.seal import _LINK, PeerCred, Sealer
from bench_collector import make_lines

KEY = os.urandom(32)
UID, GID = os.getuid(), os.getgid()


def py_seal(lines: list[bytes], sealer: Sealer, prev: bytes, peer: PeerCred) -> bytes:
    """The hashing part of store/sqlite.py's _rows, record by record."""
    base_copy, inner_copy, outer_copy = sealer.hot_functions()
    pack = _LINK.pack
    uid, gid, pid = peer.uid, peer.gid, peer.pid
    for pos, raw in enumerate(lines, 1):
        h = base_copy()
        h.update(prev + pack(pos, 1, uid, gid, pid, len(raw)) + raw)
        digest = h.digest()
        i = inner_copy()
        i.update(digest)
        o = outer_copy()
        o.update(i.digest())
        o.digest()
        prev = digest
    return prev


def c_seal(chunks: list[tuple[bytes, int]], prev: bytes, peer: tuple[int, int, int]) -> bytes:
    pos = 1
    for data, n in chunks:
        out = _ingest.seal_chunk(data, n, pos, prev, peer, KEY)
        prev = out[-64:-32]
        pos += n
    return prev


def py_check(lines: list[bytes], peer: PeerCred) -> int:
    seq = Sequencer()
    check = seq.check
    stored = 0
    for raw in lines:
        record, _reason = check(raw, peer)
        stored += record is not None
    return stored


def c_scan(chunks: list[tuple[bytes, int]], pid: int) -> int:
    plain = 0
    for data, _n in chunks:
        for item in _ingest.scan_lines(data, pid):
            if len(item) > 2:
                plain += item[5]
    return plain


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=1_000, help="records per C call")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    lines = make_lines(args.records).split(b"\n")[:-1]
    chunks = [
        (b"".join(x + b"\n" for x in lines[i : i + args.chunk]), len(lines[i : i + args.chunk]))
        for i in range(0, len(lines), args.chunk)
    ]
    sealer = Sealer(KEY, b"bench")
    pid = os.getpid()
    peer = PeerCred(pid=pid, uid=UID, gid=GID)
    # Same results, or the comparison means nothing.
    assert py_seal(lines, sealer, sealer.genesis, peer) == c_seal(
        chunks, sealer.genesis, (UID, GID, pid)
    )
    assert c_scan(chunks, pid) == len(lines) - 2  # all but the start and exit records
    assert py_check(lines, peer) == len(lines)

    cases: dict[str, Callable[[], object]] = {
        "seal: Python": lambda: py_seal(lines, sealer, sealer.genesis, peer),
        "seal: C": lambda: c_seal(chunks, sealer.genesis, (UID, GID, pid)),
        "check: Python": lambda: py_check(lines, peer),
        "check: C": lambda: c_scan(chunks, pid),
    }
    us: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, run in cases.items():
            t0 = time.perf_counter()
            run()
            us[name].append((time.perf_counter() - t0) / len(lines) * 1e6)

    size = sum(map(len, lines)) / len(lines)
    print(
        f"{len(lines):,} records of {size:.0f} bytes on average, chunks of {args.chunk:,}, "
        f"{args.repeat} repeats, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    print("| loop | Python µs/record | min – max | C µs/record | min – max | Python/C |")
    print("|---|---:|---:|---:|---:|---:|")
    for what, label in [("seal", "hash + MAC (sealing)"), ("check", "parse + checks")]:
        py, c = us[f"{what}: Python"], us[f"{what}: C"]
        print(
            f"| {label} | {statistics.median(py):.2f} | {min(py):.2f} – {max(py):.2f} "
            f"| {statistics.median(c):.2f} | {min(c):.2f} – {max(c):.2f} "
            f"| {statistics.median(py) / statistics.median(c):.1f}x |"
        )


if __name__ == "__main__":
    main()
