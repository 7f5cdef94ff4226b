"""The default ruleset: well-formed, catalogue-checked, and every rule tested both ways."""

from __future__ import annotations

import re

import pytest

from auditwatch import catalog
from auditwatch.rules import load
from auditwatch.rules.loader import DEFAULT_RULES
from auditwatch.rules.testing import DEFAULT_TESTS, load_cases, run_cases

RULESET = load()
CASES = load_cases(DEFAULT_TESTS)
RULE_CASES = {c["rule"]: c for c in CASES if "rule" in c}
TACTIC = re.compile(r"^mitre_[a-z_]+$")
TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")


def test_at_least_40_rules_each_with_a_rationale_and_attack_tags() -> None:
    assert len(RULESET.rules) >= 40
    for rule in RULESET.rules:
        assert rule.desc and "\n" not in rule.desc.strip(), rule.name
        assert any(TACTIC.match(t) for t in rule.tags), rule.name
        assert any(TECHNIQUE.match(t) for t in rule.tags), rule.name
        assert rule.enabled and rule.action == "alert"


def test_every_event_a_default_rule_names_is_in_the_catalogue() -> None:
    names = set()
    for rule in RULESET.rules:
        assert rule.events is not None, f"{rule.name} can match any event (catch-all)"
        names |= rule.events
    # Names inside conditions too, not just the index: `event = X` and `X.arg` forms.
    text = DEFAULT_RULES.read_text()
    missing = sorted(n for n in names if catalog.lookup(n) is None)
    assert not missing, missing
    for name in re.findall(r"event (?:=|in) \(?([\w./]+)", text):
        assert catalog.lookup(name) is not None, name


def test_every_rule_has_a_case_that_fires_it_and_one_that_must_not() -> None:
    for rule in RULESET.rules:
        case = RULE_CASES.get(rule.name)
        assert case is not None, f"no test case for {rule.name}"
        assert case.get("fires") and case.get("quiet"), rule.name


@pytest.mark.parametrize("name", sorted(RULE_CASES))
def test_rule_cases(name: str) -> None:
    report = run_cases(RULESET, [RULE_CASES[name]])
    assert report.ok, [str(f) for f in report.failures]
    assert report.fired.get(name) == len(RULE_CASES[name]["fires"])
    assert report.quiet.get(name) == len(RULE_CASES[name]["quiet"])


@pytest.mark.parametrize("case", [c for c in CASES if "expect" in c], ids=lambda c: c["name"])
def test_whole_streams_give_exactly_the_expected_alerts(case: dict) -> None:
    report = run_cases(RULESET, [case])
    assert report.ok, [str(f) for f in report.failures]


def test_every_rule_is_indexed_by_event() -> None:
    by_event, catch_all = RULESET.index()
    assert catch_all == []
    assert "import" not in by_event and "exec" not in by_event  # the commonest events
