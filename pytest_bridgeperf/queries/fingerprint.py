"""SQL fingerprints: one canonical text per statement *shape*.

Literals and bound parameters become ``?``, ``IN (...)`` lists and repeated ``VALUES`` tuples
collapse, whitespace, comments and keyword case are normalised, savepoint names are erased. Two
statements that differ only in their data get the same fingerprint, so a fingerprint multiset is
stable across runs and machines and can live in a baseline.

Pure Python, no SQLAlchemy: the plugin and the ``bridgeperf`` command use it on stored baselines.
"""

from __future__ import annotations

import re

__all__ = ["TRANSACTION_KEYWORDS", "fingerprint", "is_transaction_control"]

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?P<str>[EeBbXxNnUu]?'(?:[^']|'')*')
    | (?P<dollar>\$(?P<tag>[^\W\d]\w*|)\$.*?\$(?P=tag)\$)
    | (?P<qident>"(?:[^"]|"")*"|`[^`]*`)
    | (?P<param>\?|%\([^()]+\)s|%s|\$\d+|(?<![:\w]):[^\W\d]\w*|(?<![:\w]):\d+)
    | (?P<num>(?:0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))
    | (?P<word>[^\W\d][\w$]*)
    | (?P<op>\.\.\.|::|<=|>=|<>|!=|\|\||->>|->|\S)
    """,
    re.VERBOSE | re.DOTALL,
)

#: Words upper-cased in fingerprints. Unquoted identifiers are case-insensitive in SQL, so
#: upper-casing a column that happens to be called ``key`` or ``value`` is harmless.
KEYWORDS = frozenset(
    """
    ABORT ALL ALTER ANALYZE AND ANY ARRAY AS ASC BEGIN BETWEEN BY CASCADE CASE CAST CHECK COLLATE
    COMMIT CONFLICT CONSTRAINT CREATE CROSS CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP DEFAULT
    DEFERRABLE DELETE DESC DISTINCT DO DROP ELSE END ESCAPE EXCEPT EXCLUSIVE EXISTS EXPLAIN FALSE
    FETCH FIRST FOR FOREIGN FROM FULL GLOB GROUP HAVING IF ILIKE IN INDEX INNER INSERT INTERSECT
    INTERVAL INTO IS ISNULL JOIN KEY LAST LATERAL LEFT LIKE LIMIT LOCK LOCKED NATURAL NEXT NO NOT
    NOTHING NOTNULL NOWAIT NULL NULLS OF OFFSET ON ONLY OR ORDER OUTER OVER PARTITION PRAGMA PRIMARY
    RECURSIVE REFERENCES RELEASE REPLACE RETURNING RIGHT ROLLBACK ROW ROWS SAVEPOINT SELECT SET
    SHARE SHOW SIMILAR SKIP SOME START TABLE TEMP TEMPORARY THEN TO TRANSACTION TRUE TRUNCATE UNION
    UNIQUE UPDATE USING VALUES VIEW WHEN WHERE WINDOW WITH WITHOUT
    """.split()  # noqa: SIM905 - a word block reads better than 130 quoted strings
)

#: Common functions: upper-cased, and written without a space before their parenthesis.
FUNCTIONS = frozenset(
    """
    ABS AVG COALESCE CONCAT COUNT DATE DATETIME EXTRACT GREATEST IFNULL JSON_EXTRACT LEAST LENGTH
    LOWER MAX MIN NOW NULLIF ROUND STRFTIME SUBSTR SUBSTRING SUM TRIM UPPER
    """.split()  # noqa: SIM905
)

#: First words of transaction-control statements (excluded from counts by default).
TRANSACTION_KEYWORDS = frozenset(
    ["BEGIN", "START", "COMMIT", "END", "ROLLBACK", "SAVEPOINT", "RELEASE", "ABORT"]
)

# A sign right after one of these is unary: ``= -5``, ``(-5``, ``SELECT -5``.
_OPERATOR_LIKE = frozenset(
    "= < > <= >= <> != ( , [ + - * / % || :: ->> -> ^ & | ~".split()  # noqa: SIM905
)
_PLACEHOLDER = "?"
_ELLIPSIS = "..."
_SUBQUERY_WORDS = frozenset(["SELECT", "WITH", "VALUES"])

_cache: dict[str, str] = {}
_CACHE_LIMIT = 20_000


def fingerprint(sql: str) -> str:
    """The canonical shape of ``sql`` (cached by the exact SQL text)."""
    cached = _cache.get(sql)
    if cached is not None:
        return cached
    result = _render(_collapse(_tokens(sql)))
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[sql] = result
    return result


def is_transaction_control(fingerprint_text: str) -> bool:
    """Whether a fingerprint is BEGIN / COMMIT / ROLLBACK / SAVEPOINT / RELEASE and friends."""
    first = fingerprint_text.split(" ", 1)[0].rstrip(";")
    return first in TRANSACTION_KEYWORDS


def _tokens(sql: str) -> list[str]:
    out: list[str] = []
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup
        if kind == "ws" or kind == "comment":
            continue
        text = match.group()
        if kind in ("str", "dollar", "param", "num"):
            # A sign in front of a literal is part of it when it cannot be a binary operator.
            while out and out[-1] in ("-", "+") and (len(out) == 1 or _unary_context(out[-2])):
                out.pop()
            out.append(_PLACEHOLDER)
        elif kind == "word":
            upper = text.upper() if text.isascii() else text
            out.append(upper if upper in KEYWORDS or upper in FUNCTIONS else text)
        elif kind == "tag":  # pragma: no cover - a sub-group, never the last group
            continue
        else:
            out.append(text)
    return out


def _unary_context(previous: str) -> bool:
    return previous in _OPERATOR_LIKE or previous in KEYWORDS


def _closing(tokens: list[str], start: int) -> int:
    """Index of the bracket closing the one at ``start`` (or -1)."""
    opening = tokens[start]
    close = ")" if opening == "(" else "]"
    depth = 0
    for index in range(start, len(tokens)):
        token = tokens[index]
        if token == opening:
            depth += 1
        elif token == close:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _is_value_list(inner: list[str]) -> bool:
    """Only placeholders (possibly cast, possibly in tuples): an IN list or array of data."""
    if not inner:
        return False
    previous = ""
    for token in inner:
        if token in (_PLACEHOLDER, ",", "(", ")", _ELLIPSIS, "::", "NULL", "[", "]"):
            pass
        elif previous == "::" and token not in _SUBQUERY_WORDS:
            pass  # a cast's type name: ``?::INTEGER``
        else:
            return False
        previous = token
    return True


def _collapse(tokens: list[str]) -> list[str]:
    tokens = _erase_savepoint_name(tokens)
    out: list[str] = []
    index = 0
    count = len(tokens)
    while index < count:
        token = tokens[index]
        out.append(token)
        index += 1
        if index >= count:
            break
        following = tokens[index]
        if (token == "IN" and following == "(") or (token == "ARRAY" and following == "["):
            end = _closing(tokens, index)
            if end > 0 and _is_value_list(tokens[index + 1 : end]):
                out.extend((following, _ELLIPSIS, tokens[end]))
                index = end + 1
        elif token == "VALUES" and following == "(":
            index = _collapse_values(tokens, index, out)
    return out


def _collapse_values(tokens: list[str], index: int, out: list[str]) -> int:
    """Append the VALUES tuples starting at ``index`` with runs of equal tuples collapsed."""
    groups: list[list[str]] = []
    while index < len(tokens) and tokens[index] == "(":
        end = _closing(tokens, index)
        if end < 0:
            break
        groups.append(tokens[index : end + 1])
        index = end + 1
        if index + 1 < len(tokens) and tokens[index] == "," and tokens[index + 1] == "(":
            index += 1
            continue
        break
    rendered: list[str] = []
    position = 0
    while position < len(groups):
        run = position + 1
        while run < len(groups) and groups[run] == groups[position]:
            run += 1
        if rendered:
            rendered.append(",")
        rendered.extend(groups[position])
        if run - position > 1:
            rendered.extend((",", _ELLIPSIS))
        position = run
    out.extend(rendered)
    # a trailing comma that did not start another tuple belongs to what follows
    return index


def _erase_savepoint_name(tokens: list[str]) -> list[str]:
    if not tokens or tokens[0] not in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return tokens
    position = 1
    if tokens[0] == "ROLLBACK":
        if len(tokens) > 1 and tokens[1] == "TRANSACTION":
            position = 2
        if len(tokens) <= position or tokens[position] != "TO":
            return tokens
        position += 1
    if tokens[0] != "SAVEPOINT" and len(tokens) > position and tokens[position] == "SAVEPOINT":
        position += 1
    if len(tokens) > position and tokens[position] not in KEYWORDS and tokens[position] != ";":
        return tokens[:position] + tokens[position + 1 :]
    return tokens


_NO_SPACE_AFTER = frozenset(["(", "["])
_NO_SPACE_BEFORE = frozenset([")", "]", ",", ";"])
_JOINERS = frozenset([".", "::"])  # written without spaces between two names: ``t.id``, ``?::INT``


def _wordish(token: str) -> bool:
    first = token[:1]
    return (
        first.isalnum() or first in ('"', "`", "_", "?", "*") or (first == "$" and len(token) > 1)
    )


def _render(tokens: list[str]) -> str:
    parts: list[str] = []
    previous = ""
    for position, token in enumerate(tokens):
        if parts:
            if token in _JOINERS:
                space = not (
                    _wordish(previous)
                    and position + 1 < len(tokens)
                    and _wordish(tokens[position + 1])
                )
            elif previous in _JOINERS:
                space = not (_wordish(token) and position >= 2 and _wordish(tokens[position - 2]))
            else:
                space = not (
                    previous in _NO_SPACE_AFTER
                    or token in _NO_SPACE_BEFORE
                    or (token == "(" and previous in FUNCTIONS)
                    or (token == "[" and (_wordish(previous) or previous in (")", "]")))
                )
            if space:
                parts.append(" ")
        parts.append(token)
        previous = token
    return "".join(parts)


def query_type(fingerprint: str) -> str:
    """The statement's leading keyword (``SELECT``, ``INSERT``, …), ``OTHER`` when there is none."""
    word = fingerprint.lstrip("( ").split(None, 1)[0].upper() if fingerprint.strip() else ""
    return word if word.isalpha() else "OTHER"
