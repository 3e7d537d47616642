"""The endpoint table: one row per endpoint, and everything that lists endpoints reads it.

REST's routes and OpenAPI document (``gateway``), gRPC's unary methods
(``grpc_api``), the worker pool a request goes to (``dispatch``), what the
worker accepts, and what the core checks and runs all derive from ``ENDPOINTS``.
Adding an endpoint is one row here plus its request model (``core.schemas``)
and its proto messages. A name not in the table is refused (``endpoint``),
never given a default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from derivd.core import derivatives, schemas, taylor_mode
from derivd.engines import finite_answers as fd
from derivd.errors import NotFound


@dataclass(frozen=True)
class Endpoint:
    """One endpoint.

    ``family``: the engine family (worker pool) of mode ``auto``; an explicit mode names its own.
    ``compute(prepared) -> (response, compile seconds)``: the answer by AD or Taylor series.
    ``finite(prepared) -> response``: the answer by finite differences (mode ``finite``, black
    boxes); None where that is refused. ``verify(prepared, response) -> verification``: None where
    ``verify`` does not apply. ``reads``: the request data ``core.prepare`` checks for it ("v",
    "v|vs", "u", "order"); ``scalar``: it needs a one-element output; ``differentiates``: False
    for ``evaluate``, which every mode answers alike. ``rpc``: its method in ``derivd.v1``, whose
    response message is ``<rpc>Response``. ``bind(fn, wrt) -> (run, compile seconds)``: the answer in
    modes ``auto`` and ``reverse`` bound to a compiled function and its checked ``wrt``, for an
    endpoint that reads nothing but the point: ``run(fn, values) -> response`` is all a warm request of
    a kind without ``verify`` costs (``core.service``); None: ``compute`` answers every request."""

    name: str
    schema: type
    family: str
    compute: Callable
    finite: Callable | None
    verify: Callable | None
    rpc: str
    reads: tuple[str, ...] = ()
    scalar: bool = False
    differentiates: bool = True
    bind: Callable | None = None


ENDPOINTS: dict[str, Endpoint] = {row.name: row for row in (
    Endpoint("evaluate", schemas.EvaluateRequest, "forward", derivatives.evaluate, None, None, "Evaluate",
             differentiates=False),
    Endpoint("gradient", schemas.GradientRequest, "reverse", derivatives.gradient, fd.gradient, fd.verify_gradient,
             "Gradient", scalar=True, bind=derivatives.bound_gradient),
    Endpoint("jacobian", schemas.JacobianRequest, "forward", derivatives.jacobian, fd.jacobian, fd.verify_jacobian,
             "Jacobian"),
    Endpoint("jvp", schemas.JvpRequest, "forward", derivatives.jvp, fd.jvp, fd.verify_jvp, "Jvp", reads=("v",)),
    Endpoint("vjp", schemas.VjpRequest, "reverse", derivatives.vjp, fd.vjp, fd.verify_vjp, "Vjp", reads=("u",)),
    Endpoint("hvp", schemas.HvpRequest, "reverse", derivatives.hvp, fd.hvp, fd.verify_hvp, "Hvp",
             reads=("v|vs",), scalar=True),
    Endpoint("hessian", schemas.HessianRequest, "reverse", derivatives.hessian, fd.hessian, fd.verify_hessian,
             "Hessian", scalar=True),
    Endpoint("taylor", schemas.TaylorRequest, "taylor", taylor_mode.taylor, None, None, "Taylor",
             reads=("v", "order")),
    Endpoint("derivatives", schemas.DerivativesRequest, "taylor", taylor_mode.derivatives, None, None,
             "Derivatives", reads=("order",)),
)}


def endpoint(name: str) -> Endpoint:
    """The row of ``name``; an unknown name is a 404, never a default."""
    row = ENDPOINTS.get(name)
    if row is None:
        raise NotFound(f"unknown endpoint {name!r}; one of {', '.join(ENDPOINTS)}", code="unknown_endpoint",
                       endpoint=name)
    return row
