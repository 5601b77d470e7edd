"""The one error of the same-job comparison (``--perf-against``). No pytest here."""

from __future__ import annotations

__all__ = ["AgainstError"]


class AgainstError(Exception):
    """The comparison with the other revision cannot go on.

    ``str(error)`` is one paragraph a person can act on (which option, which side, which file);
    ``details`` holds the full text behind it (a traceback, git's or the interpreter's output)
    for ``-v``.
    """

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details
