"""Rule evaluation throughput: records/s through the default ruleset.

    python benchmarks/bench_rules.py [--records 200000] [--repeat 5]

Realistic event records (the mix an import-heavy program with some file, network and
subprocess work gives: open, import, exec, marshal.loads of .pyc files, compile,
listdir, attribute audits, sockets, a few child processes) go through
``AlertEngine.process`` with the default ruleset, and through the same loop with an
empty ruleset as the baseline, and through the default rules with one condition for
all the events of each rule (as before the per-event conditions of Rule.by_event);
the last two rows take the `open` records alone. All run alternately in one
process; the table shows
the median of the repeats with the min-max spread. Time is this process's CPU time
(``time.process_time``): on a shared machine, wall time mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import replace
from typing import Any, Callable

from auditwatch.rules import AlertEngine, Ruleset, load

RUN = "c" * 32
WHERE = {"file": "/srv/app/app/service.py", "line": 42, "func": "handle"}
FROZEN = {"file": "<frozen importlib._bootstrap_external>", "line": 729, "func": "get_code"}
SOCK = {"$": "object", "type": "socket"}

# (weight, event, args, where): weights roughly as a real start-up plus some work gives.
MIX: list[Any] = [
    (22, "open", ["/srv/app/.venv/lib/python3.12/site-packages/pkg/mod.py", "rb", 524288], FROZEN),
    (4, "open", ["/srv/app/data/input.csv", "r", 524288], WHERE),
    (2, "open", ["/srv/app/out/result.json", "w", 524865], WHERE),
    (
        15,
        "import",
        [
            "pkg.mod",
            "/srv/app/.venv/lib/python3.12/site-packages/pkg/mod.py",
            ["/srv/app"],
            ["<meta>"],
            ["<hook>"],
        ],
        FROZEN,
    ),
    (
        12,
        "exec",
        [{"$": "code", "name": "<module>", "file": "/x/mod.py", "line": 1, "sha256": "ab" * 32}],
        FROZEN,
    ),
    (
        10,
        "marshal.loads",
        [{"$": "bytes", "len": 4096, "b64": "4wAAAA" * 40, "trunc": True}],
        FROZEN,
    ),
    (
        4,
        "compile",
        [{"$": "bytes", "len": 30, "text": "def __init__(self, a): self.a = a"}, "<string>"],
        {"file": "/usr/lib/python3.12/dataclasses.py", "line": 1, "func": "_create_fn"},
    ),
    (8, "os.listdir", ["/srv/app/.venv/lib/python3.12/site-packages"], FROZEN),
    (6, "os.scandir", ["/srv/app"], WHERE),
    (
        5,
        "object.__getattr__",
        [{"$": "object", "type": "traceback"}, "tb_frame"],
        {"file": "/usr/lib/python3.12/traceback.py", "line": 1, "func": "walk_tb"},
    ),
    (3, "socket.getaddrinfo", ["api.example.com", 443, 0, 1, 0], WHERE),
    (3, "socket.connect", [SOCK, ["93.184.216.34", 443]], WHERE),
    (2, "sys._getframe", [{"$": "object", "type": "frame"}], WHERE),
    (1, "subprocess.Popen", ["/usr/bin/git", ["git", "rev-parse", "HEAD"], None, None], WHERE),
    (1, "os.remove", ["/tmp/tmpab12/x", None], WHERE),
    (1, "os.rename", ["/srv/app/out/r.tmp", "/srv/app/out/r.json", None, None], WHERE),
    (1, "pickle.find_class", ["collections", "OrderedDict"], WHERE),
]


def make_records(n: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    weights = [m[0] for m in MIX]
    picks = rng.choices(MIX, weights=weights, k=n)
    start = {
        "v": 1,
        "kind": "start",
        "run": RUN,
        "parent_run": None,
        "seq": 1,
        "pid": 777,
        "ts": 1_700_000_000_000_000_000,
        "installed": "site",
        "proc": {
            "exe": "/usr/bin/python3.12",
            "argv": ["python3", "-m", "app"],
            "cwd": "/srv/app",
            "uid": 1000,
            "gid": 1000,
            "user": "app",
        },
    }
    records = [start]
    for i, (_, event, args, where) in enumerate(picks, 2):
        records.append(
            {
                "v": 1,
                "kind": "event",
                "run": RUN,
                "parent_run": None,
                "seq": i,
                "pid": 777,
                "tid": 777,
                "interp": 0,
                "ts": start["ts"] + i * 1000,
                "installed": "site",
                "event": event,
                "args": args,
                "where": where,
                "action": "record",
            }
        )
    return records


def measure(ruleset: Ruleset, records: list[dict[str, Any]]) -> tuple[float, int]:
    alerts: list[dict] = []
    engine = AlertEngine(ruleset, alerts.append)
    process: Callable[[dict], None] = engine.process
    t0 = time.process_time()
    for rec in records:
        process(rec)
    elapsed = time.process_time() - t0
    return len(records) / elapsed, len(alerts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    opts = parser.parse_args()
    records = make_records(opts.records)
    rules = load()
    empty = Ruleset()
    # The same rules with one condition for all their events, as before a rule on
    # several events was specialised per event (Rule.by_event).
    general = Ruleset([replace(r, by_event={}) for r in rules.rules])
    # `open` alone: the event most rules are filed under, and the commonest one.
    opens = [records[0]] + [r for r in records[1:] if r["event"] == "open"]
    cases = {
        "no rules (baseline)": (empty, records),
        "default ruleset": (rules, records),
        "default ruleset, one condition for all events": (general, records),
        "`open` records only: default ruleset": (rules, opens),
        "`open` records only: one condition for all events": (general, opens),
    }
    results: dict[str, list[float]] = {name: [] for name in cases}
    fired: dict[str, int] = {}
    for _ in range(opts.repeat):
        for name, (ruleset, recs) in cases.items():
            rate, fired[name] = measure(ruleset, recs)
            results[name].append(rate)
    # The per-event conditions must not change what fires.
    names = list(cases)
    assert fired[names[1]] == fired[names[2]] and fired[names[3]] == fired[names[4]], fired
    alerts = fired["default ruleset"]
    print(
        f"{len(records):,} records, {len(rules.enabled())} enabled rules, "
        f"{alerts} alerts per pass, median of {opts.repeat} runs\n"
    )
    print("| loop | records/s (median) | min-max | ns/record |")
    print("|---|---:|---:|---:|")
    for name, rates in results.items():
        med = statistics.median(rates)
        print(f"| {name} | {med:,.0f} | {min(rates):,.0f}-{max(rates):,.0f} | {1e9 / med:,.0f} |")
    base = statistics.median(results["no rules (baseline)"])
    full = statistics.median(results["default ruleset"])
    print(
        f"\nper record: baseline {1e9 / base:,.0f} ns, default ruleset {1e9 / full:,.0f} ns "
        f"(rules add {1e9 / full - 1e9 / base:,.0f} ns)"
    )


if __name__ == "__main__":
    main()
