"""Compiled rules and the ruleset the engine runs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Tuple

from auditwatch.rules.compiler import Predicate
from auditwatch.rules.native import NativeRule
from auditwatch.rules.template import Render

PRIORITIES = (
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
)
PRIORITY_ALIASES = {"info": "informational", "warn": "warning", "crit": "critical", "err": "error"}


Guard = Tuple[str, Any, str, Tuple[Any, ...]]


@dataclass
class Rule:
    name: str
    desc: str
    priority: str
    tags: tuple[str, ...]
    enabled: bool
    action: str  # "alert" | "deny"
    mode: str | None  # deny rules: "enforce" | "monitor"
    origin: str  # "file:line" of the definition
    output: Render
    match: Predicate | None  # None for sequence rules
    steps: tuple[Predicate, ...] = ()  # sequence rules: step conditions, in order
    count: int | None = None  # threshold rules: fire on the count-th match within
    within_events: int | None = None
    within_ns: int | None = None
    exception: Predicate | None = None  # true: an exception applies, no alert
    events: frozenset[str] | None = None  # None: can match any event
    native: NativeRule | None = None
    position: int = 0  # definition order: alerts from one record come in this order
    # A text test the rule needs: (field name, getter, operator, values); see engine._plan.
    guard: Guard | None = None
    # Per event where the condition reads simpler than in general (a rule on several
    # events, with branches that only some of them can take): that event's
    # (match, guard). index() hands the engine the rule with these in place.
    by_event: dict[str, tuple[Predicate, Guard | None]] = field(default_factory=dict)

    def on(self, event: str) -> Rule:
        """This rule as the engine runs it on records of ``event``."""
        special = self.by_event.get(event)
        if special is None:
            return self
        match, guard = special
        return replace(self, match=match, guard=guard, by_event={})

    @property
    def level(self) -> int:
        return PRIORITIES.index(self.priority)

    @property
    def is_sequence(self) -> bool:
        return bool(self.steps)


@dataclass
class Ruleset:
    rules: list[Rule] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def enabled(self) -> list[Rule]:
        return [r for r in self.rules if r.enabled]

    def get(self, name: str) -> Rule | None:
        for rule in self.rules:
            if rule.name == name:
                return rule
        return None

    def native_rules(self) -> list[NativeRule]:
        """Enabled deny rules in the form the hook's table takes (see native.py)."""
        return [r.native for r in self.rules if r.enabled and r.native is not None]

    def index(self) -> tuple[dict[str, list[Rule]], list[Rule]]:
        """Enabled rules by event name, each list in definition order with the
        catch-all rules merged in; and the catch-all list for any other event."""
        enabled = self.enabled()
        catch_all = [r for r in enabled if r.events is None]
        by_event: dict[str, list[Rule]] = {}
        for rule in enabled:
            for name in rule.events or ():
                by_event.setdefault(name, []).append(rule.on(name))
        for name, rules in by_event.items():
            merged = {id(r): r for r in rules + catch_all}
            by_event[name] = sorted(merged.values(), key=lambda r: r.position)
        return by_event, catch_all
