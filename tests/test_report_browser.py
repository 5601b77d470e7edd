"""The HTML report in a real headless browser (Debian's ``chromium``), when one is installed:
the page renders, logs no console error (the page's Content-Security-Policy makes any attempt to
load something a console error), its plots are there and have a size, and at phone width
nothing but the scroll boxes of tables and code is wider than the screen."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import report_samples as samples

from pytest_bridgeperf.report.html import render_html

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

#: Console messages as Chromium logs them with --enable-logging=stderr.
CONSOLE = re.compile(r"CONSOLE[^\]]*\]\s*(.*)")


def chromium(tmp_path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for m in CONSOLE.finditer(stderr)]


@pytest.fixture
def page(tmp_path: Path) -> Path:
    path = tmp_path / "perf.html"
    path.write_text(render_html(samples.build(tmp_path)), encoding="utf-8")
    return path


def test_the_report_renders_without_console_errors(page: Path, tmp_path: Path) -> None:
    result = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert dom.count('<svg class="plot percentiles"') == 3
    assert dom.count('<svg class="plot bars"') == 2
    assert dom.count('<path class="curve') >= 5
    assert dom.count('<section class="test') == len(samples.TESTS)
    assert console_messages(result.stderr) == []


def test_the_console_check_sees_errors(tmp_path: Path) -> None:
    """The check above can fail: a page that loads a stylesheet against its policy, and one
    that logs an error, are both caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; script-src 'unsafe-inline'\">"
        '<link rel="stylesheet" href="https://cdn.example.invalid/x.css"></head>'
        "<body><script>console.error('broken plot')</script></body></html>"
    )
    result = chromium(tmp_path, bad.as_uri(), "--dump-dom")
    messages = " ".join(console_messages(result.stderr))
    assert "broken plot" in messages
    assert "violates the following Content Security Policy" in messages


def _probe(page: Path, tmp_path: Path, width: int) -> Path:
    """A harness showing the page in a frame ``width`` CSS pixels wide (headless Chromium will
    not open a window narrower than 500 px), and a copy of the page with a script (the
    original's policy forbids scripts) that reports the layout's measurements to the harness,
    which writes them into its own DOM."""
    text = page.read_text(encoding="utf-8")
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
    script = (
        "<script>window.addEventListener('load', () => {"
        "const w = window.innerWidth;"
        "const plots = [...document.querySelectorAll('svg.plot')]"
        ".map(s => Math.round(s.getBoundingClientRect().width)).join(',');"
        "const wide = [...document.querySelectorAll('body *')]"
        ".filter(e => !e.closest('.scroll, pre') && e.getBoundingClientRect().right > w + 1)"
        ".map(e => e.tagName).join(' ');"
        "parent.postMessage({viewport: String(w), plots: plots, wide: wide,"
        " overflow: String(document.documentElement.scrollWidth > w)}, '*');"
        "});</script>"
    )
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", script + "</body>"), encoding="utf-8")
    harness = tmp_path / "harness.html"
    harness.write_text(
        "<!DOCTYPE html><html><body style='margin:0'>"
        "<script>window.addEventListener('message', e => {"
        "for (const [k, v] of Object.entries(e.data)) document.body.dataset[k] = v; });</script>"
        f'<iframe src="probe.html" style="width:{width}px;height:900px;border:0"></iframe>'
        "</body></html>",
        encoding="utf-8",
    )
    return harness


@pytest.mark.parametrize(("width", "min_plot"), [(390, 300), (1280, 400)])
def test_the_layout_fits_phone_and_desktop_widths(
    page: Path, tmp_path: Path, width: int, min_plot: int
) -> None:
    result = chromium(
        tmp_path,
        _probe(page, tmp_path, width).as_uri(),
        f"--window-size={width + 20},900",
        "--virtual-time-budget=3000",
        "--dump-dom",
    )
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body is not None, result.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', body.group(1)))
    assert attrs.get("viewport") == str(width), result.stdout[:2000]
    assert attrs["overflow"] == "false"
    assert attrs["wide"] == ""
    plot_widths = [int(w) for w in attrs["plots"].split(",")]
    assert len(plot_widths) == 5
    assert all(min_plot <= w <= width for w in plot_widths), plot_widths


@pytest.mark.parametrize("size", ["1280,2000", "390,2400"])
def test_screenshots(page: Path, tmp_path: Path, size: str) -> None:
    shot = tmp_path / f"shot-{size.split(',')[0]}.png"
    result = chromium(
        tmp_path,
        page.as_uri(),
        f"--window-size={size}",
        "--hide-scrollbars",
        f"--screenshot={shot}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    png_width, png_height = struct.unpack(">II", data[16:24])
    assert (png_width, png_height) == tuple(int(x) for x in size.split(","))
    assert len(data) > 20_000  # a rendered page, not a blank one
