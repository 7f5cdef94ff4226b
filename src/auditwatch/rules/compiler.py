"""Conditions to Python closures, once: macros inlined, lists expanded, fields
resolved and operand types checked at load time, so matching a record is a chain of
plain function calls with no parsing and no dispatch on names.

Each compiled condition also says which events it can match (``events_of``): the
engine files a rule under those names so most rules are never looked at for most
records; a condition that does not pin the event down matches any and goes in the
catch-all list.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from auditwatch.rules import fields as fieldmod
from auditwatch.rules import operators
from auditwatch.rules.errors import ConditionError, RuleError
from auditwatch.rules.fields import Field, FieldError
from auditwatch.rules.source import Node, Source
from auditwatch.rules.syntax import (
    BoolOp,
    Compare,
    Expr,
    FieldValue,
    ListValue,
    Literal,
    MacroRef,
    Not,
    parse,
    parse_continuation,
)
from auditwatch.rules.values import decode

Predicate = Callable[[dict, Any], bool]


@dataclass(frozen=True)
class Loc:
    """Where a piece of condition text lives: a scalar node of a rule file."""

    source: Source
    node: Node | None

    def error(self, message: str, offset: int = 0) -> RuleError:
        return self.source.error(message, self.node, offset)


# -- resolved conditions -------------------------------------------------------------


@dataclass(frozen=True)
class RCompare:
    field: Field
    op: str
    values: tuple[Any, ...]
    test: operators.Test | None  # None for `exists` and val()
    loc: Loc
    offset: int
    other: Field | None = None  # val(field) on the right


@dataclass(frozen=True)
class RBool:
    op: str
    items: tuple[Resolved, ...]
    loc: Loc | None = None
    offset: int = 0


@dataclass(frozen=True)
class RNot:
    item: Resolved
    loc: Loc
    offset: int


Resolved = Union[RCompare, RBool, RNot]


# -- definitions ---------------------------------------------------------------------


@dataclass
class ListDef:
    name: str
    items: list[tuple[Any, Loc]]


@dataclass
class MacroDef:
    name: str
    text: str
    loc: Loc
    appends: list[tuple[str, Loc]] = field(default_factory=list)


@dataclass
class Scope:
    """Lists and macros of a whole ruleset (all files, after overrides)."""

    lists: dict[str, ListDef] = field(default_factory=dict)
    macros: dict[str, MacroDef] = field(default_factory=dict)
    _resolved: dict[str, Resolved | RuleError] = field(default_factory=dict)

    # -- conditions ------------------------------------------------------------------

    def condition(self, text: str, loc: Loc) -> Resolved:
        """Parse and resolve one condition string; raises RuleError."""
        try:
            tree = parse(text)
        except ConditionError as exc:
            raise loc.error(exc.message, exc.offset) from None
        return self.resolve(tree, loc, ())

    def append(self, base: Resolved, text: str, loc: Loc, stack: tuple[str, ...] = ()) -> Resolved:
        try:
            op, tree = parse_continuation(text)
        except ConditionError as exc:
            raise loc.error(exc.message, exc.offset) from None
        return RBool(op, (base, self.resolve(tree, loc, stack)), loc, 0)

    def resolve(self, expr: Expr, loc: Loc, stack: tuple[str, ...]) -> Resolved:
        if isinstance(expr, BoolOp):
            items = tuple(self.resolve(e, loc, stack) for e in expr.items)
            return RBool(expr.op, items, loc, expr.offset)
        if isinstance(expr, Not):
            return RNot(self.resolve(expr.item, loc, stack), loc, expr.offset)
        if isinstance(expr, MacroRef):
            return self.macro(expr.name, loc, expr.offset, stack)
        return self.compare(expr, loc)

    def macro(self, name: str, loc: Loc, offset: int, stack: tuple[str, ...]) -> Resolved:
        if name in stack:
            chain = " -> ".join((*stack[stack.index(name) :], name))
            raise loc.error(f"macro cycle: {chain}", offset)
        known = self._resolved.get(name)
        if isinstance(known, RuleError):
            raise known
        if known is not None:
            return known
        definition = self.macros.get(name)
        if definition is None:
            raise loc.error(self._unknown_name(name), offset)
        try:
            body = self.condition_in(definition, (*stack, name))
        except RuleError as exc:
            if not stack:  # errors deeper in a chain belong to the outermost macro too
                self._resolved[name] = exc
            raise
        if not stack:
            self._resolved[name] = body
        return body

    def condition_in(self, macro: MacroDef, stack: tuple[str, ...]) -> Resolved:
        try:
            tree = parse(macro.text)
        except ConditionError as exc:
            raise macro.loc.error(exc.message, exc.offset) from None
        body = self.resolve(tree, macro.loc, stack)
        for text, loc in macro.appends:
            body = self.append(body, text, loc, stack)
        return body

    def _unknown_name(self, name: str) -> str:
        try:
            fieldmod.field(name)
        except FieldError:
            pass
        else:
            return f"{name} is a field and needs an operator (e.g. `{name} exists`)"
        close = difflib.get_close_matches(name, list(self.macros), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown macro {name!r}{hint}"

    # -- comparisons -----------------------------------------------------------------

    def field(self, name: str, transforms: tuple[str, ...], loc: Loc, offset: int) -> Field:
        try:
            base = fieldmod.field(name)
            return fieldmod.transformed(base, transforms) if transforms else base
        except FieldError as exc:
            raise loc.error(str(exc), offset) from None

    def compare(self, expr: Compare, loc: Loc) -> RCompare:
        fld = self.field(expr.operand.name, expr.operand.transforms, loc, expr.operand.offset)
        if expr.value is None:
            return RCompare(fld, expr.op, (), None, loc, expr.offset)
        if isinstance(expr.value, FieldValue):
            if expr.op not in operators.FIELD_OPERATORS:
                raise loc.error(
                    f"val() works with {', '.join(operators.FIELD_OPERATORS)}, not '{expr.op}'",
                    expr.offset,
                )
            right = expr.value.operand
            other = self.field(right.name, right.transforms, loc, right.offset)
            return RCompare(fld, expr.op, (), None, loc, expr.offset, other)
        values, origins = self.values(expr.value, loc)
        if expr.op == "in" and not isinstance(expr.value, ListValue):
            raise loc.error("'in' needs a list: in (a, b) or in list_name", expr.offset)
        try:
            test = operators.build(expr.op, fld.type, fld.name, values)
        except operators.OperandError as exc:
            if exc.item is None:
                raise loc.error(exc.message, expr.offset) from None
            where, at = origins[exc.item]
            raise where.error(exc.message, at) from None
        return RCompare(fld, expr.op, tuple(values), test, loc, expr.offset)

    def values(
        self, value: Literal | ListValue, loc: Loc
    ) -> tuple[list[Any], list[tuple[Loc, int]]]:
        if isinstance(value, Literal):
            return [value.value], [(loc, value.offset)]
        values: list[Any] = []
        origins: list[tuple[Loc, int]] = []
        for item in value.items:
            name = item.value
            if not item.quoted and isinstance(name, str) and name in self.lists:
                for v, where in self.list_items(name, ()):
                    values.append(v)
                    origins.append((where, 0))
            elif value.bare:
                raise loc.error(f"unknown list {name!r}", item.offset)
            else:
                values.append(name)
                origins.append((loc, item.offset))
        return values, origins

    def list_items(self, name: str, stack: tuple[str, ...]) -> list[tuple[Any, Loc]]:
        """A list's items, with lists named inside it expanded (Falco allows that)."""
        out: list[tuple[Any, Loc]] = []
        for value, where in self.lists[name].items:
            if isinstance(value, str) and value in self.lists and value != name:
                if value in stack:
                    raise where.error(f"list cycle: {' -> '.join((*stack, name, value))}")
                out.extend(self.list_items(value, (*stack, name)))
            else:
                out.append((value, where))
        return out


# -- closures ------------------------------------------------------------------------


def predicate(node: Resolved) -> Predicate:
    if isinstance(node, RCompare):
        return _compare_predicate(node)
    if isinstance(node, RNot):
        inner = predicate(node.item)
        return lambda rec, proc: not inner(rec, proc)
    preds = [predicate(item) for item in node.items]
    if node.op == "and":
        return _all(preds)
    return _any(preds)


def _compare_predicate(node: RCompare) -> Predicate:
    fld, test = node.field, node.test
    if fld.name == "event" and node.op in ("=", "in"):
        names = frozenset(v for v in node.values if isinstance(v, str))
        if len(names) == 1:
            (name,) = names
            return lambda rec, proc: rec.get("event") == name
        return lambda rec, proc: rec.get("event") in names
    get = fld.get
    if node.other is not None:
        return _field_predicate(get, node.op, node.other.get)
    if test is None:  # exists
        return lambda rec, proc: get(rec, proc) is not None
    on_text = getattr(test, "on_text", None)
    if on_text is None:

        def compare(rec: dict, proc: Any) -> bool:
            value = get(rec, proc)
            return value is not None and test(value)  # type: ignore[misc]

        return compare
    if fld.arg is not None and not fld.indexed:
        return _argument_predicate(fld.event, fld.arg, test, on_text)

    def compare_text(rec: dict, proc: Any) -> bool:
        value = get(rec, proc)
        if type(value) is str:
            return on_text(value)  # type: ignore[no-any-return]
        return value is not None and test(value)  # type: ignore[misc]

    return compare_text


def _argument_predicate(event: str | None, index: int, test: Any, on_text: Any) -> Predicate:
    """The hot case, flattened: an argument (by name or position) tested as text."""
    if event is None:

        def positional(rec: dict, proc: Any) -> bool:
            args = rec.get("args")
            if args is None or index >= len(args):
                return False
            value = args[index]
            if type(value) is str:
                return on_text(value)  # type: ignore[no-any-return]
            value = decode(value)
            return value is not None and test(value)  # type: ignore[no-any-return]

        return positional

    def named(rec: dict, proc: Any) -> bool:
        if rec.get("event") != event:
            return False
        args = rec.get("args")
        if args is None or index >= len(args):
            return False
        value = args[index]
        if type(value) is str:
            return on_text(value)  # type: ignore[no-any-return]
        value = decode(value)
        return value is not None and test(value)  # type: ignore[no-any-return]

    return named


def _field_predicate(get: Any, op: str, other: Any) -> Predicate:
    relate = operators.field_relation(op)

    def compare(rec: dict, proc: Any) -> bool:
        right = other(rec, proc)
        if type(right) is not str and type(right) is not int:
            return False
        value = get(rec, proc)
        return value is not None and relate(value, right)

    return compare


def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda rec, proc: a(rec, proc) and b(rec, proc)
    if len(preds) == 3:
        a, b, c = preds
        return lambda rec, proc: a(rec, proc) and b(rec, proc) and c(rec, proc)

    def every(rec: dict, proc: Any) -> bool:
        return all(p(rec, proc) for p in preds)

    return every


def _any(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda rec, proc: a(rec, proc) or b(rec, proc)

    def some(rec: dict, proc: Any) -> bool:
        return any(p(rec, proc) for p in preds)

    return some


# -- analysis ------------------------------------------------------------------------


def events_of(node: Resolved) -> frozenset | None:
    """The event names a condition can match, or None when it can match any."""
    if isinstance(node, RCompare):
        if node.field.name == "event" and node.op in ("=", "in"):
            return frozenset(v for v in node.values if isinstance(v, str))
        return node.field.implies
    if isinstance(node, RNot):
        return None
    sets = [events_of(item) for item in node.items]
    if node.op == "and":
        known = [s for s in sets if s is not None]
        if not known:
            return None
        out = known[0]
        for s in known[1:]:
            out = out & s
        return out
    if any(s is None for s in sets):
        return None
    return frozenset().union(*sets)  # type: ignore[arg-type]


def without_event_tests(node: Resolved) -> Resolved:
    """Drop top-level ``event = X`` tests: the index already guarantees them.

    Only for a rule filed under its events: every top-level conjunct that tests the
    event name holds a superset of the rule's index set, so it is always true there.
    """
    if isinstance(node, RBool) and node.op == "and":
        kept = tuple(
            item
            for item in node.items
            if not (
                isinstance(item, RCompare) and item.field.name == "event" and item.op in ("=", "in")
            )
        )
        if kept and len(kept) < len(node.items):
            return kept[0] if len(kept) == 1 else RBool("and", kept)
    return node


def for_event(node: Resolved, name: str) -> Resolved | None:
    """The condition as it reads on records of event ``name``; None when it cannot
    hold there. A test of a field that only some events carry is false on the others:
    the same reasoning by which ``events_of`` files a rule under its events. Negations
    are kept whole."""
    if isinstance(node, RCompare):
        events = events_of(node)
        return node if events is None or name in events else None
    if isinstance(node, RNot):
        return node
    items = [for_event(item, name) for item in node.items]
    if node.op == "and":
        if any(item is None for item in items):
            return None
        return RBool("and", tuple(items), node.loc, node.offset)  # type: ignore[arg-type]
    kept = tuple(item for item in items if item is not None)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else RBool("or", kept, node.loc, node.offset)


def conjuncts(node: Resolved) -> list[Resolved]:
    if isinstance(node, RBool) and node.op == "and":
        out: list[Resolved] = []
        for item in node.items:
            out.extend(conjuncts(item))
        return out
    return [node]


def guard_of(node: Resolved) -> RCompare | None:
    """A text test the condition cannot be true without (a top-level conjunct).

    Rules of one event that each have such a test on the same field form a group: the
    engine reads the field once per record and asks the union of their tests; when
    it fails (most records), the whole group is skipped with one call.
    """
    for item in conjuncts(node):
        if (
            isinstance(item, RCompare)
            and item.other is None
            and item.op in operators.GUARD_OPERATORS
            and item.field.name != "event"
        ):
            return item
    return None
