"""Enum variant values written as expressions (``value = "1 << 1"``, ``"Streaming | Metrics"``).

A small recursive-descent evaluator; nothing is ever handed to :func:`eval`. Grammar::

    expr  := shift ("|" shift)*
    shift := unary ("<<" unary)*
    unary := "~" unary | atom
    atom  := INT | NAME | "(" expr ")"

``INT`` is a decimal, ``0x`` hex, ``0b`` binary or ``0o`` octal literal (``_`` separators
allowed); ``NAME`` is a variant declared earlier in the same enum. ``~x`` is ``-x - 1``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = ["EnumExprError", "evaluate"]

_TOKEN: Final = re.compile(
    r"\s*(?:(?P<int>0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|[0-9][0-9_]*)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op><<|\||~|\(|\)))"
)
#: Shift counts past this are refused (no value of any repr needs more, and huge ones cost memory).
_MAX_SHIFT: Final = 64
_MAX_LENGTH: Final = 1000
_MAX_DEPTH: Final = 50


class EnumExprError(ValueError):
    """The expression is not valid; the text says why."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise EnumExprError(f"unexpected {text[pos:].strip()[:10]!r}")
        kind = m.lastgroup or "op"
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], names: Mapping[str, int]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.names = names
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise EnumExprError("the expression ends too early")
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expr(self) -> int:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise EnumExprError("too deeply nested")
        value = self.shift()
        while self.peek() == "|":
            self.take()
            value |= self.shift()
        self.depth -= 1
        return value

    def shift(self) -> int:
        value = self.unary()
        while self.peek() == "<<":
            self.take()
            count = self.unary()
            if not 0 <= count <= _MAX_SHIFT:
                raise EnumExprError(f"shift count {count} is outside 0..{_MAX_SHIFT}")
            value <<= count
        return value

    def unary(self) -> int:
        if self.peek() == "~":
            self.take()
            self.depth += 1
            if self.depth > _MAX_DEPTH:
                raise EnumExprError("too deeply nested")
            value = -self.unary() - 1
            self.depth -= 1
            return value
        return self.atom()

    def atom(self) -> int:
        kind, text = self.take()
        if kind == "int":
            digits = text.replace("_", "")
            try:
                return int(digits, 0) if len(digits) > 1 and digits[1] in "xXbBoO" else int(digits, 10)
            except ValueError:
                raise EnumExprError(f"{text!r} is not an integer literal") from None
        if kind == "name":
            if text not in self.names:
                raise EnumExprError(f"{text!r} is not a variant declared before this one")
            return self.names[text]
        if text == "(":
            value = self.expr()
            if self.pos >= len(self.tokens) or self.take()[1] != ")":
                raise EnumExprError("a '(' is not closed")
            return value
        raise EnumExprError(f"unexpected {text!r}")


def evaluate(text: str, names: Mapping[str, int]) -> int:
    """The value of ``text``.

    :param names: the variants declared so far, by name
    :raises EnumExprError: not a valid expression (an unknown name, a bad token, unbalanced parentheses)
    """
    if len(text) > _MAX_LENGTH:
        raise EnumExprError(f"longer than {_MAX_LENGTH} characters")
    tokens = _tokens(text)
    if not tokens:
        raise EnumExprError("empty")
    p = _Parser(tokens, names)
    value = p.expr()
    if p.pos != len(tokens):
        raise EnumExprError(f"unexpected {tokens[p.pos][1]!r}")
    return value
