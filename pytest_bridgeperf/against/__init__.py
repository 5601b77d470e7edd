"""``--perf-against=REF``: the two sides of a same-job A/B comparison.

``refs`` resolves REF and checks it out; ``sides`` runs each side's pytest session in its own
interpreter; ``worker`` is the plugin inside those interpreters. Everything here but ``worker``
imports no pytest.
"""

from __future__ import annotations

from .errors import AgainstError
from .refs import Checkout, import_roots, open_checkout

__all__ = ["AgainstError", "Checkout", "import_roots", "open_checkout"]
