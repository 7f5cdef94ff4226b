"""The default ruleset: well-formed, catalogue-checked, and every rule tested both ways."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from auditwatch import catalog
from auditwatch.rules import AlertEngine, Ruleset, load
from auditwatch.rules.loader import DEFAULT_RULES
from auditwatch.rules.testing import DEFAULT_TESTS, load_cases, run_cases, stream

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
    # ...so the collector need not parse those records of a span for the engine.
    engine = AlertEngine(RULESET, lambda alert: None)
    assert engine.wants_event("open") and not engine.wants_event("import")


def _every_case_record() -> list[dict]:
    """Each record of every rule case, and each again under the name of every event
    that a rule on several events names: the records on which a rule's per-event
    form and its general form could part."""
    items = [item for c in CASES if "rule" in c for item in c["fires"] + c["quiet"]]
    records = [rec for item in items for rec in (item if isinstance(item, list) else [item])]
    many = sorted(
        {e for r in RULESET.enabled() if r.events and len(r.events) > 1 for e in r.events}
    )
    renamed = [{**rec, "event": name} for rec in records if "event" in rec for name in many]
    return [{k: v for k, v in rec.items() if k != "repeat"} for rec in records + renamed]


def test_per_event_conditions_alert_exactly_as_the_general_ones() -> None:
    # A rule on several events runs, on each, the part of its condition that event can
    # satisfy (Rule.by_event); the general condition must give the same alerts.
    general = Ruleset([replace(r, by_event={}) for r in RULESET.rules], RULESET.files)
    specialised = [r for r in RULESET.enabled() if r.by_event]
    assert len(specialised) >= 5  # the default rules on open, remove, rename, spawn...
    records = _every_case_record()
    assert len(records) > 5_000
    found: dict[str, list[dict]] = {"specialised": [], "general": []}
    engines = {
        name: AlertEngine(rules, found[name].append, burst=1_000_000, rate=1e9)
        for name, rules in (("specialised", RULESET), ("general", general))
    }
    position = {r.name: r.position for r in RULESET.rules}
    fired = 0
    for i, rec in enumerate(records):
        # Each record in a run of its own, so that counts and sequences do not carry.
        run = f"run-{i}"
        lines = stream([{"kind": "start", "run": run, "seq": 1}, {**rec, "run": run}], None, None)
        got = {}
        for name, engine in engines.items():
            del found[name][:]
            for line in lines:
                engine.process(line)
            got[name] = [a["rule"] for a in found[name]]
        assert got["specialised"] == got["general"], rec
        assert got["specialised"] == sorted(got["general"], key=position.__getitem__), rec
        fired += bool(got["general"])
    assert fired > 200  # the renamed records reach the specialised branches too


def test_a_rule_on_open_and_on_remove_reads_each_branch_alone() -> None:
    rule = RULESET.get("Logs or history deleted")
    assert rule is not None and {"open", "os.remove", "os.truncate"} <= set(rule.events or ())
    on_open = rule.on("open")
    # On open only the open branch is left: a text guard on the file opened.
    assert on_open.guard is not None and on_open.guard[0] == "open.file"
    assert rule.guard is None and rule.on("import") is rule
