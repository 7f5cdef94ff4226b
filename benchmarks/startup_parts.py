"""Where an audited `python -c pass` spends its extra wall clock, part by part.

    python benchmarks/startup_parts.py [--rounds 12] [--runs 20]

Runs `python -c pass` with this interpreter (an environment with auditwatch
installed), not asked to audit, and five ways that each add one part: importing the
extension alone (`-c "import _auditwatch"`, not asked); audited with every event
ignored and `sigterm=0`, no SIGTERM handler (the bootstrap, the writer thread, the
start and exit records); the same with the handler; audited with the default events
and `sigterm=0`; audited with the defaults. The six cases of a round run in a
shuffled order, each round keeps the median of --runs starts, and the table gives
each case's median over rounds and its difference from "not asked" (median and
min-max of the per-round differences). Records go to a file in a temporary
directory.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile

from bench_workloads import median_start_ms, unasked_env


def cases(tmp: str) -> dict[str, tuple[dict[str, str], str]]:
    env = unasked_env()
    sink = dict(env, AUDITWATCH_SINK=f"file:{tmp}/records.jsonl")
    return {
        "not asked": (env, "pass"),
        "`import _auditwatch` only, not asked": (env, "import _auditwatch"),
        "audited, every event ignored, `sigterm=0`": (
            dict(sink, AUDITWATCH_EVENTS="ignore:*", AUDITWATCH_OPTIONS="sigterm=0"),
            "pass",
        ),
        "audited, every event ignored": (dict(sink, AUDITWATCH_EVENTS="ignore:*"), "pass"),
        "audited, `sigterm=0`": (dict(sink, AUDITWATCH_OPTIONS="sigterm=0"), "pass"),
        "audited (default)": (sink, "pass"),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--runs", type=int, default=20, help="starts per case per round")
    args = ap.parse_args(argv)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ways = cases(tmp)
        for _ in range(args.rounds):
            order = list(ways)
            random.shuffle(order)
            for name in order:
                env, code = ways[name]
                ms = median_start_ms([sys.executable, "-c", code], env, args.runs, cwd="/")
                results.setdefault(name, []).append(ms)
            if os.path.exists(f"{tmp}/records.jsonl"):
                os.unlink(f"{tmp}/records.jsonl")
    base = results["not asked"]
    print(f"{sys.executable}: {args.rounds} rounds of {args.runs} starts\n")
    print("| `python -c pass` | median ms | vs not asked (min-max) |")
    print("|---|---:|---:|")
    for name in ways:
        xs = results[name]
        diffs = [x - b for x, b in zip(xs, base)]
        print(
            f"| {name} | {statistics.median(xs):.2f} | {statistics.median(diffs):+.2f} "
            f"({min(diffs):+.2f} to {max(diffs):+.2f}) |"
        )


if __name__ == "__main__":
    main()
