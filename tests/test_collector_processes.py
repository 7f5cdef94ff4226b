"""The host collector with real audited processes: load, a killed collector, indicators."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time

import pytest

from auditwatch.store import verify
from collector_helpers import CollectProcess, audited, wait_for


def per_run(store: str) -> dict[str, tuple[int, int, int, int]]:
    """run -> (first seq, last seq, records with a seq, distinct seqs), processes' records."""
    conn = sqlite3.connect(store)
    try:
        rows = conn.execute(
            "SELECT run, min(seq), max(seq), count(*), count(DISTINCT seq) FROM records"
            " WHERE kind NOT IN ('alert', 'collector') GROUP BY run"
        ).fetchall()
    finally:
        conn.close()
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.mark.heavy
def test_fifty_processes_twenty_thousand_events_each(tmp_path):
    collector = CollectProcess(tmp_path, "--no-default-rules")
    code = """
        import sys
        for i in range(20000):
            sys.audit("bench.event", i)
    """
    # 1,000,000 records arrive faster than the collector stores them, so processes
    # finish while their records still wait in their rings. At exit the writer waits
    # flush_timeout + 3 s and then gives up on the rest (a C-side limit, reported to
    # the lead); a long flush_timeout makes this test about the collector.
    procs = [audited(collector, code, options="flush_timeout=120") for _ in range(50)]
    assert all(p.wait(180) == 0 for p in procs)
    assert collector.terminate() == 0, collector.stderr()
    runs = per_run(collector.store)
    assert len(runs) == 50
    conn = sqlite3.connect(collector.store)
    events = conn.execute("SELECT count(*) FROM records WHERE event = 'bench.event'").fetchone()
    conn.close()
    assert events[0] == 1_000_000
    for first, last, n, distinct in runs.values():
        # start + 20,000 events (+ auditwatch.install) + exit, every seq exactly once
        assert first == 1 and n == last == distinct >= 20_002
    assert verify(collector.store).ok


def test_collector_killed_and_restarted_loses_and_duplicates_nothing(tmp_path):
    collector = CollectProcess(tmp_path, "--no-default-rules")
    code = """
        import sys, time
        end = time.monotonic() + 4
        i = 0
        while time.monotonic() < end:
            sys.audit("bench.tick", i)
            i += 1
            if i % 200 == 0:
                time.sleep(0.01)
        print(i)
    """
    proc = audited(collector, code, stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    collector.kill()  # SIGKILL: no chance to flush anything
    time.sleep(1.0)  # the process spools meanwhile
    collector.start()
    out, _ = proc.communicate(timeout=60)
    sent = int(out)
    time.sleep(1.5)  # the writer retries once a second, then replays its spool
    assert collector.terminate() == 0, collector.stderr()
    conn = sqlite3.connect(collector.store)
    seqs = [
        s
        for (s,) in conn.execute("SELECT seq FROM records WHERE event = 'bench.tick' ORDER BY seq")
    ]
    args = sorted(
        json.loads(raw)["args"][0]
        for (raw,) in conn.execute("SELECT raw FROM records WHERE event = 'bench.tick'")
    )
    conn.close()
    assert len(seqs) == len(set(seqs)), "a record was stored twice"
    assert args == list(range(sent)), f"{sent - len(args)} of {sent} records lost"
    ((first, last, n, distinct),) = per_run(collector.store).values()
    assert first == 1 and n == last == distinct
    assert verify(collector.store).ok


def test_indicator_is_stored_before_the_operation_continues(tmp_path):
    collector = CollectProcess(tmp_path, "--no-default-rules")
    # sys.addaudithook is an indicator (flushed by default): once it returns, the
    # record must be in the store. The child then waits for the test to look.
    code = """
        import sys
        sys.addaudithook(lambda *a: None)
        print("added", flush=True)
        sys.stdin.readline()
    """
    proc = audited(
        collector,
        code,
        events="",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline() == "added\n"

    def stored() -> int:
        conn = sqlite3.connect(collector.store)
        try:
            return conn.execute(
                "SELECT count(*) FROM records WHERE event = 'sys.addaudithook'"
            ).fetchone()[0]
        finally:
            conn.close()

    # Checked at once: no waiting for the collector's batch timer.
    assert stored() == 1
    proc.communicate("\n", timeout=30)
    assert collector.terminate() == 0
    assert wait_for(lambda: stored() == 1, timeout=1)
