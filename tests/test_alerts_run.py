"""Alerts in ``auditwatch run``: live on stderr, in the store, in query, in the summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from auditwatch.store import verify

REPO = Path(__file__).resolve().parent.parent
AUDITWATCH = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("AUDITWATCH_SINK", "AUDITWATCH_EVENTS", "AUDITWATCH_OPTIONS"):
        env.pop(key, None)
    env["XDG_DATA_HOME"] = str(tmp_path / "data")  # where run keeps its keys
    return env


def test_alerts_of_the_bundled_example_everywhere(tmp_path):
    example = tmp_path / "examples"
    shutil.copytree(REPO / "examples", example)
    out = tmp_path / "out"
    env = clean_env(tmp_path)
    proc = subprocess.run(
        [AUDITWATCH, "run", "-o", str(out), "--", sys.executable, str(example / "suspicious.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    rundir = (out / "latest").resolve()
    wanted = "Code compiled after a network connection"
    # Live: one line per alert, before the summary.
    live = proc.stderr.split("auditwatch summary")[0]
    assert any(wanted in line and "WARNING" in line for line in live.splitlines())
    # In the summary.
    summary = json.loads((rundir / "summary.json").read_text())
    assert summary["alerts"]["by_rule"][wanted] == 1
    # The whole default ruleset on the example: these alerts and no others. The
    # example starts a child with sys.executable; where the test environment lives
    # in a temporary directory, that start is itself worth an alert.
    # One alert per open of the credentials file: pathlib opens it once on 3.10+,
    # through io.open and then os.open (its opener) on 3.8 and 3.9.
    with open(rundir / "records.jsonl") as f:
        opens = [
            r
            for r in map(json.loads, f)
            if r.get("event") == "open" and str(r["args"][0]).endswith(".aws/credentials")
        ]
    assert opens
    expected = {
        "Cloud credentials read": len(opens),
        "Code compiled from a string": 2,  # from the socket and from base64
        wanted: 1,
    }
    if str(Path(sys.executable).parent).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
        expected["Program run from a temporary directory"] = 1
    assert summary["alerts"]["by_rule"] == expected
    assert summary["alerts"]["total"] >= 1 and summary["store"] == "store.sqlite"
    assert "alerts (" in proc.stderr
    # In the store, found by query --alerts.
    found = subprocess.run(
        [AUDITWATCH, "query", str(rundir), "--alerts", "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    alerts = [json.loads(line) for line in found.stdout.splitlines()]
    hits = [a for a in alerts if a["rule"] == wanted]
    assert len(hits) == 1 and hits[0]["kind"] == "alert" and hits[0]["event"] == "compile"
    assert len([a for a in alerts if not a.get("suppressed")]) == summary["alerts"]["total"]
    # The key is not in the run directory, and verify finds it by the store's id.
    assert not list(rundir.glob("*.key"))
    assert list((tmp_path / "data" / "auditwatch" / "keys").glob("*.key"))
    os.environ["XDG_DATA_HOME"] = env["XDG_DATA_HOME"]
    try:
        assert verify(str(rundir)).ok
    finally:
        del os.environ["XDG_DATA_HOME"]
    # records.jsonl still holds exactly what the processes sent.
    lines = (rundir / "records.jsonl").read_text().splitlines()
    assert all(json.loads(line)["kind"] not in ("alert", "collector") for line in lines)


def test_no_default_rules_and_own_rule_file(tmp_path):
    rules = tmp_path / "mine.yaml"
    rules.write_text(
        "- rule: Bench marker\n"
        "  desc: test\n"
        "  condition: event = 'bench.marker'\n"
        "  output: marker seen\n"
        "  priority: error\n"
    )
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(AUDITWATCH, "run", "-o", str(out), "--no-default-rules", "--rules", str(rules)),
            *(
                "--",
                sys.executable,
                "-c",
                "import sys; [sys.audit('bench.marker') for _ in range(50)]",
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    shown = [
        line for line in proc.stderr.splitlines() if "Bench marker" in line and "ERROR" in line
    ]
    assert len(shown) == 5  # the terminal's own limit; the rest are counted
    assert "more alert(s) of rule 'Bench marker' not shown" in proc.stderr
    summary = json.loads(((out / "latest").resolve() / "summary.json").read_text())
    assert summary["alerts"]["by_rule"] == {"Bench marker": 20}  # the engine's burst
    assert summary["alerts"]["suppressed"] == 30
