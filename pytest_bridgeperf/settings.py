"""The plugin's resolved configuration: one frozen object, resolved once from CLI → ini → env →
default.

No pytest here; :func:`pytest_bridgeperf.plugin` reads the raw values and calls :func:`resolve`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .units import UnitError, parse_duration, parse_percent

__all__ = ["DEFAULTS", "Settings", "SettingsError", "resolve"]


class SettingsError(ValueError):
    """An option or ini value is invalid; the message names it."""


#: Defaults of the values that have one (ini text form, as `pytest --help` shows it).
DEFAULTS: dict[str, str] = {
    "perf_baseline": "perf-baseline.json",
    "perf_tolerance": "10%",
    "perf_env": "default",
    "perf_min_delta": "0",
    "perf_alpha": "0.01",
    "perf_max_duration": "60s",
    "perf_confirm": "1",
    "perf_against_rounds": "60",
    "perf_against_max_time": "120s",
    "perf_against_warmup": "1",
    "perf_against_load_duration": "",
    "perf_profile": "on-regression",
}


@dataclass(frozen=True)
class Settings:
    enabled: bool = False  # --perf
    baseline_path: Path = Path("perf-baseline.json")
    update: bool = False
    accept: bool = False  # --perf-accept: --perf-update also rewrites regressed entries
    prune: bool = False
    tolerance: float = 0.10
    env: str = "default"
    report_path: Path | None = None
    strict: bool = False
    min_delta: float = 0.0  # absolute floor of a timing regression, seconds (none by default)
    alpha: float = 0.01  # timing verdicts: 1 - alpha confidence intervals
    allowed_hosts: tuple[str, ...] = ()  # load targets beyond loopback
    max_duration: float = 60.0  # hard cap of one load run, seconds
    load_hosts: tuple[str, ...] = ()  # ini perf_load_hosts: execnet specs of load generators
    memory_lines: bool = False  # --perf-memory-lines
    confirm: int = 1  # reruns that must reproduce a timing regression before it fails
    quiet: bool = False  # pytest -q: no live progress lines
    markdown_path: Path | None = None  # --perf-markdown
    step_summary: bool = True  # append the Markdown summary to $GITHUB_STEP_SUMMARY when set
    html_path: Path | None = None  # --perf-html
    openmetrics_path: Path | None = None  # --perf-openmetrics
    against: str | None = None  # --perf-against=REF: measure REF in the same run and compare
    against_python: str | None = None  # --perf-against-python: the interpreter of REF's side
    against_paths: tuple[str, ...] = ()  # ini perf_against_paths: REF's import roots
    against_rounds: int = 60  # measured rounds per side and test, at most
    against_max_time: float = 120.0  # seconds of one test's A/B trial, at most
    against_warmup: int = 1  # unmeasured rounds per side before a test's first block
    against_load_duration: float | None = None  # cap of each perf_load duration in a round
    library_modules: tuple[str, ...] = ()  # ini perf_library_modules: call sites skip them
    #: --perf-profile: off | on-regression | always (where the time went, profiling.py)
    profile: str = "on-regression"
    artifacts_dir: Path | None = None  # --perf-artifacts: where profiles are kept as files
    profile_baseline: bool = False  # ini perf_profile_baseline: --perf-update stores a profile


def _load_hosts(raw: Sequence[str] | str | None) -> tuple[str, ...]:
    """ini ``perf_load_hosts``: one execnet gateway spec per line (a spec may hold spaces:
    ``ssh=-p 2222 gen1``), checked now so that a typo fails the session at its start."""
    lines = raw.splitlines() if isinstance(raw, str) else list(raw or ())
    specs = tuple(line.strip() for line in lines if line.strip())
    if specs:
        from .load.hostspec import expand_hosts  # imported only when the ini is set

        try:
            expand_hosts(specs)
        except ValueError as exc:
            raise SettingsError(f"ini perf_load_hosts: {exc}") from None
    return specs


def _flag(cli: object, ini: object) -> bool:
    if cli is not None:
        return bool(cli)
    if isinstance(ini, bool):
        return ini
    return str(ini or "").strip().lower() in ("1", "true", "yes", "on")


def _text(cli: object, ini: object, env: str | None, default: str) -> str:
    for value in (cli, ini, env):
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return default


def _module_names(raw: Sequence[str] | str | None) -> tuple[str, ...]:
    """ini ``perf_library_modules``: module names or dotted prefixes, whitespace-separated."""
    lines = raw.split() if isinstance(raw, str) else raw or ()
    names: list[str] = []
    for line in lines:
        for word in line.replace(",", " ").split():
            name = word[:-2] if word.endswith(".*") else word
            if not all(part.isidentifier() for part in name.split(".")):
                raise SettingsError(
                    f"ini perf_library_modules: {word!r} is not a module name "
                    "(expected dotted names like 'myapp.db' or 'myapp')"
                )
            names.append(name)
    return tuple(dict.fromkeys(names))


def resolve(
    cli: Mapping[str, Any],
    ini: Callable[[str], Any],
    rootdir: Path,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Resolve every setting. ``cli`` maps dest names (``perf_tolerance``) to parsed CLI values
    (``None`` when not given); ``ini(name)`` returns the ini value."""

    def parse(name: str, option: str, parser: Callable[[str], Any], raw: str) -> Any:
        try:
            return parser(raw)
        except (UnitError, ValueError) as exc:
            raise SettingsError(f"{option} / ini {name} = {raw!r}: {exc}") from None

    update = _flag(cli.get("perf_update"), None)
    prune = _flag(cli.get("perf_prune"), None)
    enabled = (
        _flag(cli.get("perf"), ini("perf"))
        or update
        or prune
        or bool(_text(cli.get("perf_against"), ini("perf_against"), None, ""))
    )
    baseline = Path(
        _text(cli.get("perf_baseline"), ini("perf_baseline"), None, DEFAULTS["perf_baseline"])
    )
    if not baseline.is_absolute():
        baseline = rootdir / baseline
    tolerance = parse(
        "perf_tolerance",
        "--perf-tolerance",
        lambda raw: parse_percent(raw, bare_is_percent=True),
        _text(cli.get("perf_tolerance"), ini("perf_tolerance"), None, DEFAULTS["perf_tolerance"]),
    )
    env = _text(cli.get("perf_env"), ini("perf_env"), environ.get("PERF_ENV"), DEFAULTS["perf_env"])
    if any(ch in env for ch in "\n\r\t") or len(env) > 100:
        raise SettingsError(f"--perf-env / ini perf_env = {env!r}: not a usable section name")
    min_delta = parse(
        "perf_min_delta",
        "--perf-min-delta",
        parse_duration,
        _text(cli.get("perf_min_delta"), ini("perf_min_delta"), None, DEFAULTS["perf_min_delta"]),
    )

    def alpha_parser(raw: str) -> float:
        value = float(raw)
        if not 0 < value < 1:
            raise ValueError("must be between 0 and 1, e.g. 0.01")
        return value

    alpha = parse(
        "perf_alpha",
        "ini perf_alpha",
        alpha_parser,
        _text(None, ini("perf_alpha"), None, DEFAULTS["perf_alpha"]),
    )
    max_duration = parse(
        "perf_max_duration",
        "ini perf_max_duration",
        parse_duration,
        _text(None, ini("perf_max_duration"), None, DEFAULTS["perf_max_duration"]),
    )
    hosts_raw: Sequence[str] | str | None = ini("perf_allowed_hosts")
    if isinstance(hosts_raw, str):
        hosts_raw = hosts_raw.split()
    library_modules = _module_names(ini("perf_library_modules"))
    load_hosts = _load_hosts(ini("perf_load_hosts"))
    report = cli.get("perf_report")

    def output(name: str) -> Path | None:
        """A report path from the CLI or ini, relative to the rootdir."""
        raw = _text(cli.get(name), ini(name), None, "")
        if not raw:
            return None
        return Path(raw) if Path(raw).is_absolute() else rootdir / raw

    accept = _flag(cli.get("perf_accept"), None)
    if accept and not update:
        raise SettingsError("--perf-accept only makes sense with --perf-update")

    def confirm_parser(raw: str) -> int:
        value = int(raw)
        if not 0 <= value <= 10:
            raise ValueError("must be a whole number from 0 to 10")
        return value

    confirm = parse(
        "perf_confirm",
        "--perf-confirm",
        confirm_parser,
        _text(cli.get("perf_confirm"), ini("perf_confirm"), None, DEFAULTS["perf_confirm"]),
    )
    against = _text(cli.get("perf_against"), ini("perf_against"), None, "") or None
    against_python = _text(cli.get("perf_against_python"), None, None, "") or None
    if against is not None and (update or prune or accept):
        raise SettingsError(
            "--perf-against compares with another revision measured in the same run; it cannot "
            "be combined with --perf-update/--perf-prune/--perf-accept, which write the "
            "committed baseline"
        )
    if against_python is not None and against is None:
        raise SettingsError("--perf-against-python only makes sense with --perf-against=REF")

    def count_parser(low: int, high: int) -> Callable[[str], int]:
        def parser(raw: str) -> int:
            value = int(raw)
            if not low <= value <= high:
                raise ValueError(f"must be a whole number from {low} to {high}")
            return value

        return parser

    against_rounds = parse(
        "perf_against_rounds",
        "ini perf_against_rounds",
        count_parser(2, 1000),
        _text(None, ini("perf_against_rounds"), None, DEFAULTS["perf_against_rounds"]),
    )
    against_warmup = parse(
        "perf_against_warmup",
        "ini perf_against_warmup",
        count_parser(0, 100),
        _text(None, ini("perf_against_warmup"), None, DEFAULTS["perf_against_warmup"]),
    )
    against_max_time = parse(
        "perf_against_max_time",
        "ini perf_against_max_time",
        parse_duration,
        _text(None, ini("perf_against_max_time"), None, DEFAULTS["perf_against_max_time"]),
    )
    load_cap_raw = _text(None, ini("perf_against_load_duration"), None, "")
    against_load_duration = (
        parse(
            "perf_against_load_duration",
            "ini perf_against_load_duration",
            parse_duration,
            load_cap_raw,
        )
        if load_cap_raw
        else None
    )
    # where the time went (profiling.py): --perf-profile, --perf-artifacts, perf_profile_baseline
    profile = _text(cli.get("perf_profile"), ini("perf_profile"), None, DEFAULTS["perf_profile"])
    if profile not in ("off", "on-regression", "always"):
        raise SettingsError(
            f"--perf-profile / ini perf_profile = {profile!r}: expected off, on-regression "
            "(profile a test whose timing regressed) or always (profile every perf test)"
        )
    paths_raw: Sequence[str] | str | None = ini("perf_against_paths")
    if isinstance(paths_raw, str):
        paths_raw = paths_raw.split()
    return Settings(
        against=against,
        against_python=against_python,
        against_paths=tuple(p.strip() for p in (paths_raw or ()) if p.strip()),
        against_rounds=against_rounds,
        against_max_time=against_max_time,
        against_warmup=against_warmup,
        against_load_duration=against_load_duration,
        confirm=confirm,
        enabled=enabled,
        baseline_path=baseline,
        update=update,
        accept=accept,
        prune=prune,
        tolerance=tolerance,
        env=env,
        report_path=(
            rootdir / report if report and not Path(report).is_absolute() else Path(report)
        )
        if report
        else None,
        strict=_flag(cli.get("perf_strict"), ini("perf_strict")),
        min_delta=min_delta,
        alpha=alpha,
        allowed_hosts=tuple(h.strip() for h in (hosts_raw or ()) if h.strip()),
        max_duration=max_duration,
        load_hosts=load_hosts,
        memory_lines=_flag(cli.get("perf_memory_lines"), ini("perf_memory_lines")),
        quiet=bool(cli.get("quiet")),
        markdown_path=output("perf_markdown"),
        step_summary=_flag(None, ini("perf_step_summary")),
        html_path=output("perf_html"),
        openmetrics_path=output("perf_openmetrics"),
        library_modules=library_modules,
        profile=profile,
        artifacts_dir=output("perf_artifacts"),
        profile_baseline=_flag(None, ini("perf_profile_baseline")),
    )
