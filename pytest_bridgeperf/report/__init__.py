"""Reports built from the ``--perf-report`` document: Markdown, HTML, OpenMetrics, the terminal
summary's lines and JUnit properties. No pytest; the plugin and the ``bridgeperf`` command both
use this package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .document import ReportError, load_report, validate_report, write_text

__all__ = ["ReportError", "load_report", "validate_report", "write_outputs"]


def write_outputs(
    document: Mapping[str, Any],
    *,
    markdown: Path | None = None,
    html: Path | None = None,
    openmetrics: Path | None = None,
    step_summary: bool = True,
    environ: Mapping[str, str] = os.environ,
) -> list[Path]:
    """Write the requested reports of ``document``; with ``step_summary`` the Markdown summary
    is also appended to ``$GITHUB_STEP_SUMMARY`` when that is set (GitHub Actions), whether or
    not a Markdown file was asked for. Returns the files written."""
    from .markdown import STEP_SUMMARY_ENV, append_step_summary, render_markdown

    written: list[Path] = []
    to_step_summary = step_summary and bool(environ.get(STEP_SUMMARY_ENV))
    if markdown is not None or to_step_summary:
        text = render_markdown(document)
        if markdown is not None:
            write_text(markdown, text)
            written.append(markdown)
        summary = append_step_summary(text, environ) if to_step_summary else None
        if summary is not None:
            written.append(summary)
    if html is not None:
        from .html import render_html

        write_text(html, render_html(document, location=html))
        written.append(html)
    if openmetrics is not None:
        from .openmetrics import render_openmetrics

        write_text(openmetrics, render_openmetrics(document))
        written.append(openmetrics)
    return written
