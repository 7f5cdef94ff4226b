"""Errors in rule files, located as ``file:line:column`` (1-based, like compilers)."""

from __future__ import annotations


class RuleError(Exception):
    """One problem in a rule file, at a position in it."""

    def __init__(self, message: str, file: str = "<rules>", line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class RuleErrors(Exception):
    """Every problem found in one load: a linter reports them all, not just the first."""

    def __init__(self, errors: list[RuleError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


class ConditionError(Exception):
    """A problem inside a condition string, at a character offset in it.

    The loader turns it into a RuleError by mapping the offset back to the file.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
