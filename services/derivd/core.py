"""The one core object: a request in, a response out, whatever the skin.

REST, gRPC and the CLI are thin adapters over ``Service.handle``: they decode
arrays, call it, and encode what it returns. Everything a request means —
resolving its function, validating names and shapes, choosing an engine,
checking limits, timing — happens here, once.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from derivd.dsl import InputSpec, free_inputs
from derivd.engines import forward, reverse, second
from derivd.cache import FunctionStore, RedisTier, TapeCache, TapeKey
from derivd.engines.function import load_or_lower
from derivd.errors import DerivdError, NotFound, ShapeError, UnknownName, ValidationFailed
from derivd.observability import Metrics
from derivd.ops.registry import BOOL, FLOAT, INT
from derivd.workers.pool import Router

ENDPOINTS = ("evaluate", "gradient", "jacobian", "jvp", "vjp", "hvp", "hessian", "taylor")
MODES = ("auto", "forward", "reverse", "taylor", "finite")


@dataclass
class Request:
    """A derivative request with its arrays already decoded to numpy."""

    function: dict
    at: dict[str, np.ndarray]
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    wrt: list[str] | None = None
    mode: str = "auto"
    fd: dict | None = None
    verify: bool = False
    v: dict[str, np.ndarray] | None = None
    vs: list[dict[str, np.ndarray]] | None = None
    u: np.ndarray | None = None
    order: int | None = None
    sparse: bool = False
    deadline: float | None = None  # time.monotonic() instant after which work is abandoned


@dataclass
class Timings:
    compile: float = 0.0
    compute: float = 0.0


@dataclass
class StoredFunction:
    id: str
    dsl: str
    inputs: list[str]
    constants: dict[str, np.ndarray]


class Service:
    def __init__(self, settings):
        self.settings = settings
        redis = RedisTier.from_settings(settings)
        self.cache = TapeCache(settings, redis)
        self.shared_functions = FunctionStore(redis, settings.function_ttl_s) if redis else None
        self.pools = Router(settings, self.compute, self.cache.stats, Timings)
        self.functions: dict[str, StoredFunction] = {}
        self.metrics = Metrics()
        self.metrics.add_cache_level("local", lambda: (self.cache.hits, self.cache.misses))
        self.metrics.add_cache_level("redis", lambda: self.cache.stats.hits_misses("redis"))

    # ------------------------------------------------------------ functions

    def register_function(self, dsl: str, constants: dict[str, np.ndarray] | None = None) -> StoredFunction:
        if not isinstance(dsl, str):
            raise ValidationFailed("function dsl must be a string")
        inputs = free_inputs(dsl, self.settings)
        constants = constants or {}
        digest = hashlib.sha256(dsl.encode())
        for name in sorted(constants):
            arr = constants[name]
            digest.update(f"|{name}|{arr.dtype.str}|{arr.shape}|".encode())
            digest.update(np.ascontiguousarray(arr).tobytes())
        fid = digest.hexdigest()[:32]
        stored = StoredFunction(fid, dsl, inputs, dict(constants))
        self.functions[fid] = stored
        if self.shared_functions is not None:
            self.shared_functions.put(fid, dsl, inputs, stored.constants)
        return stored

    def get_function(self, fid: str) -> StoredFunction:
        stored = self.functions.get(fid)
        if stored is None and self.shared_functions is not None:  # stored through another gateway
            shared = self.shared_functions.get(fid)
            if shared is not None:
                stored = self.functions[fid] = StoredFunction(fid, *shared)
        if stored is None:
            raise NotFound(f"unknown function id {fid!r}", code="unknown_function", id=fid)
        return stored

    # ------------------------------------------------------------ requests

    def handle(self, endpoint: str, req: Request) -> tuple[dict, Timings]:
        """Resolve a stored id here (ids live with the gateway), then run ``req`` on the pool of its
        engine family: in process, or on a worker process (``workers.pool``) that calls ``compute``."""
        kind = next(iter(req.function)) if isinstance(req.function, dict) and len(req.function) == 1 else None
        if endpoint not in ENDPOINTS or kind not in ("dsl", "id"):  # black boxes, streams: in process
            return self.pools.run(endpoint, req, pooled=False)
        if kind == "id":
            source, constants = self._resolve(req.function, req.constants)
            req = replace(req, function={"dsl": source}, constants=constants)
        return self.pools.run(endpoint, req)

    def compute(self, endpoint: str, req: Request) -> tuple[dict, Timings]:
        timings = Timings()
        if req.mode not in MODES:
            raise ValidationFailed(f"unknown mode {req.mode!r}; one of {', '.join(MODES)}", field="mode")
        source, constants = self._resolve(req.function, req.constants)
        specs = self._specs(req.at, constants)
        wrt = self._wrt(req.wrt, req.at, constants)
        values = {**{k: np.asarray(v, dtype=np.float64) for k, v in req.at.items()}, **constants}
        t0 = time.perf_counter()
        key = TapeKey.for_program(source, specs)
        fn, hit = self.cache.get_or_compile(key, lambda: load_or_lower(source, specs, self.settings, self.cache, key))
        timings.compile = 0.0 if hit else time.perf_counter() - t0
        t1 = time.perf_counter()
        response, compile_seconds = getattr(self, "_" + endpoint)(fn, values, wrt, req)
        timings.compile += compile_seconds
        timings.compute = time.perf_counter() - t1 - compile_seconds
        return response, timings

    def ready(self) -> tuple[bool, dict]:
        """Whether every pool this service routes to is reachable (``/readyz``, gRPC health)."""
        return self.pools.ready()

    def hvp_session(self, req: Request) -> HvpStream:
        """Many Hessian-vector products at one point: resolved and compiled once (the gRPC stream)."""
        stream, timings = self.handle("hvp_session", req)
        stream.compile_seconds, stream.compute_seconds = timings.compile, timings.compute
        return stream

    def _hvp_session(self, fn, values, wrt, req):
        self._pick(req.mode, 2, 1)  # refuses modes that cannot give an HVP
        session = second.HvpSession(fn, values, wrt)
        return HvpStream(session, wrt, values), session.compile_seconds

    def _resolve(self, function: dict, constants: dict) -> tuple[str, dict]:
        if not isinstance(function, dict) or len(function) != 1:
            raise ValidationFailed('function must be {"dsl": ...}, {"id": ...} or {"blackbox": ...}',
                                   field="function")
        (kind, value), = function.items()
        if kind == "dsl":
            if not isinstance(value, str):
                raise ValidationFailed("function.dsl must be a string", field="function.dsl")
            return value, constants
        if kind == "id":
            stored = self.get_function(str(value))
            return stored.dsl, {**stored.constants, **constants}
        if kind == "blackbox":
            raise DerivdError("black-box functions are not available on this server yet",
                              code="not_implemented", status=501)
        raise ValidationFailed(f"unknown function kind {kind!r}: use dsl, id or blackbox", field="function")

    def _specs(self, at: dict, constants: dict) -> dict[str, InputSpec]:
        both = set(at) & set(constants)
        if both:
            name = sorted(both)[0]
            raise ValidationFailed(f"input {name!r} is given in both `at` and `constants`", name=name)
        specs = {}
        for name, arr in at.items():
            specs[name] = InputSpec(tuple(np.shape(arr)), FLOAT, "at")
        for name, arr in constants.items():
            kind = arr.dtype.kind
            dtype = BOOL if kind == "b" else INT if kind in "iu" else FLOAT
            specs[name] = InputSpec(tuple(arr.shape), dtype, "const")
        for name, spec in specs.items():
            nbytes = 8 * math.prod(spec.shape)
            if nbytes > self.settings.max_intermediate_bytes:
                from derivd.errors import LimitExceeded
                raise LimitExceeded(f"input {name!r} of shape {list(spec.shape)} is over the limit "
                                    f"max_intermediate_bytes={self.settings.max_intermediate_bytes}",
                                    limit="max_intermediate_bytes", value=nbytes,
                                    max=self.settings.max_intermediate_bytes, name=name)
        return specs

    def _wrt(self, wrt, at: dict, constants: dict) -> list[str]:
        if wrt is None:
            return list(at)
        for name in wrt:
            if name in constants:
                raise ValidationFailed(f"wrt names {name!r}, which is a constant: constants are not differentiated",
                                       name=name, field="wrt")
            if name not in at:
                raise UnknownName(f"wrt names {name!r}, which is not in `at`", name=name, field="wrt")
        if len(set(wrt)) != len(wrt):
            raise ValidationFailed("wrt repeats a name", field="wrt")
        return list(wrt)

    def _pick(self, mode: str, n: int, m: int) -> str:
        if mode == "auto":
            return "forward" if n <= m else "reverse"
        if mode in ("forward", "reverse"):
            return mode
        raise DerivdError(f"mode {mode!r} is not available for this endpoint yet", code="unsupported_mode",
                          status=422, mode=mode)

    # ------------------------------------------------------------ endpoints

    def _evaluate(self, fn, values, wrt, req):
        tape, seconds = fn.tape(("eval",), lambda: ([], [fn.output]))
        (y,) = fn.run(tape, values)
        return {"value": np.asarray(y, dtype=np.float64), "engine": "tape"}, seconds

    def _gradient(self, fn, values, wrt, req):
        reverse.require_scalar(fn, "gradient")
        engine = self._pick(req.mode, 2, 1)  # auto: reverse (one output)
        if engine == "forward":
            y, jac, seconds = forward.jacobian(fn, values, wrt, self.settings)
            grads = [np.asarray(g).reshape(np.shape(values[w])) for g, w in zip(_split_row(jac, fn, wrt), wrt)]
        else:
            y, grads, seconds = reverse.gradient(fn, values, wrt)
        return {"value": float(np.asarray(y).reshape(-1)[0]), "gradient": dict(zip(wrt, grads)),
                "engine": engine}, seconds

    def _jacobian(self, fn, values, wrt, req):
        n = sum(int(np.prod(np.shape(values[w]))) for w in wrt)
        m = int(np.prod(fn.out_shape))
        engine = self._pick(req.mode, n, m)
        module = forward if engine == "forward" else reverse
        y, jac, seconds = module.jacobian(fn, values, wrt, self.settings)
        out = {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jacobian": jac, "shape": [m, n],
               "engine": engine}
        if req.sparse:
            rows, cols = np.nonzero(jac)
            out["jacobian"] = {"rows": rows, "cols": cols, "values": jac[rows, cols], "shape": [m, n]}
        return out, seconds

    def _jvp(self, fn, values, wrt, req):
        v = self._directions(req.v, wrt, values, "v")
        y, dy, seconds = forward.jvp(fn, values, wrt, v)
        return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jvp": np.asarray(dy).reshape(-1),
                "engine": "forward"}, seconds

    def _vjp(self, fn, values, wrt, req):
        if req.u is None:
            raise ValidationFailed("vjp needs `u`, a flat cotangent as long as the output", field="u")
        y, cts, seconds = reverse.vjp(fn, values, wrt, np.asarray(req.u, dtype=np.float64).reshape(-1))
        return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "vjp": dict(zip(wrt, cts)),
                "engine": "reverse"}, seconds

    def _hvp(self, fn, values, wrt, req):
        raise DerivdError("hvp is not available yet", code="not_implemented", status=501)

    def _hessian(self, fn, values, wrt, req):
        raise DerivdError("hessian is not available yet", code="not_implemented", status=501)

    def _taylor(self, fn, values, wrt, req):
        raise DerivdError("taylor is not available yet", code="not_implemented", status=501)

    @staticmethod
    def _directions(v, wrt, values, field_name) -> dict[str, np.ndarray]:
        if v is None:
            raise ValidationFailed(f"this endpoint needs `{field_name}`: a direction per wrt input",
                                   field=field_name)
        out = {}
        for name in wrt:
            if name not in v:
                raise ValidationFailed(f"`{field_name}` has no direction for input {name!r}", name=name,
                                       field=field_name)
            d = np.asarray(v[name], dtype=np.float64)
            shape = np.shape(values[name])
            if d.shape != shape:
                if d.size == int(np.prod(shape)):
                    d = d.reshape(shape)
                else:
                    raise ShapeError(f"`{field_name}[{name!r}]` has shape {list(d.shape)}; input {name!r} has "
                                     f"shape {list(shape)}", shapes=[list(d.shape), list(shape)], name=name)
            out[name] = d
        extra = set(v) - set(wrt)
        if extra:
            raise ValidationFailed(f"`{field_name}` names {sorted(extra)[0]!r}, which is not differentiated",
                                   field=field_name)
        return out


@dataclass
class HvpStream:
    """An HVP session with the core's checks on each direction (shapes, names)."""

    session: second.HvpSession
    wrt: list[str]
    values: dict[str, np.ndarray]
    engine: str = "forward-over-reverse"
    compile_seconds: float = 0.0
    compute_seconds: float = 0.0

    @property
    def value(self) -> float:
        return self.session.value

    @property
    def gradient(self) -> dict[str, np.ndarray]:
        return self.session.gradient

    def hvp(self, v: dict[str, np.ndarray], field_name: str = "v") -> dict[str, np.ndarray]:
        return self.session.hvp(Service._directions(v, self.wrt, self.values, field_name))


def _split_row(jac, fn, wrt):
    from derivd.engines.common import Wrt
    return Wrt(fn, wrt).split(jac[0])


def describe(stored: StoredFunction) -> dict[str, Any]:
    return {"id": stored.id, "dsl": stored.dsl, "inputs": stored.inputs,
            "constants": sorted(stored.constants)}
