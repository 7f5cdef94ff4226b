"""``auditwatch collect`` end to end: READY, systemd notify, SIGTERM, verify, tail."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess

from collector_helpers import AUDITWATCH, CollectProcess, audited, clean_env


def test_collect_end_to_end_with_sigterm_and_verify(tmp_path):
    notify = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify))
    listener.settimeout(30)
    os.environ["NOTIFY_SOCKET"] = str(notify)
    try:
        collector = CollectProcess(tmp_path)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert listener.recv(100).startswith(b"READY=1")
    assert stat.S_IMODE(os.stat(collector.socket).st_mode) == 0o666
    assert stat.S_IMODE(os.stat(collector.store + ".key").st_mode) == 0o600
    code = """
        import sys
        for i in range(500):
            sys.audit("bench.x", i)
        sys.addaudithook(lambda *a: None)
    """
    procs = [audited(collector, code, events="record:bench.*") for _ in range(3)]
    assert all(p.wait(60) == 0 for p in procs)
    assert collector.terminate() == 0, collector.stderr()
    assert listener.recv(100) == b"STOPPING=1"
    assert not os.path.exists(collector.socket)
    assert "stopped" in collector.stderr()

    check = subprocess.run(
        [AUDITWATCH, "verify", collector.store], capture_output=True, text=True, env=clean_env()
    )
    assert check.returncode == 0 and "intact" in check.stdout, check.stdout + check.stderr
    # Default rules ran in the collector: the hook added by each process is an alert.
    found = subprocess.run(
        [AUDITWATCH, "query", collector.store, "--alerts", "--json"],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    alerts = [json.loads(line) for line in found.stdout.splitlines()]
    assert sum(a["rule"] == "Audit hook added" for a in alerts) == 3
    tail = subprocess.run(
        [AUDITWATCH, "tail", "-n", "5", "--event", "bench.*", "--json", collector.store],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    tailed = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(tailed) == 5 and {r["event"] for r in tailed} == {"bench.x"}
    text = subprocess.run(
        [AUDITWATCH, "tail", "-n", "1000", "--alerts", collector.store],
        capture_output=True,
        text=True,
        env=clean_env(),
    )
    assert text.stdout.count("Audit hook added") == 3


def test_collect_refuses_bad_rules_and_a_wrong_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: X\n  condition: no.such.field = 1\n  output: x\n  priority: info\n")
    out = subprocess.run(
        [
            *(AUDITWATCH, "collect", "--socket", str(tmp_path / "s")),
            *("--store", str(tmp_path / "db"), "--rules", str(bad)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert out.returncode != 0 and "bad.yaml:" in out.stderr
