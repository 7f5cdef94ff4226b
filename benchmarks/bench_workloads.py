"""Whole workloads under each hook, side by side: python benchmarks/bench_workloads.py

Each workload runs in a fresh process per mode (a hook cannot be removed), rounds
interleaved in a shuffled order so that machine noise hits every mode alike; the
table gives the median over rounds, the spread (min-max) and the ratio to no hook
and to the empty C hook (the floor). Modes:

    none        no audit hook
    nullhook    an empty C hook (the floor)
    pyjson      a Python hook writing JSON lines (what most people write)
    snaketrace  snaketrace 0.3.1 from PyPI, writing its trace to a file (a peer)
    aw-default  auditwatch, default configuration
    aw-all      auditwatch recording every event

Workloads (timed inside the process, after the hook is in place):

    io          2,000 x (write a file, read it back, stat, remove; a listdir every 10)
    subprocess  40 x subprocess.run(['/bin/true'])
    socket      500 loopback TCP connections to an echo thread, 1 KiB each way
    testsuite   more-itertools 10.8.0's own unittest suite (its four slowest,
                compute-only tests left out to keep a round short)

and start-up (wall clock of the whole process, hook installed the way users do):
`python -c pass` and a start-up importing 25 standard-library modules, as plain
python, audited from site start-up, and audited through auditwatch-python.

With --instructions the workloads are counted instead of timed: each (workload,
mode) runs once under valgrind's callgrind, and again with the workload left out,
and the difference is the workload's instructions, per thread. Counts do not move
with machine load, so they resolve the few percent that wall clock cannot here.
Start-ups are counted whole, once per way of running them, and `python -c pass` also
with auditwatch's modules imported one by one and no hook installed (where the
audited start-up's cost lies).

Needs network access once (pip) for snaketrace and the more-itertools sdist, kept
in benchmarks/_build.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from run import (
    BUILD,
    MODE_SETUP,
    build_nullhook,
    callgrind_counts,
    clean_env,
    machine,
    pth_venvs,
    summarize,
)

PEERS = BUILD / "peers"
MORE_ITERTOOLS = "more-itertools==10.8.0"
SUITE_DIR = BUILD / "more_itertools-10.8.0"
SLOW_TESTS = (
    "test_primes",
    "DiscreteFourierTransformTests",
    "RunningMedianTests",
    "PolynomialFromRootsTests.test_large",
)

MODES = {
    **{k: MODE_SETUP[k] for k in ("none", "nullhook", "pyjson")},
    "snaketrace": (
        "import sys; sys.path.insert(0, PEERS)\n"
        "from snaketrace.trace import make_audithook\n"
        "sys.addaudithook(make_audithook(output=open(OUT, 'w')))"
    ),
    "aw-default": MODE_SETUP["aw-default"],
    "aw-all": MODE_SETUP["aw-all"],
}

TIMED = """\
import time
t0 = time.perf_counter()
work()
print(time.perf_counter() - t0)
"""

WORKLOADS = {
    "io": """\
import os, tempfile
d = tempfile.mkdtemp()
def work():
    for i in range(2000):
        p = os.path.join(d, 'f%d.txt' % (i % 50))
        with open(p, 'w') as f:
            f.write('x' * 100)
        with open(p) as f:
            f.read()
        os.stat(p)
        if i % 10 == 0:
            os.listdir(d)
        os.remove(p)
""",
    "subprocess": """\
import subprocess
def work():
    for _ in range(40):
        subprocess.run(['/bin/true'], check=True)
""",
    "socket": """\
import socket, threading
srv = socket.socket()
srv.bind(('127.0.0.1', 0))
srv.listen(64)
def echo():
    while True:
        c, _ = srv.accept()
        with c:
            data = b''
            while len(data) < 1024:
                data += c.recv(1024 - len(data))
            c.sendall(data)
threading.Thread(target=echo, daemon=True).start()
addr = srv.getsockname()
def work():
    for _ in range(500):
        with socket.create_connection(addr) as s:
            s.sendall(b'x' * 1024)
            got = b''
            while len(got) < 1024:
                got += s.recv(1024 - len(got))
""",
    "testsuite": """\
import io, os, sys, unittest
os.chdir(SUITE)
sys.path.insert(0, SUITE)
def flat(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flat(t)
        else:
            yield t
def work():
    found = unittest.defaultTestLoader.discover('tests', top_level_dir='.')
    tests = [t for t in flat(found) if not any(s in t.id() for s in SLOW)]
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(
        unittest.TestSuite(tests))
    if not result.wasSuccessful():
        raise SystemExit('the test suite failed under this mode')
""",
}

STDLIB_IMPORTS = (
    "import argparse, asyncio, base64, csv, dataclasses, datetime, decimal, email.message, "
    "fractions, hashlib, http.client, json, logging, pathlib, pickle, random, shutil, "
    "sqlite3, statistics, subprocess, tarfile, typing, unittest, urllib.request, "
    "xml.etree.ElementTree"
)
PROGRAMS = {"python -c pass": "pass", "25 stdlib imports": STDLIB_IMPORTS}


def ensure_inputs() -> None:
    """snaketrace (a peer) and the more-itertools sdist (its tests), once."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if not (PEERS / "snaketrace").exists():
        subprocess.run([*pip, "install", "--target", str(PEERS), "snaketrace==0.3.1"], check=True)
    if not (SUITE_DIR / "tests").exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [*pip, "download", "--no-deps", "--no-binary", ":all:", MORE_ITERTOOLS, "-d", tmp],
                check=True,
            )
            (sdist,) = Path(tmp).glob("*.tar.gz")
            with tarfile.open(sdist) as tar:
                tar.extractall(BUILD)  # a pinned sdist from PyPI


def program(mode: str, workload: str, out: str, tail: str) -> str:
    return (
        f"OUT = {out!r}\nPEERS = {str(PEERS)!r}\nSUITE = {str(SUITE_DIR)!r}\n"
        f"SLOW = {SLOW_TESTS!r}\n{MODES[mode]}\n{WORKLOADS[workload]}{tail}"
    )


def run_workload(mode: str, workload: str, out: str, env: dict) -> float:
    code = program(mode, workload, out, TIMED)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=BUILD
    )
    if proc.returncode != 0:
        raise SystemExit(f"{workload} under {mode} failed:\n{proc.stderr[-3000:]}")
    return float(proc.stdout.split()[-1])


def bench_workloads(rounds: int, workloads: list[str]) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    env = clean_env()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            cases = [(w, m) for w in workloads for m in MODES]
            random.shuffle(cases)
            for w, m in cases:
                out = os.path.join(tmp, f"{w}-{m}.out")
                results.setdefault((w, m), []).append(run_workload(m, w, out, env))
                if os.path.exists(out):
                    os.unlink(out)
            print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return results


def count_workloads(
    workloads: list[str], modes: list[str]
) -> dict[tuple[str, str], tuple[int, int]]:
    """Instructions of each workload per mode: the run with it minus the run without."""
    env = clean_env()
    results: dict[tuple[str, str], tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in workloads:
            for m in modes:
                out = os.path.join(tmp, f"{w}-{m}.out")
                with_work = callgrind_counts(
                    [sys.executable, "-c", program(m, w, out, "work()\n")], env, BUILD
                )
                without = callgrind_counts(
                    [sys.executable, "-c", program(m, w, out, "")], env, BUILD
                )
                results[(w, m)] = (with_work[0] - without[0], with_work[1] - without[1])
                print(f"  {w} under {m} counted", file=sys.stderr)
    return results


def startup_modes(tmp: str) -> dict[str, tuple[list[str], dict]]:
    """How a start-up runs: plain, audited from site start-up, through the launcher."""
    launcher = Path(sys.executable).parent / "auditwatch-python"
    env = clean_env()
    env.pop("PYTHONPATH", None)
    audited = dict(env, AUDITWATCH_SINK=f"file:{tmp}/records.jsonl")
    return {
        "python": ([sys.executable], env),
        "audited from site": ([sys.executable], audited),
        "auditwatch-python": ([str(launcher)], audited),
    }


# What the audited start-up imports, without auditing: where its cost is.
IMPORT_STEPS = {"import _auditwatch": "import _auditwatch"}


def median_start_ms(
    argv: list[str], env: dict[str, str], runs: int, cwd: str | None = None
) -> float:
    """The median wall-clock ms of `runs` whole runs of argv, one after another."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, cwd=cwd)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def unasked_env() -> dict[str, str]:
    """This environment with no AUDITWATCH_* and no PYTHON* variable: a start-up that
    nothing asks to audit, and that no setting of the caller's changes."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AUDITWATCH_", "PYTHON"))}


def bench_startup(rounds: int, runs: int) -> dict[tuple[str, str], list[float]]:
    """Wall-clock ms of whole processes, the hook installed the way users install it."""
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        modes = startup_modes(tmp)
        for _ in range(rounds):
            cases = [(p, m) for p in PROGRAMS for m in modes]
            random.shuffle(cases)
            for p, m in cases:
                argv, e = modes[m]
                ms = median_start_ms([*argv, "-c", PROGRAMS[p]], e, runs)
                results.setdefault((p, m), []).append(ms)
                if os.path.exists(f"{tmp}/records.jsonl"):
                    os.unlink(f"{tmp}/records.jsonl")
    return results


def count_startup() -> dict[tuple[str, str], tuple[int, int]]:
    """Instructions of whole start-ups per way of running them, and of `python -c pass`
    with auditwatch's modules imported but no hook installed."""
    results: dict[tuple[str, str], tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        modes = startup_modes(tmp)
        for p, code in PROGRAMS.items():
            for m, (argv, env) in modes.items():
                results[(p, m)] = callgrind_counts([*argv, "-c", code], env, BUILD)
                print(f"  {p} {m} counted", file=sys.stderr)
        argv, env = modes["python"]
        for step, code in IMPORT_STEPS.items():
            results[("python -c pass", step)] = callgrind_counts([*argv, "-c", code], env, BUILD)
            print(f"  {step} counted", file=sys.stderr)
        # What the .pth line costs every process of the environment, audited or not.
        for how, venv in pth_venvs().items():
            python = str(venv / "bin" / "python")
            results[("python -c pass", f"empty venv, {how}")] = callgrind_counts(
                [python, "-c", "pass"], env, BUILD
            )
    return results


def startup_count_table(res: dict[tuple[str, str], tuple[int, int]]) -> str:
    rows = [
        "| start-up | how | main thread | vs python | all threads | vs python |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in PROGRAMS:
        base_main, base_all = res[(p, "python")]
        for (q, how), (main, total) in res.items():
            if q == p:
                rows.append(
                    f"| {p} | {how} | {main / 1e6:,.2f}M | {100 * (main / base_main - 1):+.1f} % "
                    f"| {total / 1e6:,.2f}M | {100 * (total / base_all - 1):+.1f} % |"
                )
    return "\n".join(rows)


def workload_table(res: dict[tuple[str, str], list[float]], workloads: list[str]) -> str:
    rows = [
        "| workload | mode | median ms | spread (min-max) | vs no hook | vs empty C hook |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for w in workloads:
        none = statistics.median(res[(w, "none")])
        floor = statistics.median(res[(w, "nullhook")])
        for m in MODES:
            med, lo, hi = summarize(res[(w, m)])
            rows.append(
                f"| {w} | {m} | {med * 1000:.1f} | {lo * 1000:.1f}-{hi * 1000:.1f} "
                f"| {100 * (med / none - 1):+.1f} % | {100 * (med / floor - 1):+.1f} % |"
            )
    return "\n".join(rows)


def count_table(
    res: dict[tuple[str, str], tuple[int, int]], workloads: list[str], modes: list[str]
) -> str:
    rows = [
        "| workload | mode | instructions, main thread | vs no hook "
        "| all threads | vs no hook | vs empty C hook (all) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for w in workloads:
        none_main, none_all = res[(w, "none")]
        floor_all = res[(w, "nullhook")][1]
        for m in modes:
            main, total = res[(w, m)]
            rows.append(
                f"| {w} | {m} | {main / 1e6:,.1f}M | {100 * (main / none_main - 1):+.2f} % "
                f"| {total / 1e6:,.1f}M | {100 * (total / none_all - 1):+.2f} % "
                f"| {100 * (total / floor_all - 1):+.2f} % |"
            )
    return "\n".join(rows)


def startup_table(res: dict[tuple[str, str], list[float]]) -> str:
    rows = [
        "| start-up | how | median ms | spread (min-max) | vs python |",
        "|---|---|---:|---:|---:|",
    ]
    seen = {m for _, m in res}
    modes = [m for m in ("python", "audited from site", "auditwatch-python") if m in seen]
    for p in (p for p in PROGRAMS if (p, "python") in res):
        base = statistics.median(res[(p, "python")])
        for m in modes:
            med, lo, hi = summarize(res[(p, m)])
            rows.append(
                f"| {p} | {m} | {med:.1f} | {lo:.1f}-{hi:.1f} | {100 * (med / base - 1):+.1f} % |"
            )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--startup-runs", type=int, default=10, help="starts per round and mode")
    ap.add_argument(
        "--workload",
        action="append",
        choices=[*WORKLOADS, "startup"],
        help="run only these (repeatable; default: all)",
    )
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="count the workloads' instructions with callgrind instead of timing them",
    )
    ap.add_argument(
        "--mode",
        action="append",
        choices=list(MODES),
        help="with --instructions, count only these modes (repeatable; none and "
        "nullhook always run: the ratios need them)",
    )
    args = ap.parse_args()
    chosen = args.workload or [*WORKLOADS, "startup"]
    build_nullhook()
    ensure_inputs()
    workloads = [w for w in chosen if w in WORKLOADS]
    if args.instructions:
        print(f"Machine: {machine()}; instructions counted by valgrind --tool=callgrind.\n")
        modes = [m for m in MODES if m in {"none", "nullhook", *(args.mode or MODES)}]
        if workloads:
            print(count_table(count_workloads(workloads, modes), workloads, modes))
        if "startup" in chosen:
            print()
            print(startup_count_table(count_startup()))
        return
    print(f"Machine: {machine()}; {args.rounds} rounds, interleaved.\n")
    if workloads:
        print(workload_table(bench_workloads(args.rounds, workloads), workloads))
    if "startup" in chosen:
        print()
        print(startup_table(bench_startup(args.rounds, args.startup_runs)))


if __name__ == "__main__":
    main()
