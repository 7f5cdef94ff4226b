"""Every kind of rule-file error, reported as file:line:column: message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from auditwatch.rules import RuleErrors, lint, load

RULE = """\
- rule: r
  desc: d
  output: o
  priority: notice
"""


def errors(tmp_path: Path, text: str, name: str = "rules.yaml") -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return [str(e).replace(str(tmp_path) + "/", "") for e in lint([path])]


def rule_with(condition: str, extra: str = "") -> str:
    return RULE + f"  condition: {condition}\n" + extra


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # YAML syntax
        ("- rule: r\n  desc: [a\n", "rules.yaml:3:1: YAML syntax: expected ',' or ']', but got"),
        # not a list
        ("rule: r\n", "rules.yaml:1:1: a rule file is a YAML list"),
        # unknown top-level key
        (
            rule_with("event = open", "  severity: high\n"),
            "rules.yaml:6:3: unknown key 'severity' in a rule",
        ),
        ("- lst: x\n  items: []\n", "rules.yaml:1:3: an item has exactly one of rule, macro, list"),
        # unknown field, with the valid argument names of a known event
        (
            rule_with("open.path = /x"),
            "rules.yaml:5:14: event 'open' has no argument 'path'; its arguments: file, mode, flags",
        ),
        (
            rule_with("proc.name = x"),
            "rules.yaml:5:14: unknown field 'proc.name'; proc.* fields: argv, exe",
        ),
        (rule_with("bogus.field = x"), "rules.yaml:5:14: unknown field 'bogus.field'"),
        # unknown operator
        (rule_with("open.file startswit /etc"), "rules.yaml:5:24: unknown operator 'startswit'"),
        # type errors
        (rule_with("proc.exe cidr 10.0.0.0/8"), "rules.yaml:5:23: 'cidr' needs an address field"),
        (
            rule_with("socket.connect.address cidr 10.0.0/99"),
            "rules.yaml:5:42: '10.0.0/99' is not a network",
        ),
        (
            rule_with("open.flags < abc"),
            "rules.yaml:5:27: '<' compares numbers, and 'abc' is a string",
        ),
        (
            rule_with("open.mode < 3"),
            "rules.yaml:5:24: '<' compares numbers, and open.mode is text",
        ),
        (rule_with("proc.uid = root"), "rules.yaml:5:25: proc.uid is a number, and 'root' is not"),
        (
            rule_with("open.flags startswith x"),
            "rules.yaml:5:25: 'startswith' works on text, and open.flags is a number",
        ),
        (rule_with("open.file regex '(unclosed'"), "rules.yaml:5:30: bad regular expression"),
        # unknown list and macro
        (rule_with("event in shell_binaries"), "rules.yaml:5:23: unknown list 'shell_binaries'"),
        (rule_with("is_shell and event = open"), "rules.yaml:5:14: unknown macro 'is_shell'"),
        (rule_with("open.file"), "rules.yaml:5:14: open.file is a field and needs an operator"),
        # rule shape
        (
            RULE.replace("notice", "loud") + "  condition: event = open\n",
            "rules.yaml:4:13: unknown priority 'loud'",
        ),
        (
            "- rule: r\n  desc: d\n  condition: event = open\n  priority: notice\n",
            "rules.yaml:1:3: rule 'r' has no output",
        ),
        (
            "- rule: r\n  enabled: false\n",
            "rules.yaml:1:9: rule 'r' has no condition (or sequence), and no earlier file defines it",
        ),
        # output template fields are checked too
        (
            rule_with("event = open").replace("output: o", "output: opened %open.fil by %proc.exe"),
            "rules.yaml:3:19: output: event 'open' has no argument 'fil'",
        ),
    ],
)
def test_error_positions(tmp_path: Path, text: str, expected: str) -> None:
    found = errors(tmp_path, text)
    assert found, "no error reported"
    assert found[0].startswith(expected), found


def test_folded_condition_positions_map_to_the_right_line(tmp_path: Path) -> None:
    text = RULE + "  condition: >\n    event = open and\n    open.fiel = x\n"
    assert errors(tmp_path, text)[0].startswith(
        "rules.yaml:7:5: event 'open' has no argument 'fiel'"
    )


def test_quoted_condition_positions(tmp_path: Path) -> None:
    text = RULE + '  condition: "event = open and open.fiel = x"\n'
    assert errors(tmp_path, text)[0].startswith("rules.yaml:5:32: event 'open' has no argument")


def test_macro_cycle(tmp_path: Path) -> None:
    text = """\
    - macro: a
      condition: b and event = open
    - macro: b
      condition: c or a
    - macro: c
      condition: event = exec
    """
    assert errors(tmp_path, textwrap.dedent(text) + rule_with("a")) == [
        "rules.yaml:4:19: macro cycle: a -> b -> a",  # reported once, not once per macro in it
    ]


def test_self_referencing_macro(tmp_path: Path) -> None:
    assert errors(tmp_path, "- macro: m\n  condition: m\n") == [
        "rules.yaml:2:14: macro cycle: m -> m"
    ]


def test_error_inside_a_macro_is_reported_where_the_macro_is(tmp_path: Path) -> None:
    text = "- macro: m\n  condition: open.nope = 1\n" + rule_with("m")
    assert errors(tmp_path, text) == [
        "rules.yaml:2:14: event 'open' has no argument 'nope'; its arguments: file, mode, flags"
    ]


def test_duplicate_keys_and_wrong_types(tmp_path: Path) -> None:
    text = rule_with("event = open", "  enabled: maybe\n")
    assert errors(tmp_path, text)[0].startswith("rules.yaml:6:12: enabled must be true or false")
    text = RULE + "  condition: event = open\n  condition: event = exec\n"
    assert errors(tmp_path, text)[0].startswith("rules.yaml:6:3: duplicate key 'condition'")


def test_all_errors_are_collected(tmp_path: Path) -> None:
    text = rule_with("open.nope = 1") + rule_with("exec.nope = 1").replace("rule: r", "rule: s")
    assert len(errors(tmp_path, text)) == 2


def test_load_raises_every_error(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(rule_with("open.nope = 1"))
    with pytest.raises(RuleErrors) as info:
        load([path], default=False)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].line == 5 and info.value.errors[0].column == 14


# -- deny rules: only what the native matcher can express --------------------------------


def deny(condition: str, extra: str = "") -> str:
    return rule_with(condition, "  action: deny\n" + extra)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("open.file = /x or open.file = /y", "5:29: deny rule: the native matcher cannot use 'or'"),
        ("not open.file = /x", "5:14: deny rule: the native matcher cannot use 'not'"),
        (
            "open.file regex x",
            "5:24: deny rule: the native matcher cannot use the operator 'regex'",
        ),
        (
            "event = open and proc.exe = /x",
            "5:40: deny rule: the native matcher cannot test proc.exe",
        ),
        (
            "where.file = x and event = open",
            "5:25: deny rule: the native matcher cannot test where.file",
        ),
        ("open.file startswith (/a, /b)", "5:24: deny rule: the native matcher cannot test a list"),
        (
            "basename(open.file) = x",
            "5:34: deny rule: the native matcher cannot test basename(open.file)",
        ),
        ("args[0] = /x", "5:22: deny rule: the native matcher does not name one event"),
        (
            "event in (open, exec)",
            "5:20: deny rule: the native matcher matches the event name only",
        ),
        (
            "event = exec and open.file = /x",
            "5:41: deny rule: the native matcher tests open.file but the rule is about exec",
        ),
    ],
)
def test_deny_rules_the_native_matcher_cannot_express(
    tmp_path: Path, condition: str, expected: str
) -> None:
    found = errors(tmp_path, deny(condition))
    assert found and found[0].startswith("rules.yaml:" + expected), found


def test_deny_rule_sequences_counts_and_exceptions_are_refused(tmp_path: Path) -> None:
    seq = RULE + "  sequence: [event = open, event = exec]\n  within: {events: 3}\n  action: deny\n"
    assert errors(tmp_path, seq)[0].startswith(
        "rules.yaml:5:13: deny rule: the native matcher cannot express sequences"
    )
    exc = deny("open.file = /x", "  exceptions:\n    - {name: e, fields: proc.exe, values: [/x]}\n")
    assert "cannot express exceptions" in errors(tmp_path, exc)[0]
    mode = rule_with("open.file = /x", "  mode: enforce\n")
    assert errors(tmp_path, mode)[0].startswith("rules.yaml:6:9: mode (monitor | enforce) applies")


def test_expressible_deny_rule_compiles_to_a_native_rule(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        deny(
            "event = open and open.file startswith /etc/ and args[1] glob 'w*'",
            "  mode: monitor\n",
        )
        + "- macro: m\n  condition: socket.connect.address cidr 10.0.0.0/8\n"
        + deny("m").replace("rule: r", "rule: s")
    )
    ruleset = load([path], default=False)
    assert [n.as_dict() for n in ruleset.native_rules()] == [
        {
            "rule": "r",
            "event": "open",
            "mode": "monitor",
            "tests": [
                {"arg": 0, "op": "startswith", "value": "/etc/"},
                {"arg": 1, "op": "glob", "value": "w*"},
            ],
        },
        {
            "rule": "s",
            "event": "socket.connect",
            "mode": "enforce",
            "tests": [{"arg": 1, "op": "cidr", "value": "10.0.0.0/8"}],
        },
    ]
