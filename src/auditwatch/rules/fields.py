"""Field names in conditions and output templates, resolved to getter closures.

A getter takes ``(record, proc)`` (proc: the run's ProcInfo or None) and returns the
decoded value, or None when the record has no such value: a comparison on a missing
value is false, whatever the operator (``!=`` included), as in Falco.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Callable

from auditwatch import catalog
from auditwatch.rules.procs import PROC_FIELDS
from auditwatch.rules.values import decode, length

Getter = Callable[[dict, Any], Any]

# Static type of a field, for checks at load time; "any" is decided per record.
STR, INT, ADDRESS, LIST, ANY = "str", "int", "address", "list", "any"

_RECORD_FIELDS = {"action": STR, "installed": STR, "tid": INT, "interp": INT, "run": STR}
_WHERE_FIELDS = {"file": STR, "line": INT, "func": STR}
_PROC_TYPES = {
    "argv": LIST,
    "exe": STR,
    "user": STR,
    "uid": INT,
    "gid": INT,
    "cwd": STR,
    "pid": INT,
    "ppid": INT,
    "host": STR,
}
_ADDRESS_ARGS = ("address", "host", "hostname")
_CATALOG_TYPES = {"str": STR, "int": INT, "bytes": STR}
_SUFFIX = re.compile(r"\[([^\[\]]*)\]")


class FieldError(Exception):
    """An unknown or malformed field name (the compiler adds the position)."""


@dataclass(frozen=True)
class Field:
    name: str
    get: Getter
    type: str
    event: str | None = None  # the event this field implies (``open.file`` -> "open")
    arg: int | None = None  # argument position, for the native matcher
    indexed: bool = False  # has [..] suffixes or transforms: not for the native matcher
    events: frozenset | None = None  # the events a derived field has values for
    sparse: bool = False  # usually missing even on its events: worth checking once per record

    @property
    def implies(self) -> frozenset | None:
        """The only events this field has a value for (None: any event)."""
        if self.event is not None:
            return frozenset((self.event,))
        return self.events


def static_names() -> list[str]:
    names = ["event", "event.category", "args[N]", "write.path"]
    names += [f"proc.{n}" for n in _PROC_TYPES] + [f"proc.parent.{n}" for n in _PROC_TYPES]
    names += [f"where.{n}" for n in _WHERE_FIELDS] + [f"record.{n}" for n in _RECORD_FIELDS]
    return names


def _split_suffix(name: str) -> tuple[str, list[int | str]]:
    cut = name.find("[")
    if cut < 0:
        return name, []
    base, rest = name[:cut], name[cut:]
    keys: list[int | str] = []
    pos = 0
    for m in _SUFFIX.finditer(rest):
        if m.start() != pos:
            break
        key = m.group(1)
        keys.append(int(key) if key.lstrip("-").isdigit() else key)
        pos = m.end()
    if pos != len(rest) or not all(k != "" for k in keys):
        raise FieldError(f"malformed index in field {name!r} (expected [N] or [key])")
    return base, keys


def _index(get: Getter, keys: list[int | str]) -> Getter:
    def indexed(rec: dict, proc: Any) -> Any:
        value = get(rec, proc)
        for key in keys:
            if type(key) is int and type(value) is list:
                value = value[key] if -len(value) <= key < len(value) else None
            elif isinstance(value, dict):
                value = value.get(key)
            else:
                return None
        return value

    return indexed


def _arg_getter(index: int, event: str | None) -> Getter:
    if event is None:

        def positional(rec: dict, proc: Any) -> Any:
            args = rec.get("args")
            if args is None or index >= len(args):
                return None
            return decode(args[index])

        return positional

    def named(rec: dict, proc: Any) -> Any:
        if rec.get("event") != event:
            return None
        args = rec.get("args")
        if args is None or index >= len(args):
            return None
        return decode(args[index])

    return named


def _proc_getter(attr: str, parent: bool) -> Getter:
    if attr == "pid" and not parent:
        return lambda rec, proc: rec.get("pid")
    if parent:

        def parent_field(rec: dict, proc: Any) -> Any:
            up = proc.parent if proc is not None else None
            return getattr(up, attr) if up is not None else None

        return parent_field
    return lambda rec, proc: getattr(proc, attr) if proc is not None else None


def _where_getter(key: str) -> Getter:
    def where(rec: dict, proc: Any) -> Any:
        w = rec.get("where")
        return decode(w.get(key)) if w else None

    return where


def _event_arg(name: str) -> Field:
    """``<event name>.<argument name>``: event names and argument names both contain
    dots (``import.sys.path``), so every split is tried against the catalogue."""
    parts = name.split(".")
    known_event = None
    for cut in range(len(parts) - 1, 0, -1):
        event, arg = ".".join(parts[:cut]), ".".join(parts[cut:])
        entry = catalog.lookup(event)
        if entry is None:
            continue
        names = [a.name for a in entry.args]
        if arg in names:
            i = names.index(arg)
            a = entry.args[i]
            kind = ADDRESS if a.name in _ADDRESS_ARGS else _CATALOG_TYPES.get(a.type, ANY)
            return Field(name, _arg_getter(i, event), kind, event=event, arg=i)
        known_event = known_event or (event, names)
    if known_event:
        event, names = known_event
        valid = ", ".join(names) if names else "none: match it by `event = " + event + "`"
        raise FieldError(f"event {event!r} has no argument {parts[-1]!r}; its arguments: {valid}")
    whole = catalog.lookup(name)
    if whole is not None:
        args = ", ".join(a.name for a in whole.args) or "none"
        raise FieldError(
            f"{name!r} is an event, not a field: test it with `event = {name}`,"
            f" or name one of its arguments ({args})"
        )
    close = difflib.get_close_matches(name, static_names() + sorted(catalog.load()), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise FieldError(
        f"unknown field {name!r}{hint}; fields are event, event.category, args[N], "
        "write.path, proc.*, proc.parent.*, where.*, record.* and <event>.<argument>"
    )


def resolve(name: str) -> Field:
    base, keys = _split_suffix(name)
    field = _resolve_base(base, bool(keys))
    if not keys:
        return field
    return Field(
        name,
        _index(field.get, keys),
        ANY,
        field.event,
        field.arg,
        indexed=True,
        events=field.events,
    )


# Where a record writes: open for writing or appending (O_WRONLY/O_RDWR in flags), or
# the destination of a rename, link, copy or move. Linux flag values, like the hook.
WRITE_EVENTS = {
    "os.rename": 1,
    "os.link": 1,
    "os.symlink": 1,
    "shutil.copyfile": 1,
    "shutil.copytree": 1,
    "shutil.move": 1,
}
_O_ACCMODE_WRITE = 0o3


def _write_path(rec: dict, proc: Any) -> Any:
    event = rec.get("event")
    args = rec.get("args")
    if not args:
        return None
    if event == "open":
        flags = args[2] if len(args) > 2 else None
        mode = args[1] if len(args) > 1 else None
        writes = (type(flags) is int and flags & _O_ACCMODE_WRITE) or (
            type(mode) is str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        )
        return decode(args[0]) if writes else None
    index = WRITE_EVENTS.get(event)  # type: ignore[arg-type]
    if index is None or index >= len(args):
        return None
    return decode(args[index])


def _resolve_base(base: str, has_index: bool) -> Field:
    if base == "write.path":
        events = frozenset(("open", *WRITE_EVENTS))
        return Field(base, _write_path, STR, events=events, sparse=True)
    if base == "event":
        return Field(base, lambda rec, proc: rec.get("event"), STR)
    if base == "event.category":
        return Field(base, lambda rec, proc: catalog.category(rec.get("event", "")), STR)
    if base == "args":
        raise FieldError("args needs a position: args[0], args[1], ...")
    head, _, attr = base.rpartition(".")
    if head in ("proc", "proc.parent") and attr in _PROC_TYPES:
        assert attr in PROC_FIELDS
        return Field(base, _proc_getter(attr, head == "proc.parent"), _PROC_TYPES[attr])
    if head == "where" and attr in _WHERE_FIELDS:
        return Field(base, _where_getter(attr), _WHERE_FIELDS[attr])
    if head == "record" and attr in _RECORD_FIELDS:
        return Field(base, lambda rec, proc: rec.get(attr), _RECORD_FIELDS[attr])
    if head in ("proc", "proc.parent", "where", "record"):
        valid = {"proc": _PROC_TYPES, "proc.parent": _PROC_TYPES, "where": _WHERE_FIELDS}.get(
            head, _RECORD_FIELDS
        )
        raise FieldError(f"unknown field {base!r}; {head}.* fields: {', '.join(valid)}")
    return _event_arg(base)


def resolve_args(name: str) -> Field:
    """``args[N]...``: the N-th argument of any event."""
    base, keys = _split_suffix(name)
    if base != "args" or not keys or type(keys[0]) is not int or keys[0] < 0:
        raise FieldError(f"malformed field {name!r} (expected args[N] with N >= 0)")
    get = _arg_getter(keys[0], None)
    if len(keys) == 1:
        return Field(name, get, ANY, arg=keys[0])
    return Field(name, _index(get, keys[1:]), ANY, arg=keys[0], indexed=True)


def field(name: str) -> Field:
    """Resolve any field name; raises FieldError with a helpful message."""
    if name.startswith("args["):
        return resolve_args(name)
    return resolve(name)


# -- transforms: basename(f), dirname(f), lower(f), len(f) ----------------------------


def _map_text(fn: Callable[[str], Any]) -> Callable[[Any], Any]:
    def apply(value: Any) -> Any:
        if type(value) is str:
            return fn(value)
        if type(value) is list:
            return [fn(v) if type(v) is str else v for v in value]
        return None

    return apply


_TRANSFORMS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "basename": (_map_text(lambda s: s.rpartition("/")[2]), STR),
    "dirname": (_map_text(lambda s: s.rpartition("/")[0]), STR),
    "lower": (_map_text(str.lower), STR),
    "len": (length, INT),
}


def transformed(base: Field, names: tuple[str, ...]) -> Field:
    get, kind = base.get, base.type
    for name in names:
        fn, out = _TRANSFORMS[name]
        if name != "len" and kind == INT:
            raise FieldError(f"{name}() needs text, and {base.name} is a number")
        kind = LIST if (kind == LIST and out == STR) else out

        def get(rec: dict, proc: Any, _inner: Getter = get, _fn: Callable = fn) -> Any:
            value = _inner(rec, proc)
            return None if value is None else _fn(value)

    label = base.name
    for name in names:
        label = f"{name}({label})"
    return Field(label, get, kind, base.event, base.arg, indexed=True, events=base.events)
