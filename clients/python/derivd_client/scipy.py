"""scipy.optimize with derivd's derivatives: ``minimize``, ``least_squares``, ``root`` and ``Objective``.

    from derivd_client import scipy as dds
    from derivd_client.grpc_client import GrpcClient
    res = dds.minimize("sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)", x0, method="trust-ncg",
                       client=GrpcClient("127.0.0.1:50051"))
    res.x, res.nit, res.requests, res.server_seconds_per_iteration

``Objective(client, f, x0)`` is the building block for any scipy routine: the
function is sent once (a session, :mod:`derivd_client.session`: a gRPC stream
on a ``GrpcClient``, a stored function and unary requests on the REST
client), and on a ``GrpcClient`` the session's opening also answers the first
point, ``x0``, where every scipy routine starts (``first``: what is asked there,
set by the wrappers for their method); ``fun``, ``jac`` and ``value_and_grad`` share one request per point
(value and gradient come together and are cached for that point, so scipy's
``fun(x)`` then ``jac(x)`` costs one round trip); ``hessp`` and ``hess`` ride
the same session. ``hessp`` multiplies by the point's whole Hessian, fetched
once with its value and gradient, up to ``DENSE_HESSP_MAX_N`` inputs, and asks
for each product beyond (``Objective(..., hessp="auto"|"dense"|"stream")``).
For vector functions, ``residuals``, ``jacobian`` and ``value_and_jacobian`` do
the same with the Jacobian.

scipy works on one flat vector: ``f`` has one differentiated input, named by
``name`` (default: a Python function's first parameter, else ``x``), shaped
like ``x0``; every other input is a constant (``constants={...}``).

The wrappers return scipy's ``OptimizeResult`` with derivd's counts added:
``requests`` (round trips, the session's opening included: on a ``GrpcClient``
it answers ``x0``, so ``jac=True`` costs ``nfev`` requests), ``server_seconds``
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


# ``hessp="auto"`` multiplies by the whole Hessian up to this many inputs, one Hessian per point instead
# of one round trip per step of scipy's CG (5-10 steps an iteration on Rosenbrock, more when the
# problem is ill-conditioned). Measured on loopback gRPC: at n = 100 a Hessian answer (80 kB) costs
# about 1.5 HVP round trips, at n = 300 (720 kB) 3-5, at n = 500 (2 MB) 10-15, mostly moving and
# decoding the bytes. Past the bound, each product is one round trip.
DENSE_HESSP_MAX_N = 300
HESSP_POLICIES = ("auto", "stream", "dense")
# Points whose answers are kept: trust-constr asks for products at its iterate after trying a step.
POINTS_KEPT = 2
# ``Objective(first=...)`` -> the session's ``opening``: what it computes at x0 (the value at least).
FIRST = {None: None, "value": "value", "grad": "gradient", "hess": "hessian", "jacobian": "jacobian"}


def _dense(hessp: str, n: int) -> bool:
    """Whether the products of policy ``hessp`` at ``n`` inputs are made with the whole Hessian."""
    return hessp == "dense" or (hessp == "auto" and n <= DENSE_HESSP_MAX_N)


class Objective:
    """``f`` at flat points, through one session; what is known at the last two points is cached.

    ``hessp`` chooses how Hessian-vector products are made: ``"stream"`` asks the server for each H v
    (one round trip per product); ``"dense"`` fetches the Hessian once per point and multiplies
    locally; ``"auto"`` (the default) is dense for n <= ``DENSE_HESSP_MAX_N`` inputs, else stream.
    The server's Hessian is exact (batched or colour-compressed HVPs, not finite differences), so
    ``H @ p`` equals its HVP up to rounding. Once the whole Hessian is wanted (``with_hessian``: set
    by the first ``hess`` or dense ``hessp``), each new point's request is the Hessian's, which
    answers value, gradient and Hessian together: one round trip per point, whatever scipy asks of
    it (the points of a line search or a rejected trust-region step get a Hessian they do not use).

    ``first`` is what the routine asks first, at ``x0``: ``"value"``, ``"grad"``, ``"hess"`` (value, gradient
    and Hessian) or ``"jacobian"``; the session's opening computes it there and answers that request
    without a round trip (None: the opening's value is not used). ``"hess"`` sets ``with_hessian``.
    """

    def __init__(self, client, f, x0, *, constants=None, name: str | None = None, mode: str | None = None,
                 hessp: str = "auto", first: str | None = None):
        if hessp not in HESSP_POLICIES:
            raise ValueError(f"hessp must be one of {HESSP_POLICIES}, got {hessp!r}")
        if first not in FIRST:
            raise ValueError(f"first must be one of {tuple(FIRST)}, got {first!r}")
        if name is None:
            name = next(iter(inspect.signature(f).parameters)) if callable(f) else "x"
        self.name = name
        self.x0 = np.asarray(x0, dtype=np.float64)
        options = {"constants": dict(constants or {}), "wrt": [name]}
        if mode:
            options["mode"] = mode
        self.session = open_session(client, f, {name: self.x0}, opening=FIRST[first], **options)
        self.dense_hessp = _dense(hessp, self.session.n)
        # Whether each new point's request is the Hessian's (value, gradient and Hessian in one answer):
        # set by the first ``hess`` or dense ``hessp``, or beforehand by ``minimize`` for methods that use them.
        self.with_hessian = first == "hess"
        self._known: dict[bytes, dict] = {}  # the last POINTS_KEPT points: what is known at each

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

    def _at(self, x, need: str) -> dict:
        """What is known at ``x`` (a dict of value, grad, hess or jacobian), fetching ``need`` if missing."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        key = x.tobytes()
        known = self._known.pop(key, {})
        if need not in known:
            if need == "jacobian":
                value, jac = self.session.value_and_jacobian(x)
                known = {"value": value, "jacobian": jac}
            elif need == "hess" or self.with_hessian:
                value, grad, hess = self.session.value_grad_and_hessian(x)
                known = {"value": value, "grad": grad, "hess": hess}
            else:
                value, grad = self.session.value_and_grad(x)
                known = {"value": value, "grad": grad}
        self._known[key] = known  # the most recent last
        while len(self._known) > POINTS_KEPT:
            del self._known[next(iter(self._known))]
        return known

    # ------------------------------------------------------------ a scalar f
    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        """(f(x), ∇f(x)) from one request; for ``jac=True``."""
        known = self._at(x, "grad")
        return float(known["value"]), known["grad"].copy()

    def fun(self, x) -> float:
        return self.value_and_grad(x)[0]

    def jac(self, x) -> np.ndarray:
        return self.value_and_grad(x)[1]

    def hessp(self, x, p) -> np.ndarray:
        """H(x) p: the cached Hessian times ``p`` (dense), or one request (stream)."""
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if self.dense_hessp:
            return self._hessian(x) @ p
        return self.session.hvp(np.asarray(x, dtype=np.float64).reshape(-1), p)

    def hess(self, x) -> np.ndarray:
        """The n x n Hessian, fetched with the value and gradient once per point."""
        return self._hessian(x).copy()

    def _hessian(self, x) -> np.ndarray:
        self.with_hessian = True
        return self._at(x, "hess")["hess"]

    def value(self, x):
        """The value alone (for derivative-free methods): one request, no gradient computed."""
        return self.session.value(np.asarray(x, dtype=np.float64).reshape(-1))

    # ------------------------------------------------------------ a vector F (residuals, equations)
    def value_and_jacobian(self, x) -> tuple[np.ndarray, np.ndarray]:
        """(F(x) flat, its m x n Jacobian) from one request; for ``root(jac=True)``."""
        known = self._at(x, "jacobian")
        return known["value"].copy(), known["jacobian"].copy()

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
             hessian: str | None = None, hessp="auto", **scipy_kwargs) -> so.OptimizeResult:
    """``scipy.optimize.minimize`` of ``f`` (DSL text, a traced or Python function, a stored function)
    with derivd's gradient (``jac=True``: one request per point) and, for the methods that use one,
    its Hessian-vector products (``hessian="hessp"``) or Hessian (``hessian="hess"``, the default of
    dogleg and trust-exact). ``hessp`` is :class:`Objective`'s policy for the products (``"auto"``,
    ``"stream"``, ``"dense"``), or a callable of your own that scipy then calls instead.
    ``client`` defaults to ``Client()`` (REST at ``DERIVD_URL``)."""
    client, owned = _client(client)
    kwargs = dict(scipy_kwargs)
    if callable(hessp):
        kwargs["hessp"], hessp = hessp, "auto"
    kind = (method or "").lower()
    second = hessian or ("hess" if kind in HESS_METHODS else "hessp" if kind in HESSP_METHODS else None)
    if second == "hessp" and "hessp" not in kwargs:  # dense products: a Hessian per point
        with_hessian = _dense(hessp, np.size(x0))
    else:
        with_hessian = second == "hess" and "hess" not in kwargs
    first = "value" if kind in NO_GRADIENT else "hess" if with_hessian else "grad"
    try:
        with Objective(client, f, x0, constants=constants, name=name, hessp=hessp, first=first) as obj:
            if kind in NO_GRADIENT:
                res = so.minimize(obj.value, obj.x0.reshape(-1), method=method, **kwargs)
                return _counted(res, obj)
            if second == "hessp" and "hessp" not in kwargs:
                kwargs["hessp"] = obj.hessp
            elif second == "hess" and "hess" not in kwargs:
                kwargs["hess"] = obj.hess
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
        with Objective(client, residuals, x0, constants=constants, name=name, first="jacobian") as obj:
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
        with Objective(client, F, x0, constants=constants, name=name, first="jacobian") as obj:
            res = so.root(obj.value_and_jacobian, obj.x0.reshape(-1), method=method, jac=True, **scipy_kwargs)
            return _counted(res, obj)
    finally:
        if owned:
            client.close()
