"""Alert output templates: Falco's ``%field`` substitutions, compiled once.

``%open.file``, ``%proc.exe``, ``%args[0]``; ``%%`` is a literal percent sign. A field
name ends at the first character that cannot be part of one, and a trailing dot is
punctuation. Transforms (``basename(...)``) are for conditions only. Unknown fields
are load-time errors; a field the record has no value for renders as ``<NA>``.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from auditwatch.rules import fields as fieldmod
from auditwatch.rules.errors import RuleError
from auditwatch.rules.fields import FieldError
from auditwatch.rules.values import render

Render = Callable[[dict, Any], str]
_FIELD = re.compile(r"%%|%([A-Za-z_][\w./]*(?:\[[^\]\s]*\])*)")
MAX_VALUE = 200  # characters of one value in an alert line: argv and env can be huge


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def compile_template(template: str, error: Callable[[str, int], RuleError]) -> Render:
    parts: list[str | Callable[[dict, Any], Any]] = []
    pos = 0
    for m in _FIELD.finditer(template):
        parts.append(template[pos : m.start()])
        if m.group() == "%%":
            parts.append("%")
            pos = m.end()
            continue
        name = m.group(1)
        trail = len(name) - len(name.rstrip("."))
        name = name[: len(name) - trail] if trail else name
        try:
            parts.append(fieldmod.field(name).get)
        except FieldError as exc:
            raise error(f"output: {exc}", m.start(1)) from None
        pos = m.end() - trail
    parts.append(template[pos:])
    pieces = [p for p in parts if p != ""]

    def render_output(rec: dict, proc: Any) -> str:
        out = []
        for piece in pieces:
            if type(piece) is str:
                out.append(piece)
            else:
                out.append(_short(render(piece(rec, proc))))  # type: ignore[operator]
        return "".join(out)

    return render_output
