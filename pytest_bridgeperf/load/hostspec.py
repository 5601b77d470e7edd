"""The ``hosts=`` option and ini ``perf_load_hosts``: execnet gateway specs, as pytest-xdist's
``--tx`` takes them (``popen``, ``ssh=user@host``, ``socket=host:port``, ``N*spec``, with
``//python=``, ``//chdir=``, ``//env:NAME=value``...), checked before anything starts.

No pytest here; execnet only parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MAX_HOSTS", "expand_hosts"]

#: Generator processes of one run, at most (every one is a process and an ssh connection of
#: the controller's; see README "Load from several machines" for the cost per host).
MAX_HOSTS = 256

_KINDS = ("popen", "ssh", "socket", "vagrant_ssh")
_OPTIONS = {"python", "chdir", "nice", "id", "execmodel", "ssh_config", "dont_write_bytecode"}
_COUNT = re.compile(r"^\s*(\d+)\s*\*\s*(.+)$")


def expand_hosts(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The generator specs of ``value``, ``N*spec`` expanded; raises ``ValueError`` naming the
    spec that is wrong (the caller adds where it came from)."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = [value]
    elif isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        raise ValueError(f"expected a list of execnet gateway specs, got {value!r}")
    else:
        items = list(value)
    specs: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{item!r} is not an execnet gateway spec (e.g. 'ssh=gen1')")
        text = item.strip()
        count = 1
        match = _COUNT.match(text)
        if match:
            count, text = int(match.group(1)), match.group(2).strip()
            if not 1 <= count <= MAX_HOSTS:
                raise ValueError(f"{item!r}: the count must be 1..{MAX_HOSTS}")
        _check_spec(text)
        specs.extend([text] * count)
        if len(specs) > MAX_HOSTS:
            raise ValueError(f"at most {MAX_HOSTS} generators per run (got {len(specs)} or more)")
    ids = [_spec_id(s) for s in specs]
    given = [i for i in ids if i is not None]
    duplicate = sorted({i for i in given if given.count(i) > 1})
    if duplicate:
        raise ValueError(f"id={duplicate[0]} names more than one generator: ids must be unique")
    return tuple(specs)


def _check_spec(text: str) -> None:
    from execnet import XSpec

    try:
        spec = XSpec(text)
    except (ValueError, AttributeError) as exc:
        raise ValueError(f"{text!r} is not a valid execnet spec: {exc}") from None
    keys = {key for key in vars(spec) if not key.startswith("_") and key != "env"}
    kinds = [k for k in _KINDS if k in keys]
    if not kinds:
        first = text.split("//")[0]
        hint = f"'ssh={first}' for a host reached over ssh" if "=" not in first else "'popen'"
        raise ValueError(
            f"{text!r} names no gateway type ({', '.join(_KINDS)}): e.g. {hint}, with "
            "//python=/path/to/venv/bin/python for the environment there"
        )
    if len(kinds) > 1:
        raise ValueError(
            f"{text!r}: a generator spec names one gateway type, not {' and '.join(kinds)}"
        )
    if "via" in keys or "installvia" in keys:
        raise ValueError(
            f"{text!r}: via= gateways are not supported; reach the host with ssh's own "
            "ProxyJump (ssh_config=, or -J in the ssh= value)"
        )
    unknown = sorted(keys - set(_KINDS) - _OPTIONS)
    if unknown:
        raise ValueError(
            f"{text!r}: unknown key {unknown[0]!r}; known: "
            f"{', '.join(sorted(set(_KINDS) | _OPTIONS))}, env:NAME=value"
        )
    kind_value = getattr(spec, kinds[0])
    if kinds[0] != "popen" and (kind_value is True or not str(kind_value).strip()):
        raise ValueError(f"{text!r}: {kinds[0]}= needs a value (a host, or host:port)")
    if spec.execmodel not in (None, "main_thread_only"):
        raise ValueError(
            f"{text!r}: a generator runs with execmodel=main_thread_only (its run handles "
            "signals in the main thread); leave execmodel= out"
        )


def _spec_id(text: str) -> str | None:
    from execnet import XSpec

    value = XSpec(text).id
    return str(value) if value else None
