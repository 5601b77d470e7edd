"""``--perf-against=REF``: the two sides of a same-job A/B comparison.

``refs`` resolves REF and checks it out; ``options`` builds the sides' pytest command line;
``sides`` runs each side's pytest session in its own interpreter; ``worker`` is the plugin
inside those interpreters. Everything here but ``worker`` imports no pytest.
"""

from __future__ import annotations

from .errors import AgainstError
from .options import SideArgs, side_args
from .refs import Checkout, import_roots, open_checkout
from .sides import SIDE_ENV, Collected, CollectionError, RoundResult, Side, side_environ

__all__ = [
    "SIDE_ENV",
    "AgainstError",
    "Checkout",
    "Collected",
    "CollectionError",
    "RoundResult",
    "Side",
    "SideArgs",
    "import_roots",
    "open_checkout",
    "side_args",
    "side_environ",
]
