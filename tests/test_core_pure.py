"""The measuring and baseline code imports no pytest (STYLE.md item 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CORE = ["units", "intervals", "stats", "metrics", "baseline", "compare", "settings", "profiling"]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_without_pytest(module: str) -> None:
    result = _run(
        f"""
        import sys
        sys.modules["pytest"] = None  # any `import pytest` now raises ImportError
        sys.modules["_pytest"] = None
        import pytest_bridgeperf.{module}
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("pytest", "_pytest")
                        and sys.modules[m] is not None)
        assert not leaked, leaked
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_package_root_imports_without_pytest() -> None:
    result = _run(
        """
        import sys
        sys.modules["pytest"] = None
        import pytest_bridgeperf
        from pytest_bridgeperf import Recorder, LatencyHistogram, Budgets
        rec = Recorder()
        rec.record("latency", [0.001, 0.002, 0.003])
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr


def test_the_guard_works() -> None:
    """The same check fails for a module that does import pytest."""
    result = _run(
        """
        import sys
        sys.modules["pytest"] = None
        import pytest_bridgeperf.plugin
        """
    )
    assert result.returncode != 0
    assert "ImportError" in result.stderr or "ModuleNotFoundError" in result.stderr
