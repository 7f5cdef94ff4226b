"""PEP 551 policies: each refuses what it should, records the attempt first, and
leaves everything else working."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from auditwatch.commands.install import policy_events
from helpers import arg_text, run_audited, run_launched

HOOKS = ",".join(policy_events(True, []))


def denied(a, event):
    return [r for r in a.events(event) if r["action"] == "deny"]


def test_hooks_policy_refuses_audit_hooks_after_start(tmp_path):
    code = """\
        import sys
        seen = []
        sys.addaudithook(lambda ev, args: seen.append(ev))  # refused: returns None
        sys.audit('after.the.attempt')
        print(seen, open(__file__ if '__file__' in dir() else '/dev/null').read(0) == '')
    """
    a = run_audited(tmp_path, code, events=HOOKS)
    assert a.proc.stdout == "[] True\n"
    (rec,) = denied(a, "sys.addaudithook")
    assert rec["rule"] == "deny:sys.addaudithook"
    later = a.events("after.the.attempt")
    assert later and later[0]["seq"] > rec["seq"]  # recorded first, then refused


def test_hooks_policy_refuses_open_code_hooks(tmp_path):
    code = """\
        import ctypes
        HOOK = ctypes.CFUNCTYPE(ctypes.py_object, ctypes.py_object, ctypes.c_void_p)
        f = ctypes.pythonapi.PyFile_SetOpenCodeHook
        f.argtypes = [HOOK, ctypes.c_void_p]
        try:
            f(HOOK(lambda path, data: None), None)
        except PermissionError as e:
            print('refused', e)
        import json  # imports still work
    """
    a = run_audited(tmp_path, code, events=HOOKS)
    assert a.proc.stdout.startswith("refused auditwatch: 'setopencodehook' denied")
    assert len(denied(a, "setopencodehook")) == 1


@pytest.mark.parametrize(
    ("mode", "args", "stdin", "event"),
    [
        ("command", ["-c", "print(1)"], None, "cpython.run_command"),
        ("module", ["-m", "json.tool"], "{}", "cpython.run_module"),
        ("stdin", ["-"], "print(1)\n", "cpython.run_stdin"),
    ],
)
def test_start_up_modes(tmp_path, mode, args, stdin, event):
    events = ",".join(policy_events(False, [mode]))
    a = run_launched(tmp_path, *args, input=stdin, events=events, check=False)
    assert a.proc.returncode == 1 and a.proc.stdout == ""
    assert "PermissionError" in a.proc.stderr
    (rec,) = denied(a, event)
    assert rec["installed"] == "pre-init"
    # everything else still works: a script runs under the same policy
    script = tmp_path / "ok.py"
    script.write_text("print('script ok')\n")
    other = tmp_path / "other"
    other.mkdir()
    b = run_launched(other, str(script), events=events)
    assert b.proc.stdout == "script ok\n" and denied(b, event) == []


def test_interactive_mode_is_told_from_a_piped_script(tmp_path):
    events = ",".join(policy_events(False, ["interactive"]))
    a = run_launched(tmp_path, "-", input="print('piped ok')\n", events=events)
    assert a.proc.stdout == "piped ok\n"  # stdin is not a terminal: not interactive


# -- verified code ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    base = tmp_path_factory.mktemp("manifest")
    app = base / "app"
    app.mkdir()
    (app / "appmod.py").write_text("VALUE = 'verified'\n")
    (app / "main.py").write_text("import appmod\nprint(appmod.VALUE)\n")
    out = base / "manifest.json"
    aw = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITWATCH_")}
    subprocess.run(
        [aw, "manifest", "build", "--include", str(app), "-o", str(out)],
        check=True,
        env=env,
        capture_output=True,
    )
    return out, app


def test_manifest_lists_environment_and_includes(manifest):
    out, app = manifest
    data = json.loads(out.read_text())
    paths = {f["path"] for f in data["files"]}
    assert str(app / "appmod.py") in paths
    assert any(p.endswith("/auditwatch.pth") for p in paths)
    assert any(p.endswith("/os.py") for p in paths)


def test_manifest_allows_listed_code(tmp_path, manifest):
    out, app = manifest
    a = run_launched(
        tmp_path, "-B", str(app / "main.py"), AUDITWATCH_MANIFEST=str(out), PYTHONPATH=str(app)
    )
    assert a.proc.stdout == "verified\n"
    assert [r for r in a.records if r.get("action") == "deny"] == []


def test_manifest_refuses_a_modified_module(tmp_path, manifest):
    out, app = manifest
    work = tmp_path / "app"
    shutil.copytree(app, work)
    modified = b"VALUE = 'tampered'\n"
    (work / "appmod.py").write_bytes(modified)
    digest = hashlib.sha256(modified).hexdigest()
    code = "import appmod"
    a = run_launched(
        tmp_path,
        "-B",
        "-c",
        code,
        AUDITWATCH_MANIFEST=str(out),
        PYTHONPATH=str(work),
        check=False,
    )
    assert a.proc.returncode == 1
    assert str(work / "appmod.py") in a.proc.stderr and digest in a.proc.stderr
    (rec,) = denied(a, "auditwatch.open_code")
    assert arg_text(rec["args"][0]) == str(work / "appmod.py") and rec["args"][2] == digest
    assert rec["rule"] == f"manifest {out}"


def test_manifest_refuses_an_unlisted_main_script(tmp_path, manifest):
    out, _app = manifest
    script = tmp_path / "unlisted.py"
    script.write_text("print('should not run')\n")
    a = run_launched(tmp_path, str(script), AUDITWATCH_MANIFEST=str(out), check=False)
    assert a.proc.returncode == 1 and a.proc.stdout == ""
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    assert digest in a.proc.stderr and str(script) in a.proc.stderr
    assert len(denied(a, "cpython.run_file")) == 1


def test_manifest_that_cannot_be_read_stops_the_launcher(tmp_path):
    missing = Path(tmp_path / "nope.json")
    a = run_launched(tmp_path, "-c", "print(1)", AUDITWATCH_MANIFEST=str(missing), check=False)
    assert a.proc.returncode == 70 and a.proc.stdout == ""
    assert "manifest" in a.proc.stderr
