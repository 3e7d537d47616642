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
    serve.add_argument("--grpc-port", type=int, default=settings.grpc_port,
                       help="public gRPC (derivd.v1) on this port beside REST; 0 = off")
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in sub.choices:  # gradient, jacobian, spy, ..., --help: the SDK's verbs
        client_main = _client_cli()
        if client_main is not None:
            return client_main(argv)
        if argv and not argv[0].startswith("-"):
            print(f"derivd: `{argv[0]}` is a client verb; install the SDK: pip install ./clients/python",
                  file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve_command(args, settings)
    return 2


def _client_cli():
    """The SDK's command line (``derivd_client.cli``) when installed; it hands serve/worker back here."""
    try:
        from derivd_client.cli import main
    except ImportError:
        return None
    return main


def serve_command(args, settings) -> int:
    import uvicorn

    from derivd.gateway.app import create_app

    if args.workers != 0:
        print("derivd: --workers N > 0 needs the worker pool, which this build does not have yet; use 0",
              file=sys.stderr)
        return 2
    from derivd.core import Service
    from derivd.observability import configure_logging

    configure_logging(settings.log_format, settings.log_level)
    settings = settings.model_copy(update={"host": args.host, "port": args.port, "workers": args.workers,
                                           "grpc_port": args.grpc_port})
    service = Service(settings)
    grpc_server = None
    if args.grpc_port:
        from derivd.grpc_api.server import GrpcServer

        grpc_server = GrpcServer(service, settings, args.grpc_port).start()
        logging.getLogger("derivd").info("gRPC derivd.v1 on %s:%d", args.host, grpc_server.port)
    try:  # uvicorn logs through the root handler (JSON); its access log is replaced by derivd.access
        uvicorn.run(create_app(settings, service), host=args.host, port=args.port, log_config=None,
                    access_log=False)
    finally:
        if grpc_server is not None:
            grpc_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
