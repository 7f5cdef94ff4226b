"""Collector throughput of two builds side by side: another installation (an older
commit in its own virtual environment) against this one, alternating in one run.

    python benchmarks/compare_builds.py --base-python /tmp/old/bin/python \
        [--base-benchmarks /tmp/old-checkout/benchmarks] [--kind store] [--senders 16]
        [--per 10000] [--repeat 3]

Each round runs ``bench_collector.run_once(kind, senders, per)`` once in each
environment, alternating, so both see the same machine state. Without
--base-benchmarks both run this checkout's copy of the benchmark (one method for
both, as long as the older build has the API it calls); with it, the older build
runs its own copy. Prints a markdown table: records/s, median of the rounds and
min-max.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

_CODE = (
    "import sys, tempfile; sys.path.insert(0, {bench!r}); import bench_collector as b; "
    "print(b.run_once({kind!r}, {senders}, {per}, tempfile.mkdtemp() + '/x'))"
)


def run(python: str, bench: str, kind: str, senders: int, per: int) -> float:
    code = _CODE.format(bench=bench, kind=kind, senders=senders, per=per)
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        raise SystemExit(f"{python}: the benchmark failed:\n{out.stderr}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-python", required=True, help="the other build's interpreter")
    ap.add_argument(
        "--base-benchmarks", help="its benchmarks/ directory (default: this checkout's)"
    )
    ap.add_argument("--kind", default="store", help="a bench_collector configuration")
    ap.add_argument("--senders", type=int, default=16)
    ap.add_argument("--per", type=int, default=10_000, help="records per sender")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    base_bench = args.base_benchmarks or here
    builds = {"base": (args.base_python, base_bench), "this": (sys.executable, here)}
    results: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(args.repeat):
        for name, (python, bench) in builds.items():
            results[name].append(run(python, bench, args.kind, args.senders, args.per))
    print(
        f"`{args.kind}`, {args.senders} senders x {args.per:,} records, {args.repeat} rounds, "
        f"base benchmark: {base_bench}\n"
    )
    print("| build | records/s (median) | min – max |")
    print("|---|---:|---:|")
    for name, xs in results.items():
        label = f"{name} ({builds[name][0]})"
        print(f"| {label} | {statistics.median(xs):,.0f} | {min(xs):,.0f} – {max(xs):,.0f} |")


if __name__ == "__main__":
    main()
