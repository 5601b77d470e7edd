"""``python -m fastapi_app --port 8000 [--database-url URL] [--n-plus-one]``: the app under
uvicorn on 127.0.0.1 (what benchmarks/fastapi_vs_wrk.py loads)."""

from __future__ import annotations

import argparse

import uvicorn

from . import create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m fastapi_app")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--n-plus-one", action="store_true", help="serve the N+1 projects list")
    args = parser.parse_args()
    app = create_app(args.database_url, eager=not args.n_plus_one)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
