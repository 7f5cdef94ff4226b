"""Argument values as conditions see them: decoded from the record encoding.

Rules compare against what the code passed, not its JSON form: an encoded ``str``
subclass or a truncated string compares as its text, bytes as text
(``surrogateescape`` for non-UTF-8, as paths are), tuples and lists as lists, dicts
as dicts. Opaque objects (code, function, type, object) stay as their descriptions,
whose keys (``name``, ``file``, ``type``...) can be indexed: ``exec.code_object[file]``.
"""

from __future__ import annotations

from typing import Any

from auditwatch.records import plain, text


class Dict(dict):  # type: ignore[type-arg]
    """A decoded dict argument (string operators test its keys); ``size`` is the
    original number of items even when the record cut it short."""

    size = 0


def decode(value: Any) -> Any:
    kind = type(value)
    if kind is str or kind is int or value is None or kind is float or kind is bool:
        return value
    if kind is list:
        return [decode(v) for v in value]
    if kind is not dict:
        return value
    tag = value.get("$")
    if tag == "str":
        return plain(value)
    if tag == "bytes" or tag == "bytearray":
        return text(value)
    if tag == "list" or tag == "tuple":
        return [decode(v) for v in value.get("items", ())]
    if tag == "dict":
        out = Dict()
        for pair in value.get("items", ()):
            if isinstance(pair, list) and len(pair) == 2:
                key = decode(pair[0])
                try:
                    out[key] = decode(pair[1])
                except TypeError:  # an unhashable key (a list): keep it out of the way
                    continue
        out.size = value.get("len", len(out))
        return out
    if tag == "int" and "hex" in value:
        return int(value["hex"], 16)
    if tag == "float":
        return float(value.get("v", "nan"))
    return value  # code, function, type, object, deep: the description


def length(value: Any) -> int | None:
    if type(value) is Dict:
        return value.size
    if isinstance(value, (str, list)):
        return len(value)
    return None


def render(value: Any) -> str:
    """A value in an alert's output text: short and unambiguous."""
    if value is None:
        return "<NA>"
    if type(value) is str:
        return value
    if type(value) is list:
        return " ".join(render(v) for v in value)
    if type(value) is Dict:
        return "{" + ", ".join(f"{render(k)}={render(v)}" for k, v in value.items()) + "}"
    if type(value) is dict:
        tag = value.get("$", "")
        name = value.get("name") or value.get("type") or ""
        where = f" {value['file']}" if "file" in value else ""
        return f"<{tag} {name}{where}>"
    return str(value)
