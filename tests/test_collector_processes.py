"""The host collector with real audited processes: load, a killed collector, indicators."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from typing import Any

import pytest

from auditwatch.store import verify
from auditwatch.store.rows import Filters, Row, iter_rows
from collector_helpers import CollectProcess, audited, wait_for


def stored(store: str, **filters: Any) -> list[Row]:
    """The records of ``store`` that pass ``filters`` (see rows.Filters)."""
    conn = sqlite3.connect(store)
    try:
        return list(iter_rows(conn, Filters(**filters)))
    finally:
        conn.close()


def per_run(store: str) -> dict[str, tuple[int, int, int, int]]:
    """run -> (first seq, last seq, records with a seq, distinct seqs), processes' records."""
    seqs: dict[str, list[int]] = {}
    for r in stored(store):
        if r.kind not in ("alert", "collector"):
            seqs.setdefault(r.run, []).append(r.seq)
    return {run: (min(s), max(s), len(s), len(set(s))) for run, s in seqs.items()}


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
    assert len(stored(collector.store, events=["bench.event"])) == 1_000_000
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
    ticks = stored(collector.store, events=["bench.tick"])
    seqs = [r.seq for r in ticks]
    args = sorted(json.loads(r.raw)["args"][0] for r in ticks)
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

    # Checked at once: no waiting for the collector's batch timer.
    assert len(stored(collector.store, events=["sys.addaudithook"])) == 1
    proc.communicate("\n", timeout=30)
    assert collector.terminate() == 0
    assert wait_for(
        lambda: len(stored(collector.store, events=["sys.addaudithook"])) == 1, timeout=1
    )
