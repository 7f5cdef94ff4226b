"""Comparison operators, built once per condition into small test functions.

A test takes a decoded, present value and answers a bool. Text operators on a list
(``proc.argv``, an address tuple) are true when any element matches; on a dict
(``subprocess.Popen.env``) when any key matches. Operators whose right side is a
list (``startswith (a, b)``) are true when any item matches.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import ipaddress
import re
from typing import Any, Callable, Sequence

from auditwatch.rules.fields import ADDRESS, ANY, INT, LIST, STR
from auditwatch.rules.values import Dict

Test = Callable[[Any], bool]
TEXT_OPERATORS = ("glob", "startswith", "endswith", "contains", "regex")
NUMBER_OPERATORS = ("<", ">", "<=", ">=", "bitand")
FIELD_OPERATORS = ("=", "!=", "startswith", "endswith", "contains")


class OperandError(Exception):
    """A type error; ``item`` is the index of the offending literal, None for the operator."""

    def __init__(self, message: str, item: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.item = item


def _any_text(match: Callable[[str], bool]) -> Test:
    def test(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            return match(value)
        if kind is list or kind is Dict:
            return any(type(v) is str and match(v) for v in value)
        return False

    return with_text_path(test, match)


def with_text_path(test: Test, on_text: Callable[[str], bool]) -> Test:
    """Attach the test's plain-string case, so the compiler can call it directly for the
    (most common) string values and skip a layer of calls."""
    test.on_text = on_text  # type: ignore[attr-defined]
    return test


def _text_values(op: str, values: Sequence[Any]) -> list[str]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise OperandError(f"'{op}' needs text, got {v!r}", i)
        out.append(v if isinstance(v, str) else str(v))
    return out


def _equal_set(values: Sequence[Any]) -> frozenset:
    """Literals as written, plus their other spelling: 443 matches "443" and back."""
    out: set[Any] = set()
    for v in values:
        out.add(v)
        if isinstance(v, str):
            if v in ("true", "false"):
                out.add(v == "true")
            elif v == "null":
                continue
            with contextlib.suppress(ValueError):
                out.add(int(v, 10))
        elif not isinstance(v, bool):
            out.add(str(v))
    return frozenset(out)


def _equals(values: Sequence[Any]) -> Test:
    wanted = _equal_set(values)

    def test(value: Any) -> bool:
        kind = type(value)
        if kind is list or kind is Dict:
            return any(type(v) is not list and type(v) is not dict and v in wanted for v in value)
        if kind is dict:
            return False
        return value in wanted

    return with_text_path(test, wanted.__contains__)


def _networks(values: Sequence[Any]) -> list[Any]:
    nets = []
    for i, v in enumerate(values):
        try:
            nets.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError:
            raise OperandError(f"{v!r} is not a network (e.g. 10.0.0.0/8, ::1/128)", i) from None
    return nets


def _address(value: Any) -> Any:
    """The IP address in a value: a str, or the host of an (host, port, ...) tuple."""
    if type(value) is list and value:
        value = value[0]
    if type(value) is not str:
        return None
    return _parse_address(value)


@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> Any:
    # Parsing is slow next to a rule check, and programs talk to few addresses.
    host = text.strip("[]").partition("%")[0]  # "[::1]", "fe80::1%eth0"
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _cidr(values: Sequence[Any]) -> Test:
    nets = _networks(values)

    def test(value: Any) -> bool:
        addr = _address(value)
        return addr is not None and any(addr.version == net.version and addr in net for net in nets)

    return test


def _numbers(op: str, values: Sequence[Any]) -> list[int | float]:
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OperandError(f"'{op}' compares numbers, and {v!r} is a string", i)
        if op == "bitand" and not isinstance(v, int):
            raise OperandError(f"'bitand' needs an integer mask, got {v!r}", i)
        out.append(v)
    if len(out) != 1:
        raise OperandError(f"'{op}' takes one number, not a list")
    return out


def _number_test(op: str, n: int | float) -> Test:
    def is_number(v: Any) -> bool:
        return (type(v) is int or type(v) is float) and v is not True and v is not False

    if op == "<":
        return lambda v: is_number(v) and v < n
    if op == ">":
        return lambda v: is_number(v) and v > n
    if op == "<=":
        return lambda v: is_number(v) and v <= n
    if op == ">=":
        return lambda v: is_number(v) and v >= n
    mask = int(n)
    return lambda v: type(v) is int and (v & mask) != 0


_WILD = re.compile(r"[*?\[]")
_BRACKETS = re.compile(r"\[!?\]?[^\]]*\]")


def glob_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """fnmatch semantics (`*` also matches `/`, as the hook's fnmatch(3) without
    flags), but most patterns are a literal with a `*` at one end or both: those
    become equality, startswith, endswith and substring tests, far cheaper than a
    regex that starts with `.*`."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    inner: list[str] = []
    regexes: list[tuple[str, Any]] = []
    for pat in patterns:
        core = pat.strip("*")
        if _WILD.search(core) or not core:
            body = pat.lstrip("*")
            translated = fnmatch.translate(body)  # "(?s:...)\Z" on every supported Python
            if body != pat and translated.startswith("(?s:") and translated.endswith(")\\Z"):
                # a leading `*`: search for the rest instead of backtracking over `.*`
                rx = re.compile(translated, re.DOTALL).search
            else:
                rx = re.compile(fnmatch.translate(pat), re.DOTALL).match
            # The longest literal piece must occur: a substring test rules most strings out.
            literal = max(_WILD.split(_BRACKETS.sub("*", pat)), key=len)
            regexes.append((literal, rx))
            continue
        lead, trail = pat.startswith("*"), pat.endswith("*")
        if lead and trail:
            inner.append(core)
        elif lead:
            suffixes.append(core)
        elif trail:
            prefixes.append(core)
        else:
            exact.add(core)
    pre, suf = tuple(prefixes), tuple(suffixes)

    def match(s: str) -> bool:
        if s in exact or (pre and s.startswith(pre)) or (suf and s.endswith(suf)):
            return True
        for needle in inner:
            if needle in s:
                return True
        for literal, rx in regexes:  # noqa: SIM110 - a generator costs more than the tests
            if literal in s and rx(s) is not None:
                return True
        return False

    return match


def _text_test(op: str, texts: list[str]) -> Test:
    if op == "startswith":
        prefixes = tuple(texts)
        return _any_text(lambda s: s.startswith(prefixes))
    if op == "endswith":
        suffixes = tuple(texts)
        return _any_text(lambda s: s.endswith(suffixes))
    if op == "contains":
        if len(texts) == 1:
            needle = texts[0]
            return _any_text(lambda s: needle in s)
        return _any_text(lambda s: any(t in s for t in texts))
    if op == "glob":
        return _any_text(glob_matcher(texts))
    regexes = []
    for i, t in enumerate(texts):
        try:
            regexes.append(re.compile(t))
        except re.error as exc:
            raise OperandError(f"bad regular expression {t!r}: {exc}", i) from None
    if len(regexes) == 1:
        search = regexes[0].search
        return _any_text(lambda s: search(s) is not None)
    return _any_text(lambda s: any(r.search(s) is not None for r in regexes))


def build(op: str, field_type: str, field_name: str, values: Sequence[Any]) -> Test:
    """A test for ``field op values``; raises OperandError on a type error."""
    if op in NUMBER_OPERATORS:
        if field_type not in (INT, ANY):
            raise OperandError(f"'{op}' compares numbers, and {field_name} is {_noun(field_type)}")
        return _number_test(op, _numbers(op, values)[0])
    if op in TEXT_OPERATORS:
        if field_type == INT:
            raise OperandError(f"'{op}' works on text, and {field_name} is a number")
        return _text_test(op, _text_values(op, values))
    if op == "cidr":
        if field_type not in (ADDRESS, ANY):
            raise OperandError(
                f"'cidr' needs an address field (socket.connect.address, args[N], ...),"
                f" and {field_name} is {_noun(field_type)}"
            )
        return _cidr(values)
    if op in ("=", "!=", "in"):
        if field_type == INT:
            for i, v in enumerate(values):
                if isinstance(v, str) and not v.lstrip("-").isdigit():
                    raise OperandError(f"{field_name} is a number, and {v!r} is not", i)
        test = _equals(values)
        if op == "!=":
            on_text = test.on_text  # type: ignore[attr-defined]
            return with_text_path(lambda v: not test(v), lambda s: not on_text(s))
        return test
    raise OperandError(f"unknown operator {op!r}")


def _noun(field_type: str) -> str:
    return {STR: "text", INT: "a number", LIST: "a list of text", ADDRESS: "an address"}.get(
        field_type, "a value"
    )


def field_relation(op: str) -> Callable[[Any, Any], bool]:
    """``field op val(other)``: the right side is known per record only."""
    if op == "=":
        return lambda v, r: v == r or (type(v) is list and r in v)
    if op == "!=":
        return lambda v, r: not (v == r or (type(v) is list and r in v))
    method = {"startswith": str.startswith, "endswith": str.endswith}.get(op)
    if method is not None:
        return lambda v, r: type(r) is str and _any_text(lambda s: method(s, r))(v)
    return lambda v, r: type(r) is str and _any_text(lambda s: r in s)(v)


GUARD_OPERATORS = ("=", "in", "glob", "startswith", "endswith", "contains", "regex")


def text_union(parts: Sequence[tuple[str, Sequence[Any]]]) -> Callable[[str], bool]:
    """One test that is true when any of several ``(operator, values)`` text tests is:
    the engine asks it once per record for a group of rules that each need one of them."""
    globs: list[str] = []
    regexes: list[Any] = []
    for op, values in parts:
        texts = [v for v in values if isinstance(v, str)]
        if op in ("=", "in"):
            globs.extend(_glob_escape(t) for t in texts)
        elif op == "startswith":
            globs.extend(_glob_escape(t) + "*" for t in texts)
        elif op == "endswith":
            globs.extend("*" + _glob_escape(t) for t in texts)
        elif op == "contains":
            globs.extend("*" + _glob_escape(t) + "*" for t in texts)
        elif op == "glob":
            globs.extend(texts)
        else:
            regexes.extend(re.compile(t).search for t in texts)
    match = glob_matcher(globs)
    if not regexes:
        return match
    return lambda s: match(s) or any(rx(s) is not None for rx in regexes)


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
