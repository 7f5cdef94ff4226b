"""Rules: Falco-shaped YAML rules over audit records, alerts, and deny rules.

    from auditwatch.rules import load, AlertEngine
    ruleset = load(["my_rules.yaml"])          # the default ruleset first, then these
    engine = AlertEngine(ruleset, emit=print)  # a collector RecordSink

See docs/rules.md for the language and the default ruleset.
"""

from __future__ import annotations

from auditwatch.rules.engine import AlertEngine
from auditwatch.rules.errors import RuleError, RuleErrors
from auditwatch.rules.loader import DEFAULT_RULES, lint, load
from auditwatch.rules.native import NativeRule, NativeTest
from auditwatch.rules.ruleset import PRIORITIES, Rule, Ruleset

__all__ = [
    "DEFAULT_RULES",
    "PRIORITIES",
    "AlertEngine",
    "NativeRule",
    "NativeTest",
    "Rule",
    "RuleError",
    "RuleErrors",
    "Ruleset",
    "lint",
    "load",
]
