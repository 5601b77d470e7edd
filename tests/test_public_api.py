"""The package's public names, and what importing it costs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_bridgeperf


def test_every_public_name_resolves() -> None:
    for name in pytest_bridgeperf.__all__:
        assert getattr(pytest_bridgeperf, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = pytest_bridgeperf.NoSuchThing  # type: ignore[attr-defined]


def test_import_is_light() -> None:
    """Importing the package pulls in neither pytest nor the optional dependencies."""
    code = (
        "import sys, pytest_bridgeperf\n"
        "heavy = [m for m in ('pytest', 'sqlalchemy', 'aiohttp', 'psutil', 'memray') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
