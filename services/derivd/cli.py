"""``derivd serve``: the gateway (with ``--workers N`` local worker processes, else everything in
one process); ``derivd worker``: one worker process for a remote gateway's pool."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile

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
    serve.add_argument("--gateways", type=int, default=settings.gateways,
                       help="REST gateway processes on the one port (one core each); above 1 needs REDIS_URL")
    worker = sub.add_parser("worker", help="run one worker process (internal gRPC) for a remote gateway")
    worker.add_argument("--engines", default="forward,reverse,taylor,finite",
                        help="comma-separated engine families this worker serves")
    worker.add_argument("--listen", default="0.0.0.0:50052", help="HOST:PORT of its gRPC server")
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
    if args.command == "worker":
        return worker_command(args, settings)
    return 2


def worker_command(args, settings) -> int:
    from derivd.observability import configure_logging
    from derivd.workers.server import parse_engines, serve

    try:
        engines = parse_engines(args.engines)
    except ValueError as e:
        print(f"derivd: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    serve(settings, args.listen, engines)
    return 0


def _client_cli():
    """The SDK's command line (``derivd_client.cli``) when installed; it hands serve/worker back here."""
    try:
        from derivd_client.cli import main
    except ImportError:
        return None
    return main


def serve_command(args, settings) -> int:
    if args.workers < 0:
        print("derivd: --workers takes 0 (everything in this process) or a number of worker processes",
              file=sys.stderr)
        return 2
    if args.gateways < 1 or (args.gateways > 1 and not settings.redis_url):
        print("derivd: --gateways takes 1, or more with REDIS_URL set: the processes share stored functions, "
              "black boxes and rate limits through Redis", file=sys.stderr)
        return 2
    metrics_dir = None
    if args.gateways > 1:  # before prometheus_client is imported, here and in every gateway process
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="derivd-metrics-")
    try:
        return _serve(args, settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve(args, settings) -> int:
    import uvicorn

    from derivd.core import Service
    from derivd.dispatch import Dispatcher
    from derivd.gateway import server
    from derivd.gateway.app import create_app
    from derivd.observability import configure_logging
    from derivd.allocator import tune_allocator

    tune_allocator()
    configure_logging(settings.log_format, settings.log_level)
    settings = settings.model_copy(update={"host": args.host, "port": args.port, "workers": args.workers,
                                           "grpc_port": args.grpc_port})
    supervisor = None
    if args.workers > 0:  # local workers on loopback, reached like remote ones (workers/supervisor.py)
        from derivd.workers.supervisor import Supervisor

        supervisor = Supervisor(settings, args.workers).start()
        settings = settings.model_copy(update={"pool_default": supervisor.target})
        if args.gateways > 1:  # the gateway processes read their settings from the environment
            os.environ["DERIVD_POOL_DEFAULT"] = supervisor.target
    dispatcher = Dispatcher(Service(settings))
    if supervisor is not None:
        supervisor.on_restart = lambda slot: dispatcher.service.metrics.worker_restarts.labels("local").inc()
    grpc_server = None
    if args.grpc_port:
        from derivd.grpc_api.server import GrpcServer

        grpc_server = GrpcServer(dispatcher, settings, args.grpc_port).start()
        logging.getLogger("derivd").info("gRPC derivd.v1 on %s:%d", args.host, grpc_server.port)
    # uvicorn shuts down on SIGTERM, then re-raises it to the handler it found: make that an exit
    # that runs the `finally` below (stopping gRPC and the workers), not the default instant death.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:  # uvicorn logs through the root handler (JSON); its access log is replaced by derivd.access
        if args.gateways == 1:
            uvicorn.Server(server.config(create_app(settings, dispatcher), args.host, args.port, log_config=None,
                                         access_log=False)).run()
        else:
            server.run_processes(args.gateways, args.host, args.port)
    finally:
        if grpc_server is not None:
            grpc_server.stop()
        dispatcher.close()
        if supervisor is not None:
            supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
