"""The baseline store: validation, canonical atomic writes, fingerprints."""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_bridgeperf.baseline import (
    SCHEMA_VERSION,
    TOOL,
    Baseline,
    BaselineError,
    machine_fingerprint,
    machine_id,
    metric_entry,
)
from pytest_bridgeperf.metrics import Recorder

FP = {"cores": 2, "cpu": "Test CPU", "platform": "Linux-x86_64", "python": "CPython 3.11"}


def _entries() -> dict[str, dict[str, Any]]:
    rec = Recorder()
    rec.record("latency", [0.001 * i for i in range(1, 31)])
    rec.record("queries", 3, unit="count", role="queries", details={"explain": "x", "sql": ["a"]})
    rec.record("hit_ratio", [0.5, 0.7, 0.9], unit="ratio", better="higher")
    return {name: metric_entry(m) for name, m in rec.metrics.items()}


@functools.cache
def _document_text() -> str:
    baseline = Baseline(Path("unused.json"))
    entries = _entries()
    baseline.set_test("default", "tests/test_a.py::test_one", entries, FP)
    baseline.set_test("default", "tests/test_a.py::test_two", entries, FP)
    baseline.set_test("ci", "tests/test_a.py::test_one", entries, {**FP, "cores": 4})
    return baseline.dumps()


def _document() -> dict[str, Any]:
    return json.loads(_document_text())  # type: ignore[no-any-return]


def _canonical(document: Any) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _write(path: Path, document: Any) -> bytes:
    data = (document if isinstance(document, str) else _canonical(document)).encode()
    path.write_bytes(data)
    return data


# ---------------------------------------------------------------------------------------------
# loading


def test_missing_file_is_an_empty_baseline(tmp_path: Path) -> None:
    baseline = Baseline.load(tmp_path / "perf-baseline.json")
    assert not baseline.exists
    assert baseline.environments() == []
    assert baseline.tests("default") == {}
    assert baseline.metrics("default", "t::x") == {}
    assert baseline.machine_of("default", "t::x") is None
    assert not (tmp_path / "perf-baseline.json").exists()


def test_load_valid_document(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    _write(path, _document())
    baseline = Baseline.load(path)
    assert baseline.exists
    assert baseline.environments() == ["ci", "default"]
    metrics = baseline.metrics("default", "tests/test_a.py::test_one")
    assert set(metrics) == {"latency", "queries", "hit_ratio"}
    latency = metrics["latency"]
    assert latency.unit == "s"
    assert latency.stat == "p50"
    assert latency.n == 30
    assert latency.noisy is True
    assert latency.value == pytest.approx(0.015, rel=1e-3)
    assert latency.statistic("p95") == pytest.approx(0.029, rel=1e-3)
    assert latency.statistic("nonexistent") is None
    hist = latency.histogram()
    assert hist is not None
    assert hist.count == 30
    assert sum(c for _, c in latency.distribution()) == 30
    queries = metrics["queries"]
    assert queries.noisy is False
    assert queries.role == "queries"
    assert queries.details == {"sql": ["a"]}  # "explain" is never stored
    assert queries.distribution() == [(3.0, 1)]
    assert metrics["hit_ratio"].samples == [0.5, 0.7, 0.9]
    assert baseline.machine_of("default", "tests/test_a.py::test_one") == FP
    assert baseline.machine_of("ci", "tests/test_a.py::test_one") == {**FP, "cores": 4}


def _bad(path: Path, mutate: Any) -> str:
    document = _document()
    mutate(document)
    data = _write(path, document)
    with pytest.raises(BaselineError) as info:
        Baseline.load(path)
    assert path.read_bytes() == data  # never touched
    message = str(info.value)
    assert message.startswith(f"{path}:")
    return message


def _test(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["environments"]["default"]["tests"]["tests/test_a.py::test_one"]  # type: ignore[no-any-return]


def _metric(doc: dict[str, Any], name: str = "latency") -> dict[str, Any]:
    return _test(doc)["metrics"][name]  # type: ignore[no-any-return]


def _set(getter: Any, key: str, value: Any) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        getter(doc)[key] = value

    return mutate


def _del(getter: Any, key: str) -> Any:
    def mutate(doc: dict[str, Any]) -> None:
        del getter(doc)[key]

    return mutate


def _root(doc: dict[str, Any]) -> dict[str, Any]:
    return doc


def _env(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["environments"]["default"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_set(_root, "schema", "1"), "schema: expected a whole number, got the string '1'"),
        (_set(_root, "schema", True), "schema: expected a whole number, got a boolean"),
        (_set(_root, "schema", 0), "schema: unknown schema 0"),
        (_del(_root, "schema"), "schema: expected a whole number, got null"),
        (_set(_root, "environments", []), "environments: expected an object, got a list"),
        (_del(_root, "environments"), "environments: expected an object, got null"),
        (
            _set(lambda d: d["environments"], "default", "x"),
            "environments.default: expected an object",
        ),
        (_set(_env, "machines", [1]), "environments.default.machines: expected an object"),
        (
            lambda d: _env(d)["machines"].update(bad=3),
            "environments.default.machines.bad: expected an object, got the number 3",
        ),
        (_set(_env, "tests", "x"), "environments.default.tests: expected an object"),
        (
            _set(lambda d: _env(d)["tests"], "tests/test_a.py::test_one", []),
            'tests["tests/test_a.py::test_one"]: expected an object, got a list',
        ),
        (_set(_test, "machine", 5), 'test_one"].machine: expected a string, got the number 5'),
        (_del(_test, "metrics"), 'test_one"].metrics: expected an object, got null'),
        (_set(_test, "metrics", [1]), 'test_one"].metrics: expected an object, got a list'),
        (
            _set(lambda d: _test(d)["metrics"], "latency", 0.01),
            "metrics.latency: expected an object, got the number 0.01",
        ),
        (
            _set(_metric, "unit", "ms"),
            "metrics.latency.unit: expected one of s, 1/s, bytes, count, ratio, got 'ms'",
        ),
        (_del(_metric, "unit"), "metrics.latency.unit: expected a string, got null"),
        (_set(_metric, "better", "less"), "metrics.latency.better: expected one of lower"),
        (_set(_metric, "value", "12ms"), "metrics.latency.value: expected a finite number"),
        (_set(_metric, "value", None), "metrics.latency.value: expected a finite number"),
        (_set(_metric, "value", True), "metrics.latency.value: expected a finite number"),
        (_set(_metric, "stat", "p42"), "metrics.latency.stat: expected one of value, mean"),
        (_set(_metric, "noisy", "yes"), "metrics.latency.noisy: expected true or false"),
        (_set(_metric, "role", 1), "metrics.latency.role: expected a string"),
        (_set(_metric, "n", -1), "metrics.latency.n: a metric measured -1 times"),
        (_set(_metric, "n", 1.5), "metrics.latency.n: expected a whole number"),
        (_set(_metric, "hdr", 12), "metrics.latency.hdr: expected a string"),
        (_set(_metric, "hdr", "garbage"), "metrics.latency.hdr: not an HdrHistogram"),
        (
            _set(lambda d: _metric(d, "hit_ratio"), "samples", {"a": 1}),
            "metrics.hit_ratio.samples: expected a list, got an object",
        ),
        (
            _set(lambda d: _metric(d, "hit_ratio"), "samples", [0.5, "x"]),
            "metrics.hit_ratio.samples[1]: expected a finite number, got the string 'x'",
        ),
        (_set(_metric, "summary", []), "metrics.latency.summary: expected an object"),
        (
            _set(lambda d: _metric(d)["summary"], "p95", "slow"),
            "metrics.latency.summary.p95: expected a finite number",
        ),
        (
            _set(lambda d: _metric(d, "queries"), "details", ["a"]),
            "metrics.queries.details: expected an object, got a list",
        ),
    ],
)
def test_wrong_field_types(tmp_path: Path, mutate: Any, expected: str) -> None:
    message = _bad(tmp_path / "perf-baseline.json", mutate)
    assert expected in message


def test_nan_in_json_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    text = _canonical(_document())
    value = json.dumps(_metric(_document())["value"])
    text = text.replace(f'"value": {value}', '"value": NaN', 1)
    assert "NaN" in text
    data = _write(path, text)
    with pytest.raises(BaselineError, match=r"\.value: expected a finite number"):
        Baseline.load(path)
    assert path.read_bytes() == data


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{", "not valid JSON (line 1, column 2"),
        ('{"tool": "pytest-bridgeperf",}', "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2, 3]\n", "not a pytest-bridgeperf baseline"),
        ('"hello"', "not a pytest-bridgeperf baseline"),
        ('{"name": "my-package", "version": "1.0"}', "not a pytest-bridgeperf baseline"),
        ('{"tool": "pytest-benchmark", "schema": 1}', "not a pytest-bridgeperf baseline"),
    ],
)
def test_unparsable_or_foreign(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "perf-baseline.json"
    data = _write(path, content)
    with pytest.raises(BaselineError, match="^" + str(path).replace(".", r"\.")) as info:
        Baseline.load(path)
    assert expected in str(info.value)
    assert path.read_bytes() == data


def test_schema_newer_than_supported(tmp_path: Path) -> None:
    message = _bad(tmp_path / "b.json", _set(_root, "schema", SCHEMA_VERSION + 1))
    assert f"schema {SCHEMA_VERSION + 1}" in message
    assert "upgrade pytest-bridgeperf" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b'{"tool": "\xff\xfe"}')
    with pytest.raises(BaselineError, match="cannot be read"):
        Baseline.load(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(BaselineError, match="is a directory"):
        Baseline.load(tmp_path)


# ---------------------------------------------------------------------------------------------
# saving


def test_save_is_canonical(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "perf-baseline.json"
    baseline = Baseline.load(path)
    baseline.set_test("default", "tests/test_a.py::test_one", _entries(), FP)
    baseline.save()
    text = path.read_text(encoding="utf-8")
    document = json.loads(text)
    assert text == _canonical(document)
    assert text.endswith("}\n")
    assert not text.endswith("\n\n")
    assert '\n  "environments": {\n    "default": {' in text
    assert list(document) == ["environments", "schema", "tool"]
    assert document["schema"] == SCHEMA_VERSION
    assert document["tool"] == TOOL
    assert baseline.exists
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["perf-baseline.json"]  # no temp files
    # a round trip is byte-for-byte stable
    Baseline.load(path).save()
    assert path.read_text(encoding="utf-8") == text


def test_save_keeps_untouched_entries_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    before = _write(path, _document()).decode()
    baseline = Baseline.load(path)
    fresh = _entries()
    fresh["latency"]["value"] = 0.5
    baseline.set_test("default", "tests/test_a.py::test_two", fresh, FP)
    baseline.save()
    after = path.read_text(encoding="utf-8")
    assert after != before
    old, new = json.loads(before), json.loads(after)
    # every other entry is exactly the same text, wherever it is in the file
    for env in ("default", "ci"):
        entry = old["environments"][env]["tests"]["tests/test_a.py::test_one"]
        block = json.dumps(entry, sort_keys=True, indent=2, ensure_ascii=False)
        indented = textwrap.indent(block, " " * 8).lstrip()
        assert before.count(indented) >= 1
        assert indented in after
    assert new["environments"]["ci"] == old["environments"]["ci"]
    assert _test(new) == _test(old)
    assert (
        new["environments"]["default"]["tests"]["tests/test_a.py::test_two"]["metrics"]["latency"][
            "value"
        ]
        == 0.5
    )


def test_save_keeps_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    _write(path, _document())
    path.chmod(0o600)
    baseline = Baseline.load(path)
    baseline.remove_test("default", "tests/test_a.py::test_two")
    baseline.save()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "test_two" not in path.read_text()


def test_unused_machines_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    baseline = Baseline(path)
    other = {**FP, "cpu": "Other CPU"}
    baseline.set_test("default", "t.py::a", _entries(), FP)
    baseline.set_test("default", "t.py::b", _entries(), other)
    baseline.save()
    assert len(json.loads(path.read_text())["environments"]["default"]["machines"]) == 2
    baseline.set_test("default", "t.py::b", _entries(), FP)
    baseline.save()
    machines = json.loads(path.read_text())["environments"]["default"]["machines"]
    assert machines == {machine_id(FP): FP}


def test_set_test_refreshes_parsed_metrics(tmp_path: Path) -> None:
    baseline = Baseline(tmp_path / "b.json")
    baseline.set_test("default", "t.py::a", _entries(), FP)
    assert baseline.metrics("default", "t.py::a")["queries"].value == 3
    entries = _entries()
    entries["queries"]["value"] = 4
    baseline.set_test("default", "t.py::a", entries, FP)
    assert baseline.metrics("default", "t.py::a")["queries"].value == 4
    baseline.remove_test("default", "t.py::a")
    assert baseline.metrics("default", "t.py::a") == {}


def test_set_test_copies_entries(tmp_path: Path) -> None:
    baseline = Baseline(tmp_path / "b.json")
    entries = _entries()
    baseline.set_test("default", "t.py::a", entries, FP)
    snapshot = copy.deepcopy(baseline.tests("default"))
    entries["queries"]["value"] = 99
    assert baseline.tests("default") == snapshot


_SAVER = """
import sys
from pathlib import Path
from pytest_bridgeperf.baseline import Baseline, metric_entry
from pytest_bridgeperf.metrics import Recorder

path = Path(sys.argv[1])
fp = {"cores": 2, "cpu": "x", "platform": "p", "python": "3"}
i = 0
while True:
    baseline = Baseline.load(path)
    rec = Recorder()
    # a growing payload, so an interrupted write would be visibly truncated
    rec.record("samples", [float(j) for j in range(i % 50 + 1)], unit="count")
    baseline.set_test("default", f"t.py::test_{i % 40}", {
        n: metric_entry(m) for n, m in rec.metrics.items()
    }, fp)
    baseline.save()
    if i == 0:
        print("ready", flush=True)
    i += 1
"""


def test_kill_9_during_saves_never_breaks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "perf-baseline.json"
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    rng = random.Random(42)
    valid_loads = 0
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        proc.stdout.close()
        baseline = Baseline.load(path)  # raises BaselineError on a torn file
        assert baseline.exists
        assert baseline.tests("default")
        valid_loads += 1
    assert valid_loads == 12
    text = path.read_text(encoding="utf-8")
    assert text == _canonical(json.loads(text))


# ---------------------------------------------------------------------------------------------
# fingerprints


def test_machine_fingerprint() -> None:
    fp = machine_fingerprint()
    assert set(fp) == {"cores", "cpu", "platform", "python"}
    assert fp["cores"] == os.cpu_count()
    assert isinstance(fp["cpu"], str)
    assert fp["cpu"]
    assert fp["python"].endswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert fp == machine_fingerprint()
    json.dumps(fp)


def test_machine_id() -> None:
    mid = machine_id(FP)
    assert len(mid) == 12
    int(mid, 16)
    assert machine_id(dict(reversed(list(FP.items())))) == mid
    assert machine_id({**FP, "cores": 4}) != mid
    assert machine_id({**FP, "cpu": "Test CPU "}) != mid


@given(
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=8)), max_size=6),
    st.randoms(),
)
def test_machine_id_ignores_key_order(fp: dict[str, Any], rnd: random.Random) -> None:
    items = list(fp.items())
    rnd.shuffle(items)
    assert machine_id(dict(items)) == machine_id(fp)


@given(st.integers(min_value=1, max_value=512), st.integers(min_value=1, max_value=512))
def test_machine_id_separates_core_counts(a: int, b: int) -> None:
    assert (machine_id({**FP, "cores": a}) == machine_id({**FP, "cores": b})) is (a == b)


# ---------------------------------------------------------------------------------------------
# strict loading: impossible values, duplicate keys, files that are not baselines


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            _set(_metric, "value", -0.3),
            'environments.default.tests["tests/test_a.py::test_one"].metrics.latency.value: '
            "negative duration -0.3",
        ),
        (_set(lambda d: _metric(d, "queries"), "value", -1), "queries.value: negative count -1"),
        (_set(lambda d: _metric(d, "hit_ratio"), "value", -0.5), "negative ratio -0.5"),
        (
            _set(lambda d: _metric(d, "hit_ratio"), "samples", [0.5, -0.1]),
            "metrics.hit_ratio.samples[1]: negative ratio -0.1",
        ),
        (
            _set(lambda d: _metric(d)["summary"], "p99", -1.0),
            "metrics.latency.summary.p99: negative duration -1.0",
        ),
        (_set(_metric, "n", 0), "metrics.latency.n: a metric measured 0 times"),
        (_set(_metric, "rounds", [0.1, -0.2]), "metrics.latency.rounds[1]: negative duration"),
        (
            _set(lambda d: _metric(d, "queries"), "hdr", _metric(_document())["hdr"]),
            "metrics.queries.hdr: a latency histogram in a metric of unit count",
        ),
        (_set(_test, "updated", "yesterday"), 'test_one"].updated: expected a time like'),
        (
            lambda d: _env(d)["tests"].update({"t.py::x[a b]": {"metrics": {}, "updated": 1}}),
            'tests["t.py::x[a b]"].updated: expected a time',
        ),
    ],
)
def test_impossible_values_are_refused_with_their_place(
    tmp_path: Path, mutate: Any, expected: str
) -> None:
    message = _bad(tmp_path / "perf-baseline.json", mutate)
    assert expected in message


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    """json keeps the last of two equal keys silently; a hand merge that kept both versions of a
    test entry would lose one without a word."""
    text = _canonical(_document())
    one = '    "default": {'
    assert text.count(one) == 1
    env = json.dumps(_document()["environments"]["default"], indent=2, sort_keys=True)
    doubled = text.replace(one, f'    "default": {env},\n' + one, 1)
    path = tmp_path / "perf-baseline.json"
    data = _write(path, doubled)
    with pytest.raises(BaselineError) as info:
        Baseline.load(path)
    message = str(info.value)
    assert message.startswith(f'{path}: duplicate key "default" in one object (lines ')
    assert path.read_bytes() == data


def test_a_report_is_named_as_a_report(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    _write(path, {"tool": TOOL, "schema": 1, "tests": {}, "totals": {}})
    with pytest.raises(BaselineError, match=r"this is a --perf-report file .* not a baseline"):
        Baseline.load(path)


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_non_regular_files_are_refused_unread(tmp_path: Path, source: str) -> None:
    path = Path(source)
    if source == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    with pytest.raises(BaselineError, match="not a regular file"):
        Baseline.load(path)


def test_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_bridgeperf import baseline as baseline_module

    path = tmp_path / "perf-baseline.json"
    size = len(_write(path, _document()))
    monkeypatch.setattr(baseline_module, "MAX_FILE_SIZE", size)
    assert Baseline.load(path).exists
    monkeypatch.setattr(baseline_module, "MAX_FILE_SIZE", size - 1)
    with pytest.raises(BaselineError, match=f"larger than {size - 1} bytes, the limit"):
        Baseline.load(path)


# ---------------------------------------------------------------------------------------------
# measurement times and git conflicts


def test_set_test_stamps_new_measurements_and_keeps_unchanged_ones(tmp_path: Path) -> None:
    from pytest_bridgeperf.baseline import now_stamp

    baseline = Baseline(tmp_path / "b.json")
    baseline.set_test("default", "t.py::a", _entries(), FP)
    first = baseline.tests("default")["t.py::a"]["updated"]
    assert first <= now_stamp()
    baseline.tests("default")["t.py::a"]["updated"] = "2000-01-01T00:00:00.000Z"
    baseline.set_test("default", "t.py::a", _entries(), FP)  # same measurement: untouched
    assert baseline.tests("default")["t.py::a"]["updated"] == "2000-01-01T00:00:00.000Z"
    entries = _entries()
    entries["queries"]["value"] = 4
    baseline.set_test("default", "t.py::a", entries, FP)
    assert baseline.tests("default")["t.py::a"]["updated"] > "2000-01-01T00:00:00.000Z"
    assert now_stamp(0) == "1970-01-01T00:00:00.000Z"
    assert now_stamp(1.5) == "1970-01-01T00:00:01.500Z"


def _conflicted(ours: str, theirs: str, base: str | None) -> str:
    """A text like git's: common lines, then one hunk per differing line block."""
    ours_lines, theirs_lines = ours.splitlines(True), theirs.splitlines(True)
    import difflib

    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=ours_lines, b=theirs_lines, autojunk=False)
    base_lines = base.splitlines(True) if base is not None else None
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += ours_lines[i1:i2]
            continue
        out.append("<<<<<<< HEAD\n")
        out += ours_lines[i1:i2]
        if base_lines is not None:
            out.append("||||||| merged common ancestors\n")
            out += base_lines  # the whole base: only its presence matters to the splitter
        out.append("=======\n")
        out += theirs_lines[j1:j2]
        out.append(">>>>>>> feature\n")
    return "".join(out)


def test_conflict_markers_are_named_with_the_fix(tmp_path: Path) -> None:
    a = _document()
    b = copy.deepcopy(a)
    _metric(b, "queries")["value"] = 7
    path = tmp_path / "perf-baseline.json"
    data = _write(path, _conflicted(_canonical(a), _canonical(b), None))
    with pytest.raises(BaselineError) as info:
        Baseline.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unresolved git merge conflict (conflict markers from line")
    assert f"bridgeperf merge --resolve {path}" in message
    assert path.read_bytes() == data


def test_split_conflict_gives_each_side() -> None:
    from pytest_bridgeperf.baseline import split_conflict

    text = "a\n<<<<<<< HEAD\nours\n||||||| base\nold\n=======\ntheirs\n>>>>>>> x\nz\n"
    sides = split_conflict(text, "f")
    assert (sides.ours, sides.theirs, sides.base) == (
        "a\nours\nz\n",
        "a\ntheirs\nz\n",
        "a\nold\nz\n",
    )
    assert (sides.first_line, sides.hunks) == (2, 1)
    two_way = split_conflict("<<<<<<< HEAD\n1\n=======\n2\n>>>>>>> x\n", "f")
    assert (two_way.ours, two_way.theirs, two_way.base) == ("1\n", "2\n", None)
    assert split_conflict("======== not a marker\n", "f").ours == "======== not a marker\n"
    for broken, problem in [
        ("<<<<<<< HEAD\n1\n", "has no closing >>>>>>>"),
        ("<<<<<<< HEAD\n1\n<<<<<<< again\n", "line 3: unexpected '<<<<<<< again'"),
        ("1\n>>>>>>> x\n", "line 2: unexpected '>>>>>>> x'"),
    ]:
        with pytest.raises(BaselineError, match=re.escape(problem)):
            split_conflict(broken, "f")


def _doc_with(tests: dict[str, Any]) -> dict[str, Any]:
    baseline = Baseline(Path("unused.json"))
    for nodeid, (value, stamp) in tests.items():
        entries = _entries()
        entries["queries"]["value"] = value
        baseline.set_test("default", nodeid, entries, FP)
        baseline.tests("default")[nodeid]["updated"] = stamp
    return json.loads(baseline.dumps())  # type: ignore[no-any-return]


def test_merge_documents_per_test_entry() -> None:
    from pytest_bridgeperf.baseline import merge_documents

    t0, t1, t2 = "2025-01-01T00:00:00.000Z", "2025-01-02T00:00:00.000Z", "2025-01-03T00:00:00.000Z"
    base = _doc_with({"a": (1, t0), "b": (2, t0), "c": (3, t0), "d": (4, t0), "e": (5, t0)})
    ours = _doc_with({"a": (10, t1), "b": (2, t0), "c": (30, t2), "d": (40, t1), "new1": (6, t1)})
    theirs = _doc_with({"a": (1, t0), "b": (20, t1), "c": (33, t1), "e": (5, t0), "new2": (7, t2)})
    merged, decisions = merge_documents(ours, theirs, base)
    tests = merged["environments"]["default"]["tests"]
    values = {n: t["metrics"]["queries"]["value"] for n, t in tests.items()}
    # a: ours changed; b: theirs changed; c: both, ours newer; d: ours changed, theirs pruned
    # (kept); e: ours pruned, theirs untouched (pruned); new1/new2: added on one side
    assert values == {"a": 10, "b": 20, "c": 30, "d": 40, "new1": 6, "new2": 7}
    assert [(d.nodeid, d.side, d.why) for d in decisions] == [
        ("c", "ours", "the newer measurement")
    ]
    assert set(merged["environments"]["default"]["machines"]) == {machine_id(FP)}
    Baseline.validate("merged", merged)
    # theirs newer wins, whichever side it is on; a tie takes ours
    theirs["environments"]["default"]["tests"]["c"]["updated"] = "2025-02-01T00:00:00.000Z"
    merged, decisions = merge_documents(ours, theirs, base)
    assert merged["environments"]["default"]["tests"]["c"]["metrics"]["queries"]["value"] == 33
    assert decisions[0].side == "theirs"
    theirs["environments"]["default"]["tests"]["c"]["updated"] = t2
    merged, decisions = merge_documents(ours, theirs, base)
    assert (decisions[0].side, decisions[0].why) == ("ours", "same time: ours")
    # two-way (no ancestor): a test on one side only is kept
    merged, _ = merge_documents(ours, theirs, None)
    assert set(merged["environments"]["default"]["tests"]) == {
        "a", "b", "c", "d", "e", "new1", "new2"
    }  # fmt: skip


def test_merge_documents_ignores_measurement_times_of_equal_entries() -> None:
    from pytest_bridgeperf.baseline import merge_documents

    ours = _doc_with({"a": (1, "2025-01-01T00:00:00.000Z")})
    theirs = _doc_with({"a": (1, "2025-01-05T00:00:00.000Z")})
    merged, decisions = merge_documents(ours, theirs, None)
    assert decisions == []
    assert merged["environments"]["default"]["tests"]["a"]["updated"].startswith("2025-01-01")


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3), max_size=6),
    st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3), max_size=6),
    st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 3), max_size=6),
)
def test_merge_documents_properties(
    base_v: dict[str, int], ours_v: dict[str, int], theirs_v: dict[str, int]
) -> None:
    """Every test present on a side is in the result unless the other side pruned an
    unchanged entry; a test changed on one side only takes that side."""
    from pytest_bridgeperf.baseline import merge_documents

    stamp = "2025-01-01T00:00:00.000Z"
    base = _doc_with({k: (v, stamp) for k, v in base_v.items()})
    ours = _doc_with({k: (v, stamp) for k, v in ours_v.items()})
    theirs = _doc_with({k: (v, stamp) for k, v in theirs_v.items()})
    merged, _ = merge_documents(ours, theirs, base)
    Baseline.validate("merged", merged)
    tests = merged["environments"].get("default", {}).get("tests", {})
    got = {n: t["metrics"]["queries"]["value"] for n, t in tests.items()}
    for key in set(base_v) | set(ours_v) | set(theirs_v):
        o, t, b = ours_v.get(key), theirs_v.get(key), base_v.get(key)
        if o == t:
            assert got.get(key) == o
        elif o == b:
            assert got.get(key) == t
        elif t == b:
            assert got.get(key) == o
        else:  # changed on both sides (or changed on one, pruned on the other): kept
            assert got.get(key) == (o if o is not None else t)
