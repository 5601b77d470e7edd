"""``python -m bridge_app --port 8080``: serve the seeded app on 127.0.0.1."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web

from .db import DATABASE_URL_ENV, database_url_from_env
from .web import create_app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bridge_app", description=__doc__)
    parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1 (default 8080)")
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"SQLAlchemy SQLite URL (default ${DATABASE_URL_ENV}, else in memory), "
        "e.g. sqlite:///bridge.db",
    )
    parser.add_argument("--no-seed", action="store_true", help="do not insert the demo data")
    args = parser.parse_args(argv)
    app = create_app(args.database_url or database_url_from_env(), seed=not args.no_seed)
    web.run_app(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
