"""Rule files as YAML node trees that remember where every value came from.

PyYAML's compose API gives nodes with start marks; errors found later (in a
condition string, deep in a rule) are reported at the exact line and column by
mapping an offset inside a scalar's value back to the file text.
"""

from __future__ import annotations

import bisect
from typing import Any

import yaml

from auditwatch.rules.errors import RuleError

Node = yaml.Node


class Source:
    """One rule file: its text, its YAML root node, and position helpers."""

    def __init__(self, file: str, text: str) -> None:
        self.file = file
        self.text = text
        self._line_starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self._line_starts.append(i + 1)
        self._loader: Any = None

    def compose(self) -> Node | None:
        """The root node (None for an empty file); YAML errors become RuleErrors."""
        loader = yaml.SafeLoader(self.text)
        self._loader = loader
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            raise self.error_at_index(
                f"YAML syntax: {problem}", mark.index if mark else 0
            ) from None
        except yaml.YAMLError as exc:
            raise RuleError(f"YAML: {exc}", self.file, 1, 1) from None
        return root

    def value(self, node: Node) -> Any:
        """The plain Python value of a node (strings, numbers, lists, dicts)."""
        return self._loader.construct_object(node, deep=True)

    # -- positions -----------------------------------------------------------------

    def position(self, index: int) -> tuple[int, int]:
        line = bisect.bisect_right(self._line_starts, index) - 1
        return line + 1, index - self._line_starts[line] + 1

    def error_at_index(self, message: str, index: int) -> RuleError:
        line, column = self.position(index)
        return RuleError(message, self.file, line, column)

    def error(self, message: str, node: Node | None, offset: int = 0) -> RuleError:
        """An error at ``node``, or at character ``offset`` of its scalar value."""
        if node is None:
            return RuleError(message, self.file, 1, 1)
        return self.error_at_index(message, self.scalar_index(node, offset))

    def scalar_index(self, node: Node, offset: int) -> int:
        """The file index of character ``offset`` of a scalar's value.

        Folding, quoting and indentation make value and text differ, but only by
        whitespace, quotes and escapes: walking both side by side, skipping text
        characters until the next value character turns up, finds it.
        """
        start = node.start_mark.index
        if not isinstance(node, yaml.ScalarNode) or offset <= 0:
            return start + (1 if getattr(node, "style", None) in ('"', "'") else 0)
        end = node.end_mark.index
        text, value = self.text, node.value
        pos = start
        if node.style in ("|", ">"):
            pos = text.find("\n", start, end) + 1 or start
        elif node.style in ('"', "'"):
            pos = start + 1
        for i, ch in enumerate(value[: offset + 1]):
            found = self._next_match(ch, pos, end)
            if found < 0:
                break
            if i == offset:
                return found
            pos = found + 1
        return pos

    def _next_match(self, ch: str, pos: int, end: int) -> int:
        text = self.text
        if ch.isspace():  # folding turns a line break and its indentation into one space
            while pos < end and not text[pos].isspace():
                pos += 1
            return pos if pos < end else -1
        return text.find(ch, pos, end)
