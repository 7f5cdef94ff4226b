"""Rule files (YAML, Falco's shape) to a compiled Ruleset.

Files load in order; later files add rules, lists and macros, override a rule by
defining one of the same name, change some of its keys (a rule item with no
condition: ``- rule: X`` + ``enabled: false``), or extend definitions with
``append: true``. Every problem is collected as ``file:line:column: message``;
``load`` raises them together, ``lint`` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, Tuple

import yaml

from auditwatch.rules import fields as fieldmod
from auditwatch.rules import operators
from auditwatch.rules.compiler import (
    ListDef,
    Loc,
    MacroDef,
    Predicate,
    Resolved,
    Scope,
    events_of,
    for_event,
    guard_of,
    predicate,
    without_event_tests,
)
from auditwatch.rules.errors import RuleError, RuleErrors
from auditwatch.rules.native import native_rule
from auditwatch.rules.ruleset import PRIORITIES, PRIORITY_ALIASES, Guard, Rule, Ruleset
from auditwatch.rules.source import Node, Source
from auditwatch.rules.template import compile_template

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")

RULE_KEYS = (
    "rule",
    "desc",
    "condition",
    "sequence",
    "within",
    "count",
    "output",
    "priority",
    "tags",
    "enabled",
    "exceptions",
    "action",
    "mode",
    "append",
)
LIST_KEYS = ("list", "items", "append")
MACRO_KEYS = ("macro", "condition", "append")
EXCEPTION_KEYS = ("name", "fields", "comps", "values")
APPENDABLE = ("condition", "exceptions", "tags")
PARTIAL = ("desc", "output", "priority", "tags", "enabled", "mode", "exceptions")
COMPS = ("=", "!=", "in", "glob", "startswith", "endswith", "contains", "regex", "cidr", "<", ">")

Text = Tuple[str, Loc]


@dataclass
class ExceptionDef:
    name: str
    loc: Loc
    fields: list[Text]
    comps: list[Text]
    values: list[tuple[list[Any], Loc]]  # one row per tuple, each with its node


@dataclass
class RuleDef:
    name: str
    loc: Loc
    position: int
    keys: dict[str, Loc] = field(default_factory=dict)  # where each key was last set
    desc: str = ""
    condition: Text | None = None
    appends: list[Text] = field(default_factory=list)
    sequence: list[Text] | None = None
    within: dict[str, float] = field(default_factory=dict)
    count: int | None = None
    output: Text | None = None
    priority: Text | None = None
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    exceptions: list[ExceptionDef] = field(default_factory=list)
    action: str = "alert"
    mode: str | None = None


class _File:
    """Reads the items of one file into the shared definitions."""

    def __init__(self, source: Source, defs: Definitions) -> None:
        self.source = source
        self.defs = defs

    def loc(self, node: Node | None) -> Loc:
        return Loc(self.source, node)

    def err(self, message: str, node: Node | None) -> RuleError:
        return self.source.error(message, node)

    def read(self) -> None:
        root = self.source.compose()
        if root is None:
            return
        if not isinstance(root, yaml.SequenceNode):
            raise self.err("a rule file is a YAML list of `rule`, `macro` and `list` items", root)
        for item in root.value:
            try:
                self.item(item)
            except RuleError as exc:
                self.defs.errors.append(exc)

    def mapping(self, node: Node, what: str) -> dict[str, tuple[Node, Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.err(f"expected {what} (a mapping)", node)
        out: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.err("keys must be plain names", key)
            if key.value in out:
                raise self.err(f"duplicate key {key.value!r}", key)
            out[key.value] = (key, value)
        return out

    def text(self, node: Node, key: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            raise self.err(f"{key} must be text", node)
        return str(node.value)

    def boolean(self, node: Node, key: str) -> bool:
        value = self.source.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            raise self.err(f"{key} must be true or false", node)
        return value

    def seq(self, node: Node, key: str) -> list[Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.err(f"{key} must be a list", node)
        return list(node.value)

    def item(self, node: Node) -> None:
        keys = self.mapping(node, "a `rule`, `macro` or `list` item")
        kinds = [k for k in ("rule", "macro", "list") if k in keys]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else ", ".join(keys) or "nothing"
            raise self.err(f"an item has exactly one of rule, macro, list (found: {found})", node)
        kind = kinds[0]
        allowed = {"rule": RULE_KEYS, "macro": MACRO_KEYS, "list": LIST_KEYS}[kind]
        for name, (knode, _) in keys.items():
            if name not in allowed:
                raise self.err(
                    f"unknown key {name!r} in a {kind}; keys: {', '.join(allowed)}", knode
                )
        name = self.text(keys[kind][1], kind)
        append = "append" in keys and self.boolean(keys["append"][1], "append")
        if kind == "list":
            self.list_item(name, keys, append)
        elif kind == "macro":
            self.macro_item(name, keys, append)
        else:
            self.rule_item(name, keys, append)

    def list_item(self, name: str, keys: dict[str, tuple[Node, Node]], append: bool) -> None:
        if "items" not in keys:
            raise self.err(f"list {name!r} has no items", keys["list"][0])
        items: list[tuple[Any, Loc]] = []
        for node in self.seq(keys["items"][1], "items"):
            value = self.source.value(node)
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise self.err("list items are text or numbers", node)
            items.append((value, self.loc(node)))
        lists = self.defs.scope.lists
        if append:
            if name not in lists:
                raise self.err(f"append to unknown list {name!r}", keys["list"][1])
            lists[name].items.extend(items)
        else:
            lists[name] = ListDef(name, items)

    def macro_item(self, name: str, keys: dict[str, tuple[Node, Node]], append: bool) -> None:
        if "condition" not in keys:
            raise self.err(f"macro {name!r} has no condition", keys["macro"][0])
        cnode = keys["condition"][1]
        text = self.text(cnode, "condition")
        macros = self.defs.scope.macros
        if append:
            if name not in macros:
                raise self.err(f"append to unknown macro {name!r}", keys["macro"][1])
            macros[name].appends.append((text, self.loc(cnode)))
        else:
            macros[name] = MacroDef(name, text, self.loc(cnode))

    def rule_item(self, name: str, keys: dict[str, tuple[Node, Node]], append: bool) -> None:
        rules = self.defs.rules
        name_loc = self.loc(keys["rule"][1])
        if append:
            if name not in rules:
                raise self.err(f"append to unknown rule {name!r}", keys["rule"][1])
            self.append_rule(rules[name], keys)
            return
        defines = "condition" in keys or "sequence" in keys
        if not defines:
            if name not in rules:
                raise self.err(
                    f"rule {name!r} has no condition (or sequence), and no earlier file defines it",
                    keys["rule"][1],
                )
            self.update_rule(rules[name], keys)
            return
        old = rules.get(name)
        position = old.position if old else len(rules)
        rule = RuleDef(name, name_loc, position)
        self.update_rule(rule, keys)
        for required in ("desc", "output", "priority"):
            if required not in keys:
                raise self.err(f"rule {name!r} has no {required}", keys["rule"][0])
        rules[name] = rule

    def append_rule(self, rule: RuleDef, keys: dict[str, tuple[Node, Node]]) -> None:
        for key, (knode, vnode) in keys.items():
            if key in ("rule", "append"):
                continue
            if key not in APPENDABLE:
                raise self.err(f"append: true extends {', '.join(APPENDABLE)}, not {key}", knode)
            if key == "condition":
                if rule.sequence is not None:
                    raise self.err("cannot append a condition to a sequence rule", knode)
                rule.appends.append((self.text(vnode, key), self.loc(vnode)))
            elif key == "tags":
                rule.tags.extend(self.tags(vnode))
            else:
                for exc in self.exceptions(vnode):
                    same = [e for e in rule.exceptions if e.name == exc.name]
                    if same:
                        same[0].values.extend(exc.values)
                    else:
                        rule.exceptions.append(exc)

    def update_rule(self, rule: RuleDef, keys: dict[str, tuple[Node, Node]]) -> None:
        defining = "condition" in keys or "sequence" in keys
        for key, (knode, vnode) in keys.items():
            if key in ("rule", "append"):
                continue
            if not defining and key not in PARTIAL:
                raise self.err(f"changing {key} needs the whole rule (with its condition)", knode)
            rule.keys[key] = self.loc(vnode)
            if key == "desc":
                rule.desc = self.text(vnode, key)
            elif key == "condition":
                rule.condition = (self.text(vnode, key), self.loc(vnode))
            elif key == "sequence":
                steps = self.seq(vnode, key)
                rule.sequence = [(self.text(s, "a sequence step"), self.loc(s)) for s in steps]
            elif key == "within":
                rule.within = self.within(vnode)
            elif key == "count":
                value = self.source.value(vnode)
                if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                    raise self.err("count must be a whole number, at least 2", vnode)
                rule.count = value
            elif key == "output":
                rule.output = (self.text(vnode, key), self.loc(vnode))
            elif key == "priority":
                rule.priority = (self.text(vnode, key), self.loc(vnode))
            elif key == "tags":
                rule.tags = self.tags(vnode)
            elif key == "enabled":
                rule.enabled = self.boolean(vnode, key)
            elif key == "exceptions":
                rule.exceptions = self.exceptions(vnode)
            elif key == "action":
                rule.action = self.choice(vnode, key, ("alert", "deny"))
            elif key == "mode":
                rule.mode = self.choice(vnode, key, ("monitor", "enforce"))

    def choice(self, node: Node, key: str, options: Sequence[str]) -> str:
        value = self.text(node, key)
        if value not in options:
            raise self.err(f"{key} must be one of {', '.join(options)}, not {value!r}", node)
        return value

    def tags(self, node: Node) -> list[str]:
        return [self.text(t, "a tag") for t in self.seq(node, "tags")]

    def within(self, node: Node) -> dict[str, float]:
        keys = self.mapping(node, "within: {events: N} or {seconds: S}")
        out: dict[str, float] = {}
        for key, (knode, vnode) in keys.items():
            if key not in ("events", "seconds"):
                raise self.err(f"unknown key {key!r} in within; keys: events, seconds", knode)
            value = self.source.value(vnode)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise self.err(f"within.{key} must be a positive number", vnode)
            if key == "events" and not isinstance(value, int):
                raise self.err("within.events must be a whole number", vnode)
            out[key] = value
        if not out:
            raise self.err("within needs events: N or seconds: S", node)
        return out

    def exceptions(self, node: Node) -> list[ExceptionDef]:
        out = []
        for item in self.seq(node, "exceptions"):
            keys = self.mapping(item, "an exception")
            for key, (knode, _) in keys.items():
                if key not in EXCEPTION_KEYS:
                    raise self.err(
                        f"unknown key {key!r} in an exception; keys: {', '.join(EXCEPTION_KEYS)}",
                        knode,
                    )
            for required in ("name", "fields"):
                if required not in keys:
                    raise self.err(f"an exception needs {required}", item)
            out.append(self.exception(keys, item))
        return out

    def exception(self, keys: dict[str, tuple[Node, Node]], item: Node) -> ExceptionDef:
        name = self.text(keys["name"][1], "name")
        fnode = keys["fields"][1]
        single = isinstance(fnode, yaml.ScalarNode)
        fnodes = [fnode] if single else self.seq(fnode, "fields")
        flds = [(self.text(f, "a field"), self.loc(f)) for f in fnodes]
        default = "in" if single else "="
        if "comps" in keys:
            cnode = keys["comps"][1]
            cnodes = [cnode] if isinstance(cnode, yaml.ScalarNode) else self.seq(cnode, "comps")
            comps = [(self.text(c, "a comparison"), self.loc(c)) for c in cnodes]
            if len(comps) != len(flds):
                raise self.err(f"{len(comps)} comps for {len(flds)} fields", cnode)
            for (comp, _loc), cn in zip(comps, cnodes):
                if comp not in COMPS:
                    raise self.err(f"unknown operator {comp!r}; operators: {', '.join(COMPS)}", cn)
        else:
            comps = [(default, self.loc(fnode)) for _ in flds]
        rows: list[tuple[list[Any], Loc]] = []
        vnodes = self.seq(keys["values"][1], "values") if "values" in keys else []
        for vnode in vnodes:
            value = self.source.value(vnode)
            if single:
                rows.append(([value], self.loc(vnode)))
                continue
            if not isinstance(value, list) or len(value) != len(flds):
                raise self.err(f"each value is a list of {len(flds)} (one per field)", vnode)
            rows.append((value, self.loc(vnode)))
        if single and comps[0][0] == "in":  # fields: f, values: [a, b]: one row, f in (a, b)
            rows = [([[v for row, _ in rows for v in row]], self.loc(keys["fields"][1]))]
        return ExceptionDef(name, self.loc(item), flds, comps, rows)


@dataclass
class Definitions:
    scope: Scope = field(default_factory=Scope)
    rules: dict[str, RuleDef] = field(default_factory=dict)
    errors: list[RuleError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def add_text(self, file: str, text: str) -> None:
        self.files.append(file)
        try:
            _File(Source(file, text), self).read()
        except RuleError as exc:
            self.errors.append(exc)

    def add_file(self, path: str | Path) -> None:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(RuleError(f"cannot read: {exc}", str(path), 0, 0))
            return
        self.add_text(str(path), text)

    # -- compiling -------------------------------------------------------------------

    def compile(self) -> Ruleset:
        for name, macro in self.scope.macros.items():
            try:
                self.scope.macro(name, macro.loc, 0, ())
            except RuleError as exc:
                self._error(exc)
        ruleset = Ruleset(files=list(self.files))
        for rdef in sorted(self.rules.values(), key=lambda r: r.position):
            try:
                ruleset.rules.append(self.rule(rdef))
            except RuleError as exc:
                self._error(exc)
        return ruleset

    def _error(self, exc: RuleError) -> None:
        if all(str(e) != str(exc) for e in self.errors):
            self.errors.append(exc)

    def rule(self, rdef: RuleDef) -> Rule:
        scope = self.scope
        priority, ploc = rdef.priority or ("", rdef.loc)
        level = PRIORITY_ALIASES.get(priority.lower(), priority.lower())
        if level not in PRIORITIES:
            raise ploc.error(f"unknown priority {priority!r}; priorities: {', '.join(PRIORITIES)}")
        if rdef.mode is not None and rdef.action != "deny":
            raise rdef.keys["mode"].error("mode (monitor | enforce) applies to action: deny only")
        if rdef.sequence is not None and rdef.condition is not None:
            raise rdef.keys["sequence"].error("a rule has a condition or a sequence, not both")
        if rdef.count is not None:
            if rdef.sequence is not None:
                raise rdef.keys["count"].error("count goes with a condition, not a sequence")
            if not rdef.within:
                raise rdef.keys["count"].error("count needs within: {events: N} or {seconds: S}")
            if rdef.action == "deny":
                raise rdef.keys["count"].error(
                    "deny rule: the native matcher cannot count (use action: alert)"
                )
        elif rdef.within and rdef.sequence is None:
            raise rdef.keys["within"].error("within goes with a sequence or a count")
        steps: tuple[Predicate, ...] = ()
        match: Predicate | None = None
        resolved: Resolved | None = None
        within_events = within_ns = None
        if rdef.sequence is not None:
            seq_loc = rdef.keys["sequence"]
            if len(rdef.sequence) < 2:
                raise seq_loc.error("a sequence needs at least two steps")
            if not rdef.within:
                raise seq_loc.error("a sequence needs within: {events: N} or {seconds: S}")
            if rdef.action == "deny":
                raise seq_loc.error(
                    "deny rule: the native matcher cannot express sequences (use action: alert)"
                )
            nodes = [scope.condition(text, loc) for text, loc in rdef.sequence]
            sets = [events_of(n) for n in nodes]
            events = None if any(s is None for s in sets) else frozenset().union(*sets)  # type: ignore[arg-type]
            steps = tuple(predicate(n) for n in nodes)
        else:
            assert rdef.condition is not None
            resolved = scope.condition(*rdef.condition)
            for text, loc in rdef.appends:
                resolved = scope.append(resolved, text, loc)
            events = events_of(resolved)
            match = predicate(without_event_tests(resolved) if events is not None else resolved)
        if "events" in rdef.within:
            within_events = int(rdef.within["events"])
        if "seconds" in rdef.within:
            within_ns = int(rdef.within["seconds"] * 1e9)
        exception = self.exception_predicate(rdef.exceptions)
        guard = _guard(resolved) if resolved is not None else None
        by_event = {}
        if resolved is not None and events is not None and len(events) > 1:
            for name in sorted(events):
                node = for_event(resolved, name)
                if node is not None and node != resolved:
                    by_event[name] = (predicate(without_event_tests(node)), _guard(node))
        native = None
        if rdef.action == "deny":
            if rdef.exceptions:
                raise rdef.keys["exceptions"].error(
                    "deny rule: the native matcher cannot express exceptions"
                    " (fold them into the condition, or use action: alert)"
                )
            assert resolved is not None
            native = native_rule(rdef.name, rdef.mode or "enforce", resolved)
        text, oloc = rdef.output or ("", rdef.loc)
        output = compile_template(text, oloc.error)
        line, _ = (
            rdef.loc.source.position(rdef.loc.node.start_mark.index) if rdef.loc.node else (0, 0)
        )
        return Rule(
            name=rdef.name,
            desc=rdef.desc,
            priority=level,
            tags=tuple(dict.fromkeys(rdef.tags)),
            enabled=rdef.enabled,
            action=rdef.action,
            mode=(rdef.mode or "enforce") if rdef.action == "deny" else None,
            origin=f"{rdef.loc.source.file}:{line}",
            output=output,
            match=match,
            steps=steps,
            count=rdef.count,
            within_events=within_events,
            within_ns=within_ns,
            exception=exception,
            events=events,
            native=native,
            position=rdef.position,
            guard=guard,
            by_event=by_event,
        )

    def exception_predicate(self, exceptions: list[ExceptionDef]) -> Predicate | None:
        rows: list[Predicate] = []
        for exc in exceptions:
            flds = []
            for name, loc in exc.fields:
                try:
                    flds.append(fieldmod.field(name))
                except fieldmod.FieldError as err:
                    raise loc.error(f"exception {exc.name}: {err}") from None
            for values, vloc in exc.values:
                tests = []
                for fld, (comp, _), value in zip(flds, exc.comps, values):
                    items = self.exception_values(comp, value)
                    try:
                        test = operators.build(comp, fld.type, fld.name, items)
                    except operators.OperandError as err:
                        raise vloc.error(f"exception {exc.name}: {err.message}") from None
                    tests.append((fld.get, test))
                rows.append(_row(tests))
        if not rows:
            return None
        return predicate_any(rows)

    def exception_values(self, comp: str, value: Any) -> list[Any]:
        if isinstance(value, list):
            out: list[Any] = []
            for v in value:
                out.extend(self.exception_values(comp, v))
            return out
        if isinstance(value, str) and value in self.scope.lists:
            return [v for v, _ in self.scope.list_items(value, ())]
        return [value]


def _row(tests: list[tuple[Any, Any]]) -> Predicate:
    def row(rec: dict, proc: Any) -> bool:
        for get, test in tests:
            value = get(rec, proc)
            if value is None or not test(value):
                return False
        return True

    return row


def _guard(node: Resolved) -> Guard | None:
    need = guard_of(node)
    return (need.field.name, need.field.get, need.op, need.values) if need else None


def predicate_any(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]

    def some(rec: dict, proc: Any) -> bool:
        return any(p(rec, proc) for p in preds)

    return some


def definitions(
    paths: Iterable[str | Path] = (), *, default: bool = True, texts: Iterable[tuple[str, str]] = ()
) -> Definitions:
    defs = Definitions()
    if default:
        defs.add_file(DEFAULT_RULES)
    for path in paths:
        defs.add_file(path)
    for file, text in texts:
        defs.add_text(file, text)
    return defs


def load(
    paths: Iterable[str | Path] = (), *, default: bool = True, texts: Iterable[tuple[str, str]] = ()
) -> Ruleset:
    """Load and compile rule files (after the default ruleset unless ``default=False``);
    raises RuleErrors listing every problem."""
    defs = definitions(paths, default=default, texts=texts)
    ruleset = defs.compile()
    if defs.errors:
        raise RuleErrors(sorted(defs.errors, key=_order))
    return ruleset


def lint(
    paths: Iterable[str | Path] = (),
    *,
    default: bool = False,
    texts: Iterable[tuple[str, str]] = (),
) -> list[RuleError]:
    """Every problem in the given files (with the defaults loaded first when asked)."""
    defs = definitions(paths, default=default, texts=texts)
    defs.compile()
    return sorted(defs.errors, key=_order)


def _order(err: RuleError) -> tuple[str, int, int]:
    return (err.file, err.line, err.column)
