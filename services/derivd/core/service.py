"""``Service``: one endpoint of one request, computed in this process.

The gateway's dispatcher and a worker process both call ``compute``: the
request is checked (``prepare``), its function resolved (a stored id here, a
black box to ``blackboxes``) and compiled through the tape cache, and the
endpoint's row of the table (``endpoints``) answers it, by AD or Taylor
series, or by finite differences in mode ``finite`` (``engines.finite_answers``),
with ``verify``'s comparison when asked; with tier 2 on (engines/tiers.py) the
response says which tier answered (``tier``: 2 if any tape ran on XLA). The engines stop between passes once
the request's deadline is past.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from derivd.blackbox import BlackBoxSpec, make_registry
from derivd.cache import LocalStore, RedisTier, TapeCache, TapeKey
from derivd.cache.keys import mask_digest
from derivd.cache.lru import BoundedLRU
from derivd.core import blackboxes
from derivd.core.endpoints import endpoint
from derivd.core.functions import Functions, StoredFunction
from derivd.core.prepare import check_mode, check_request, input_specs, prepare, wrt_names
from derivd.core.request import Request, Timings
from derivd.core.streams import HvpStream
from derivd.engines import finite_answers as fd
from derivd.engines import tiers
from derivd.engines.common import check_deadline, deadline, require_scalar
from derivd.engines.function import load_or_lower
from derivd.engines.forward_over_reverse import HvpSession
from derivd.errors import DerivdError, ValidationFailed
from derivd.observability import Metrics

STREAM_MODES = ("auto", "forward", "reverse")  # an HVP stream is forward over reverse
SIGNATURE_BYTES = 16 * 1024 * 1024  # program texts kept (per cache) to skip re-checking a known kind of request


@dataclass(slots=True)
class Plan:
    """What a kind of request (``Service.kind``) resolves to, worked out by ``compute``'s one path at its
    first request and kept for the next: the inputs' checked specs, the tape-cache key, the checked
    ``wrt``, and (``checked``) whether the checks that depend on the kind alone passed (the program's
    cost, a scalar output, a dense answer's size): a request of a known kind checks only its point.
    The compiled function itself stays in the tape cache (its memory bound, its hit counts). ``bind``:
    the endpoint's ``bind`` once checked, when its answer is bound in the kind's mode and no ``verify``
    is asked: a request of the kind then runs only that (``_warm``)."""

    specs: dict
    key: TapeKey
    wrt: list[str]
    nbytes: int
    checked: bool = False
    bind: Callable | None = None


BOUND_MODES = ("auto", "reverse")  # the modes an endpoint's ``bind`` answers (core.endpoints)


class Service:
    def __init__(self, settings):
        self.settings = settings
        redis = RedisTier.from_settings(settings)
        # Without Redis, what callers register is kept in the data directory (StoreUnavailable if it cannot be)
        store = None if settings.redis_url else LocalStore.from_settings(settings)
        self.cache = TapeCache(settings, redis)
        # (program text, input shapes and dtypes, boolean masks' digests) -> (specs, tape key, bytes kept)
        self._signatures = BoundedLRU(SIGNATURE_BYTES, 4 * settings.tape_cache_size, lambda known: known[2])
        self._plans = BoundedLRU(SIGNATURE_BYTES, 4 * settings.tape_cache_size, lambda plan: plan.nbytes)
        self.functions = Functions(settings, redis or store)
        self.blackboxes = make_registry(settings, store)
        self.metrics = Metrics()
        self.metrics.tier2_counts = lambda: dict(tiers.COUNTS)
        self.metrics.add_cache_level("local", lambda: (self.cache.hits, self.cache.misses))
        self.metrics.add_cache_level("redis", lambda: self.cache.stats.hits_misses("redis"))

    # ------------------------------------------------------------ what callers store

    def register_function(self, dsl: str, constants: dict[str, np.ndarray] | None = None) -> StoredFunction:
        return self.functions.register(dsl, constants)

    def get_function(self, fid: str) -> StoredFunction:
        return self.functions.get(fid)

    def register_blackbox(self, fields: dict) -> dict:
        """Validate (pydantic) and SSRF-check a registration, then store it; headers are never echoed."""
        return self.blackboxes.register(BlackBoxSpec.model_validate(fields)).public()

    def list_blackboxes(self) -> list[dict]:
        return [spec.public() for spec in self.blackboxes.list()]

    def delete_blackbox(self, name: str) -> None:
        self.blackboxes.delete(name)

    # ------------------------------------------------------------ requests

    def resolve(self, req: Request) -> Request:
        """``req`` with a stored id replaced by its program and constants (ids live with the gateway:
        a worker only ever sees programs); refuses a ``function`` that is none of dsl, id, blackbox."""
        function = req.function
        if not isinstance(function, dict) or len(function) != 1:
            raise ValidationFailed('function must be {"dsl": ...}, {"id": ...} or {"blackbox": ...}',
                                   field="function")
        (kind, value), = function.items()
        if kind == "id":
            stored = self.functions.get(str(value))
            return replace(req, function={"dsl": stored.dsl}, constants={**stored.constants, **req.constants})
        if kind == "dsl" and not isinstance(value, str):
            raise ValidationFailed("function.dsl must be a string", field="function.dsl")
        if kind not in ("dsl", "blackbox"):
            raise ValidationFailed(f"unknown function kind {kind!r}: use dsl, id or blackbox", field="function")
        return req

    def kind(self, row, req: Request) -> tuple | None:
        """What identifies a kind of request: its endpoint, function (program text or stored id), the
        inputs' names and shapes, the constants' shapes and dtypes (a boolean mask's values too),
        ``wrt``, mode, verify and sparse. Requests of one kind differ only in their point (and
        directions, cotangent, order, fd options), so they share a ``Plan``; the dispatcher keys its
        inline policy by it too. None for a black box or a function ``resolve`` refuses."""
        function = req.function
        if type(function) is not dict or len(function) != 1:
            return None
        (how, value), = function.items()
        if how not in ("dsl", "id") or type(value) is not str:
            return None
        wrt = req.wrt
        return (row.name, how, value, *_shapes(req.at, req.constants),
                wrt if wrt is None else tuple(wrt), req.mode, req.verify, req.sparse)

    def compute(self, name: str, req: Request, compiled: tuple | None = None, kind: tuple | None = None
                ) -> tuple[dict, Timings]:
        """Endpoint ``name`` of ``req`` in this process; nothing starts once its deadline is past.
        ``compiled``: ``self.compiled(r)`` of a request ``r`` that ``req`` differs from only in its point
        and directions (a session's asks, ``grpc_api.session``): resolving and compiling are skipped.
        ``kind``: ``self.kind(row, req)`` when the caller has it (the dispatcher), else worked out here."""
        with deadline(req.deadline, self.settings.request_timeout_s) as running:
            check_deadline()  # queued past it: nothing starts
            plan = self._plans.get(kind) if kind is not None and compiled is None else None
            if plan is not None and plan.bind is not None:
                return self._warm(req, plan, running.answered)
            row = endpoint(name)
            check_request(row, req, self.settings)
            if compiled is not None:
                fn, wrt = compiled
                return self._answer(row, req, fn, {**req.at, **req.constants}, wrt, Timings(), running.answered)
            resolved = self.resolve(req)
            timings = Timings()
            if "blackbox" in resolved.function:
                t1 = time.perf_counter()
                response = blackboxes.answer(row, resolved, self.blackboxes, self.settings)
                timings.compute = time.perf_counter() - t1
                return response, timings
            if plan is None:  # never found under a stored id's kind: its plan is its program's
                if kind is None or resolved is not req:
                    kind = self.kind(row, resolved)
                plan = self._plan(resolved, kind)
            fn, values, timings.compile = self._compile(resolved, plan)
            return self._answer(row, resolved, fn, values, plan.wrt, timings, running.answered, plan)

    def compiled(self, req: Request) -> tuple:
        """``req``'s program compiled at its inputs' shapes, and its checked ``wrt``: what ``compute``
        reuses for requests that differ from ``req`` only in their point."""
        req = self.resolve(req)
        plan = self._plan(req)
        return self._compile(req, plan)[0], plan.wrt

    def _answer(self, row, req: Request, fn, values: dict, wrt: list[str], timings: Timings, answered: set,
                plan: Plan | None = None):
        """``compute`` once the function is compiled: checked at its shapes (the kind's checks once per
        ``plan``), then answered; ``answered``: the tiers whose tapes ran (``deadlines.deadline``)."""
        t1 = time.perf_counter()
        p = prepare(row, req, self.settings, wrt=wrt, values=values, out_shape=fn.out_shape, fn=fn,
                    checked=plan is not None and plan.checked)
        if plan is not None and not plan.checked:
            plan.checked = True
            if row.bind is not None and req.mode in BOUND_MODES and not req.verify:
                plan.bind = row.bind
        if req.mode == "finite" and row.differentiates:
            response, compile_seconds = row.finite(p), 0.0
        else:
            verify = row.verify if req.verify else None
            if verify is not None:
                fd.require_verifiable(p)  # before the answer it would check
            response, compile_seconds = row.compute(p)
            self._note_tier(response, answered)  # before a verification's runs
            if verify is not None:
                response["verification"] = verify(p, response)
        timings.compile += compile_seconds
        timings.compute = time.perf_counter() - t1 - compile_seconds
        return response, timings

    def _warm(self, req: Request, plan: Plan, answered: set) -> tuple[dict, Timings]:
        """A request of a checked kind whose answer is bound (``Plan.bind``): its checks passed for the
        kind (the mode, ``wrt``, the program's cost and output) and it reads nothing but its point,
        whose shapes are the kind's; so the bound answer runs at once."""
        timings = Timings()
        fn, values, timings.compile = self._compile(req, plan)
        t1 = time.perf_counter()
        run, compile_seconds = plan.bind(fn, plan.wrt)  # bound again only for a function compiled again
        response = run(fn, values)
        self._note_tier(response, answered)
        timings.compile += compile_seconds
        timings.compute = time.perf_counter() - t1 - compile_seconds
        return response, timings

    def _note_tier(self, response: dict, answered: set) -> None:
        tier = _tier(answered, self.settings)
        if tier is not None:
            response["tier"] = tier

    def hvp_stream(self, req: Request) -> HvpStream:
        """Many Hessian-vector products at one point: resolved, compiled and started once, here."""
        with deadline(req.deadline, self.settings.request_timeout_s) as running:
            check_deadline()
            check_mode(req.mode)
            if req.mode not in STREAM_MODES:
                raise DerivdError(f"mode {req.mode!r} is not available for an HVP stream (forward over reverse)",
                                  code="unsupported_mode", status=422, mode=req.mode)
            req = self.resolve(req)
            if "blackbox" in req.function:
                raise DerivdError("an HVP stream needs a program; a black box has finite differences only",
                                  code="unsupported_mode", status=422, mode="finite")
            plan = self._plan(req)
            wrt = plan.wrt
            fn, values, compile_seconds = self._compile(req, plan)
            t1 = time.perf_counter()
            require_scalar(fn.out_shape, "hvp")
            session = HvpSession(fn, values, wrt)
            compute_seconds = time.perf_counter() - t1 - session.compile_seconds
            return HvpStream(session, wrt, values, compile_seconds + session.compile_seconds, compute_seconds,
                             tier=_tier(running.answered, self.settings))

    def _plan(self, req: Request, kind: tuple | None = None) -> Plan:
        """The plan of ``req``'s kind: kept under ``kind``, else worked out (the inputs' specs and limits,
        ``wrt`` checked) and kept; without a ``kind`` (a session, a stream) worked out only."""
        plan = self._plans.get(kind) if kind is not None else None
        if plan is None:
            source, constants = req.function["dsl"], req.constants
            specs, key = self._signature(source, req.at, constants)
            plan = Plan(specs, key, wrt_names(req.wrt, req.at, constants), len(source) + 512)
            if kind is not None:
                self._plans.put(kind, plan)
        return plan

    def _compile(self, req: Request, plan: Plan):
        """The program of ``req`` compiled at its inputs' shapes (through the tape cache), its input
        values, and the seconds compiling took (0 on a cache hit)."""
        values = {k: np.asarray(v, dtype=np.float64) for k, v in req.at.items()}
        if req.constants:
            values.update(req.constants)
        fn = self.cache.get(plan.key)
        if fn is not None:
            return fn, values, 0.0
        t0 = time.perf_counter()
        fn = load_or_lower(req.function["dsl"], plan.specs, self.settings, self.cache, plan.key)
        self.cache.put(plan.key, fn)
        return fn, values, time.perf_counter() - t0

    def _signature(self, source: str, at: dict, constants: dict):
        """The checked input specs and the tape-cache key of ``source`` at these inputs' shapes and
        dtypes: worked out (and the program text hashed) once per kind of request, not per request."""
        seen = (source, *_shapes(at, constants))
        known = self._signatures.get(seen)
        if known is None:
            specs = input_specs(at, constants, self.settings, source)
            known = specs, TapeKey.for_program(source, specs), len(source) + 512
            self._signatures.put(seen, known)
        return known[:2]


def _tier(answered: set, settings) -> int | None:
    """The highest compile tier whose tapes answered a request, when tier 2 is on (else None: no tier said)."""
    return max(answered) if answered and tiers.enabled(settings) else None


def _shapes(at: dict, constants: dict) -> tuple:
    """The inputs' names and shapes, and the constants' shapes and dtypes, a boolean mask's values
    too (by digest: a mask the program indexes with is static in it): what the kind of a request and
    the signature of a program at its inputs both read. Lists, not generators: cheaper to build."""
    return (tuple([(k, v.shape if type(v) is np.ndarray else np.shape(v)) for k, v in at.items()]),
            tuple([(k, v.shape, v.dtype.kind, mask_digest(v) if v.dtype.kind == "b" else None)
                   for k, v in constants.items()]) if constants else ())
