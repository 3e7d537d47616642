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

from derivd.blackbox import BlackBoxCaller, BlackBoxSpec, make_registry
from derivd.dsl import InputSpec, free_inputs
from derivd.engines import coloring, differences, forward, reverse, second, sparse, taylor
from derivd.engines.common import Wrt, check_deadline, deadline, require_dense
from derivd.cache import FunctionStore, RedisTier, TapeCache, TapeKey
from derivd.engines.function import load_or_lower
from derivd.errors import DerivdError, LimitExceeded, NotFound, ShapeError, UnknownName, ValidationFailed
from derivd.observability import Metrics
from derivd.ops.registry import BOOL, FLOAT, INT
from derivd.workers.pool import Router

VERIFIABLE = ("gradient", "jacobian", "jvp", "vjp", "hvp", "hessian")
ENDPOINTS = ("evaluate", "gradient", "jacobian", "jvp", "vjp", "hvp", "hessian", "taylor", "derivatives")
MODES = ("auto", "forward", "reverse", "taylor", "finite")
FD_WHOLE = "finite differences build it whole (a program's sparse answer needs an AD mode)"
AD_SPARSE = "`sparse: true` answers with its nonzeros where the pattern allows"


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
    pattern: dict | None = None  # a black box's Jacobian pattern {"rows", "cols"} given by the caller


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
        self.blackboxes = make_registry(settings)
        self.metrics = Metrics()
        self.metrics.add_cache_level("local", lambda: (self.cache.hits, self.cache.misses))
        self.metrics.add_cache_level("redis", lambda: self.cache.stats.hits_misses("redis"))

    # ------------------------------------------------------------ black boxes

    def register_blackbox(self, fields: dict) -> dict:
        """Validate (pydantic) and SSRF-check a registration, then store it; headers are never echoed."""
        return self.blackboxes.register(BlackBoxSpec.model_validate(fields)).public()

    def list_blackboxes(self) -> list[dict]:
        return [spec.public() for spec in self.blackboxes.list()]

    def delete_blackbox(self, name: str) -> None:
        self.blackboxes.delete(name)

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
        """``endpoint`` of ``req`` in this process; the engines stop between passes past its deadline."""
        with deadline(req.deadline, self.settings.request_timeout_s):
            check_deadline()  # queued past it: nothing starts
            return self._compute(endpoint, req)

    def _compute(self, endpoint: str, req: Request) -> tuple[dict, Timings]:
        timings = Timings()
        if req.mode not in MODES:
            raise ValidationFailed(f"unknown mode {req.mode!r}; one of {', '.join(MODES)}", field="mode")
        if endpoint in ("taylor", "derivatives"):
            self._taylor_order(req.order)  # refused before anything is lowered or run
        if isinstance(req.function, dict) and list(req.function) == ["blackbox"]:
            t1 = time.perf_counter()
            response = self._blackbox(endpoint, req)
            timings.compute = time.perf_counter() - t1
            return response, timings
        source, constants = self._resolve(req.function, req.constants)
        specs = self._specs(req.at, constants)
        wrt = self._wrt(req.wrt, req.at, constants)
        values = {**{k: np.asarray(v, dtype=np.float64) for k, v in req.at.items()}, **constants}
        t0 = time.perf_counter()
        key = TapeKey.for_program(source, specs)
        fn, hit = self.cache.get_or_compile(key, lambda: load_or_lower(source, specs, self.settings, self.cache, key))
        timings.compile = 0.0 if hit else time.perf_counter() - t0
        t1 = time.perf_counter()
        if req.mode == "finite" and endpoint != "evaluate":
            slots = Wrt(fn, wrt)
            if endpoint in ("jacobian", "vjp"):  # FD builds the dense Jacobian, pattern or not
                require_dense(math.prod(fn.out_shape), slots.n, "dense Jacobian", self.settings, FD_WHOLE)
            pattern = self._program_pattern(fn, values, slots) if endpoint == "jacobian" else None
            response = self._finite(endpoint, differences.program_points(fn, values, slots), slots, values, req,
                                    fn.out_shape, pattern)
            compile_seconds = 0.0
        else:
            if req.verify and endpoint in VERIFIABLE:
                self._require_verifiable(endpoint, fn, wrt, req)  # before the answer it would check
            response, compile_seconds = getattr(self, "_" + endpoint)(fn, values, wrt, req)
            if req.verify and endpoint in VERIFIABLE:
                slots = Wrt(fn, wrt)
                response["verification"] = self._verify(
                    endpoint, differences.program_points(fn, values, slots), slots, values, req, response)
        timings.compile += compile_seconds
        timings.compute = time.perf_counter() - t1 - compile_seconds
        return response, timings

    # ------------------------------------------------------------ finite differences

    def _blackbox(self, endpoint: str, req: Request) -> dict:
        """A registered black box: evaluated over HTTP, differentiated by finite differences only."""
        spec = self.blackboxes.get(str(req.function["blackbox"]))
        if req.constants:
            raise ValidationFailed("a black box takes no constants", field="constants")
        if set(req.at) != {"x"}:
            raise ValidationFailed("a black-box request names its one input `x` in `at`", field="at")
        if req.wrt not in (None, ["x"]):
            raise ValidationFailed("a black box is differentiated with respect to `x` only", field="wrt")
        if req.mode not in ("auto", "finite"):
            raise ValidationFailed(f"a black box can only be differentiated by finite differences; mode "
                                   f"{req.mode!r} needs a program (use auto or finite)", field="mode")
        if req.verify:
            raise ValidationFailed("verify compares automatic differentiation with finite differences; "
                                   "a black box has only the latter", field="verify")
        x = np.asarray(req.at["x"], dtype=np.float64)
        if x.size != spec.input_size:
            raise ShapeError(f"black box {spec.name!r} takes x of {spec.input_size} numbers; got shape "
                             f"{list(x.shape)}", shapes=[list(x.shape), [spec.input_size]])
        x = x.reshape(-1)
        caller = BlackBoxCaller(spec, self.settings, self.settings.blackbox_max_batch_points)

        def evaluate(X):
            return caller.evaluate(np.atleast_2d(X), req.deadline)

        if endpoint == "evaluate":
            response = {"value": evaluate(x)[0], "engine": "blackbox"}
        else:
            response = self._finite(endpoint, evaluate, Wrt.of_shapes(["x"], [x.shape]), {"x": x}, req,
                                    (spec.output_size,), self._caller_pattern(req, spec))
        response["blackbox"] = {"name": spec.name, "evaluations": caller.evaluations}
        return response

    def _program_pattern(self, fn, values, slots):
        """The detected Jacobian pattern and its column colouring, when colouring saves evaluations."""
        plan = sparse.jacobian_plan(fn, values, slots, "forward", self.settings)
        if plan.pattern is None or plan.ncolors >= slots.n:
            return None
        coo = plan.pattern.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), plan.colors

    def _finite(self, endpoint, F, slots, values, req, out_shape, pattern=None) -> dict:
        """An endpoint answered by finite differences of a batched callable ``F`` over ``slots``.

        ``pattern`` (rows, cols, colours), from the program or the caller, makes a Jacobian cost
        one set of stencil points per colour instead of per column."""
        x = slots.join([values[n] for n in slots.names], ())
        m = math.prod(out_shape)
        budget = self.settings.fd_max_evaluations
        if endpoint in ("gradient", "hvp", "hessian") and m != 1:
            raise ShapeError(f"{endpoint} needs a scalar output (one element); the output has shape "
                             f"{list(out_shape)}", shape=list(out_shape), code="not_scalar")
        split = lambda flat: dict(zip(slots.names, slots.split(np.asarray(flat))))  # noqa: E731
        out = {"engine": "finite"}
        if endpoint == "gradient":
            r = differences.derivative("gradient", F, x, req.fd, budget)
            out.update(value=float(r.value[0]), gradient=split(r.derivative))
        elif endpoint in ("jacobian", "vjp"):
            require_dense(m, slots.n, "dense Jacobian", self.settings, FD_WHOLE)
            r = differences.derivative("jacobian", F, x, req.fd, budget,
                                       pattern=pattern if endpoint == "jacobian" else None)
            if endpoint == "jacobian":
                out.update(value=r.value, jacobian=r.derivative, shape=[m, slots.n])
                if pattern is not None:
                    rows, cols, colors = pattern
                    out["sparsity"] = {"nnz": int(rows.size), "colors": int(colors.max()) + 1}
                    if req.sparse:
                        out["jacobian"] = {"rows": rows, "cols": cols, "values": r.derivative[rows, cols],
                                           "shape": [m, slots.n]}
                elif req.sparse:
                    out["jacobian"] = _coo(r.derivative)
            else:
                u = self._cotangent(req.u, m)
                out.update(value=r.value, vjp=split(u @ r.derivative))
                r.error = np.abs(u) @ r.error
        elif endpoint == "jvp":
            v = slots.join([d for d in self._directions(req.v, slots.names, values, "v").values()], ())
            r = differences.derivative("jvp", F, x, req.fd, budget, v)
            out.update(value=r.value, jvp=r.derivative)
        elif endpoint == "hvp":
            directions = self._hvp_directions(req, slots, values)
            differences.require_budget({"hvp": len(directions)}, slots.n, req.fd, budget)
            results = [differences.derivative("hvp", F, x, req.fd, budget, v) for v in directions]
            r = results[0]
            if req.vs is not None:
                out.update(value=float(r.value[0]), hvps=[split(q.derivative) for q in results])
            else:
                out.update(value=float(r.value[0]), hvp=split(r.derivative))
            r.evaluations = sum(q.evaluations for q in results)
            r.error = np.max([q.error for q in results], axis=0)
        elif endpoint == "hessian":
            differences.require_budget({"hessian": 1, "gradient": 1}, slots.n, req.fd, budget)
            require_dense(slots.n, slots.n, "dense Hessian", self.settings, FD_WHOLE)
            g = differences.derivative("gradient", F, x, req.fd, budget)
            r = differences.derivative("hessian", F, x, req.fd, budget)
            out.update(value=float(r.value[0]), gradient=split(g.derivative), hessian=r.derivative)
            r.evaluations += g.evaluations
        else:
            raise DerivdError(f"{endpoint} is not available by finite differences", code="unsupported_mode",
                              status=422, mode="finite")
        out["fd"] = {"evaluations": r.evaluations, "max_error_estimate": float(np.max(r.error, initial=0.0))}
        return out

    def _require_verifiable(self, endpoint, fn, wrt, req) -> None:
        """Refuse ``verify`` whose finite differences would pass the FD budget or build a dense
        matrix over the entries limit, before anything is computed."""
        n, m = Wrt(fn, wrt).n, math.prod(fn.out_shape)
        directions = len(req.vs) if endpoint == "hvp" and req.vs is not None else 1
        kind = {"vjp": "jacobian"}.get(endpoint, endpoint)
        differences.require_budget({kind: directions}, n, req.fd, self.settings.fd_max_evaluations)
        if kind in ("jacobian", "hessian"):
            require_dense(m if kind == "jacobian" else n, n, f"dense finite-difference {kind.capitalize()}",
                          self.settings, "verify compares with one; leave it off at this size")

    def _verify(self, endpoint, F, slots, values, req, response) -> dict:
        """Recompute ``response``'s derivative by finite differences and compare (``verify: true``)."""
        x = slots.join([values[n] for n in slots.names], ())
        budget = self.settings.fd_max_evaluations
        join = lambda d: slots.join([d[n] for n in slots.names], ())  # noqa: E731
        if endpoint == "gradient":
            return differences.verification(join(response["gradient"]),
                                            differences.derivative("gradient", F, x, req.fd, budget))
        if endpoint == "jacobian":
            jac = response["jacobian"]
            dense = _dense(jac) if isinstance(jac, dict) else jac
            return differences.verification(dense, differences.derivative("jacobian", F, x, req.fd, budget))
        if endpoint == "jvp":
            v = slots.join(list(self._directions(req.v, slots.names, values, "v").values()), ())
            return differences.verification(response["jvp"], differences.derivative("jvp", F, x, req.fd, budget, v))
        if endpoint == "vjp":
            r = differences.derivative("jacobian", F, x, req.fd, budget)
            u = self._cotangent(req.u, r.value.size)
            return differences.verification(join(response["vjp"]), r, u @ r.derivative, np.abs(u) @ r.error)
        if endpoint == "hvp":
            directions = self._hvp_directions(req, slots, values)
            got = [join(h) for h in (response["hvps"] if req.vs is not None else [response["hvp"]])]
            checks = [differences.verification(g, differences.derivative("hvp", F, x, req.fd, budget, v))
                      for g, v in zip(got, directions)]
            worst = max(checks, key=lambda c: c["max_rel_err"])
            return {**worst, "passed": all(c["passed"] for c in checks),
                    "fd_evaluations": sum(c["fd_evaluations"] for c in checks)}
        hess = response["hessian"]
        dense = _dense(hess) if isinstance(hess, dict) else hess
        return differences.verification(dense, differences.derivative("hessian", F, x, req.fd, budget))

    @staticmethod
    def _caller_pattern(req, spec):
        """A black box's Jacobian pattern as the caller gave it (checked, then coloured)."""
        if req.pattern is None:
            return None
        rows = np.asarray(req.pattern["rows"], dtype=np.int64)
        cols = np.asarray(req.pattern["cols"], dtype=np.int64)
        shape = (spec.output_size, spec.input_size)
        if rows.shape != cols.shape:
            raise ShapeError("pattern rows and cols must have one length",
                             shapes=[list(rows.shape), list(cols.shape)], field="pattern")
        if rows.size and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0 or cols.max() >= shape[1]):
            raise ValidationFailed(f"pattern has an entry outside the Jacobian's shape {list(shape)}",
                                   field="pattern")
        rows, cols = np.unique(np.stack([rows, cols]), axis=1) if rows.size else (rows, cols)
        return rows, cols, coloring.color_columns(rows, cols, shape)

    def _hvp_directions(self, req, slots, values) -> list[np.ndarray]:
        if req.vs is not None:
            if req.v is not None:
                raise ValidationFailed("give `v` or `vs`, not both", field="vs")
            return [slots.join(list(self._directions(d, slots.names, values, f"vs[{i}]").values()), ())
                    for i, d in enumerate(req.vs)]
        return [slots.join(list(self._directions(req.v, slots.names, values, "v").values()), ())]

    @staticmethod
    def _cotangent(u, m: int) -> np.ndarray:
        if u is None:
            raise ValidationFailed("vjp needs `u`, a flat cotangent as long as the output", field="u")
        u = np.asarray(u, dtype=np.float64).reshape(-1)
        if u.size != m:
            raise ShapeError(f"u has {u.size} elements; the output has {m}", shapes=[[u.size], [m]])
        return u

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
        tape, seconds = fn.eval_tape()
        (y,) = fn.run(tape, values)
        return {"value": np.asarray(y, dtype=np.float64), "engine": "tape"}, seconds

    def _gradient(self, fn, values, wrt, req):
        reverse.require_scalar(fn, "gradient")
        engine = "taylor" if req.mode == "taylor" else self._pick(req.mode, 2, 1)  # auto: reverse (one output)
        if engine == "taylor":
            y, grads, seconds = taylor.gradient(fn, values, wrt, self.settings)
        elif engine == "forward":
            y, jac, seconds = forward.jacobian(fn, values, wrt, self.settings)
            grads = [np.asarray(g).reshape(np.shape(values[w])) for g, w in zip(_split_row(jac, fn, wrt), wrt)]
        else:
            y, grads, seconds = reverse.gradient(fn, values, wrt)
        return {"value": float(np.asarray(y).reshape(-1)[0]), "gradient": dict(zip(wrt, grads)),
                "engine": engine}, seconds

    def _jacobian(self, fn, values, wrt, req):
        n = sum(math.prod(np.shape(values[w])) for w in wrt)
        m = math.prod(fn.out_shape)
        if not req.sparse:  # a dense answer, whatever the pattern: refused before any pass or detection
            require_dense(m, n, "dense Jacobian", self.settings, AD_SPARSE)
        engine = "taylor" if req.mode == "taylor" else self._pick(req.mode, n, m)
        if engine != "taylor" and (req.sparse or (req.mode == "auto" and sparse.worth_trying(fn, n, m))):
            found = self._sparse_jacobian(fn, values, wrt, req, n, m)
            if found is not None:
                return found
        module = {"forward": forward, "reverse": reverse, "taylor": taylor}[engine]
        y, jac, seconds = module.jacobian(fn, values, wrt, self.settings)
        out = {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jacobian": jac, "shape": [m, n],
               "engine": engine}
        if req.sparse:  # taylor mode: no pattern, so the nonzeros of the dense answer
            out["jacobian"] = _coo(jac)
        return out, seconds

    def _jvp(self, fn, values, wrt, req):
        v = self._directions(req.v, wrt, values, "v")
        if req.mode == "taylor":
            engine, (y, dy, seconds) = "taylor", taylor.jvp(fn, values, wrt, v, self.settings)
        else:
            engine, (y, dy, seconds) = "forward", forward.jvp(fn, values, wrt, v)
        return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jvp": np.asarray(dy).reshape(-1),
                "engine": engine}, seconds

    def _vjp(self, fn, values, wrt, req):
        u = self._cotangent(req.u, math.prod(fn.out_shape))
        y, cts, seconds = reverse.vjp(fn, values, wrt, u)
        return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "vjp": dict(zip(wrt, cts)),
                "engine": "reverse"}, seconds

    def _hvp(self, fn, values, wrt, req):
        if req.mode == "taylor":
            return self._hvp_by_taylor(fn, values, wrt, req)
        return self._hvp_forward_over_reverse(fn, values, wrt, req)

    def _hessian(self, fn, values, wrt, req):
        if req.mode == "taylor":
            return self._hessian_by_taylor(fn, values, wrt, req)
        return self._hessian_by_hvps(fn, values, wrt, req)

    # ------------------------------------------------------------ second order and sparsity

    def _sparse_jacobian(self, fn, values, wrt, req, n, m):
        """By colouring the detected pattern: with ``sparse``, COO on the pattern; in auto mode only
        when it takes fewer passes than min(n, m) (else None: the dense engines answer)."""
        plan = sparse.jacobian_plan(fn, values, Wrt(fn, wrt), req.mode, self.settings)
        if not req.sparse and plan.ncolors >= min(n, m):
            return None
        y, rows, cols, vals, seconds = sparse.jacobian(fn, values, wrt, plan, self.settings)
        if req.sparse:
            jac = {"rows": rows, "cols": cols, "values": vals, "shape": [m, n]}
        else:
            jac = np.zeros((m, n))
            jac[rows, cols] = vals
        return {"value": np.asarray(y, dtype=np.float64).reshape(-1), "jacobian": jac, "shape": [m, n],
                "engine": plan.direction, "sparsity": plan.info((m, n))}, seconds

    def _hvp_forward_over_reverse(self, fn, values, wrt, req):
        """The jvp of the gradient graph; ``vs`` (an extension) is one pass with a batch of directions."""
        reverse.require_scalar(fn, "hvp")
        self._pick(req.mode, 2, 1)  # refuses modes that cannot give an HVP
        slots = Wrt(fn, wrt)
        directions = self._hvp_directions(req, slots, values)
        out = {"engine": "forward-over-reverse"}
        if req.vs is None:
            y, _, hv, seconds = second.hvp(fn, values, wrt, dict(zip(wrt, slots.split(directions[0]))))
            out["hvp"] = dict(zip(wrt, hv))
        else:
            flat = np.array(directions).reshape(len(directions), slots.n)
            y, _, block, seconds = second.hvp_blocks(fn, values, wrt, flat, self.settings)
            out["hvps"] = [dict(zip(wrt, slots.split(row))) for row in block]
        out["value"] = float(np.asarray(y).reshape(-1)[0])
        return out, seconds

    def _hessian_by_hvps(self, fn, values, wrt, req):
        """Dense by batched HVPs of the identity; with ``sparse`` (and in auto mode when it saves passes)
        one HVP per colour of a star colouring of the detected pattern."""
        reverse.require_scalar(fn, "hessian")
        self._pick(req.mode, 2, 1)
        slots = Wrt(fn, wrt)
        n = slots.n
        out = {"engine": "forward-over-reverse"}
        plan = None
        if req.sparse or (req.mode == "auto" and sparse.worth_trying(fn, n, n)):
            plan = sparse.hessian_plan(fn, values, slots, self.settings)
            if not req.sparse and plan.ncolors >= n:
                plan = None
        if plan is None:
            y, grads, hess, seconds = second.hessian(fn, values, wrt, self.settings)
        else:
            y, grads, rows, cols, vals, seconds = sparse.hessian(fn, values, wrt, plan, self.settings)
            if req.sparse:
                hess = {"rows": rows, "cols": cols, "values": vals, "shape": [n, n]}
            else:
                hess = np.zeros((n, n))
                hess[rows, cols] = vals
            out["sparsity"] = plan.info((n, n))
        out.update(value=float(np.asarray(y).reshape(-1)[0]), gradient=dict(zip(wrt, grads)), hessian=hess)
        return out, seconds

    # ------------------------------------------------------------ Taylor mode

    def _taylor_order(self, order) -> int:
        if order is None or order < 0:
            raise ValidationFailed("this endpoint needs `order`, a non-negative integer", field="order")
        if order > self.settings.max_taylor_order:
            raise LimitExceeded(f"Taylor order {order} is over the limit max_taylor_order="
                                f"{self.settings.max_taylor_order}", limit="max_taylor_order", value=order,
                                max=self.settings.max_taylor_order)
        return order

    def _taylor(self, fn, values, wrt, req):
        order = self._taylor_order(req.order)
        y, c, seconds = taylor.coefficients(fn, values, wrt, self._directions(req.v, wrt, values, "v"), order,
                                            self.settings)
        factorials = np.array([float(math.factorial(k)) for k in range(order + 1)])
        return {"value": y.reshape(-1), "coefficients": c, "derivatives": c * factorials[:, None],
                "engine": "taylor"}, seconds

    def _derivatives(self, fn, values, wrt, req):
        y, tensors, count, seconds = taylor.tensors(fn, values, wrt, self._taylor_order(req.order), self.settings)
        return {"value": y.reshape(-1), "tensors": tensors, "directions": count, "engine": "taylor"}, seconds

    def _hvp_by_taylor(self, fn, values, wrt, req):
        slots = Wrt(fn, wrt)
        directions = self._hvp_directions(req, slots, values)
        y, hv, seconds = taylor.hvps(fn, values, wrt, np.array(directions).reshape(len(directions), slots.n),
                                     self.settings)
        out = {"value": float(y.reshape(-1)[0]), "engine": "taylor"}
        split = [dict(zip(wrt, slots.split(h))) for h in hv]
        if req.vs is not None:
            out["hvps"] = split
        else:
            out["hvp"] = split[0]
        return out, seconds

    def _hessian_by_taylor(self, fn, values, wrt, req):
        y, g, h, seconds = taylor.hessian(fn, values, wrt, self.settings)
        return {"value": float(y.reshape(-1)[0]), "gradient": dict(zip(wrt, Wrt(fn, wrt).split(g))),
                "hessian": h, "engine": "taylor"}, seconds

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
    return Wrt(fn, wrt).split(jac[0])


def _coo(dense: np.ndarray) -> dict:
    rows, cols = np.nonzero(dense)
    return {"rows": rows, "cols": cols, "values": dense[rows, cols], "shape": list(dense.shape)}


def _dense(coo: dict) -> np.ndarray:
    out = np.zeros(coo["shape"])
    out[np.asarray(coo["rows"], dtype=np.int64), np.asarray(coo["cols"], dtype=np.int64)] = coo["values"]
    return out


def describe(stored: StoredFunction) -> dict[str, Any]:
    return {"id": stored.id, "dsl": stored.dsl, "inputs": stored.inputs,
            "constants": sorted(stored.constants)}
