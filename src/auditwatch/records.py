"""Helpers for reading records (docs/schema.md): decoding encoded argument values."""

from __future__ import annotations

import base64
from typing import Any


def plain(value: Any) -> Any:
    """The Python-ish value behind an encoded argument.

    Cut strings give their recorded prefix, bytes their text (or raw bytes when
    they were not UTF-8), containers their items; opaque objects stay as they are.
    """
    if not isinstance(value, dict) or "$" not in value:
        return value
    tag = value["$"]
    if tag == "str":
        return value.get("v", "")
    if tag in ("bytes", "bytearray"):
        if "text" in value:
            return value["text"]
        return base64.b64decode(value.get("b64", ""))
    if tag in ("list", "tuple"):
        return [plain(v) for v in value.get("items", [])]
    return value


def text(value: Any) -> str | None:
    """An argument as text when it is a string or bytes, else None."""
    v = plain(value)
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    return None


def arg(record: dict, index: int) -> Any:
    args = record.get("args") or []
    return args[index] if index < len(args) else None
