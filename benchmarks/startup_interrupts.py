"""Interprocessor interrupts and page faults of an audited `python -c pass`.

    python benchmarks/startup_interrupts.py [--rounds 10] [--runs 50]

In a virtual machine an interrupt sent to another CPU traps to the hypervisor, and
the sender waits for it: waking a thread that sleeps on another CPU, a TLB flush
after a page another thread may have cached changes, the exit tearing down a
process's threads. Each costs tens of microseconds of wall clock there, so their
number says more about an audited start-up than its noisy timings do.

Runs `python -c pass` with this interpreter, not asked to audit and audited (records
to a file in a temporary directory), in interleaved rounds of --runs starts each,
and prints per start-up: the rescheduling (RES), function-call (CAL) and TLB
shootdown (TLB) interrupts of /proc/interrupts, summed over CPUs, and the minor page
faults of the children (getrusage). /proc/interrupts counts the whole machine: run
this on an otherwise idle one. Medians over rounds, min-max in brackets.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile

from bench_workloads import unasked_env

KINDS = ("RES", "CAL", "TLB")


def interrupts() -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    with open("/proc/interrupts") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() in counts:
                counts[name.strip()] = sum(int(w) for w in rest.split() if w.isdigit())
    return counts


def per_start(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    before, faults = interrupts(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    for _ in range(runs):
        subprocess.run(argv, env=env, check=True, cwd="/")
    after = interrupts()
    out = {k: (after[k] - before[k]) / runs for k in KINDS}
    out["faults"] = (resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - faults) / runs
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=50, help="starts per case per round")
    args = ap.parse_args(argv)
    if not os.path.exists("/proc/interrupts"):
        sys.exit("startup_interrupts: needs Linux's /proc/interrupts")
    results: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = unasked_env()
        ways = {"not asked": env, "audited": dict(env, AUDITWATCH_SINK=f"file:{tmp}/r.jsonl")}
        for _ in range(args.rounds):
            for name, e in ways.items():
                results.setdefault(name, []).append(
                    per_start([sys.executable, "-c", "pass"], e, args.runs)
                )
            if os.path.exists(f"{tmp}/r.jsonl"):
                os.unlink(f"{tmp}/r.jsonl")
    print(f"{sys.executable}: {args.rounds} rounds of {args.runs} starts\n")
    print("| `python -c pass`, per start | " + " | ".join(KINDS) + " | minor faults |")
    print("|---|" + "---:|" * (len(KINDS) + 1))
    for name, rounds in results.items():
        cells = []
        for k in (*KINDS, "faults"):
            v = [r[k] for r in rounds]
            cells.append(f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
