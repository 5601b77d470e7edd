"""``-k EXPR`` for the ``bridgeperf`` command: pytest's keyword expressions over node ids.

``words`` match case-insensitively as substrings of the node id; ``and``, ``or``, ``not`` and
parentheses combine them, as in ``pytest -k``. No pytest here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["SelectionError", "keyword_matcher"]

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class SelectionError(ValueError):
    """The expression cannot be parsed; the message quotes it."""


def keyword_matcher(expression: str | None) -> Callable[[str], bool]:
    """A predicate over node ids; ``None`` or an empty expression selects everything."""
    if expression is None or not expression.strip():
        return lambda nodeid: True
    tokens = _TOKEN.findall(expression)
    position = 0

    def fail(problem: str) -> SelectionError:
        return SelectionError(f"-k {expression!r}: {problem}")

    def peek() -> str | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> str:
        nonlocal position
        token = peek()
        if token is None:
            raise fail("unexpected end of the expression")
        position += 1
        return token

    def parse_or() -> Callable[[str], bool]:
        left = parse_and()
        while peek() == "or":
            take()
            right = parse_and()
            left = (lambda a, b: lambda s: a(s) or b(s))(left, right)
        return left

    def parse_and() -> Callable[[str], bool]:
        left = parse_not()
        while peek() == "and":
            take()
            right = parse_not()
            left = (lambda a, b: lambda s: a(s) and b(s))(left, right)
        return left

    def parse_not() -> Callable[[str], bool]:
        token = take()
        if token == "not":
            inner = parse_not()
            return lambda s: not inner(s)
        if token == "(":
            inner = parse_or()
            if take() != ")":
                raise fail("expected ')'")
            return inner
        if token in ("and", "or", ")"):
            raise fail(f"unexpected {token!r}")
        word = token.lower()
        return lambda s: word in s.lower()

    predicate = parse_or()
    if peek() is not None:
        raise fail(f"unexpected {peek()!r}")
    return predicate
