"""``auditwatch run``: any command, every Python process in it, one run directory."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditwatch.records import text

REPO = Path(__file__).resolve().parent.parent
AUDITWATCH = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"


def aw_run(tmp_path: Path, *command: str, options: tuple[str, ...] = (), timeout: float = 300):
    out = tmp_path / "out"
    env = dict(os.environ)
    for key in ("AUDITWATCH_SINK", "AUDITWATCH_EVENTS", "AUDITWATCH_OPTIONS"):
        env.pop(key, None)
    proc = subprocess.run(
        [AUDITWATCH, "run", "-o", str(out), "--json", *options, "--", *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    rundir = (out / "latest").resolve()
    records = []
    if (rundir / "records.jsonl").exists():
        with open(rundir / "records.jsonl") as f:
            records = [json.loads(line) for line in f]
    summary = None
    if (rundir / "summary.json").exists():
        summary = json.loads((rundir / "summary.json").read_text())
        # --json prints the same summary after the command's own output.
        assert proc.stdout.endswith(json.dumps(summary, indent=2) + "\n")
    return proc, summary, records, rundir


def test_bundled_example(tmp_path):
    example = tmp_path / "examples"
    shutil.copytree(REPO / "examples", example)
    proc, summary, records, rundir = aw_run(
        tmp_path, sys.executable, str(example / "suspicious.py")
    )
    assert proc.returncode == 0, proc.stderr
    assert len(summary["processes"]) == 2
    root, child = summary["processes"]
    assert child["parent_run"] == root["run"] and root["parent_run"] is None
    assert all(p["exit"] == {"how": "exit", "code": 0} for p in summary["processes"])
    assert summary["files_written"] == [str(example / "data" / "loot.txt")]
    assert [s["event"] for s in summary["spawned"]] == ["subprocess.Popen"]
    assert any(peer.startswith("127.0.0.1:") for peer in summary["network"]["connected"])
    assert summary["missing_exit"] == [] and summary["dropped"] == 0 and summary["rejected"] == {}
    opened = [text(r["args"][0]) for r in records if r.get("event") == "open"]
    assert str(example / "data" / ".aws" / "credentials") in opened
    compiled = [text(r["args"][0]) for r in records if r.get("event") == "compile"]
    assert "print('hello from the network')" in compiled
    assert "print('decoded and run')" in compiled
    assert (rundir / "summary.json").exists() and (rundir / "command.json").exists()
    # Every piece of code that ran, and where it came from.
    code = summary["code"]
    assert code["provenance"] == "codes/provenance.json"
    assert code["executed_by_origin"]["file"] > 10 and code["executed_by_origin"]["string"] >= 2
    listing = subprocess.run(
        [AUDITWATCH, "code", str(rundir)], capture_output=True, text=True, check=True
    ).stdout
    assert str(example / "suspicious.py") in listing
    strings = subprocess.run(
        [AUDITWATCH, "code", str(rundir), "--origin", "string"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert strings[0].split() == ["ORIGIN", "CODE", "FROM", "SHA256", "RUN"]
    assert len(strings) > 1 and all(line.startswith("string ") for line in strings[1:])
    downloaded = b"print('hello from the network')"
    digest = hashlib.sha256(downloaded).hexdigest()
    shown = subprocess.run(
        [AUDITWATCH, "code", str(rundir), "--text", digest[:10]],
        capture_output=True,
        check=True,
    ).stdout
    assert shown == downloaded
    missing = subprocess.run(
        [AUDITWATCH, "code", str(rundir), "--text", "ffff0000"], capture_output=True, text=True
    )
    assert missing.returncode == 1 and "no stored text" in missing.stderr


def test_exit_code_passes_through_and_terminal_summary(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [AUDITWATCH, "run", "-o", str(out), "--", sys.executable, "-c", "import sys; sys.exit(3)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert "auditwatch" in proc.stderr and "1 process(es)" in proc.stderr


def test_signal_exit_is_reported_like_a_shell(tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    proc, summary, _, _ = aw_run(tmp_path, sys.executable, "-c", code)
    assert proc.returncode == 128 + 9
    assert len(summary["missing_exit"]) == 1


def test_command_not_found(tmp_path):
    proc, _, _, _ = aw_run(tmp_path, "no-such-command-anywhere")
    assert proc.returncode == 127
    assert "command not found: no-such-command-anywhere" in proc.stderr


def test_shell_script_that_starts_python(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\n{sys.executable} -c 'import sys; sys.audit(\"from.script\")'\n")
    script.chmod(0o755)
    proc, summary, records, _ = aw_run(tmp_path, str(script))
    assert proc.returncode == 0
    assert len(summary["processes"]) == 1
    assert any(r.get("event") == "from.script" for r in records)


def test_include_exclude_only(tmp_path):
    code = "import sys, time; id(1); time.sleep(0); open('/dev/null').close(); sys.audit('x.y')"
    _, _, records, _ = aw_run(
        tmp_path,
        sys.executable,
        "-c",
        code,
        options=("--include", "builtins.id", "--exclude", "open"),
    )
    names = {r.get("event") for r in records}
    assert "builtins.id" in names or sys.version_info < (3, 11)  # raised since 3.11
    assert "open" not in names and "x.y" in names and "time.sleep" not in names
    _, _, only, _ = aw_run(tmp_path, sys.executable, "-c", code, options=("--only", "x.*"))
    # auditwatch.install is the site bootstrap's probe; with the launcher there is none.
    assert {r.get("event") for r in only if r["kind"] == "event"} - {"auditwatch.install"} == {
        "x.y"
    }


def test_nothing_audited_is_said_plainly(tmp_path):
    proc = subprocess.run(
        [AUDITWATCH, "run", "-o", str(tmp_path / "o"), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0
    assert "No records arrived" in proc.stderr


def test_cpython_test_audit_passes_under_auditwatch(tmp_path):
    # Auditing must not change the behaviour of the program it watches: CPython's own
    # audit tests (which run their checks in child interpreters) pass under it.
    proc, summary, records, _ = aw_run(tmp_path, sys.executable, "-m", "test", "test_audit")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(summary["processes"]) > 5  # test_audit runs each check in a child
    assert summary["rejected"] == {} and summary["dropped"] == 0
    assert any(r.get("event") == "sys.addaudithook" for r in records)


@pytest.mark.parametrize("garbage", [b"not json\n", b"[1,2]\n", b'{"v":2}\n', b"\xff\xfe\n"])
def test_collector_reports_garbage_and_keeps_going(tmp_path, garbage):
    import socket

    from auditwatch.collector.server import Collector

    accepted, rejected = [], []

    class Sink:
        def accept(self, raw, record, peer):
            accepted.append(record)

    sock_path = str(tmp_path / "c.sock")
    c = Collector(sock_path, [Sink()], lambda reason, raw, peer: rejected.append(reason))
    c.start()
    good = json.dumps({"v": 1, "seq": 1, "run": "r", "pid": os.getpid(), "kind": "heartbeat"})
    other_pid = json.dumps({"v": 1, "seq": 2, "run": "r", "pid": 1, "kind": "heartbeat"})
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(garbage + good.encode() + b"\n" + other_pid.encode() + b"\n" + b'{"trunc')
    c.stop(grace=5)
    assert [r["seq"] for r in accepted] == [1]
    assert len(rejected) == 3
    assert "claims pid 1" in rejected[1] and "incomplete line" in rejected[2]
