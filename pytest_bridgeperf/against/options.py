"""The command line of each side's pytest session: the user's options, less what must not run
twice or inside a side.

Why filtered command-line arguments (``config.invocation_params.args``) rather than
``vars(config.option)`` rebuilt with ``Config.fromdictargs``: each side is its own checkout's
pytest session. With the arguments, a side parses them itself, against its own ini file
(REF's ``addopts``, markers, ``asyncio_mode``…), its own conftests and the plugins of its own
interpreter (``--perf-against-python`` may be another environment), exactly as a user running
pytest in that checkout would. ``vars(config.option)`` is the controller's *result* of that
parsing: values taken from A's ini file, paths already resolved in A's tree, and whatever A's
plugins changed in ``pytest_configure`` — replayed in B it would silently give B A's
configuration, and an option B's environment does not know would be dropped instead of
reported. pytest-xdist made the same move (3.x sends ``invocation_params.args`` and rebuilds
the config with the normal parser).

Options are recognised with pytest's own argument parser (which option takes how many values),
so ``--cov src`` keeps its value and ``-xvs`` loses only its ``x``. Options the parser does not
know are kept as written. Options of the ini file's ``addopts`` and ``PYTEST_ADDOPTS`` are
filtered too (the worker resets the excluded ones after parsing; ``PYTEST_ADDOPTS`` is rewritten
for the sides).

No pytest import here: ``side_args`` reads the config object it is given.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, NamedTuple

__all__ = ["EXCLUDED", "SideArgs", "neutralize", "side_args"]

#: Option destinations a side never gets, with why (shown with ``-v``).
EXCLUDED: dict[str, str] = {
    # the controller distributes the work; a side is one interpreter running one test at a time
    **dict.fromkeys(
        (
            "numprocesses",
            "maxprocesses",
            "maxworkerrestart",
            "dist",
            "distload",
            "tx",
            "px",
            "rsyncdir",
            "rsyncignore",
            "testrunuid",
            "maxschedchunk",
            "looponfail",
        ),
        "pytest-xdist",
    ),
    # the comparison itself and the baseline: the controller's business
    **dict.fromkeys(
        ("perf_against", "perf_against_python", "perf_update", "perf_prune", "perf_accept"),
        "the controller's",
    ),
    # reports of the whole run: the controller writes them, once
    **dict.fromkeys(
        (
            "perf_report",
            "perf_markdown",
            "perf_html",
            "perf_openmetrics",
            "xmlpath",
            "junitprefix",
            "htmlpath",
            "self_contained_html",
            "css",
            "reportlog",
            "report_log",
            "json_report",
            "json_report_file",
            "resultlog",
            "pastebin",
            "debug",
            "benchmark_json",
            "benchmark_save",
            "benchmark_autosave",
            "benchmark_save_data",
            "benchmark_histogram",
            "benchmark_cprofile_dump",
            "benchmark_compare",
            "benchmark_compare_fail",
        ),
        "a report of the run",
    ),
    # the controller chooses which tests run, in which order, and when to stop
    **dict.fromkeys(
        (
            "lf",
            "failedfirst",
            "last_failed_no_failures",
            "newfirst",
            "cacheclear",
            "cacheshow",
            "stepwise",
            "stepwise_skip",
            "stepwise_reset",
            "maxfail",
            "session_timeout",
        ),
        "test selection and stopping are the controller's",
    ),
    # nobody can type into a side's debugger
    **dict.fromkeys(("usepdb", "usepdb_cls", "trace"), "a debugger"),
    # modes in which pytest runs no test: a side would never be ready
    **dict.fromkeys(
        (
            "collectonly",
            "setuponly",
            "setupplan",
            "showfixtures",
            "show_fixtures_per_test",
            "markers",
            "help",
            "version",
        ),
        "runs no test",
    ),
    # each side gets its own
    "basetemp": "each side has its own",
    # a side's terminal output goes nowhere (the controller reports)
    "setupshow": "a side's terminal output is not shown",
}

#: Options whose value a side gets translated into its own tree when it points inside A's
#: rootdir (any option value naming a path inside A's rootdir is translated; these are the ones
#: a side needs even when the user did not give them).
_ROOTDIR = "--rootdir"


class RootPath(NamedTuple):
    """An option value naming a path inside A's rootdir: ``prefix`` + the side's root /
    ``relative``."""

    prefix: str
    relative: str

    def render(self, root: Path) -> str:
        path = root if self.relative in ("", ".") else root / self.relative
        return f"{self.prefix}{path}"


Arg = str | RootPath


@dataclass(frozen=True)
class SideArgs:
    """The options both sides run with, before the side-specific parts are filled in."""

    #: options in order, each a literal or a path inside the rootdir
    options: tuple[Arg, ...]
    #: the invocation directory relative to the rootdir (a side runs in the same place of its
    #: own tree, so relative paths in options mean the same)
    cwd: str = "."
    #: ``PYTEST_ADDOPTS`` filtered the same way; None when the variable is not set
    addopts: tuple[Arg, ...] | None = None
    #: what was left out, as written, with the reason
    dropped: tuple[tuple[str, str], ...] = field(default=())

    def render(self, root: Path, *, basetemp: Path) -> list[str]:
        """The command line of the side whose tree is ``root``: the options, then this side's
        ``--rootdir`` (unless given), ``--basetemp`` and ``-p no:cacheprovider`` (a side must
        not write the user's last-failed cache). The files to collect follow a ``--``
        (:meth:`with_files`)."""
        args = _render(self.options, root)
        if not any(_is_option(a, _ROOTDIR) for a in self.options):
            args.append(f"{_ROOTDIR}={root}")
        args += [f"--basetemp={basetemp}", "-p", "no:cacheprovider"]
        return args

    def environ(self, root: Path) -> dict[str, str]:
        """Environment variables the side whose tree is ``root`` needs beyond the
        controller's: ``PYTEST_ADDOPTS`` filtered like the command line."""
        if self.addopts is None:
            return {}
        return {"PYTEST_ADDOPTS": shlex.join(_render(self.addopts, root))}


def _render(args: Iterable[Arg], root: Path) -> list[str]:
    return [a.render(root) if isinstance(a, RootPath) else a for a in args]


def with_files(args: Sequence[str], files: Iterable[str]) -> list[str]:
    """``args`` then the files to collect; after ``--`` so that no option taking several
    values swallows a file."""
    return [*args, "--", *files]


def _is_option(arg: Arg, name: str) -> bool:
    text = arg.prefix if isinstance(arg, RootPath) else arg
    return text == name or text.startswith(name + "=")


# ---------------------------------------------------------------------------------------------


def side_args(config: Any) -> SideArgs:
    """The sides' options from the controller's ``config`` (a ``pytest.Config``)."""
    actions = option_actions(config)
    invocation = config.invocation_params
    rootdir = Path(config.rootpath)
    cwd = Path(invocation.dir)
    try:
        relative_cwd = PurePath(os.path.relpath(cwd, rootdir)).as_posix()
        if relative_cwd == ".." or relative_cwd.startswith("../"):
            relative_cwd = "."  # invoked from outside the rootdir: run in its counterpart
    except ValueError:  # another drive
        relative_cwd = "."
    raw = _expand_argfiles([str(a) for a in invocation.args or ()], cwd)
    options, dropped = filter_args(raw, actions, rootdir)
    extra = _same_seed(config, options)
    addopts = os.environ.get("PYTEST_ADDOPTS")
    filtered_addopts = None
    if addopts is not None:
        kept, dropped_env = filter_args(shlex.split(addopts), actions, rootdir)
        dropped = dropped + tuple((f"{a} (PYTEST_ADDOPTS)", why) for a, why in dropped_env)
        filtered_addopts = tuple(kept)
    return SideArgs(
        options=(*options, *extra),
        cwd=relative_cwd,
        addopts=filtered_addopts,
        dropped=dropped,
    )


def _same_seed(config: Any, options: Sequence[Arg]) -> list[str]:
    """pytest-randomly reseeds ``random`` before each test with the session's seed: both sides
    must use the same one, or each draws different random data for the same test."""
    if not config.pluginmanager.has_plugin("randomly"):
        return []
    if any(_is_option(a, "--randomly-seed") for a in options):
        return []
    seed = getattr(config.option, "randomly_seed", None)
    return [f"--randomly-seed={seed}"] if isinstance(seed, int) else []


def option_actions(config: Any) -> Mapping[str, argparse.Action]:
    """pytest's argument parser's option strings → argparse actions (what each option is and
    how many values it takes)."""
    actions: Mapping[str, argparse.Action] = _argparser(config)._option_string_actions
    return actions


def _argparser(config: Any) -> argparse.ArgumentParser:
    """pytest exposes its argparse parser only privately; this is the one place that reaches
    for it (``tests/test_against_options.py`` fails loudly if pytest moves it)."""
    parser = config._parser
    optparser = getattr(parser, "optparser", None)  # pytest >= 9
    if optparser is None:
        optparser = parser._getparser()  # pytest 8
    assert isinstance(optparser, argparse.ArgumentParser)
    return optparser


def filter_args(
    args: Sequence[str], actions: Mapping[str, argparse.Action], rootdir: Path
) -> tuple[list[Arg], tuple[tuple[str, str], ...]]:
    """Split ``args`` into options the sides keep (values inside ``rootdir`` made
    :class:`RootPath`) and what is dropped (excluded options and every positional argument)."""
    kept: list[Arg] = []
    dropped: list[tuple[str, str]] = []

    def keep(option: str, values: list[str], inline: bool) -> None:
        if not values:
            kept.append(option)
        elif inline:
            kept.append(_translate(f"{option}=", values[0], rootdir))
        else:
            kept.append(option)
            kept.extend(_translate("", v, rootdir) for v in values)

    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            dropped.extend((a, "positional: the files to run replace it") for a in args[i:])
            break
        if token.startswith("--"):
            name, eq, inline_value = token.partition("=")
            action = actions.get(name)
            if action is None:
                kept.append(token)  # unknown here; the side's parser will judge it
                continue
            values, i = _values(action, args, i, inline_value if eq else None)
            if action.dest in EXCLUDED:
                written = " ".join([token, *values[1 if eq else 0 :]])
                dropped.append((written, EXCLUDED[action.dest]))
            else:
                keep(name, values, bool(eq))
            continue
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            # a cluster of short options: -xvs, -n2, -kexpr, -pno:cacheprovider
            j = 1
            while j < len(token):
                name = "-" + token[j]
                action = actions.get(name)
                j += 1
                if action is None:
                    kept.append("-" + token[j - 1 :])  # unknown: keep the rest as written
                    break
                rest = token[j:]
                if action.nargs == 0:
                    if action.dest in EXCLUDED:
                        dropped.append((name, EXCLUDED[action.dest]))
                    else:
                        kept.append(name)
                    continue
                values, i = _values(action, args, i, rest if rest else None)
                if action.dest in EXCLUDED:
                    dropped.append((" ".join([name, *values]), EXCLUDED[action.dest]))
                else:
                    keep(name, values, False)
                break
            continue
        dropped.append((token, "positional: the files to run replace it"))
    return kept, tuple(dropped)


def _values(
    action: argparse.Action, args: Sequence[str], i: int, inline: str | None
) -> tuple[list[str], int]:
    """The values ``action`` takes, argparse's way: returns them and the next index."""
    nargs = action.nargs
    if nargs == 0:
        return ([inline] if inline is not None else []), i
    if inline is not None:
        return [inline], i
    if nargs is None:
        return (list(args[i : i + 1]), i + 1) if i < len(args) else ([], i)
    if nargs == "?":
        if i < len(args) and not _looks_like_option(args[i]):
            return [args[i]], i + 1
        return [], i
    if nargs in ("*", "+"):
        values = []
        while i < len(args) and not _looks_like_option(args[i]):
            values.append(args[i])
            i += 1
        return values, i
    if isinstance(nargs, int):
        return list(args[i : i + nargs]), i + nargs
    return [], i


def _looks_like_option(token: str) -> bool:
    return token.startswith("-") and token != "-" and not _is_number(token)


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _translate(prefix: str, value: str, rootdir: Path) -> Arg:
    """A value naming a path inside A's rootdir (``/a/root/x``, or inside it after a ``key=``
    or ``html:`` as in ``-o cache_dir=/a/root/c`` and ``--cov-report=html:/a/root/h``) becomes
    a :class:`RootPath`; anything else stays as written."""
    root = str(rootdir)
    index = value.find(root)
    if index < 0:
        return prefix + value
    head, tail = value[:index], value[index + len(root) :]
    if head and head[-1] not in "=:,":
        return prefix + value
    if tail and not tail.startswith(("/", os.sep)):
        return prefix + value  # /a/rootdir-other is not inside /a/rootdir
    return RootPath(prefix + head, tail.lstrip("/" + os.sep) or ".")


def _expand_argfiles(args: list[str], cwd: Path) -> list[str]:
    """``@file`` arguments (pytest reads one argument per line from them), expanded so that
    their options are filtered too."""
    out: list[str] = []
    for arg in args:
        if arg.startswith("@") and len(arg) > 1:
            path = Path(arg[1:])
            path = path if path.is_absolute() else cwd / path
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                out.append(arg)  # let the side's parser report it
                continue
            out.extend(_expand_argfiles([line for line in lines if line], cwd))
        else:
            out.append(arg)
    return out


def neutralize(config: Any) -> list[str]:
    """Reset the excluded options that reached a side's config anyway (from its ini file's
    ``addopts``) to their defaults; returns the dests it reset. Called inside each side right
    after pytest parsed the command line."""
    # the defaults as argparse itself fills them in (the first of several options sharing a
    # dest decides, e.g. -x and --maxfail)
    defaults = vars(_argparser(config).parse_known_args([])[0])
    reset = []
    for dest, default in defaults.items():
        if dest not in EXCLUDED or dest == "basetemp" or not hasattr(config.option, dest):
            continue
        if getattr(config.option, dest) != default:
            setattr(config.option, dest, default)
            reset.append(dest)
    return sorted(reset)
