"""The condition tokenizer and parser: shapes of the syntax tree, and offsets."""

from __future__ import annotations

import pytest

from auditwatch.rules.errors import ConditionError
from auditwatch.rules.syntax import (
    BoolOp,
    Compare,
    FieldValue,
    ListValue,
    Literal,
    MacroRef,
    Not,
    parse,
    parse_continuation,
    tokenize,
)


def test_tokens_keep_offsets_and_words_need_no_quotes() -> None:
    toks = tokenize('open.file glob /etc/* and args[1] != "a b"')
    assert [(t.kind, t.text, t.offset) for t in toks] == [
        ("word", "open.file", 0),
        ("word", "glob", 10),
        ("word", "/etc/*", 15),
        ("word", "and", 22),
        ("word", "args[1]", 26),
        ("op", "!=", 34),
        ("str", '"a b"', 37),
        ("eof", "", 42),
    ]
    assert toks[6].value == "a b"


def test_numbers_networks_and_escapes() -> None:
    toks = tokenize(r"1 -2 0x10 1.5 10.0.0.0/8 'it\'s' '\d+'")
    assert [t.value for t in toks[:-1]] == [1, -2, 16, 1.5, "10.0.0.0/8", "it's", r"\d+"]
    assert [t.kind for t in toks[:-1]] == ["num", "num", "num", "num", "word", "str", "str"]


def test_precedence_not_over_and_over_or() -> None:
    tree = parse("a or not b and c")
    assert isinstance(tree, BoolOp) and tree.op == "or"
    left, right = tree.items
    assert left == MacroRef("a", 0)
    assert isinstance(right, BoolOp) and right.op == "and"
    assert isinstance(right.items[0], Not) and right.items[0].item == MacroRef("b", 9)


def test_parentheses_group() -> None:
    tree = parse("(a or b) and c")
    assert isinstance(tree, BoolOp) and tree.op == "and"
    assert isinstance(tree.items[0], BoolOp) and tree.items[0].op == "or"


def test_comparisons_lists_transforms_and_val() -> None:
    tree = parse("basename(args[0]) in (sh, 'bash', 3) and open.file exists")
    assert isinstance(tree, BoolOp)
    first, second = tree.items
    assert isinstance(first, Compare) and first.op == "in"
    assert first.operand.name == "args[0]" and first.operand.transforms == ("basename",)
    assert isinstance(first.value, ListValue)
    assert [i.value for i in first.value.items] == ["sh", "bash", 3]
    assert [i.quoted for i in first.value.items] == [False, True, False]
    assert isinstance(second, Compare) and second.op == "exists" and second.value is None
    cmp = parse("write.path startswith val(proc.cwd)")
    assert isinstance(cmp, Compare) and isinstance(cmp.value, FieldValue)
    assert cmp.value.operand.name == "proc.cwd"


def test_in_with_a_bare_list_name() -> None:
    cmp = parse("event in shells")
    assert isinstance(cmp, Compare) and isinstance(cmp.value, ListValue) and cmp.value.bare
    assert cmp.value.items == (Literal("shells", 9, False),)


def test_double_equals_is_equals() -> None:
    cmp = parse("event == open")
    assert isinstance(cmp, Compare) and cmp.op == "="


@pytest.mark.parametrize(
    ("text", "offset", "message"),
    [
        ("open.file startswit /etc", 10, "unknown operator 'startswit'"),
        ("a and", 5, "expected a field, macro or '(', found the end"),
        ("(a or b", 7, "expected ')'"),
        ("a or b)", 6, "unexpected ')' (unbalanced ')')"),
        ("open.file = 'x", 12, "unterminated string"),
        ("x ! y", 2, "unexpected '!'"),
        ("a b", 2, "unknown operator 'b'"),
        ("", 0, "empty condition"),
        ("open.file in (a b)", 16, "expected ',' or ')' in a list"),
        ("open.file =", 11, "expected a value"),
    ],
)
def test_syntax_errors_have_offsets(text: str, offset: int, message: str) -> None:
    with pytest.raises(ConditionError) as info:
        parse(text)
    assert info.value.offset == offset
    assert info.value.message.startswith(message)


def test_continuation_for_append() -> None:
    op, tree = parse_continuation("and not proc.exe = /bin/x")
    assert op == "and" and isinstance(tree, Not)
    with pytest.raises(ConditionError) as info:
        parse_continuation("proc.exe = /bin/x")
    assert info.value.offset == 0
