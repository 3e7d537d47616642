"""Independent references shared by the tests, none of them using derivd.

* closed forms written by hand in numpy (extended Rosenbrock: value, gradient, Hessian);
* finite differences: the 8th-order central stencils (first and second derivative) and a
  Jacobian of any numpy function by them;
* sample draws: arguments drawn as a primitive's sweep hint says (``Primitive.sample``, see
  ops/registry.py), from a numpy Generator or from hypothesis.
"""

from __future__ import annotations

import math

import numpy as np

ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"  # extended Rosenbrock, as DSL text


def rosenbrock(x):
    return np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def rosenbrock_gradient(x):
    g = np.zeros_like(x)
    d = x[1:] - x[:-1] ** 2
    g[:-1] = -400 * x[:-1] * d - 2 * (1 - x[:-1])
    g[1:] += 200 * d
    return g


def rosenbrock_hessian(x):
    """Tridiagonal: 1200 x_i² - 400 x_{i+1} + 2 (+200 past the first) on the diagonal, -400 x_i beside it."""
    n = len(x)
    h = np.zeros((n, n))
    i = np.arange(n - 1)
    h[i, i] += 1200 * x[:-1] ** 2 - 400 * x[1:] + 2
    h[i + 1, i + 1] += 200
    h[i, i + 1] = h[i + 1, i] = -400 * x[:-1]
    return h


# ---------------------------------------------------------------- finite differences

# Central differences on the points k h, k = -4..4: error O(h^8) for the first derivative, and for the
# second (the standard 9-point stencils).
OFFSETS = np.arange(-4, 5)
FIRST_DERIVATIVE = np.array([1 / 280, -4 / 105, 1 / 5, -4 / 5, 0.0, 4 / 5, -1 / 5, 4 / 105, -1 / 280])
SECOND_DERIVATIVE = np.array([-1 / 560, 8 / 315, -1 / 5, 8 / 5, -205 / 72, 8 / 5, -1 / 5, 8 / 315, -1 / 560])


def central_difference(f, h: float, order: int = 1):
    """d^order/dt^order f(t) at t = 0 by the 8th-order stencil on ``f(k h)``. ``f`` returns an array,
    or a list of arrays (then a list comes back, one derivative each)."""
    weights = FIRST_DERIVATIVE if order == 1 else SECOND_DERIVATIVE
    values = [f(k * h) for k in OFFSETS]
    if isinstance(values[0], list):
        return [sum(w * v[i] for w, v in zip(weights, values) if w) / h ** order for i in range(len(values[0]))]
    return sum(w * np.asarray(v, dtype=np.float64) for w, v in zip(weights, values) if w) / h ** order


def taylor_coefficients(f, order: int, h: float = 0.02, half: int = 6) -> list:
    """c_0..c_order of f(t) = Σ c_k t^k at t = 0: the polynomial through f(j h), j = -half..half (degree
    2 half, error O(h^(2 half + 1 - k)) in c_k). ``f`` returns an array."""
    t = h * np.arange(-half, half + 1)
    values = np.stack([np.asarray(f(ti), dtype=np.float64) for ti in t])
    inverse = np.linalg.inv(np.vander(np.arange(-half, half + 1.0), increasing=True))  # on j, then scaled by h^k
    coefficients = np.tensordot(inverse, values, axes=(1, 0))
    return [coefficients[k] / h ** k for k in range(order + 1)]


def flat_point(at: dict) -> tuple[np.ndarray, list]:
    """The inputs of ``at`` as one flat float vector, and their shapes."""
    arrays = [np.asarray(v, dtype=np.float64) for v in at.values()]
    return np.concatenate([a.reshape(-1) for a in arrays]), [a.shape for a in arrays]


def unflatten(x: np.ndarray, names, shapes) -> dict:
    out, start = {}, 0
    for name, s in zip(names, shapes):
        size = math.prod(s)
        out[name] = x[start:start + size].reshape(s)
        start += size
    return out


def fd_jacobian(f, at: dict, step: float = 1e-3) -> np.ndarray:
    """(m, n) Jacobian of ``f(**inputs)`` (numpy) over the flattened inputs of ``at``, 8th order.
    ``f`` may return an array or a list of arrays (flattened and joined in order); the step is
    ``step`` relative to each coordinate (absolute below 1)."""
    x0, shapes = flat_point(at)
    names = list(at)

    def g(x):
        out = f(**unflatten(x, names, shapes))
        parts = out if isinstance(out, (list, tuple)) else [out]
        return np.concatenate([np.reshape(np.asarray(p, dtype=np.float64), -1) for p in parts])

    cols = []
    for j in range(x0.size):
        h = step * max(1.0, abs(x0[j]))
        e = np.zeros_like(x0)
        e[j] = 1.0
        cols.append(central_difference(lambda t: g(x0 + t * e), h))
    return np.stack(cols, axis=1) if cols else np.zeros((g(x0).size, 0))


# ---------------------------------------------------------------- sample draws


DIFFERENTIATED = ("real", "distinct", "invertible", "spd", "spread", "symmetric")  # the spec kinds of float arguments; the rest are constants


class NumpyDraws:
    """Random numbers for ``sample`` from a numpy Generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def reals(self, shape, intervals) -> np.ndarray:
        """Uniform on a union of (lo, hi) intervals: an interval per element, then a point in it."""
        bounds = np.array(intervals, dtype=np.float64)
        pick = self.rng.integers(len(bounds), size=shape)
        lo, hi = bounds[pick, 0], bounds[pick, 1]
        return lo + (hi - lo) * self.rng.random(shape)

    def permutation(self, n: int) -> np.ndarray:
        return self.rng.permutation(n)

    def booleans(self, shape) -> np.ndarray:
        return self.rng.random(shape) < 0.5

    def integers(self, lo: int, hi: int, shape) -> np.ndarray:
        """Integers in [lo, hi)."""
        return self.rng.integers(lo, hi, size=shape)


class HypothesisDraws:
    """Random numbers for ``sample`` drawn by hypothesis (``st.data()``), which shrinks and tries edges."""

    def __init__(self, data):
        self.data = data

    def reals(self, shape, intervals) -> np.ndarray:
        from hypothesis import strategies as st
        from hypothesis.extra import numpy as hnp

        elements = st.one_of(*[st.floats(lo, hi) for lo, hi in intervals])
        return self.data.draw(hnp.arrays(np.float64, shape, elements=elements))

    def permutation(self, n: int) -> np.ndarray:
        from hypothesis import strategies as st

        return np.array(self.data.draw(st.permutations(range(n))), dtype=np.int64)

    def booleans(self, shape) -> np.ndarray:
        from hypothesis.extra import numpy as hnp

        return self.data.draw(hnp.arrays(np.bool_, shape))

    def integers(self, lo: int, hi: int, shape) -> np.ndarray:
        from hypothesis import strategies as st
        from hypothesis.extra import numpy as hnp

        return self.data.draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, hi - 1)))


def sample(spec, draws) -> np.ndarray:
    """An argument drawn as the registry's sample spec says (ops/registry.py, "sweep hints"), from
    ``draws`` (``NumpyDraws`` or ``HypothesisDraws``)."""
    kind, shape = spec[0], tuple(spec[1])
    if kind in ("real", "fixed"):
        return draws.reals(shape, spec[2])
    if kind == "distinct":  # ranks spread over (lo, hi), jittered by under half a gap: no ties
        lo, hi = spec[2]
        n = math.prod(shape)
        rank = draws.permutation(n).astype(np.float64)
        jitter = draws.reals((n,), [(0.0, 0.5)])
        return (lo + (hi - lo) * (rank + jitter) / n).reshape(shape)
    if kind == "invertible":  # ||0.5 r|| <= 1.5: singular values >= 1; the first row's sign gives both signs of det
        r = draws.reals(shape, [(-1.0, 1.0)])
        a = 2.5 * np.eye(shape[-1]) + 0.5 * r
        a[..., 0, :] *= np.where(r[..., :1, 0] > 0, -1.0, 1.0)
        return a
    if kind == "spread":  # U diag(s) Vᵀ with singular values spread over (lo, hi) as "distinct" spreads them
        m, n = shape[-2:]
        k = min(m, n)
        u = np.linalg.qr(draws.reals(shape[:-2] + (m, k), [(-1.0, 1.0)]) + 2 * np.eye(m, k))[0]
        v = np.linalg.qr(draws.reals(shape[:-2] + (n, k), [(-1.0, 1.0)]) + 2 * np.eye(n, k))[0]
        s = sample(("distinct", shape[:-2] + (k,), spec[2]), draws)
        return (u * s[..., None, :]) @ np.swapaxes(v, -1, -2)
    if kind == "symmetric":  # Q diag(w) Qᵀ, the eigenvalues w spread as "distinct" spreads them
        q = np.linalg.qr(draws.reals(shape, [(-1.0, 1.0)]) + 2 * np.eye(shape[-1]))[0]
        w = sample(("distinct", shape[:-1], spec[2]), draws)
        return (q * w[..., None, :]) @ np.swapaxes(q, -1, -2)
    if kind == "spd":
        r = draws.reals(shape, [(-1.0, 1.0)])
        return r @ np.swapaxes(r, -1, -2) / shape[-1] + np.eye(shape[-1])
    if kind == "mask":
        return draws.booleans(shape)
    if kind == "index":
        return draws.integers(-spec[2], spec[2], shape)
    raise AssertionError(f"unknown sample spec {spec!r}")
