"""`auditwatch rules lint | test | list`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from auditwatch.commands.rules import command

GOOD = """\
- rule: Shadow read by tool
  desc: d
  condition: open.file = /etc/shadow and proc.exe = /usr/bin/x
  output: o
  priority: notice
  tags: [T1003.008]
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(command, list(args))
    return result.exit_code, result.output


def test_lint_ok_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    code, out = run("lint", str(good))
    assert code == 0 and "1 file ok" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("open.file =", "open.file startswit"))
    code, out = run("lint", str(good), str(bad))
    assert code == 1
    assert f"{bad}:3:24: unknown operator 'startswit'" in out


def test_lint_with_defaults_checks_overrides(tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("- rule: Shell spawned\n  enabled: false\n")
    assert run("lint", str(user))[0] == 1  # on its own the rule is unknown
    assert run("lint", "--with-defaults", str(user))[0] == 0


def test_test_runs_the_default_cases() -> None:
    code, out = run("test")
    assert code == 0, out
    assert "0 failed" in out


def test_test_reports_failures(tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text(GOOD)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "- rule: Shadow read by tool\n"
        "  proc: {exe: /usr/bin/x}\n"
        "  fires: [{event: open, args: [/etc/shadow, r, 0]}]\n"
        "  quiet: [{event: open, args: [/etc/shadow, r, 0]}]\n"
    )
    code, out = run("test", "--no-default-rules", "--rules", str(rules), str(cases))
    assert code == 1
    assert "FAIL Shadow read by tool: quiet #1: fired" in out
    assert "1 cases, 2 checks, 1 failed" in out


def test_list_table_and_json(tmp_path: Path) -> None:
    code, out = run("list")
    assert code == 0 and "Shell spawned" in out and "rules," in out
    rules = tmp_path / "r.yaml"
    rules.write_text(GOOD)
    code, out = run("list", "--json", "--no-default-rules", "--rules", str(rules))
    assert code == 0
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry["rule"] == "Shadow read by tool" and entry["events"] == ["open"]
    assert entry["action"] == "alert" and entry["enabled"] is True


def test_registered_in_the_main_command() -> None:
    from auditwatch.cli import main

    result = CliRunner().invoke(main, ["rules", "--help"])
    assert result.exit_code == 0 and "lint" in result.output
