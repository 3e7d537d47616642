"""scipy.optimize with derivd's derivatives: ``minimize``, ``least_squares``, ``root`` and ``Objective``.

    from derivd_client import scipy as dds
    from derivd_client.grpc_client import GrpcClient
    res = dds.minimize("sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)", x0, method="trust-ncg",
                       client=GrpcClient("127.0.0.1:50051"))
    res.x, res.nit, res.requests, res.server_seconds_per_iteration

``Objective(client, f, x0)`` is the building block for any scipy routine: the
function is sent once (a session, :mod:`derivd_client.session`: a gRPC stream
on a ``GrpcClient``, a stored function and unary requests on the REST
client); ``fun``, ``jac`` and ``value_and_grad`` share one request per point
(value and gradient come together and are cached for that point, so scipy's
``fun(x)`` then ``jac(x)`` costs one round trip); ``hessp`` and ``hess`` ride
the same session. For vector functions, ``residuals``, ``jacobian`` and
``value_and_jacobian`` do the same with the Jacobian.

scipy works on one flat vector: ``f`` has one differentiated input, named by
``name`` (default: a Python function's first parameter, else ``x``), shaped
like ``x0``; every other input is a constant (``constants={...}``).

The wrappers return scipy's ``OptimizeResult`` with derivd's counts added:
``requests`` (round trips, the session's opening included), ``server_seconds``
(the server's compile, queue and compute time), and both per iteration.
"""

from __future__ import annotations

import inspect

import numpy as np
import scipy.optimize as so

from .session import open_session

# Methods that use a Hessian-vector product, and those that need the whole Hessian.
HESSP_METHODS = ("newton-cg", "trust-ncg", "trust-krylov", "trust-constr")
HESS_METHODS = ("dogleg", "trust-exact")
NO_GRADIENT = ("nelder-mead", "powell", "cobyla", "cobyqa")


class Objective:
    """``f`` at flat points, through one session; value with gradient (or Jacobian) cached per point."""

    def __init__(self, client, f, x0, *, constants=None, name: str | None = None, mode: str | None = None):
        if name is None:
            name = next(iter(inspect.signature(f).parameters)) if callable(f) else "x"
        self.name = name
        self.x0 = np.asarray(x0, dtype=np.float64)
        options = {"constants": dict(constants or {}), "wrt": [name]}
        if mode:
            options["mode"] = mode
        self.session = open_session(client, f, {name: self.x0}, **options)
        self._point: bytes | None = None
        self._cached: tuple = ()

    @property
    def requests(self) -> int:
        return self.session.requests

    @property
    def server_seconds(self) -> float:
        return self.session.server_seconds

    def close(self) -> None:
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _remember(self, x, kind: str, compute):
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        key = kind.encode() + x.tobytes()
        if key != self._point:
            self._cached, self._point = compute(x), key
        return self._cached

    # ------------------------------------------------------------ a scalar f
    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """(f(x), ∇f(x)) from one request; for ``jac=True``."""
        value, grad = self._remember(x, "grad", self.session.value_and_grad)
        return float(value), grad.copy()

    def fun(self, x) -> float:
        return self.value_and_grad(x)[0]

    def jac(self, x) -> np.ndarray:
        return self.value_and_grad(x)[1]

    def hessp(self, x, p) -> np.ndarray:
        return self.session.hvp(np.asarray(x, dtype=np.float64).reshape(-1), np.asarray(p, dtype=np.float64))

    def hess(self, x) -> np.ndarray:
        return self.session.hessian(np.asarray(x, dtype=np.float64).reshape(-1))

    def value(self, x):
        """The value alone (for derivative-free methods): one request, no gradient computed."""
        return self.session.value(np.asarray(x, dtype=np.float64).reshape(-1))

    # ------------------------------------------------------------ a vector F (residuals, equations)
    def value_and_jacobian(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(F(x) flat, its m x n Jacobian) from one request; for ``root(jac=True)``."""
        value, jac = self._remember(x, "jacobian", self.session.value_and_jacobian)
        return value.copy(), jac.copy()

    def residuals(self, x) -> np.ndarray:
        return self.value_and_jacobian(x)[0]

    def jacobian(self, x) -> np.ndarray:
        return self.value_and_jacobian(x)[1]


def _client(client):
    if client is not None:
        return client, False
    from .client import Client

    return Client(), True


def _counted(res, objective: Objective):
    """scipy's result with derivd's counts, per iteration where scipy counts iterations."""
    res.requests = objective.requests
    res.server_seconds = objective.server_seconds
    iterations = res.get("nit") or res.get("nfev") or 1
    res.requests_per_iteration = objective.requests / iterations
    res.server_seconds_per_iteration = objective.server_seconds / iterations
    return res


def minimize(f, x0, method: str | None = None, *, client=None, constants=None, name: str | None = None,
             hessian: str | None = None, **scipy_kwargs) -> so.OptimizeResult:
    """``scipy.optimize.minimize`` of ``f`` (DSL text, a traced or Python function, a stored function)
    with derivd's gradient (``jac=True``: one request per point) and, for the methods that use one,
    its Hessian-vector products (``hessian="hessp"``) or Hessian (``hessian="hess"``, the default of
    dogleg and trust-exact). ``client`` defaults to ``Client()`` (REST at ``DERIVD_URL``)."""
    client, owned = _client(client)
    try:
        with Objective(client, f, x0, constants=constants, name=name) as obj:
            kind = (method or "").lower()
            kwargs = dict(scipy_kwargs)
            if kind in NO_GRADIENT:
                res = so.minimize(obj.value, obj.x0.reshape(-1), method=method, **kwargs)
                return _counted(res, obj)
            second = hessian or ("hess" if kind in HESS_METHODS else "hessp" if kind in HESSP_METHODS else None)
            if second == "hessp":
                kwargs.setdefault("hessp", obj.hessp)
            elif second == "hess":
                kwargs.setdefault("hess", obj.hess)
            res = so.minimize(obj.value_and_grad, obj.x0.reshape(-1), method=method, jac=True, **kwargs)
            return _counted(res, obj)
    finally:
        if owned:
            client.close()


def least_squares(residuals, x0, *, client=None, constants=None, name: str | None = None,
                  **scipy_kwargs) -> so.OptimizeResult:
    """``scipy.optimize.least_squares`` of the vector function ``residuals``, with derivd's Jacobian
    (each point's residuals and Jacobian from one request)."""
    client, owned = _client(client)
    try:
        with Objective(client, residuals, x0, constants=constants, name=name) as obj:
            res = so.least_squares(obj.residuals, obj.x0.reshape(-1), jac=obj.jacobian, **scipy_kwargs)
            return _counted(res, obj)
    finally:
        if owned:
            client.close()


def root(F, x0, method: str = "hybr", *, client=None, constants=None, name: str | None = None,
         **scipy_kwargs) -> so.OptimizeResult:
    """``scipy.optimize.root`` of ``F`` with derivd's Jacobian (``jac=True``: one request per point)."""
    client, owned = _client(client)
    try:
        with Objective(client, F, x0, constants=constants, name=name) as obj:
            res = so.root(obj.value_and_jacobian, obj.x0.reshape(-1), method=method, jac=True, **scipy_kwargs)
            return _counted(res, obj)
    finally:
        if owned:
            client.close()
