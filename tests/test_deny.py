"""Deny rules decided in the hook: recorded first, then refused, wherever the code runs."""

from __future__ import annotations

import sys
import textwrap

import pytest

from auditwatch.rules import load
from auditwatch.rules.native import encode_native
from helpers import run_audited

RULES = textwrap.dedent(
    """\
    - rule: No shadow
      desc: reading the password hashes is never needed here
      condition: event = open and open.file startswith "/etc/shadow"
      output: shadow read %open.file
      priority: critical
      action: deny
    - rule: No private networks
      desc: this job talks to loopback only
      condition: event = socket.connect and args[1] cidr "10.0.0.0/8"
      output: connect %args[1]
      priority: warning
      action: deny
    - rule: Watch tmp scripts
      desc: would refuse, only watched for now
      condition: event = open and open.file glob "/tmp/*.sh"
      output: tmp script %open.file
      priority: notice
      action: deny
      mode: monitor
    """
)


@pytest.fixture(scope="module")
def deny_spec(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("rules") / "deny.yaml"
    path.write_text(RULES)
    ruleset = load([path], default=False)
    return encode_native(ruleset.native_rules())


def attempt(code: str) -> str:
    return textwrap.dedent(
        f"""\
        def attempt():
            try:
        {textwrap.indent(textwrap.dedent(code), "        ")}
            except PermissionError as e:
                return 'denied: ' + str(e)
            except OSError as e:
                return 'allowed (' + type(e).__name__ + ')'
            return 'allowed'
        """
    )


OPEN_SHADOW = "open('/etc/shadow').close()"


def test_native_spec_is_what_the_rules_say(deny_spec):
    lines = deny_spec.split("\n")
    assert lines[0].split("\t") == ["No shadow", "enforce", "open", "0:prefix:/etc/shadow"]
    assert lines[1].split("\t")[3] == "1:cidr:10.0.0.0/8"
    assert lines[2].split("\t")[1] == "monitor"


def test_denied_in_main_interpreter_after_the_record(tmp_path, deny_spec):
    code = attempt(OPEN_SHADOW) + "print(attempt())\nopen('/etc/hostname').close()\n"
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    assert a.proc.stdout.strip() == "denied: auditwatch: 'open' denied by rule 'No shadow'"
    rec = next(r for r in a.events("open") if r["args"][0] == "/etc/shadow")
    assert rec["action"] == "deny" and rec["rule"] == "No shadow"
    assert any(
        r["args"][0] == "/etc/hostname" and r["action"] == "record" for r in a.events("open")
    )


@pytest.mark.parametrize(
    "path",
    ["/etc//shadow", "/etc/./shadow", "/tmp/../etc/shadow", "../../../../../../etc/shadow"],
)
def test_path_spellings_do_not_slip_through(tmp_path, deny_spec, path):
    code = attempt(f"open({path!r}).close()") + "print(attempt())\n"
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    assert a.proc.stdout.startswith("denied:")


def test_hostile_str_subclass_is_matched_on_its_real_value(tmp_path, deny_spec):
    code = (
        textwrap.dedent("""\
        class S(str):
            def startswith(self, *a): return False
            def __eq__(self, o): return False
            def __hash__(self): return 0
        """)
        + attempt("open(S('/etc/shadow')).close()")
        + "print(attempt())\n"
    )
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    assert a.proc.stdout.startswith("denied:")


def test_cidr_rule_on_socket_addresses(tmp_path, deny_spec):
    code = (
        "import socket\n"
        "s = socket.socket(); s.settimeout(0.1)\n"
        + attempt("s.connect(('10.1.2.3', 80))")
        + "print(attempt())\n"
        + attempt("s.connect(('127.0.0.1', 9))").replace("def attempt", "def attempt2")
        + "print(attempt2())\n"
    )
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    first, second = a.proc.stdout.split("\n")[:2]
    assert first.startswith("denied:") and second.startswith("allowed")


def test_monitor_mode_records_without_refusing(tmp_path, deny_spec):
    code = attempt("open('/tmp/auditwatch-test-none.sh').close()") + "print(attempt())\n"
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    assert a.proc.stdout.startswith("allowed")
    rec = next(r for r in a.events("open") if r["args"][0].endswith(".sh"))
    assert rec["action"] == "monitor" and rec["rule"] == "Watch tmp scripts"


def test_denied_in_threads_subinterpreters_and_children(tmp_path, deny_spec):
    sub = "_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters"
    code = attempt(OPEN_SHADOW) + textwrap.dedent(
        f"""\
        import subprocess, sys, threading, _testcapi
        out = []
        t = threading.Thread(target=lambda: out.append(attempt())); t.start(); t.join()
        print('thread', out[0])
        inner = {OPEN_SHADOW!r}
        rc = _testcapi.run_in_subinterp("try:\\n " + inner + "\\nexcept PermissionError:\\n import sys; sys.audit('sub.denied')")
        try:
            import {sub} as interpreters
            interp = interpreters.create()
            src = "try:\\n " + inner + "\\nexcept PermissionError:\\n import sys; sys.audit('isolated.denied')"
            (interpreters.exec if {sub!r} == '_interpreters' else interpreters.run_string)(interp, src)
        except ImportError:
            pass
        child = subprocess.run([sys.executable, '-c', 'try:\\n ' + inner + '\\nexcept PermissionError:\\n print("child denied")'],
                               capture_output=True, text=True)
        print(child.stdout.strip())
        """
    )
    pytest.importorskip("_testcapi")
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    assert "thread denied:" in a.proc.stdout
    assert "child denied" in a.proc.stdout
    assert a.events("sub.denied")
    denials = [r for r in a.events("open") if r["action"] == "deny"]
    # thread + legacy subinterpreter + child (+ isolated subinterpreter where it exists)
    assert len(denials) >= 3
    assert len({r["interp"] for r in denials}) >= 2
    assert len({r["run"] for r in denials}) == 2


def test_hostile_code_cannot_switch_enforcement_off(tmp_path, deny_spec):
    code = attempt(OPEN_SHADOW) + textwrap.dedent(
        """\
        import gc, os, sys
        os.environ['AUDITWATCH_DENY'] = ''
        os.environ['AUDITWATCH_EVENTS'] = 'ignore:*'
        import _auditwatch
        try:
            _auditwatch.install('late', 'file:/dev/null', 'ignore:*', '', '')
        except RuntimeError:
            pass
        _auditwatch.bootstrap()  # again, with the environment changed: changes nothing
        for obj in gc.get_objects():
            if isinstance(obj, list) and obj and all(callable(x) for x in obj):
                obj.clear()
        sys.modules.pop('_auditwatch', None)
        print(attempt())
        """
    )
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=deny_spec)
    assert a.proc.stdout.strip().startswith("denied:")


def test_bad_deny_spec_is_reported(tmp_path):
    a = run_audited(tmp_path, "print('ran')", AUDITWATCH_DENY="r\tenforce\topen\t0:regex:x")
    assert "unknown test 'regex'" in a.proc.stderr and "NOT audited" in a.proc.stderr


def test_run_rules_file_deny_rules_are_enforced_in_the_hook(tmp_path):
    import json
    import os
    import shutil
    import subprocess

    rules = tmp_path / "deny.yaml"
    rules.write_text(RULES)
    aw = shutil.which("auditwatch", path=os.path.dirname(sys.executable)) or "auditwatch"
    code = attempt(OPEN_SHADOW) + "print(attempt())\n"
    proc = subprocess.run(
        [aw, "run", "-q", "-o", str(tmp_path / "out"), "--no-default-rules", "--rules", str(rules),
         "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "denied: auditwatch: 'open' denied by rule 'No shadow'"
    with open(tmp_path / "out" / "latest" / "records.jsonl") as f:
        records = [json.loads(line) for line in f]
    denied = [r for r in records if r.get("action") == "deny"]
    assert [(r["event"], r["args"][0], r["rule"]) for r in denied] == [
        ("open", "/etc/shadow", "No shadow")
    ]


def test_glob_tests_with_a_final_star_and_with_other_wildcards(tmp_path):
    # A glob whose one wildcard is a final '*' is checked as a prefix in the hook;
    # the others through fnmatch. Both normalise the path first and must agree with
    # fnmatch: '*' matches '/' too, '?' one character.
    spec = "\n".join(
        [
            "Data dir\tenforce\topen\t0:glob:/srv/data/*",
            "Keys\tenforce\topen\t0:glob:/srv/d?ta/*.key",
        ]
    )
    paths = {
        "/srv/data/x": "Data dir",
        "/srv/data/a/b/c": "Data dir",
        "/srv/x/../data/y": "Data dir",
        "/srv/data": None,
        "/srv/database": None,
        "/srv/dota/a.key": "Keys",
        "/srv/dota/a/b.key": "Keys",
        "/srv/dota/a.keys": None,
        "/srv/dotta/a.key": None,
    }
    code = attempt("open(path).close()").replace("def attempt():", "def attempt(path):")
    code += f"for path in {list(paths)!r}:\n    print(path, attempt(path))\n"
    a = run_audited(tmp_path, code, AUDITWATCH_DENY=spec)
    lines = a.proc.stdout.splitlines()
    assert len(lines) == len(paths), a.proc.stderr
    for line, (path, rule) in zip(lines, paths.items()):
        want = f"denied: auditwatch: 'open' denied by rule '{rule}'" if rule else "allowed ("
        assert line.startswith(f"{path} {want}"), line
