"""The server's verbs: ``derivd serve``, the gateway (with ``--workers N`` local worker processes,
else everything in one process); ``derivd worker``, one worker process for a remote gateway's pool.

Once bound, ``serve`` announces where it listens: a banner (REST, docs, playground, gRPC and a
curl to try) on a terminal's text logs, one ``listening`` record in JSON logs. Ctrl+C stops
either verb quietly: the shutdown runs, no traceback, exit status 130.

They reach ``derivd`` through the ``derivd.commands`` entry points this package registers
(pyproject.toml), which whichever ``derivd`` script is installed dispatches (``derivd.commands``);
``derivd-server`` (and ``python -m derivd.cli``) runs this parser directly. This module never
imports the SDK: the client verbs are the SDK's own entry points.

On SIGTERM (or SIGINT) ``serve`` makes the computations it is running fail their next deadline
check (503 ``shutting_down``: ``derivd.deadlines.stop_all``) and starts stopping its local workers
(which stop theirs the same way) before uvicorn waits for the requests in flight, then stops gRPC,
and exits within ``gateway.server.SHUTDOWN_BOUND_S`` whatever still runs, with every process it
started (``--gateways N``: ``gateway.server.run_processes``)."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile

from derivd.config import get_settings, placeholder_secrets

# One line per verb: this parser's help and the dispatcher's listing (``derivd --help``).
VERBS = {"serve": "run the service: the REST gateway, gRPC beside it, local workers",
         "worker": "run one worker process (internal gRPC) for a remote gateway's pool"}

# Shown by each verb's --help; tests/workers/test_cli.py parses every one.
EXAMPLES = {"serve": ["derivd serve", "derivd serve --port 8080 --grpc-port 0",
                      "derivd serve --host 0.0.0.0 --workers 4",
                      "derivd serve --data ./derivd-data --gateways 2", "derivd serve --data none",
                      "REDIS_URL=redis://localhost:6379/0 derivd serve --gateways 2"],
            "worker": ["derivd worker --engines forward,reverse --listen 0.0.0.0:50052"]}


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    args = build_parser(settings).parse_args(argv)
    placeholders = placeholder_secrets(settings)
    if placeholders:  # a key everyone can read signs nothing: refuse rather than run open
        print(f"derivd: {', '.join(placeholders)} is a placeholder; set a secret of your own, e.g. "
              "`openssl rand -hex 32`", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve_command(args, settings)
        return worker_command(args, settings)
    except KeyboardInterrupt:  # Ctrl+C: everything was stopped on the way out; no traceback
        print("derivd: stopped", file=sys.stderr)
        return 130


def banner(host: str, port: int, grpc_port: int | None) -> str:
    """Where ``derivd serve`` listens, and one request to try (printed once the port is bound)."""
    from derivd import __version__

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown}:{port}"
    lines = [f"derivd {__version__} is serving", f"  REST        {base}/v1/...",
             f"  docs        {base}/docs   (the language: {base}/docs/language)",
             f"  playground  {base}/playground",
             f"  gRPC        {f'{shown}:{grpc_port} (derivd.v1)' if grpc_port else 'off (--grpc-port)'}",
             "  try         curl -s " + base + "/v1/gradient -H 'content-type: application/json' "
             + """-d '{"function": {"dsl": "sum(x**2)"}, "at": {"x": [1, 2]}}'""",
             "Ctrl+C stops it."]
    return "\n".join(lines)


def announce(host: str, port: int, grpc_port: int | None) -> None:
    """The banner on a terminal's text logs; one ``listening`` record with the addresses in JSON logs."""
    from derivd.observability import human_logs

    if human_logs():
        print(banner(host, port, grpc_port), file=sys.stderr, flush=True)
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # its start/stop chatter: the banner says it
    else:
        base = f"http://{host}:{port}"
        logging.getLogger("derivd").info("listening", extra={"fields": {
            "rest": base, "docs": f"{base}/docs", "playground": f"{base}/playground",
            "grpc": f"{host}:{grpc_port}" if grpc_port else None}})


def build_parser(settings) -> argparse.ArgumentParser:
    """serve and worker, their defaults from ``settings``."""
    parser = argparse.ArgumentParser(prog="derivd", description="derivd: differentiation as a service")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_verb(verb: str) -> argparse.ArgumentParser:
        return sub.add_parser(verb, help=VERBS[verb], formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[verb]))

    serve = add_verb("serve")
    serve.add_argument("--host", default=settings.host)
    serve.add_argument("--port", type=int, default=settings.port)
    serve.add_argument("--workers", type=int, default=settings.workers,
                       help="local worker processes; 0 runs every engine in the gateway process")
    serve.add_argument("--grpc-port", type=int, default=settings.grpc_port,
                       help="public gRPC (derivd.v1) on this port beside REST; 0 = off")
    serve.add_argument("--gateways", type=int, default=settings.gateways,
                       help="REST gateway processes on the one port (one core each); above 1 they share stored "
                            "functions and black boxes through REDIS_URL or the data directory")
    serve.add_argument("--data", metavar="DIR", default=settings.data_dir,
                       help="without REDIS_URL, stored functions and black boxes are kept here across restarts "
                            "(SQLite, at most DERIVD_DATA_MAX_BYTES); 'none' keeps them in memory only "
                            "(default: %(default)s)")
    worker = add_verb("worker")
    worker.add_argument("--engines", default="forward,reverse,taylor,finite",
                        help="comma-separated engine families this worker serves")
    worker.add_argument("--listen", default="0.0.0.0:50052", help="HOST:PORT of its gRPC server")
    return parser


def worker_command(args, settings) -> int:
    from derivd.observability import configure_logging
    from derivd.workers.server import parse_engines, serve

    try:
        engines = parse_engines(args.engines)
    except ValueError as e:
        print(f"derivd: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        serve(settings, args.listen, engines)
    except ValueError as e:  # no worker token: nothing would stop a caller from skipping the gateway
        print(f"derivd: {e}", file=sys.stderr)
        return 2
    return 0


def serve_command(args, settings) -> int:
    if args.workers < 0:
        print("derivd: --workers takes 0 (everything in this process) or a number of worker processes",
              file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"data_dir": args.data})
    problem = _gateways_problem(args.gateways, settings)
    if problem:
        print(f"derivd: {problem}", file=sys.stderr)
        return 2
    metrics_dir = None
    if args.gateways > 1:  # before prometheus_client is imported, here and in every gateway process
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="derivd-metrics-")
        if settings.data_path:  # the gateway processes read their settings from the environment
            os.environ["DERIVD_DATA_DIR"] = settings.data_path
    try:
        problem = _data_dir_problem(settings)
        if problem:
            print(f"derivd: {problem}", file=sys.stderr)
            return 2
        return _serve(args, settings)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _gateways_problem(n: int, settings) -> str | None:
    """Why ``n`` gateway processes cannot run with ``settings`` (None if they can). Without Redis they
    share stored functions and black boxes through the data directory, but rate limits and failed-
    authentication counts would be each process's own, so N times the configured limit."""
    if n < 1:
        return "--gateways takes 1 or more"
    if n == 1 or settings.redis_url:
        return None
    if settings.data_path is None:
        return ("--gateways above 1 needs REDIS_URL or a data directory (--data DIR): the processes share "
                "stored functions and black boxes through it")
    if settings.rate_limit_requests or (settings.api_keys and settings.auth_failures_max):
        return ("--gateways above 1 with rate limits (DERIVD_RATE_LIMIT_REQUESTS, DERIVD_AUTH_FAILURES_MAX with "
                "API keys) needs REDIS_URL: without it each process would count alone")
    return None


def _data_dir_problem(settings) -> str | None:
    """Why the data directory cannot hold the store, said before anything starts (None if it can, or
    when Redis or "none" leave it unused)."""
    from derivd.cache import LocalStore, StoreUnavailable

    if settings.redis_url:
        return None
    try:
        store = LocalStore.from_settings(settings)
    except StoreUnavailable as e:
        return str(e)
    if store is not None:
        store.close()
    return None


def _serve(args, settings) -> int:
    from derivd.core import Service
    from derivd.dispatch import Dispatcher
    from derivd.gateway import server
    from derivd.gateway.app import create_app
    from derivd.observability import configure_logging
    from derivd.allocator import freeze_heap, tune_allocator
    from derivd.engines import tiers

    tune_allocator()
    configure_logging(settings.log_format, settings.log_level)
    settings = settings.model_copy(update={"host": args.host, "port": args.port, "workers": args.workers,
                                           "grpc_port": args.grpc_port})
    tiers.preload(settings)
    supervisor = None
    if args.workers > 0:  # local workers on loopback, reached like remote ones (workers/supervisor.py)
        from derivd.workers.supervisor import Supervisor

        supervisor = Supervisor(settings, args.workers).start()
        settings = supervisor.settings.model_copy(update={"pool_default": supervisor.target})
        if args.gateways > 1:  # the gateway processes read their settings from the environment
            os.environ["DERIVD_POOL_DEFAULT"] = supervisor.target
            os.environ["DERIVD_WORKER_TOKEN"] = settings.worker_token.get_secret_value()
    dispatcher = Dispatcher(Service(settings))
    if supervisor is not None:
        supervisor.on_restart = lambda slot: dispatcher.service.metrics.worker_restarts.labels("local").inc()
    grpc_server = None
    # uvicorn shuts down on SIGTERM, then re-raises it to the handler it found: make that an exit
    # that runs the `finally` below (stopping gRPC and the workers), not the default instant death.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:  # uvicorn logs through the root handler; its access log is replaced by derivd.access
        if args.grpc_port:
            from derivd.grpc_api.server import GrpcServer

            try:
                grpc_server = GrpcServer(dispatcher, settings, args.grpc_port).start()
            except OSError as e:  # a taken port: one line, status 1, after the cleanup below
                print(f"derivd: {e}", file=sys.stderr)
                return 1
        grpc_port = grpc_server.port if grpc_server is not None else None

        class Server(server.Server):
            async def startup(self, sockets=None):
                await super().startup(sockets)
                if self.started:  # bound: the port is the real one (also with --port 0)
                    port = self.servers[0].sockets[0].getsockname()[1] if self.servers else args.port
                    announce(args.host, port, grpc_port)

        on_stop = supervisor.stop if supervisor is not None else None  # the workers stop beside the gateways
        if args.gateways == 1:
            app = create_app(settings, dispatcher)
            freeze_heap()  # everything up to here lives as long as the process
            Server(server.config(app, args.host, args.port, log_config=None, access_log=False), on_stop).run()
        else:
            announce(args.host, args.port, grpc_port)
            server.run_processes(args.gateways, args.host, args.port, on_stop)
    finally:
        server.stop_computing()
        if grpc_server is not None:
            grpc_server.stop()
        dispatcher.close()
        if supervisor is not None:
            supervisor.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
