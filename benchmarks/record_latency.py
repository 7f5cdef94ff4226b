"""How long an ordinary record waits in the process before it is in the sink.

    python benchmarks/record_latency.py [--records 40]

Runs an audited program (this interpreter, records to a file) that raises an event
2 ms after the one before it (the writer thread is awake then, napping between
passes) and then after half a second of quiet (the writer is asleep, and the record
has to wake it), in turn. This process reads the file every 0.1 ms and, for each
record, takes the time it first saw it minus the record's own `ts`. Prints the
median and the maximum for each case. Both clocks are the machine's wall clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench_workloads import unasked_env

PROGRAM = """\
import sys, time
for i in range({n}):
    time.sleep(0.5 if i % 2 else 0.002)
    sys.audit('latency.probe', i)
time.sleep(0.2)
"""


def waits(sink: str, proc: subprocess.Popen) -> dict[int, float]:
    """ms from each probe's ts to the moment this process read it from the sink."""
    seen: dict[int, float] = {}
    pos, rest = 0, b""
    while proc.poll() is None or (os.path.exists(sink) and pos < os.path.getsize(sink)):
        if os.path.exists(sink):
            with open(sink, "rb") as f:
                f.seek(pos)
                data = f.read()
            now = time.time_ns()
            pos += len(data)
            *lines, rest = (rest + data).split(b"\n")
            for line in lines:
                record = json.loads(line)
                if record.get("event") == "latency.probe":
                    seen[record["args"][0]] = (now - record["ts"]) / 1e6
        time.sleep(0.0001)
    return seen


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=40, help="probes, half of them after quiet")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sink = f"{tmp}/records.jsonl"
        env = dict(unasked_env(), AUDITWATCH_SINK=f"file:{sink}")
        code = PROGRAM.format(n=args.records)
        with subprocess.Popen([sys.executable, "-c", code], env=env) as proc:
            seen = waits(sink, proc)
    print(f"{sys.executable}: {args.records} probes\n")
    print("| a record made | median ms | max ms |")
    print("|---|---:|---:|")
    for name, first in (("2 ms after another (writer awake)", 0), ("after 0.5 s of quiet", 1)):
        ms = [seen[i] for i in range(first, args.records, 2) if i in seen]
        if len(ms) < len(range(first, args.records, 2)):
            sys.exit(f"record_latency: {name}: a probe never reached the sink")
        print(f"| {name} | {statistics.median(ms):.2f} | {max(ms):.2f} |")


if __name__ == "__main__":
    main()
