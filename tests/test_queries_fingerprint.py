"""SQL fingerprints, statement listings and baseline diffs: the pure-Python half of queries."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytest_bridgeperf.queries import (
    Statement,
    find_n_plus_one,
    fingerprint,
    fingerprint_diff,
    format_statements,
    is_transaction_control,
)


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select  u.id\n  from users u where u.id = 5", "SELECT u.id FROM users u WHERE u.id = ?"),
        ("SELECT * FROM t WHERE name = 'O''Brien'", "SELECT * FROM t WHERE name = ?"),
        (
            "SELECT * FROM t WHERE a = -1.5e3 AND b = x - 2",
            "SELECT * FROM t WHERE a = ? AND b = x - ?",
        ),
        ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (...)"),
        ("SELECT * FROM t WHERE id IN (?)", "SELECT * FROM t WHERE id IN (...)"),
        (
            "SELECT * FROM t WHERE id IN (%(id_1_1)s::INTEGER, %(id_1_2)s::INTEGER)",
            "SELECT * FROM t WHERE id IN (...)",
        ),
        (
            "SELECT * FROM t WHERE (a, b) IN ((1, 2), (3, 4))",
            "SELECT * FROM t WHERE (a, b) IN (...)",
        ),
        (
            "SELECT * FROM t WHERE a IN (SELECT b FROM c WHERE d = 1)",
            "SELECT * FROM t WHERE a IN (SELECT b FROM c WHERE d = ?)",
        ),
        (
            "SELECT * FROM t WHERE a = ANY(ARRAY[1, 2, 3])",
            "SELECT * FROM t WHERE a = ANY (ARRAY[...])",
        ),
        (
            "INSERT INTO t (a, b) VALUES (?, ?), (?, ?), (?, ?) RETURNING t.id",
            "INSERT INTO t (a, b) VALUES (?, ?), ... RETURNING t.id",
        ),
        ("INSERT INTO t (a, b) VALUES (1, 'x')", "INSERT INTO t (a, b) VALUES (?, ?)"),
        ("SELECT :name, $1, %s, %(x)s, ?", "SELECT ?, ?, ?, ?, ?"),
        ("SELECT x::INTEGER FROM t", "SELECT x::INTEGER FROM t"),
        ("SELECT count(*) FROM t", "SELECT COUNT(*) FROM t"),
        ("/* request=42 */ SELECT 1 -- trailing\n", "SELECT ?"),
        ("SELECT $$it's$$, $tag$x$tag$, E'\\n'", "SELECT ?, ?, ?"),
        ('SELECT "Weird Name", `b` FROM "T"', 'SELECT "Weird Name", `b` FROM "T"'),
        ("SAVEPOINT sa_savepoint_1", "SAVEPOINT"),
        ("RELEASE SAVEPOINT sa_savepoint_12", "RELEASE SAVEPOINT"),
        ("ROLLBACK TO SAVEPOINT sa_savepoint_3", "ROLLBACK TO SAVEPOINT"),
        ("begin", "BEGIN"),
    ],
)
def test_fingerprint_examples(sql: str, expected: str) -> None:
    assert fingerprint(sql) == expected


def test_whitespace_and_keyword_case_do_not_matter() -> None:
    a = fingerprint("SELECT users.id FROM users WHERE users.id = ? ORDER BY users.id LIMIT ?")
    b = fingerprint("select users.id\n\tfrom users\nwhere users.id=?\norder   by users.id limit 10")
    assert a == b


def test_different_shapes_stay_different() -> None:
    assert fingerprint("SELECT a FROM t WHERE x = 1") != fingerprint("SELECT a FROM t WHERE y = 1")
    assert fingerprint("SELECT a FROM t") != fingerprint("SELECT b FROM t")
    assert fingerprint("INSERT INTO t VALUES (1)") != fingerprint("INSERT INTO t VALUES (1, 2)")


def test_transaction_control() -> None:
    for sql in ("BEGIN", "commit", "ROLLBACK", "SAVEPOINT x", "RELEASE SAVEPOINT x", "END"):
        assert is_transaction_control(fingerprint(sql)), sql
    for sql in ("SELECT 1", "UPDATE t SET begin = 1", "INSERT INTO commits VALUES (1)"):
        assert not is_transaction_control(fingerprint(sql)), sql


# -- properties ------------------------------------------------------------------------------

SQLISH = st.text(alphabet=st.sampled_from(list("abSELCTINVU ()?,'\"$:.-+1209eE*/%s[]_;`\n")))


@settings(max_examples=400, deadline=None)
@given(st.one_of(SQLISH, st.text()))
@example("-+0")
@example(":.. .")
@example("x IN (1, 2) VALUES (1), (1), (2)")
def test_fingerprint_is_idempotent(sql: str) -> None:
    once = fingerprint(sql)
    assert fingerprint(once) == once


def _literal() -> st.SearchStrategy[str]:
    integers = st.integers(-(10**12), 10**12).map(str)
    floats = (
        st.floats(allow_nan=False, allow_infinity=False)
        .map(repr)
        .filter(lambda s: "e" not in s or "." in s)
    )
    strings = st.text(max_size=20).map(lambda s: "'" + s.replace("'", "''") + "'")
    return st.one_of(integers, floats, strings, st.sampled_from(["?", ":p_1", "%(p_1)s", "$3"]))


TEMPLATES = [
    "SELECT t.a, t.b FROM t WHERE t.id = {} AND t.name <> {}",
    "UPDATE t SET a={}, b = {} WHERE id={}",
    "SELECT * FROM t WHERE id IN ({}, {}, {}) AND x > {}",
    "INSERT INTO t (a, b) VALUES ({}, {}), ({}, {})",
    "SELECT * FROM t ORDER BY a LIMIT {} OFFSET {}",
    "SELECT {} + {}, coalesce(t.x, {}) FROM t",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TEMPLATES), st.lists(_literal(), min_size=8, max_size=8), st.data())
def test_fingerprint_ignores_literals(template: str, first: list[str], data: st.DataObject) -> None:
    second = data.draw(st.lists(_literal(), min_size=8, max_size=8))
    slots = template.count("{}")
    assert fingerprint(template.format(*first[:slots])) == fingerprint(
        template.format(*second[:slots])
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40))
def test_in_lists_and_values_collapse_whatever_their_length(n: int, m: int) -> None:
    def select(k: int) -> str:
        return "SELECT * FROM t WHERE id IN (" + ", ".join(["?"] * k) + ")"

    def insert(k: int) -> str:
        return "INSERT INTO t (a, b) VALUES " + ", ".join(["(?, ?)"] * k)

    assert fingerprint(select(n)) == fingerprint(select(m))
    if n > 1 and m > 1:
        assert fingerprint(insert(n)) == fingerprint(insert(m))


# -- listings, N+1, diffs --------------------------------------------------------------------


def _st(sql: str, site: str | None = "app.py:10", *, many: bool = False) -> Statement:
    fp = fingerprint(sql)
    return Statement(sql, fp, 1, 0.001, None, many, site, is_transaction_control(fp))


def test_listing_numbers_groups_with_counts_and_call_sites() -> None:
    statements = [
        _st("SELECT * FROM users", "app.py:5"),
        *[_st(f"SELECT * FROM posts WHERE user_id = {i}", "app.py:9") for i in range(3)],
        _st("SELECT * FROM posts WHERE user_id = 7", "other.py:2"),
    ]
    text = format_statements(statements)
    assert text.splitlines() == [
        "5 statements, 2 distinct:",
        "  1. ×1  SELECT * FROM users",
        "       at app.py:5",
        "  2. ×4  SELECT * FROM posts WHERE user_id = ?",
        "       ×3 at app.py:9",
        "       ×1 at other.py:2",
    ]
    assert format_statements([]) == "0 statements, 0 distinct: none"


def test_n_plus_one_needs_same_statement_from_same_site() -> None:
    loop = [_st(f"SELECT * FROM posts WHERE user_id = {i}", "app.py:9") for i in range(4)]
    spread = [_st(f"SELECT * FROM posts WHERE user_id = {i}", f"app.py:{i}") for i in range(4)]
    batches = [_st("INSERT INTO t VALUES (?)", "app.py:3", many=True) for _ in range(5)]
    (finding,) = find_n_plus_one(loop + spread + batches, threshold=3)
    assert (finding.count, finding.call_site) == (4, "app.py:9")
    assert finding.fingerprint == "SELECT * FROM posts WHERE user_id = ?"
    assert find_n_plus_one(loop, threshold=5) == []


def test_fingerprint_diff_shows_added_and_removed_statements() -> None:
    base = {"fingerprints": {"SELECT a FROM t": 1, "SELECT b FROM u WHERE id = ?": 1}}
    now = {
        "fingerprints": {"SELECT a FROM t": 1, "SELECT b FROM u WHERE id = ?": 10, "SELECT c": 2}
    }
    diff = fingerprint_diff(base, now)
    lines = diff.splitlines()
    assert lines[0] == "--- baseline (2 statements)"
    assert lines[1] == "+++ this run (13 statements)"
    assert "-   1× SELECT b FROM u WHERE id = ?" in lines
    assert "+  10× SELECT b FROM u WHERE id = ?" in lines
    assert "+   2× SELECT c" in lines
    assert "    1× SELECT a FROM t" in lines
    assert fingerprint_diff(base, base) == ""
    assert fingerprint_diff({}, now) == ""
    assert fingerprint_diff(base, {"explain": "x"}) == ""


def test_pure_parts_import_without_pytest_or_sqlalchemy() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None
        sys.modules["sqlalchemy"] = None
        # importing SQLAlchemy now would raise: the pure half must not need it
        from pytest_bridgeperf.queries import fingerprint, fingerprint_diff, body_probe
        assert fingerprint("select 1") == "SELECT ?"
        del sys.modules["sqlalchemy"]
        from pytest_bridgeperf.queries import QueryCapture  # the capture itself needs no pytest
        assert "_pytest" not in sys.modules
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
