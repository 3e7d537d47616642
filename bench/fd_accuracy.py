"""Finite-difference accuracy and cost: derivd's engine beside numdifftools (when importable).

    python bench/fd_accuracy.py

Prints a markdown table: for each test function of issue 5 and each setting,
the relative error against the analytic derivative (max |error| / max |truth|),
the error estimate over the true error (max estimate / max error: how well the
estimate bounds the worst entry; the error floored at half an ulp of the
truth), and the distinct evaluations of f spent (in total and per coordinate;
per n² for a Hessian). numdifftools is a benchmark
peer only (``pip install numdifftools``), never a runtime dependency.
"""

from __future__ import annotations

import numpy as np

from derivd.engines.finite import FDOptions, gradient, hessian

try:
    import numdifftools as nd
except ImportError:  # the peer is optional
    nd = None

SETTINGS = [
    ("central 2 (plain)", FDOptions()),
    ("forward 1", FDOptions(method="forward", order=1)),
    ("central 4", FDOptions(order=4)),
    ("central 6 (high accuracy)", FDOptions(order=6)),
    ("central 2 + Richardson", FDOptions(extrapolation=True)),
]


def squire_trapp(x):
    return np.exp(x) / np.sqrt(np.sin(x) ** 3 + np.cos(x) ** 3)


def squire_trapp_d(x):
    s, c = np.sin(x), np.cos(x)
    return squire_trapp(x) * (1 - (3 * s * s * c - 3 * c * c * s) / (2 * (s**3 + c**3)))


def rosenbrock(x):
    """Extended Rosenbrock; x is (n,) or a batch (p, n)."""
    x = np.asarray(x)
    return np.sum(100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2, axis=-1)


def rosenbrock_grad(x):
    g = np.zeros_like(x)
    g[:-1] += -400 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2 * (1 - x[:-1])
    g[1:] += 200 * (x[1:] - x[:-1] ** 2)
    return g


def rosenbrock_hess(x):
    n = x.size
    h = np.zeros((n, n))
    for i in range(n - 1):
        h[i, i] += 1200 * x[i] ** 2 - 400 * x[i + 1] + 2
        h[i, i + 1] = h[i + 1, i] = -400 * x[i]
        h[i + 1, i + 1] += 200
    return h


START = np.tile([-1.2, 1.0], 10)

# (name, scalar f of a vector, truth, x, "gradient" | "hessian")
PROBLEMS = [
    ("exp at 1", lambda x: np.exp(x[..., 0]), lambda x: np.exp(x), np.array([1.0]), "gradient"),
    ("sin at 0.5", lambda x: np.sin(x[..., 0]), np.cos, np.array([0.5]), "gradient"),
    ("sin at 1", lambda x: np.sin(x[..., 0]), np.cos, np.array([1.0]), "gradient"),
    ("sin at 2", lambda x: np.sin(x[..., 0]), np.cos, np.array([2.0]), "gradient"),
    ("Squire–Trapp at 1.5", lambda x: squire_trapp(x[..., 0]), squire_trapp_d, np.array([1.5]), "gradient"),
    ("Rosenbrock n=20, gradient", rosenbrock, rosenbrock_grad, START, "gradient"),
    ("Rosenbrock n=20, Hessian", rosenbrock, rosenbrock_hess, START, "hessian"),
]


def measure(derivative, estimate, truth):
    error = np.abs(derivative - truth)
    scale = np.abs(truth).max()
    ratio = None if estimate is None else float(np.max(estimate) / max(error.max(), 0.5 * np.spacing(scale)))
    return error.max() / scale, ratio


def derivd_row(f, truth, x, kind, opts):
    batched = lambda X: f(X)[:, None]  # noqa: E731 - (p, n) -> (p, 1)
    run = gradient if kind == "gradient" else hessian
    result = run(batched, x, opts, budget=10**7)
    return (*measure(result.derivative, result.error, truth(x)), result.evaluations)


def numdifftools_row(f, truth, x, kind):
    calls = 0

    def counted(z):
        nonlocal calls
        calls += 1
        return f(np.atleast_1d(z))

    if kind == "gradient":
        peer = nd.Derivative if x.size == 1 else nd.Gradient
        result = peer(counted, full_output=True)(x[0] if x.size == 1 else x)  # (value, error estimate, ...)
        derivative, estimate = np.atleast_1d(result[0]), np.atleast_1d(result[1])
    else:
        derivative, estimate = nd.Hessian(counted)(x), None
    return (*measure(derivative, estimate, truth(x)), calls)


def main() -> None:
    print("| function | method | rel. error | estimate / error | evaluations | per coordinate |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, f, truth, x, kind in PROBLEMS:
        rows = [(f"derivd {label}", derivd_row(f, truth, x, kind, opts)) for label, opts in SETTINGS]
        if nd is not None:
            rows.append(("numdifftools (default)", numdifftools_row(f, truth, x, kind)))
        per = x.size**2 if kind == "hessian" else x.size
        for method, (relative, ratio, evaluations) in rows:
            shown = "–" if ratio is None else f"{ratio:.1f}"
            print(f"| {name} | {method} | {relative:.1e} | {shown} | {evaluations} | {evaluations / per:.1f} |")
    if nd is None:
        print("\n(numdifftools is not importable here: `pip install numdifftools` to compare)")


if __name__ == "__main__":
    main()
