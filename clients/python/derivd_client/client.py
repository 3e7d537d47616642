"""``Client`` and ``AsyncClient``: derivd's REST API with numpy in and numpy out.

Both share one definition of every endpoint (:class:`_Api` builds a
:class:`Call`: path, body, how to read the answer); they differ only in how a
call is sent. Sending retries connection failures (refused, reset, dropped
before an answer) with exponential backoff and never retries an answer, so a
4xx or 5xx surfaces at once as the typed exception of :mod:`.errors`. A
timeout is not retried either: the server may still be working on it.

A function is DSL text, a :class:`~derivd_client.trace.Program` from
:func:`~derivd_client.trace`, a :class:`FunctionRef` from
:meth:`register_function`, a :class:`Blackbox`, or a plain Python function
written with the SDK's operations (traced on the fly at the shapes of ``at``).
``Client.export`` fetches a function's derivative program as a standalone numpy module.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import os
import random
import re
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np

from . import __version__, arrays, errors
from .stored import StoredFunctions
from .trace import Program, cached_trace

DEFAULT_URL = "http://127.0.0.1:8000"
RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
             httpx.RemoteProtocolError, httpx.PoolTimeout)
OPTIONS = ("constants", "wrt", "mode", "fd", "verify", "encoding")


@dataclass(frozen=True)
class FunctionRef:
    """A program stored on the server (``POST /v1/functions``): refer to it by ``id``."""

    id: str
    inputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Blackbox:
    """A registered black box: a function derivd can only call (derivatives by finite differences)."""

    name: str
    url: str = ""
    input_size: int = 0
    output_size: int = 0
    batch: bool = False
    timeout_s: float = 10.0
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SparseJacobian:
    """A Jacobian in COO form (``sparse=True``): ``J[rows[k], cols[k]] = values[k]``."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    def toarray(self) -> np.ndarray:
        dense = np.zeros(self.shape)
        np.add.at(dense, (self.rows, self.cols), self.values)
        return dense

    def to_scipy(self):
        """The same entries as a ``scipy.sparse.coo_matrix`` (scipy is needed for this alone)."""
        try:
            from scipy import sparse
        except ImportError:
            raise ImportError("SparseJacobian.to_scipy() needs scipy: pip install scipy") from None
        return sparse.coo_matrix((self.values, (self.rows, self.cols)), shape=self.shape)

    def tocsr(self):
        """As a ``scipy.sparse.csr_matrix`` (repeated entries summed, as ``toarray``)."""
        return self.to_scipy().tocsr()


class Result(dict):
    """A response with arrays decoded to numpy; keys read as attributes (``r.gradient``).

    ``timing`` holds the ``Server-Timing`` durations in milliseconds
    (``compile``, ``queue``, ``compute``), so a caller can tell where time went.
    """

    timing: dict[str, float]

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class Call:
    method: str
    path: str
    body: dict | None = None
    read: Callable[[Any, httpx.Response], Any] = lambda body, resp: body
    text: bool = False  # a successful answer is text (read gets it as the body), not JSON


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``compile;dur=1.2, queue;dur=0.1`` -> ``{"compile": 1.2, "queue": 0.1}``."""
    out: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        for p in params:
            key, _, value = p.partition("=")
            if name and key == "dur":
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out


RAW_FIELDS = ("engine", "verification", "id", "inputs", "directions", "tier")  # kept as JSON gave them
METADATA_FIELDS = ("sparsity", "fd")  # counts stay ints, estimates floats (non-finite strings decoded)


def _metadata(value):
    if isinstance(value, dict):
        return {k: _metadata(v) for k, v in value.items()}
    if isinstance(value, str) and value in arrays.NONFINITE:
        return float(arrays.NONFINITE[value])
    return value


def decode_result(body: dict, resp: httpx.Response | None = None) -> Result:
    out = Result()
    for key, value in body.items():
        if key in METADATA_FIELDS:
            out[key] = _metadata(value)
        elif key in RAW_FIELDS or value is None or isinstance(value, bool) or (
                isinstance(value, str) and value not in arrays.NONFINITE):
            out[key] = value
        elif key == "shape":
            out[key] = tuple(value)
        elif isinstance(value, dict) and {"rows", "cols", "values", "shape"} <= set(value):
            out[key] = SparseJacobian(arrays.decode(value["rows"]).astype(np.int64),
                                      arrays.decode(value["cols"]).astype(np.int64),
                                      arrays.decode(value["values"]).reshape(-1), tuple(value["shape"]))
        elif key == "tensors":  # one array per derivative order, each of its own rank
            out[key] = [arrays.decode(t) for t in value]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out[key] = [arrays.decode_tree(v) for v in value]
        else:
            out[key] = arrays.decode_tree(value)
    out.timing = parse_server_timing(resp.headers.get("server-timing") if resp is not None else None)
    return out


class _Api:
    """Every endpoint, once: each method returns ``self._send(Call)``, sync or async by subclass."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 0.2, base64_threshold: int = arrays.DEFAULT_THRESHOLD,
                 headers: Mapping[str, str] | None = None):
        self.url = (url or os.environ.get("DERIVD_URL") or DEFAULT_URL).rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.base64_threshold = base64_threshold
        self.headers = {"user-agent": f"derivd-client/{__version__}", **(headers or {})}
        if api_key:
            self.headers["x-api-key"] = api_key
        self.stored_functions = StoredFunctions()  # what sessions registered: opened by id from then on

    def _send(self, call: Call):  # pragma: no cover - overridden
        raise NotImplementedError

    # ------------------------------------------------------------ derivatives

    def evaluate(self, function, at=None, **options):
        """The function's value at ``at``."""
        return self._send(self._derivative("evaluate", function, at, options))

    def gradient(self, function, at=None, **options):
        """``value`` and ``gradient`` ({name: array shaped like the input}) of a one-element output."""
        return self._send(self._derivative("gradient", function, at, options))

    def jacobian(self, function, at=None, *, sparse: bool = False, **options):
        """``value`` (flat), ``jacobian`` (m x n, or a :class:`SparseJacobian`) and ``shape``."""
        return self._send(self._derivative("jacobian", function, at, options, sparse=sparse))

    def jvp(self, function, at=None, *, v, **options):
        """``value`` and ``jvp`` = J v (flat): ``v`` is {name: direction}, or one array for one input."""
        return self._send(self._derivative("jvp", function, at, options, v=v))

    def vjp(self, function, at=None, *, u, **options):
        """``value`` and ``vjp`` = u^T J as {name: array}: ``u`` is flat, as long as the output."""
        return self._send(self._derivative("vjp", function, at, options, u=u))

    def hvp(self, function, at=None, *, v=None, vs=None, **options):
        """``value`` and ``hvp`` = H v ({name: array}) of a one-element output; with ``vs`` (a list of
        directions) ``hvps``, one product per direction, computed in one batched pass."""
        if (v is None) == (vs is None):
            raise TypeError("hvp takes one of v (a direction) or vs (a list of directions)")
        return self._send(self._derivative("hvp", function, at, options, v=v, vs=vs))

    def hessian(self, function, at=None, **options):
        """``value``, ``gradient`` and the n x n ``hessian`` of a one-element output."""
        return self._send(self._derivative("hessian", function, at, options))

    def taylor(self, function, at=None, *, v, order: int, **options):
        """``coefficients`` (order+1 rows): c_k = (1/k!) d^k/dt^k f(x + t v) at t = 0."""
        return self._send(self._derivative("taylor", function, at, options, v=v, order=order))

    def derivatives(self, function, at=None, *, order: int, **options):
        """``tensors``: every derivative tensor of order 1..``order`` (at most 4), ``tensors[e - 1]``
        shaped [n] * e for an output of one element, else [m] + [n] * e (n over the flattened inputs)."""
        return self._send(self._derivative("derivatives", function, at, options, order=order))

    # ------------------------------------------------------------ functions and black boxes

    def register_function(self, program, constants: Mapping[str, Any] | None = None):
        """Store a program (DSL text or a traced :class:`Program`) and get a :class:`FunctionRef`."""
        if isinstance(program, Program):
            constants = {**program.constants, **(constants or {})}
            program = program.dsl
        body = {"dsl": program, "constants": self._arrays(constants or {})}
        return self._send(Call("POST", "/v1/functions", body,
                               lambda b, r: FunctionRef(b["id"], list(b.get("inputs", [])))))  # source order

    def get_function(self, function_id: str):
        """The stored program and its inputs."""
        return self._send(Call("GET", f"/v1/functions/{function_id}"))

    def register_blackbox(self, name: str, url: str, input_size: int, output_size: int, *,
                          batch: bool = False, timeout_s: float = 10.0, **extra):
        """Register ``POST url {"x"}`` -> ``{"y"}`` (or batched) under ``name``; extra fields pass through
        (``headers``, ``max_concurrency``). Use it as ``function=Blackbox`` with ``at={"x": ...}``."""
        body = {"name": name, "url": url, "input_size": input_size, "output_size": output_size,
                "batch": batch, "timeout_s": timeout_s, **extra}
        return self._send(Call("POST", "/v1/blackboxes", body, lambda b, r: _blackbox(b)))

    def list_blackboxes(self):
        return self._send(Call("GET", "/v1/blackboxes", None,
                               lambda b, r: [_blackbox(x) for x in b.get("blackboxes", [])]))

    def delete_blackbox(self, name: str):
        return self._send(Call("DELETE", f"/v1/blackboxes/{name}", None, lambda b, r: None))

    def health(self):
        return self._send(Call("GET", "/healthz"))

    # ------------------------------------------------------------ request building

    def _derivative(self, endpoint: str, function, at, options: dict, **extra) -> Call:
        at = dict(at or {})
        inputs = known_inputs(function)
        for key in list(options):
            if key not in OPTIONS:  # jax-like: gradient(f, x=...) binds an input; a typo is not one
                if inputs is not None and key not in inputs:
                    raise TypeError(_unknown_keyword(endpoint, key, inputs, extra))
                at[key] = options.pop(key)
        constants = dict(options.pop("constants", None) or {})
        for where, values in (("input", at), ("constant", constants)):
            for name, value in values.items():
                if value is None:
                    raise TypeError(f"{endpoint}: {where} {name!r} is None; give it a number or an array")
                try:
                    arrays.as_array(value)
                except TypeError as e:
                    raise TypeError(f"{endpoint}: {where} {name!r}: {e}") from None
        spec, constants = resolve_function(function, at, constants)
        body: dict[str, Any] = {"function": spec, "at": self._arrays(at)}
        if constants:
            body["constants"] = self._arrays(constants)
        for key in ("wrt", "mode", "fd", "verify"):
            if options.get(key) is not None:
                body[key] = list(options[key]) if key == "wrt" else options[key]
        names = list(body.get("wrt") or at)
        if extra.get("v") is not None:
            body["v"] = self._directions(extra.pop("v"), names)
        if extra.get("vs") is not None:
            body["vs"] = [self._directions(d, names) for d in extra.pop("vs")]
        if "u" in extra:
            body["u"] = arrays.encode(np.asarray(extra.pop("u"), dtype=np.float64).reshape(-1),
                                      self.base64_threshold)
        body.update({k: v for k, v in extra.items() if v is not None and v is not False})
        encoding = options.get("encoding", "auto")
        if encoding == "auto":
            big = any(np.size(a) >= self.base64_threshold for a in [*at.values(), *constants.values()])
            encoding = "base64" if big else "list"
        body["encoding"] = encoding
        return Call("POST", f"/v1/{endpoint}", body, decode_result)

    def _arrays(self, values: Mapping[str, Any]) -> dict:
        return {k: arrays.encode(v, self.base64_threshold) for k, v in values.items()}

    def _directions(self, v, names: list[str]) -> dict:
        return self._arrays(direction_dict(v, names))

    # ------------------------------------------------------------ answers

    def _read(self, call: Call, resp: httpx.Response):
        if resp.status_code == 204:
            return call.read(None, resp)
        if call.text and resp.status_code < 400:
            return call.read(resp.text, resp)
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            raise errors.from_response(resp.status_code, body)
        if body is None:
            raise errors.ServerError(f"answer to {call.path} is not JSON", "bad_answer", {}, resp.status_code)
        return call.read(body, resp)

    def _delay(self, attempt: int) -> float:
        return self.backoff * (2 ** attempt) * (0.5 + random.random() / 2)

    def _give_up(self, call: Call, exc: Exception) -> errors.DerivdError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
            return errors.RequestTimeout(f"no answer from {self.url}{call.path} within {self.timeout} s",
                                         "timeout", {"timeout_s": self.timeout})
        return errors.ConnectionFailed(f"cannot reach {self.url}{call.path} after {self.retries + 1} attempt(s): "
                                       f"{type(exc).__name__}: {exc}", "connection_failed", {"url": self.url})


class Client(_Api):
    """Blocking client. ``Client(url, api_key=..., timeout=..., retries=...)``; ``url`` defaults to
    ``$DERIVD_URL``, else http://127.0.0.1:8000. Use it as a context manager, or call ``close()``."""

    def __init__(self, url: str | None = None, *, transport: httpx.BaseTransport | None = None, **kwargs):
        super().__init__(url, **kwargs)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout,
                                  transport=transport)

    def _send(self, call: Call):
        for attempt in range(self.retries + 1):
            try:
                resp = self._http.request(call.method, call.path, json=call.body)
            except RETRYABLE as exc:
                if attempt == self.retries:
                    raise self._give_up(call, exc) from exc
                time.sleep(self._delay(attempt))
            except httpx.TimeoutException as exc:
                raise self._give_up(call, exc) from exc
            else:
                return self._read(call, resp)

    def close(self) -> None:
        self._http.close()

    def export(self, function, at=None, *, derivative: str = "value_and_gradient", load: bool = False,
               **options):
        """The derivative program of ``function`` at the shapes of ``at``, as the text of a standalone
        Python module that needs only numpy (``GET /v1/functions/{id}/program``): ``derivative`` is
        ``value_and_gradient``, ``jacobian``, ``hvp`` or ``hessian``; ``constants`` are embedded.

        ``load=True`` returns the module's function (``value_and_gradient(x)`` and so on) instead of its
        text. That runs code the server wrote in this process: an explicit opt-in, for a server you trust."""
        at = dict(at or {})
        for key in list(options):
            if key not in OPTIONS:
                at[key] = options.pop(key)
        spec, constants = resolve_function(function, at, dict(options.get("constants") or {}))
        if "dsl" not in spec:
            raise TypeError("export needs a program (DSL text, a traced or Python function); "
                            f"got a {next(iter(spec))!r} reference")
        ref = self.register_function(spec["dsl"], constants)
        query = [("derivative", derivative)]
        query += [("shape", f"{k}:{'x'.join(str(d) for d in np.shape(v))}") for k, v in at.items()]
        if options.get("wrt"):
            query.append(("wrt", ",".join(options["wrt"])))
        text = self._send(Call("GET", f"/v1/functions/{ref.id}/program?{urlencode(query)}", text=True))
        if not load:
            return text
        module = types.ModuleType(f"derivd_export_{ref.id}")
        exec(compile(text, f"<derivd export {ref.id} {derivative}>", "exec"), module.__dict__)  # opted in above
        return getattr(module, derivative)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class AsyncClient(_Api):
    """The same API for asyncio: every method is a coroutine (``await client.gradient(...)``)."""

    def __init__(self, url: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None, **kwargs):
        super().__init__(url, **kwargs)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=self.timeout,
                                       transport=transport)

    async def _send(self, call: Call):
        for attempt in range(self.retries + 1):
            try:
                resp = await self._http.request(call.method, call.path, json=call.body)
            except RETRYABLE as exc:
                if attempt == self.retries:
                    raise self._give_up(call, exc) from exc
                await asyncio.sleep(self._delay(attempt))
            except httpx.TimeoutException as exc:
                raise self._give_up(call, exc) from exc
            else:
                return self._read(call, resp)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.aclose()


def _blackbox(body: dict) -> Blackbox:
    known = {k: body[k] for k in ("name", "url", "input_size", "output_size", "batch", "timeout_s") if k in body}
    extra = {k: v for k, v in body.items() if k not in known}
    return Blackbox(**known, extra=extra)


def resolve_function(function, at: dict, constants: dict) -> tuple[dict, dict]:
    """Any accepted form of a function -> the wire's ``{"dsl"|"id"|"blackbox": ...}`` and the constants
    to send (a traced program brings the arrays it closed over)."""
    if isinstance(function, str):
        return {"dsl": function}, constants
    if isinstance(function, Program):
        return {"dsl": function.dsl}, {**function.constants, **constants}
    if isinstance(function, FunctionRef):
        return {"id": function.id}, constants
    if isinstance(function, Blackbox):
        return {"blackbox": function.name}, constants
    if isinstance(function, Mapping):
        return dict(function), constants
    if callable(function):
        examples = {k: arrays.as_array(v) for k, v in {**at, **constants}.items()}
        program = cached_trace(function, **examples)
        return {"dsl": program.dsl}, {**program.constants, **constants}
    raise TypeError("function must be DSL text, a traced Program, a FunctionRef, a Blackbox, "
                    f"a {{'dsl'|'id'|'blackbox': ...}} dict or a Python function; got {type(function).__name__}")


def known_inputs(function) -> set[str] | None:
    """The names ``function`` can bind, where the SDK can tell (None: it cannot): the identifiers of
    DSL text, a (traced) Python function's parameters, a stored function's inputs, a black box's ``x``."""
    if isinstance(function, Program):  # its parameters, used or not, and the names its text reads
        return set(function.inputs) | known_inputs(function.dsl)
    if isinstance(function, Mapping):
        function = function.get("dsl")
    if isinstance(function, str):
        return set(re.findall(r"[A-Za-z_]\w*", function))
    if isinstance(function, FunctionRef):
        return set(function.inputs) or None
    if isinstance(function, Blackbox):
        return {"x"}
    if callable(function):
        try:
            return set(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            return None
    return None


def _unknown_keyword(endpoint: str, key: str, inputs: set[str], extra: dict) -> str:
    options = [*OPTIONS, *extra]
    close = difflib.get_close_matches(key, options, n=1)
    hint = f" (did you mean {close[0]}=?)" if close else ""
    return (f"{endpoint}() got an unknown keyword {key}={hint}: it is neither an option ({', '.join(options)}) "
            f"nor an input of the function")


def direction_dict(v, names: list[str]) -> dict:
    """``v`` as {name: direction}; a bare array is accepted when there is exactly one input."""
    if isinstance(v, Mapping):
        return dict(v)
    if len(names) != 1:
        raise TypeError(f"give v as {{name: direction}}: the function has inputs {names}")
    return {names[0]: v}
