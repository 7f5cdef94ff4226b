"""Condition syntax: a tokenizer that keeps offsets and a recursive-descent parser.

    expr       := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" expr ")" | comparison | macro-name
    comparison := operand OPERATOR value | operand "exists"
    operand    := FIELD | TRANSFORM "(" operand ")"
    value      := STRING | NUMBER | WORD | "(" item ("," item)* ")" | "val(" operand ")"

A WORD is any run of characters other than blanks, parentheses, commas, quotes and
comparison signs, so paths (``/etc/shadow``), globs (``*.pth``), networks
(``10.0.0.0/8``) and fields (``args[0]``) need no quotes. Names are resolved later
(fields, lists, macros), by the compiler, which knows the catalogue and the ruleset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

from auditwatch.rules.errors import ConditionError

# Operators that take a value, and the unary one.
BINARY_OPERATORS = (
    "=",
    "!=",
    "<",
    ">",
    "<=",
    ">=",
    "in",
    "glob",
    "startswith",
    "endswith",
    "contains",
    "regex",
    "cidr",
    "bitand",
)
UNARY_OPERATORS = ("exists",)
KEYWORDS = ("and", "or", "not")
TRANSFORMS = ("basename", "dirname", "lower", "len")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<punct>[(),])
  | (?P<op>==|!=|<=|>=|=|<|>)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<badstr>["'])
  | (?P<word>[^\s(),=!<>"']+)
  | (?P<bad>!)
    """,
    re.VERBOSE | re.DOTALL,
)
_NUMBER = re.compile(r"-?(?:0x[0-9a-fA-F]+|0o[0-7]+|\d+(?:\.\d+)?)")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


@dataclass(frozen=True)
class Token:
    kind: str  # "(", ")", ",", "op", "str", "num", "word", "eof"
    text: str
    offset: int
    value: object = None


def _unquote(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
            continue
        out.append(ch)  # other backslashes stay: regexes keep their \d and \.
        i += 1
    return "".join(out)


def _number(text: str) -> int | float:
    if "." in text:
        return float(text)
    return int(text, 0 if text.lstrip("-")[:2] in ("0x", "0o") else 10)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m is not None  # the alternatives cover every character
        kind = m.lastgroup
        chunk = m.group()
        if kind == "punct":
            tokens.append(Token(chunk, chunk, pos))
        elif kind == "op":
            tokens.append(Token("op", "=" if chunk == "==" else chunk, pos))
        elif kind == "str":
            tokens.append(Token("str", chunk, pos, _unquote(chunk[1:-1])))
        elif kind == "badstr":
            raise ConditionError(f"unterminated string starting with {chunk}", pos)
        elif kind == "word":
            if _NUMBER.fullmatch(chunk):
                tokens.append(Token("num", chunk, pos, _number(chunk)))
            else:
                tokens.append(Token("word", chunk, pos, chunk))
        elif kind == "bad":
            raise ConditionError("unexpected '!' (did you mean != or not?)", pos)
        pos = m.end()
    tokens.append(Token("eof", "", len(text)))
    return tokens


# -- syntax tree -------------------------------------------------------------------


@dataclass(frozen=True)
class Literal:
    value: object  # str, int or float
    offset: int
    quoted: bool  # a quoted string is never a list name


@dataclass(frozen=True)
class ListValue:
    items: tuple[Literal, ...]
    offset: int
    bare: bool = False  # `in names` without parentheses: must name a list


@dataclass(frozen=True)
class FieldValue:
    """``val(field)``: compare with another field of the same record (Falco's val())."""

    operand: Operand
    offset: int


@dataclass(frozen=True)
class Operand:
    name: str  # field name, e.g. "open.file" or "args[0][1]"
    offset: int
    transforms: tuple[str, ...] = ()  # applied innermost first


@dataclass(frozen=True)
class Compare:
    operand: Operand
    op: str
    value: Literal | ListValue | FieldValue | None
    offset: int  # of the operator


@dataclass(frozen=True)
class MacroRef:
    name: str
    offset: int


@dataclass(frozen=True)
class Not:
    item: Expr
    offset: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    items: tuple[Expr, ...]
    offset: int = 0  # of the first operator keyword


Expr = Union[Compare, MacroRef, Not, BoolOp]


@dataclass
class _Parser:
    tokens: list[Token]
    pos: int = 0
    depth: int = field(default=0)

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.peek()
        self.pos += 1
        return tok

    def is_word(self, tok: Token, *words: str) -> bool:
        return tok.kind == "word" and tok.text in words

    def expect(self, kind: str, what: str) -> Token:
        tok = self.peek()
        if tok.kind != kind:
            raise ConditionError(f"expected {what}, found {_describe(tok)}", tok.offset)
        return self.take()

    def expr(self) -> Expr:
        return self.boolean("or", self.and_expr)

    def and_expr(self) -> Expr:
        return self.boolean("and", self.unary)

    def boolean(self, op: str, sub) -> Expr:  # type: ignore[no-untyped-def]
        items = [sub()]
        first = self.peek().offset
        while self.is_word(self.peek(), op):
            self.take()
            items.append(sub())
        return items[0] if len(items) == 1 else BoolOp(op, tuple(items), first)

    def unary(self) -> Expr:
        tok = self.peek()
        if self.is_word(tok, "not"):
            self.take()
            return Not(self.unary(), tok.offset)
        if tok.kind == "(":
            self.take()
            self.depth += 1
            if self.depth > 100:
                raise ConditionError("parentheses nested too deeply", tok.offset)
            inner = self.expr()
            self.depth -= 1
            self.expect(")", "')'")
            return inner
        if tok.kind != "word" or tok.text in KEYWORDS:
            raise ConditionError(
                f"expected a field, macro or '(', found {_describe(tok)}", tok.offset
            )
        return self.comparison()

    def comparison(self) -> Expr:
        operand = self.operand()
        tok = self.peek()
        if tok.kind == "op" or (tok.kind == "word" and tok.text in BINARY_OPERATORS):
            self.take()
            return Compare(operand, tok.text, self.value(tok.text), tok.offset)
        if self.is_word(tok, *UNARY_OPERATORS):
            self.take()
            return Compare(operand, tok.text, None, tok.offset)
        if tok.kind in ("eof", ")") or self.is_word(tok, "and", "or"):
            if operand.transforms:
                raise ConditionError(f"expected an operator after {operand.name!r}", tok.offset)
            return MacroRef(operand.name, operand.offset)
        if tok.kind == "word":
            raise ConditionError(
                f"unknown operator {tok.text!r}; operators: "
                + ", ".join(BINARY_OPERATORS + UNARY_OPERATORS),
                tok.offset,
            )
        raise ConditionError(f"expected an operator, found {_describe(tok)}", tok.offset)

    def operand(self) -> Operand:
        tok = self.expect("word", "a field")
        if tok.text in TRANSFORMS and self.peek().kind == "(":
            self.take()
            inner = self.operand()
            self.expect(")", f"')' closing {tok.text}(")
            return Operand(inner.name, inner.offset, (*inner.transforms, tok.text))
        if tok.text in KEYWORDS:
            raise ConditionError(f"expected a field, found {tok.text!r}", tok.offset)
        return Operand(tok.text, tok.offset)

    def value(self, op: str) -> Literal | ListValue | FieldValue:
        tok = self.peek()
        if self.is_word(tok, "val") and self.peek(1).kind == "(":
            self.take()
            self.take()
            operand = self.operand()
            self.expect(")", "')' closing val(")
            return FieldValue(operand, tok.offset)
        if tok.kind == "(":
            self.take()
            items: list[Literal] = []
            while self.peek().kind != ")":
                items.append(self.literal())
                if self.peek().kind == ",":
                    self.take()
                elif self.peek().kind != ")":
                    raise ConditionError(
                        f"expected ',' or ')' in a list, found {_describe(self.peek())}",
                        self.peek().offset,
                    )
            self.take()
            return ListValue(tuple(items), tok.offset)
        lit = self.literal()
        if op == "in":
            return ListValue((lit,), lit.offset, bare=True)
        return lit

    def literal(self) -> Literal:
        tok = self.peek()
        if tok.kind in ("str", "num") or (tok.kind == "word" and tok.text not in KEYWORDS):
            self.take()
            return Literal(tok.value, tok.offset, tok.kind == "str")
        raise ConditionError(f"expected a value, found {_describe(tok)}", tok.offset)


def _describe(tok: Token) -> str:
    return "the end of the condition" if tok.kind == "eof" else repr(tok.text)


def parse(text: str) -> Expr:
    """Parse a condition; raises ConditionError with the offset of the problem."""
    tokens = tokenize(text)
    if tokens[0].kind == "eof":
        raise ConditionError("empty condition", 0)
    parser = _Parser(tokens)
    tree = parser.expr()
    tok = parser.peek()
    if tok.kind != "eof":
        hint = " (unbalanced ')')" if tok.kind == ")" else " (missing 'and' or 'or'?)"
        raise ConditionError(f"unexpected {_describe(tok)}{hint}", tok.offset)
    return tree


def parse_continuation(text: str) -> tuple[str, Expr]:
    """An appended condition: ``and ...`` or ``or ...`` (Falco's `append: true`)."""
    tokens = tokenize(text)
    first = tokens[0]
    if not (first.kind == "word" and first.text in ("and", "or")):
        raise ConditionError("an appended condition must start with 'and' or 'or'", first.offset)
    parser = _Parser(tokens, pos=1)
    tree = parser.expr()
    tok = parser.peek()
    if tok.kind != "eof":
        raise ConditionError(f"unexpected {_describe(tok)}", tok.offset)
    return first.text, tree
