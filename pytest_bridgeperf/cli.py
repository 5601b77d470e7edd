"""The ``bridgeperf`` command (also ``python -m pytest_bridgeperf``).

* ``bridgeperf compare BASELINE REPORT`` — verdicts of a saved ``--perf-report`` against a
  baseline, without running the tests; exit 1 on a regression.
* ``bridgeperf show BASELINE`` — what a baseline holds, as a table.
* ``bridgeperf merge OUT IN...`` — combine baselines updated by several CI jobs; inputs may
  hold git conflict markers. ``bridgeperf merge --resolve FILE`` resolves a conflicted baseline
  in place, per test entry.
* ``bridgeperf merge-driver %O %A %B`` — git's merge driver for baselines (``.gitattributes``:
  ``perf-baseline.json merge=bridgeperf``).
* ``bridgeperf prune BASELINE`` — drop entries of deleted test files (or selected by ``-k``).

Exit status: 0 fine, 1 a regression (``compare``), 2 bad input or usage — always with a
one-line message naming the file and the problem, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TextIO

from . import __version__
from .baseline import (
    SCHEMA_VERSION,
    TOOL,
    Baseline,
    BaselineError,
    BaselineLock,
    MergeDecision,
    conflict_line,
    merge_documents,
    parse_json,
    read_bounded,
    same_measurement,
    split_conflict,
)
from .report.document import (
    ReportError,
    dumps_json,
    metric_label,
    ordered_tests,
    status_of,
    validate_report,
    write_text,
)
from .report.selection import SelectionError, keyword_matcher
from .report.terminal import Piece, detail_lines, metric_pieces, status_markup, verdict_markup
from .units import UnitError, format_value, parse_duration, parse_percent

__all__ = ["main"]

EXIT_OK, EXIT_REGRESSED, EXIT_ERROR = 0, 1, 2


class CommandError(Exception):
    """Bad input: printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# output


class _Out:
    """Writes lines with ANSI colours when the stream is a terminal (and NO_COLOR is unset)."""

    _CODES: ClassVar[dict[str, str]] = {"red": "31", "green": "32", "yellow": "33", "bold": "1"}

    def __init__(self, stream: TextIO, color: str = "auto") -> None:
        self.stream = stream
        if color == "auto":
            tty = hasattr(stream, "isatty") and stream.isatty()
            self.color = tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
        else:
            self.color = color == "yes"

    def paint(self, text: str, markup: Mapping[str, bool]) -> str:
        codes = [self._CODES[k] for k, on in markup.items() if on and k in self._CODES]
        if not self.color or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def line(self, text: str = "", **markup: bool) -> None:
        self.stream.write(self.paint(text, markup) + "\n")

    def pieces(self, pieces: Sequence[Piece], indent: str = "") -> None:
        self.stream.write(indent + "".join(self.paint(t, m) for t, m in pieces) + "\n")


# ---------------------------------------------------------------------------------------------
# input


def _load_baseline(path: Path, *, must_exist: bool = True) -> Baseline:
    if must_exist and not path.exists():
        raise CommandError(f"{path}: no such file")
    try:
        return Baseline.load(path)
    except BaselineError as exc:
        raise CommandError(str(exc)) from None


def _load_report(path: Path) -> dict[str, Any]:
    try:
        text = read_bounded(path, "report file")
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except BaselineError as exc:
        raise CommandError(str(exc)) from None
    return validate_report(parse_json(text, str(path)), str(path))


def _resolve_text(text: str, source: str) -> tuple[dict[str, Any], list[MergeDecision], int]:
    """The validated document of a baseline text with git conflict markers, resolved per test
    entry; with the decisions taken for tests changed on both sides and the number of hunks."""
    sides = split_conflict(text, source)
    ours_label = f"{source} (ours: the <<<<<<< side of the conflict)"
    theirs_label = f"{source} (theirs: the >>>>>>> side of the conflict)"
    ours = Baseline.validate(ours_label, parse_json(sides.ours, ours_label))
    theirs = Baseline.validate(theirs_label, parse_json(sides.theirs, theirs_label))
    base: dict[str, Any] | None = None
    if sides.base is not None:
        try:
            base = Baseline.validate(source, parse_json(sides.base, source))
        except BaselineError:
            base = None  # the ancestor's side is only a hint: merge two-way without it
    document, decisions = merge_documents(ours, theirs, base)
    return document, decisions, sides.hunks


def _input_document(path: Path, out: _Out) -> dict[str, Any]:
    """A validated baseline document to merge: a missing file is an error, a file with git
    conflict markers is resolved first."""
    try:
        text = read_bounded(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    if conflict_line(text) is None:
        return Baseline.validate(path, parse_json(text, str(path)))
    document, decisions, hunks = _resolve_text(text, str(path))
    out.line(f"bridgeperf merge: {path}: resolved {hunks} git conflict(s) per test entry")
    _print_decisions(out, decisions)
    return document


def _print_decisions(out: _Out, decisions: Sequence[MergeDecision], prefix: str = "merge") -> None:
    for d in decisions:
        out.line(
            f"bridgeperf {prefix}: [{d.env}] {d.nodeid}: changed on both sides, took {d.side} "
            f"({d.why}); rerun it with --perf-update to measure the merged code",
            yellow=True,
        )


def _percent(text: str) -> float:
    try:
        return parse_percent(text, bare_is_percent=True)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UnitError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"invalid alpha {text!r}: expected e.g. 0.01")
    return value


def _matcher(expression: str | None) -> Callable[[str], bool]:
    try:
        return keyword_matcher(expression)
    except SelectionError as exc:
        raise CommandError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# compare


def _print_document(out: _Out, document: Mapping[str, Any], verbose: bool) -> None:
    for nodeid, test in ordered_tests(document):
        out.line(nodeid, **status_markup(status_of(test)))
        for row in test.get("metrics", []):
            out.pieces(metric_pieces(row), indent="  ")
            if verbose:
                for text, markup in detail_lines(row):
                    out.line(f"      {text}", **markup)
    totals: Mapping[str, int] = document.get("totals", {})
    parts = [
        out.paint(f"{count} {verdict}", verdict_markup(verdict) if count else {})
        for verdict, count in totals.items()
        if count or verdict != "undecided"  # a verdict most runs never see: shown when any
    ]
    out.stream.write("perf: " + ", ".join(parts) + "\n")


def cmd_compare(args: argparse.Namespace, out: _Out) -> int:
    from .report import write_outputs
    from .report.offline import OfflineOptions, failed, recompare

    baseline = _load_baseline(args.baseline)
    report = _load_report(args.report)
    options = OfflineOptions(
        env=args.env,
        tolerance=args.tolerance,
        min_delta=args.min_delta,
        alpha=args.alpha,
        strict=args.strict,
        select=_matcher(args.keyword),
    )
    document = recompare(report, baseline, options)
    env = document["environment"]
    if env not in baseline.environments():
        known = ", ".join(baseline.environments()) or "none"
        out.line(
            f"perf: warning: {args.baseline} has no environment {env!r} (it has: {known}); "
            "every metric is new",
            yellow=True,
        )
    out.line(f"perf: {args.report} against {args.baseline} (env {env})", bold=True)
    _print_document(out, document, args.verbose)
    if document.get("not_in_report"):
        count = len(document["not_in_report"])
        out.line(f"perf: {count} baseline test(s) not in the report (not judged)")
    if args.json is not None:
        write_text(args.json, dumps_json(document))
    write_outputs(document, markdown=args.markdown, html=args.html, openmetrics=args.openmetrics)
    return EXIT_REGRESSED if failed(document, strict=args.strict) else EXIT_OK


# ---------------------------------------------------------------------------------------------
# show


_SHOWN_STATS = ("p50", "p90", "p99", "max")


def cmd_show(args: argparse.Namespace, out: _Out) -> int:
    baseline = _load_baseline(args.baseline)
    select = _matcher(args.keyword)
    envs = baseline.environments()
    if args.env is not None:
        if args.env not in envs:
            known = ", ".join(envs) or "none"
            raise CommandError(f"{args.baseline}: no environment {args.env!r} (it has: {known})")
        envs = [args.env]
    shown = 0
    for env in envs:
        tests = {n: t for n, t in sorted(baseline.tests(env).items()) if select(n)}
        if not tests:
            continue
        out.line(f"environment {env} — {len(tests)} test(s)", bold=True)
        for nodeid in tests:
            machine = baseline.machine_of(env, nodeid) or {}
            where = ", ".join(
                str(machine[k]) for k in ("cpu", "cores", "platform", "python") if k in machine
            )
            out.line(f"{nodeid}" + (f"  [{where}]" if where and args.verbose else ""))
            for name, metric in sorted(baseline.metrics(env, nodeid).items()):
                label = metric_label({"name": name, "stat": metric.stat})
                value = format_value(metric.value, metric.unit)
                extra = [f"n = {metric.n}"] if metric.n > 1 else []
                extra += [
                    f"{s} {format_value(metric.summary[s], metric.unit)}"
                    for s in _SHOWN_STATS
                    if s in metric.summary and s != metric.stat
                ]
                fps = metric.details.get("fingerprints")
                if isinstance(fps, Mapping):
                    extra.append(f"{len(fps)} distinct statement(s)")
                kind = "timing-like" if metric.noisy else "exact"
                extra.append(f"{kind}, {metric.better} is better")
                out.line(f"  {label:<40} {value:>10}  " + "; ".join(extra))
                if args.verbose and isinstance(fps, Mapping):
                    for fp, count in sorted(fps.items()):
                        out.line(f"      {count:>4}× {fp}")
            shown += 1
    if not shown:
        what = f" matching -k {args.keyword!r}" if args.keyword else ""
        out.line(f"{args.baseline}: no tests{what}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# merge


def cmd_merge(args: argparse.Namespace, out: _Out) -> int:
    if args.resolve is not None:
        if args.out is not None or args.base is not None:
            raise CommandError("merge --resolve FILE takes no other files (it rewrites FILE)")
        return _resolve_in_place(args.resolve, out)
    if args.out is None or not args.inputs:
        raise CommandError("merge needs OUT and at least one IN (or --resolve FILE)")
    base_doc: dict[str, Any] | None = None
    if args.base is not None:
        base_doc = _input_document(args.base, out)
    inputs = [(path, _input_document(path, out)) for path in args.inputs]
    result: dict[str, Any] = (
        copy.deepcopy(base_doc)
        if base_doc is not None
        else {"environments": {}, "schema": SCHEMA_VERSION, "tool": TOOL}
    )
    result["schema"] = SCHEMA_VERSION
    changed_by: dict[tuple[str, str], Path] = {}
    conflicts: list[str] = []
    taken: dict[Path, int] = {}
    removed = 0

    def base_tests(env: str) -> dict[str, Any]:
        if base_doc is None:
            return {}
        tests: dict[str, Any] = base_doc["environments"].get(env, {}).get("tests", {})
        return tests

    for path, doc in inputs:
        for env, environment in sorted(doc["environments"].items()):
            target = result["environments"].setdefault(env, {})
            machines = target.setdefault("machines", {})
            tests = target.setdefault("tests", {})
            source_machines = environment.get("machines", {})
            for nodeid, entry in sorted(environment.get("tests", {}).items()):
                if base_doc is not None and same_measurement(base_tests(env).get(nodeid), entry):
                    continue  # untouched by this job: keep whatever another job wrote
                key = (env, nodeid)
                if key in changed_by and not same_measurement(tests.get(nodeid), entry):
                    conflicts.append(f"{env}: {nodeid} ({changed_by[key]} and {path})")
                tests[nodeid] = copy.deepcopy(entry)
                mid = entry.get("machine")
                if mid is not None and mid in source_machines:
                    machines[mid] = copy.deepcopy(source_machines[mid])
                changed_by[key] = path
                taken[path] = taken.get(path, 0) + 1
            if base_doc is not None:
                # a job that pruned a test: the entry is in the base but not in its output
                output_tests = environment.get("tests", {})
                for nodeid in list(base_tests(env)):
                    pruned = nodeid not in output_tests and (env, nodeid) not in changed_by
                    if pruned and tests.pop(nodeid, None) is not None:
                        removed += 1
    _save(Baseline(args.out, result))
    # the written file must load like any baseline: a merge never produces an unusable one
    _load_baseline(args.out)
    summary = ", ".join(f"{taken.get(path, 0)} from {path}" for path, _ in inputs)
    out.line(f"bridgeperf merge: wrote {args.out}: {summary}; {removed} removed")
    for conflict in conflicts:
        out.line(
            f"bridgeperf merge: warning: changed by two inputs, the later won: {conflict}",
            yellow=True,
        )
    return EXIT_OK


def _save(baseline: Baseline) -> None:
    """Write ``baseline`` under the writers' lock (a --perf-update may be writing it too)."""
    try:
        with BaselineLock(baseline.path):
            baseline.save()
    except OSError as exc:
        raise CommandError(f"{baseline.path}: cannot be written: {exc.strerror or exc}") from None


def _resolve_in_place(path: Path, out: _Out) -> int:
    try:
        text = read_bounded(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    if conflict_line(text) is None:
        Baseline.validate(path, parse_json(text, str(path)))
        out.line(f"bridgeperf merge: {path}: no git conflict markers, nothing to resolve")
        return EXIT_OK
    document, decisions, hunks = _resolve_text(text, str(path))
    _save(Baseline(path, document))
    _load_baseline(path)  # the written file loads like any baseline
    tests = sum(len(e.get("tests", {})) for e in document["environments"].values())
    out.line(
        f"bridgeperf merge: {path}: resolved {hunks} git conflict(s) per test entry; "
        f"{tests} test(s), {len(decisions)} changed on both sides; now `git add {path}`"
    )
    _print_decisions(out, decisions)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# merge-driver


def _driver_document(path: Path, what: str) -> dict[str, Any]:
    """One of git's three versions of the baseline, validated."""
    try:
        text = read_bounded(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file ({what})") from None
    if conflict_line(text) is not None:
        # a virtual ancestor of a criss-cross merge can itself hold conflict markers
        return _resolve_text(text, f"{path} ({what})")[0]
    return Baseline.validate(f"{path} ({what})", parse_json(text, f"{path} ({what})"))


def cmd_merge_driver(args: argparse.Namespace, out: _Out) -> int:
    """git's merge driver: merge OTHER into CURRENT (written in place) with ANCESTOR as base."""
    name = args.pathname or "baseline"
    try:
        ours = _driver_document(args.current, "ours")
        theirs = _driver_document(args.other, "theirs")
        base: dict[str, Any] | None = None
        # empty (no common version) or unusable: a two-way merge still keeps every test
        with contextlib.suppress(CommandError, BaselineError):
            base = _driver_document(args.ancestor, "ancestor")
        document, decisions = merge_documents(ours, theirs, base)
        Baseline(args.current, document).save()
    except (CommandError, BaselineError, OSError) as exc:
        # leave git an ordinary conflict to resolve by hand, with the reason why
        labels = ["-L", "ours", "-L", "base", "-L", "theirs"]
        files = [str(args.current), str(args.ancestor), str(args.other)]
        with contextlib.suppress(OSError):
            subprocess.run(["git", "merge-file", *labels, *files], check=False, capture_output=True)
        print(f"bridgeperf merge-driver: {name}: not merged: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _print_decisions(out, decisions, prefix=f"merge-driver: {name}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# prune


def cmd_prune(args: argparse.Namespace, out: _Out) -> int:
    baseline = _load_baseline(args.baseline)
    rootdir: Path = args.rootdir if args.rootdir is not None else args.baseline.parent
    if not rootdir.is_dir():
        raise CommandError(f"{rootdir}: not a directory (--rootdir)")
    select = _matcher(args.keyword) if args.keyword else None
    envs = [args.env] if args.env is not None else baseline.environments()
    dropped: list[tuple[str, str, str]] = []
    for env in envs:
        for nodeid in list(baseline.tests(env)):
            path = nodeid.split("::", 1)[0]
            if select is not None:
                if select(nodeid):
                    dropped.append((env, nodeid, "selected by -k"))
            elif not (rootdir / path).exists():
                dropped.append((env, nodeid, f"{path} not found under {rootdir}"))
    for env, nodeid, why in dropped:
        out.line(f"{'would drop' if args.dry_run else 'dropped'} [{env}] {nodeid}: {why}")
    if dropped and not args.dry_run:

        def drop(current: Baseline) -> bool:
            for env, nodeid, _ in dropped:
                current.remove_test(env, nodeid)
            return True

        try:
            Baseline.update(args.baseline, drop)
        except OSError as exc:
            raise CommandError(
                f"{args.baseline}: cannot be written: {exc.strerror or exc}"
            ) from None
    out.line(
        f"bridgeperf prune: {len(dropped)} entr{'y' if len(dropped) == 1 else 'ies'} "
        f"{'would be ' if args.dry_run else ''}dropped from {args.baseline}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# the parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit 2 (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings of ``parser`` and its commands that take a value."""
    found: set[str] = set()
    for action in parser._actions:  # argparse has no public listing of its actions
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _value_options(sub)
        elif action.option_strings and action.nargs is None:
            found.update(action.option_strings)
    return found


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
        found.update(action.option_strings)
    return found


def _attach_values(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """``--tolerance -5%`` as ``--tolerance=-5%``: argparse takes a value that starts with "-"
    for an option (unless it is a plain negative number) and reports a missing argument."""
    takes_value, known = _value_options(parser), _options(parser)
    result: list[str] = []
    args = list(argv)
    index = 0
    while index < len(args):
        arg = args[index]
        nxt = args[index + 1] if index + 1 < len(args) else None
        if (
            arg in takes_value
            and nxt is not None
            and nxt.startswith("-")
            and nxt != "--"
            and nxt.split("=", 1)[0] not in known
        ):
            result.append(f"{arg}={nxt}" if arg.startswith("--") else f"{arg}{nxt}")
            index += 2
            continue
        if arg == "--":
            result.extend(args[index:])
            break
        result.append(arg)
        index += 1
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bridgeperf",
        description="Work with pytest-bridgeperf baselines and reports outside a test run.",
        epilog="Exit status: 0 fine, 1 a regression (compare), 2 bad input or usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--color",
        choices=("auto", "yes", "no"),
        default="auto",
        help="colour the output (default: auto, on a terminal unless NO_COLOR is set)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    compare = commands.add_parser(
        "compare",
        parents=[common],
        help="verdicts of a saved --perf-report against a baseline (exit 1 on regression)",
        description="Judge the metrics of a saved `pytest --perf --perf-report=REPORT` run "
        "against BASELINE, as the plugin would have: same verdict rules, same tolerances. "
        "Exit 1 when a metric regressed.",
    )
    compare.add_argument("baseline", type=Path, metavar="BASELINE", help="baseline JSON file")
    compare.add_argument("report", type=Path, metavar="REPORT", help="--perf-report JSON file")
    compare.add_argument("--env", metavar="NAME", help="baseline section (default: the report's)")
    compare.add_argument(
        "--tolerance",
        type=_percent,
        metavar="PCT",
        help="regression tolerance for every test (default: each test's from the run)",
    )
    compare.add_argument(
        "--min-delta",
        type=_duration,
        metavar="DURATION",
        help="absolute floor of timing regressions (default: the run's)",
    )
    compare.add_argument(
        "--alpha",
        type=_alpha,
        metavar="A",
        help="1 - confidence of the timing intervals (default: the run's)",
    )
    compare.add_argument(
        "--strict", action="store_true", help="also fail on improved, new and missing metrics"
    )
    compare.add_argument("-k", dest="keyword", metavar="EXPR", help="only tests matching EXPR")
    compare.add_argument("-v", "--verbose", action="store_true", help="show why, per metric")
    compare.add_argument("--json", type=Path, metavar="PATH", help="write the new report JSON")
    compare.add_argument("--markdown", type=Path, metavar="PATH", help="write a Markdown summary")
    compare.add_argument("--html", type=Path, metavar="PATH", help="write the HTML report")
    compare.add_argument("--openmetrics", type=Path, metavar="PATH", help="write OpenMetrics text")
    compare.set_defaults(handler=cmd_compare)

    show = commands.add_parser(
        "show",
        parents=[common],
        help="what a baseline holds, as a table",
        description="List the tests and metrics stored in BASELINE.",
    )
    show.add_argument("baseline", type=Path, metavar="BASELINE", help="baseline JSON file")
    show.add_argument("-k", dest="keyword", metavar="EXPR", help="only tests matching EXPR")
    show.add_argument("--env", metavar="NAME", help="only this environment (default: all)")
    show.add_argument(
        "-v", "--verbose", action="store_true", help="also machines and SQL statements"
    )
    show.set_defaults(handler=cmd_show)

    merge = commands.add_parser(
        "merge",
        parents=[common],
        help="combine baselines updated by several CI jobs",
        description="Merge baseline files into OUT. With --base (the baseline every job started "
        "from), each input contributes only the entries it changed, added or pruned, so jobs "
        "that each updated their own tests combine without undoing each other. Without --base, "
        "entries are united and a later input wins. OUT may be one of the inputs. An input with "
        "git conflict markers is resolved per test entry first; `merge --resolve FILE` does "
        "only that, in place: a test changed on one side takes that side, a test changed on "
        "both takes the newer measurement (ours on a tie).",
    )
    merge.add_argument("out", type=Path, nargs="?", metavar="OUT", help="baseline file to write")
    merge.add_argument("inputs", type=Path, nargs="*", metavar="IN", help="baseline files")
    merge.add_argument(
        "--base", type=Path, metavar="BASELINE", help="the baseline the jobs started from"
    )
    merge.add_argument(
        "--resolve",
        type=Path,
        metavar="FILE",
        help="resolve the git conflict markers in FILE per test entry, in place",
    )
    merge.set_defaults(handler=cmd_merge)

    driver = commands.add_parser(
        "merge-driver",
        parents=[common],
        help="git merge driver for baselines (see the README)",
        description="Called by git as `bridgeperf merge-driver %%O %%A %%B [%%P]` once set up: "
        "`.gitattributes`: `perf-baseline.json merge=bridgeperf`; `git config "
        "merge.bridgeperf.driver 'bridgeperf merge-driver %%O %%A %%B %%P'`. Merges per test "
        "entry into CURRENT: a test changed on one side takes that side, a test changed on both "
        "takes the newer measurement (ours on a tie). Exit 0 when merged; otherwise git keeps a "
        "conflict, with the reason on stderr.",
    )
    driver.add_argument("ancestor", type=Path, metavar="ANCESTOR", help="%%O: the common version")
    driver.add_argument("current", type=Path, metavar="CURRENT", help="%%A: ours; gets the result")
    driver.add_argument("other", type=Path, metavar="OTHER", help="%%B: theirs")
    driver.add_argument("pathname", nargs="?", metavar="PATH", help="%%P: the file's name")
    driver.set_defaults(handler=cmd_merge_driver)

    prune = commands.add_parser(
        "prune",
        parents=[common],
        help="drop entries of deleted test files (or those selected by -k)",
        description="Drop baseline entries whose test file no longer exists under ROOTDIR, "
        "or, with -k, the entries whose node id matches EXPR. (`pytest --perf-prune` also "
        "drops tests deleted from files that still exist.)",
    )
    prune.add_argument("baseline", type=Path, metavar="BASELINE", help="baseline JSON file")
    prune.add_argument(
        "--rootdir",
        type=Path,
        metavar="DIR",
        help="where node ids are relative to (default: the baseline's directory)",
    )
    prune.add_argument("-k", dest="keyword", metavar="EXPR", help="drop tests matching EXPR")
    prune.add_argument("--env", metavar="NAME", help="only this environment (default: all)")
    prune.add_argument("--dry-run", action="store_true", help="show what would be dropped")
    prune.set_defaults(handler=cmd_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_values(parser, sys.argv[1:] if argv is None else argv))
    out = _Out(sys.stdout, args.color)
    handler: Callable[[argparse.Namespace, _Out], int] = args.handler
    try:
        return handler(args, out)
    except (CommandError, ReportError, BaselineError) as exc:
        print(f"bridgeperf: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"bridgeperf: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("bridgeperf: interrupted", file=sys.stderr)
        return 130
