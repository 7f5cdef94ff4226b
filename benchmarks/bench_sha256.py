"""The hook's SHA-256 against hashlib's, side by side, in throughput.

    python benchmarks/bench_sha256.py [--repeat 7]

The hook hashes every file read as code (on its hasher thread), the text of every
compiled string and the bytecode of every executed code object (on the program's
thread), with its own SHA-256: calling hashlib there would run Python code. It uses
the CPU's SHA extensions where there are any, else portable rounds. The sizes are a
code object's bytecode, a module file and a large file. Cases alternate within each
repeat; the table gives MB/s, median and min-max over the repeats, and the ratio to
hashlib (OpenSSL's libcrypto). valgrind does not run the SHA extensions, so
callgrind's counts of the hook show the portable rounds only: this is the measure.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from typing import Callable

import _auditwatch

SIZES = {"1 KiB": 1 << 10, "64 KiB": 64 << 10, "8 MiB": 8 << 20}


def rate(fn: Callable[[bytes], object], data: bytes) -> float:
    """MB/s of fn over data, repeated for at least 0.2 s."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn(data)
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed > 0.2:
            return n * len(data) / elapsed / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    extensions = _auditwatch._sha256(b"")[1]
    cases: dict[str, Callable[[bytes], object]] = {
        "hashlib": lambda d: hashlib.sha256(d).digest(),
        "hook, portable rounds": lambda d: _auditwatch._sha256(d, True),
    }
    if extensions:
        cases["hook, SHA extensions"] = lambda d: _auditwatch._sha256(d, False)
    print(f"SHA extensions on this CPU: {'yes' if extensions else 'no'}\n")
    print("| size | implementation | MB/s (median) | min-max | vs hashlib |")
    print("|---|---|---:|---:|---:|")
    for label, size in SIZES.items():
        data = os.urandom(size)
        got: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, fn in cases.items():
                got[name].append(rate(fn, data))
        base = statistics.median(got["hashlib"])
        for name, rates in got.items():
            med = statistics.median(rates)
            print(
                f"| {label} | {name} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} "
                f"| {med / base:.2f}x |"
            )


if __name__ == "__main__":
    main()
