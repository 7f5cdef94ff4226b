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

    python benchmarks/compare_builds.py --base-python /tmp/old/bin/python --startup \
        [--repeat 10] [--runs 20] [--collector-python /tmp/tools/bin/python]

With --startup it times whole start-ups instead (wall clock): `python -c pass` and
the 25 standard-library imports of bench_workloads, each under both builds, not asked
to audit and audited from site (AUDITWATCH_SINK, a file), the four cases of a round
in a shuffled order; each round keeps the median of --runs starts. Both environments
should hold nothing but auditwatch, so that only the build differs. With
--collector-python, the audited processes send to a collector instead
(`auditwatch collect`, run by that interpreter, which has auditwatch's tools
installed), as in a deployment: what the start record and the exit drain wait for
then includes the collector's acknowledgements.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_workloads import PROGRAMS, median_start_ms, unasked_env

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
    ap.add_argument("--startup", action="store_true", help="time start-ups instead")
    ap.add_argument("--runs", type=int, default=20, help="--startup: starts per case per round")
    ap.add_argument(
        "--collector-python", help="--startup: send to a collector run by this interpreter"
    )
    args = ap.parse_args(argv)
    if args.startup:
        startup(args.base_python, args.repeat, args.runs, args.collector_python)
        return
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


def start_collector(python: str, tmp: str) -> subprocess.Popen:
    """`auditwatch collect` on tmp/c.sock, once it listens."""
    code = "import sys; from auditwatch.cli import main; sys.exit(main())"
    argv = [python, "-c", code, "collect", "--socket", f"{tmp}/c.sock"]
    proc = subprocess.Popen(
        [*argv, "--store", f"{tmp}/store.sqlite", "--spool-dir", f"{tmp}/spool"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "READY":
        proc.kill()
        raise SystemExit(f"{python}: the collector did not start")
    return proc


def startup(base_python: str, rounds: int, runs: int, collector_python: str | None) -> None:
    """Wall-clock ms of whole start-ups of both builds, interleaved (module docstring)."""
    env = unasked_env()
    builds = {"base": base_python, "this": sys.executable}
    results: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        collector = start_collector(collector_python, tmp) if collector_python else None
        sink = f"unix:{tmp}/c.sock" if collector else f"file:{tmp}/records.jsonl"
        audited = dict(env, AUDITWATCH_SINK=sink)
        ways = {"not asked": env, "audited": audited}
        for _ in range(rounds):
            cases = [(p, b, w) for p in PROGRAMS for b in builds for w in ways]
            random.shuffle(cases)
            for program, build, way in cases:
                argv = [builds[build], "-c", PROGRAMS[program]]
                ms = median_start_ms(argv, ways[way], runs, cwd="/")
                results.setdefault((program, build, way), []).append(ms)
            if os.path.exists(f"{tmp}/records.jsonl"):
                os.unlink(f"{tmp}/records.jsonl")
        if collector:
            collector.terminate()
            collector.wait(60)
    print(f"base: {base_python}\nthis: {sys.executable}\nsink: {sink.split(':')[0]}")
    print(f"{rounds} rounds of {runs} starts\n")
    print("| start-up | build | not asked (ms) | audited (ms) | audited - not asked |")
    print("|---|---|---:|---:|---:|")
    for program in PROGRAMS:
        for build in builds:
            plain = results[(program, build, "not asked")]
            aud = results[(program, build, "audited")]
            diffs = [a - b for a, b in zip(aud, plain)]
            print(
                f"| {program} | {build} | {statistics.median(plain):.2f} "
                f"({min(plain):.2f}-{max(plain):.2f}) | {statistics.median(aud):.2f} "
                f"({min(aud):.2f}-{max(aud):.2f}) | {statistics.median(diffs):+.2f} "
                f"({min(diffs):+.2f} to {max(diffs):+.2f}) |"
            )


if __name__ == "__main__":
    main()
