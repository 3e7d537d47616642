"""``derivd serve``: the gateway on its embedded default (everything in one process)."""

from __future__ import annotations

import argparse
import logging
import sys

from derivd.config import get_settings


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="derivd", description="derivd: differentiation as a service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the REST gateway")
    serve.add_argument("--host", default=settings.host)
    serve.add_argument("--port", type=int, default=settings.port)
    serve.add_argument("--workers", type=int, default=settings.workers,
                       help="local worker processes; 0 runs every engine in the gateway process")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_command(args, settings)
    return 2


def serve_command(args, settings) -> int:
    import uvicorn

    from derivd.gateway.app import create_app

    if args.workers != 0:
        print("derivd: --workers N > 0 needs the worker pool, which this build does not have yet; use 0",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings.model_copy(update={"host": args.host, "port": args.port, "workers": args.workers})
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
