"""Deny rules for the hook's native matcher.

The matcher runs in C inside the audited process, with no Python: it can test the
event name (exact) and, per argument, an exact value, a prefix, a glob (fnmatch(3)
without flags) or a CIDR network, all joined by ``and``. A deny rule whose condition
needs anything else (``or``, ``not``, regex, proc.*, where.*, sequences, exceptions,
transforms, indexes into an argument, lists of alternatives) is refused at load time
rather than quietly demoted to monitoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from auditwatch.rules.compiler import RBool, RCompare, Resolved, conjuncts
from auditwatch.rules.errors import RuleError

NATIVE_OPERATORS = ("=", "startswith", "glob", "cidr")
_HELP = (
    "; a deny rule runs in the hook's native matcher, which takes `event = NAME` and"
    " per-argument =, startswith, glob or cidr tests joined by `and`"
    " (use action: alert for anything else)"
)


@dataclass(frozen=True)
class NativeTest:
    arg: int  # argument position
    op: str  # one of NATIVE_OPERATORS
    value: Any  # str or int; a network as text for cidr


@dataclass(frozen=True)
class NativeRule:
    rule: str
    event: str
    tests: tuple[NativeTest, ...]
    mode: str  # "enforce" or "monitor"

    def as_dict(self) -> dict:
        return {
            "rule": self.rule,
            "event": self.event,
            "mode": self.mode,
            "tests": [{"arg": t.arg, "op": t.op, "value": t.value} for t in self.tests],
        }


def native_rule(name: str, mode: str, node: Resolved) -> NativeRule:
    """The native form of a deny rule's condition; raises RuleError when there is none."""
    event: str | None = None
    tests: list[NativeTest] = []
    for item in conjuncts(node):
        if not isinstance(item, RCompare):
            what = "'not'" if not isinstance(item, RBool) else f"'{item.op}'"
            raise _refuse(item, f"cannot use {what}")
        fld = item.field
        if fld.name == "event":
            if item.op != "=" or len(item.values) != 1:
                raise _refuse(item, "matches the event name only with `event = NAME`")
            if event is not None and event != item.values[0]:
                raise _refuse(item, "names two different events")
            event = str(item.values[0])
            continue
        if fld.arg is None or fld.indexed:
            raise _refuse(item, f"cannot test {fld.name}")
        if item.op not in NATIVE_OPERATORS:
            raise _refuse(item, f"cannot use the operator '{item.op}'")
        if len(item.values) != 1:
            raise _refuse(item, "cannot test a list of alternatives")
        if fld.event is not None:
            if event is not None and event != fld.event:
                raise _refuse(item, f"tests {fld.name} but the rule is about {event}")
            event = fld.event
        tests.append(NativeTest(fld.arg, item.op, item.values[0]))
    if event is None:
        first = conjuncts(node)[0]
        raise _refuse(first, "does not name one event")
    return NativeRule(name, event, tuple(tests), mode)


def _refuse(item: Resolved, problem: str) -> RuleError:
    loc = item.loc
    assert loc is not None
    return loc.error(f"deny rule: the native matcher {problem}{_HELP}", item.offset)


_OPS = {"=": "eq", "startswith": "prefix", "glob": "glob", "cidr": "cidr"}


def _field(text: str) -> str:
    # Percent-encode what would break the line format (see _hook/deny.c).
    return text.replace("%", "%25").replace("\t", "%09").replace("\n", "%0A")


def encode_native(rules: list[NativeRule]) -> str:
    """The AUDITWATCH_DENY value for these rules: one tab-separated line per rule."""
    lines = []
    for r in rules:
        tests = [f"{t.arg}:{_OPS[t.op]}:{_field(str(t.value))}" for t in r.tests]
        lines.append("\t".join([_field(r.rule), r.mode, _field(r.event), *tests]))
    return "\n".join(lines)
