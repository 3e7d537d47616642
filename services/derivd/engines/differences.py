"""Finite differences for the endpoints: of a DSL program (``mode: "finite"``),
of a registered black box, and as the independent check behind ``verify``.

The FD engine (``finite.py``) needs only a batched callable ``F(X) -> Y`` over
flat points; this module provides one for a compiled program (each row split
into the ``wrt`` inputs, the other inputs held fixed) and maps endpoint
requests onto the engine's gradient, Jacobian, JVP, Hessian and HVP.

Verification compares an AD answer D with the FD answer F and its per-entry
error estimate E: an entry passes when |D - F| <= 10 E + 1e-13 max|F| (ten
times the estimate, since an honest estimate is within 10x of the true error;
the small floor admits rounding where E is 0), or, where the engine gives no
estimate, when the relative discrepancy is at most 1e-6.
"""

from __future__ import annotations

import numpy as np

from derivd.engines import finite
from derivd.engines.common import Wrt, check_deadline

VERIFY_SAFETY = 10.0


def options(fd: dict | None) -> finite.FDOptions:
    fd = fd or {}
    return finite.FDOptions(method=fd.get("method", "central"), order=fd.get("order", 2),
                            step=fd.get("step"), extrapolation=bool(fd.get("extrapolation", False)))


def require_budget(work: dict[str, int], n: int, fd: dict | None, budget: int) -> None:
    """Refuse, before anything is evaluated, an answer made of several FD derivatives in ``n``
    variables: ``work`` maps a kind to how many of it (a Hessian's gradient too, one HVP per direction)."""
    opts = options(fd)
    planned = sum(count * finite.plan_evaluations(kind, n, opts) for kind, count in work.items())
    finite.require_budget(" and ".join(f"{count} {kind}" if count > 1 else kind for kind, count in work.items()),
                          planned, budget)


def program_points(fn, values: dict, wrt: Wrt):
    """A batched callable over flat points of the ``wrt`` inputs of a compiled program."""
    tape, _ = fn.eval_tape()
    fixed = dict(values)

    def evaluate(X: np.ndarray) -> np.ndarray:
        rows = []
        for x in np.atleast_2d(X):
            check_deadline()
            point = dict(fixed)
            point.update(zip(wrt.names, wrt.split(x)))
            (y,) = fn.run(tape, point)
            rows.append(np.asarray(y, dtype=np.float64).reshape(-1))
        return np.stack(rows)

    return evaluate


def derivative(kind: str, F, x: np.ndarray, fd: dict | None, budget: int, v: np.ndarray | None = None,
               pattern: tuple | None = None) -> finite.FDResult:
    """One FD derivative of ``F`` at flat ``x``: gradient, jacobian, jvp (along v), hvp (along v) or hessian.

    ``pattern`` (rows, cols, colours or None) lets a Jacobian perturb each colour's columns together.
    """
    opts = options(fd)
    if kind == "gradient":
        return finite.gradient(F, x, opts, budget=budget)
    if kind == "jacobian":
        if pattern is None:
            return finite.jacobian(F, x, opts, budget=budget)
        rows, cols, colors = pattern
        return finite.jacobian(F, x, opts, budget=budget, pattern=(rows, cols), colors=colors)
    if kind == "jvp":
        return finite.jvp(F, x, v, opts, budget=budget)
    if kind == "hvp":
        return finite.hvp(F, x, v, opts, budget=budget)
    if kind == "hessian":
        return finite.hessian(F, x, opts, budget=budget)
    raise ValueError(f"no finite-difference derivative {kind!r}")


def verification(ad: np.ndarray, fd: finite.FDResult, fd_value=None, fd_error=None) -> dict:
    """Compare an AD answer with an FD one: the contract's ``verification`` object."""
    got = np.asarray(ad, dtype=np.float64)
    want = np.asarray(fd.derivative if fd_value is None else fd_value, dtype=np.float64)
    err = np.asarray(fd.error if fd_error is None else fd_error, dtype=np.float64)
    diff = np.abs(got - want)
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    max_abs = float(np.max(diff)) if diff.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    if err.size and np.all(np.isfinite(err)):
        passed = bool(np.all(diff <= VERIFY_SAFETY * err + 1e-13 * scale))
    else:
        passed = max_rel <= 1e-6
    return {"max_abs_err": max_abs, "max_rel_err": max_rel, "passed": passed,
            "fd_error_estimate": float(np.max(err)) if err.size else 0.0, "fd_evaluations": fd.evaluations}
