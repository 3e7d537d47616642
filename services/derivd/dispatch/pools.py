"""Pools: where a request's engine runs, behind one interface.

``Router`` sends each request to the pool of its engine family (``family_of``):
``InProcessPool`` runs it in this process (``--workers 0``, tests, and the
worker itself); ``GrpcPool(target)`` sends it to worker processes over the
internal gRPC API, local ones (``ipv4:127.0.0.1:p1,127.0.0.1:p2``, started by
``derivd serve --workers N``) or remote ones (``dns:///workers-forward:50052``,
one address per Kubernetes pod behind a headless Service). Both kinds of
target are balanced by gRPC itself, ``round_robin`` over every address the
resolver returns; there is no home-made scheduler.

Families are a deployment choice (a pool of workers per family, sized apart):
an explicit ``mode`` names its family; ``auto`` goes by the endpoint's row in
``core.endpoints`` (reverse for gradient, vjp, hvp and hessian; forward for
evaluate, jvp and jacobian, whose worker still picks forward or reverse by the
Jacobian's shape; taylor for taylor and derivatives). Black boxes and HVP
streams stay in process (the dispatcher sends them to ``in_process``): a black
box is I/O on the gateway's own caller, and a stream keeps its compiled session.

Callers. A worker answers only calls carrying the shared ``worker_token`` in
the metadata ``x-derivd-worker-token`` (``workers.server.CallerCheck``); the
pool sends it with every request. ``ready()`` says which family is reachable,
never where its workers are (``/readyz`` is open).

Failures. A request carries its remaining deadline as the gRPC timeout; past
it the answer is 504 (and the work stops there, see ``workers.server``). A
worker that dies under a request (UNAVAILABLE: connection reset or refused)
costs a retry on another worker, within the same deadline; the next one waits
for a connected worker (a replacement: ``MAX_ATTEMPTS`` tries in all). A pool
with no reachable worker answers 503 ``pool_unavailable`` once it has waited
``pool_wait_s`` for one.
"""

from __future__ import annotations

import json
import logging
import time

import grpc

from derivd.core import Timings
from derivd.dispatch import codec, worker_pb2 as pb, worker_pb2_grpc as pb_grpc
from derivd import errors
from derivd.engines import tiers
from derivd.errors import DeadlineExceeded, DerivdError

log = logging.getLogger("derivd.pool")

FAMILIES = ("forward", "reverse", "taylor", "finite")
TOKEN_METADATA = "x-derivd-worker-token"  # the gRPC metadata carrying worker_token
# Tries of one request on a pool whose workers fail under it (UNAVAILABLE: reset, refused): two workers
# killed at once cost two, the third waits for a replacement. A request that kills every worker it
# reaches stops there.
MAX_ATTEMPTS = 3
POOL_SETTINGS = ("pool_default",) + tuple(f"pool_{f}" for f in FAMILIES)


def family_of(row, mode: str) -> str:
    """The engine family of endpoint ``row`` (``core.endpoints``) in ``mode``."""
    return mode if mode in FAMILIES else row.family


def grpc_options(settings) -> list[tuple[str, object]]:
    """Options both ends share: message limits raised deliberately past gRPC's 4 MiB default."""
    size = settings.worker_max_message_bytes
    return [("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size)]


class InProcessPool:
    name = "in-process"

    def __init__(self, compute):
        self.compute = compute

    def run(self, endpoint: str, req, family: str):
        return self.compute(endpoint, req)

    def ready(self) -> bool:
        return True

    def close(self) -> None:
        pass


class GrpcPool:
    """Worker processes at one gRPC target, balanced round-robin by the channel."""

    def __init__(self, target: str, settings, stats):
        self.target = target
        self.name = target
        self.settings = settings
        self.stats = stats  # the gateway's CacheStats: workers' cache counts are added to it
        self.retries = 0
        self.channel = grpc.insecure_channel(target, options=grpc_options(settings) + [
            ("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})),
            ("grpc.enable_retries", 0),  # one explicit retry below, counted and logged
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.dns_min_time_between_resolutions_ms", 5_000),
        ])
        self.stub = pb_grpc.WorkerStub(self.channel)
        token = settings.worker_token
        self.metadata = ((TOKEN_METADATA, token.get_secret_value()),) if token is not None else ()
        self._state = grpc.ChannelConnectivity.IDLE
        self.channel.subscribe(self._on_state, try_to_connect=True)

    def _on_state(self, state) -> None:
        self._state = state

    def ready(self) -> bool:
        """At least one worker of the pool is connected."""
        return self._state == grpc.ChannelConnectivity.READY

    def run(self, endpoint: str, req, family: str):
        deadline = req.deadline if req.deadline is not None else time.monotonic() + self.settings.request_timeout_s
        fields = {k: v for k, v in vars(req).items() if k != "deadline"}
        message = pb.WorkRequest(endpoint=endpoint, family=family, request=codec.encode_struct(fields))
        first_unavailable = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._deadline()
            try:  # the first attempt fails fast when no worker is connected; a retry waits for one
                reply = self.stub.Run(message, timeout=remaining, wait_for_ready=attempt > 1,
                                      metadata=self.metadata)
                break
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise self._deadline() from None
                if code == grpc.StatusCode.UNAVAILABLE and attempt < MAX_ATTEMPTS:
                    self.retries += 1
                    log.warning("worker in pool %s unavailable (%s); retrying %s on another worker",
                                self.name, e.details(), endpoint)
                    first_unavailable = first_unavailable or time.monotonic()
                    self._await_worker(deadline, first_unavailable)
                    continue
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise DerivdError(f"the request or its answer is over the worker message limit "
                                      f"worker_max_message_bytes={self.settings.worker_max_message_bytes}",
                                      code="limit_exceeded", status=413, limit="worker_max_message_bytes",
                                      max=self.settings.worker_max_message_bytes) from None
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    log.error("a worker of pool %s refused this gateway's DERIVD_WORKER_TOKEN", self.name)
                log.error("worker pool %s failed %s: %s %s", self.name, endpoint, code, e.details())
                raise DerivdError(f"no worker of pool {self.name} could take the request ({code.name.lower()})",
                                  code="pool_unavailable", status=503, pool=self.name) from None
        self.stats.add(dict(reply.cache_counts))
        tiers.add(dict(reply.tier2_counts))
        if reply.HasField("error"):
            err = reply.error
            raise errors.rebuild(err.message, err.code, err.status, **codec.decode_struct(err.detail))
        return codec.decode_struct(reply.response), Timings(compile=reply.compile_seconds,
                                                            compute=reply.compute_seconds)

    def _await_worker(self, deadline: float, since: float) -> None:
        """Wait until a worker is connected (a replacement for one that died, say): never past the
        deadline, nor ``pool_wait_s`` after the first failure (``since``). 503 if none comes."""
        wait_s = min(deadline, since + self.settings.pool_wait_s) - time.monotonic()
        ready = grpc.channel_ready_future(self.channel)
        try:
            ready.result(timeout=max(wait_s, 0.0))
        except grpc.FutureTimeoutError:
            ready.cancel()  # stop its watch of the channel
            if deadline <= since + self.settings.pool_wait_s:
                raise self._deadline() from None
            raise DerivdError(f"no worker of pool {self.name} is reachable (waited "
                              f"{self.settings.pool_wait_s:.1f} s)", code="pool_unavailable", status=503,
                              pool=self.name) from None

    def _deadline(self) -> DeadlineExceeded:
        budget = self.settings.request_timeout_s
        return DeadlineExceeded(f"the request ran past its deadline of {budget} s on pool {self.name}",
                                deadline_s=budget, pool=self.name)

    def close(self) -> None:
        self.channel.unsubscribe(self._on_state)  # else grpc's watcher thread may poll a closed channel
        self.channel.close()


class Router:
    """One pool per engine family: its own target, else ``pool_default``, else in process."""

    def __init__(self, settings, compute, stats):
        self.in_process = InProcessPool(compute)
        by_target: dict[str, GrpcPool] = {}
        self.pools = {}
        for family in FAMILIES:
            target = getattr(settings, f"pool_{family}") or settings.pool_default
            if target and target not in by_target:
                by_target[target] = GrpcPool(target, settings, stats)
            self.pools[family] = by_target[target] if target else self.in_process

    def run(self, row, req):
        family = family_of(row, req.mode)
        return self.pools[family].run(row.name, req, family)

    def runs_in_process(self, row, mode: str) -> bool:
        """Whether endpoint ``row`` in ``mode`` runs in this process (no worker hop)."""
        return self.pools[family_of(row, mode)] is self.in_process

    def ready(self) -> tuple[bool, dict]:
        states = {family: "ready" if pool.ready() else "unreachable" for family, pool in self.pools.items()}
        return all(p.ready() for p in self.pools.values()), {"pools": states}

    def close(self) -> None:
        for pool in set(self.pools.values()):
            pool.close()
