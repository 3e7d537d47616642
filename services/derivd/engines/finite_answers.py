"""Endpoint answers by finite differences: ``mode: "finite"``, black boxes, and ``verify``.

The three finite-difference modules, from the bottom: ``stencils`` gives the
weights of a derivative on a grid and their error terms; ``finite`` computes
derivatives of a batched callable ``F(X) -> Y`` along lines, with error
estimates; this module answers an endpoint with them. It provides ``F`` for a
compiled program (each row split into the ``wrt`` inputs, the other inputs held
fixed), maps each endpoint onto the engine's gradient, Jacobian, JVP, Hessian
and HVP (one function per endpoint, named in ``core.endpoints``), refuses
work over the FD budget before any evaluation, and checks an AD answer
against FD (``verify_*``).

Each answer function reads a prepared request (``core.prepare.Prepared``):
its ``points`` (``F``), ``slots``, ``values``, ``fd`` options, directions,
cotangent and settings.

Verification compares an AD answer D with the FD answer F and its per-entry
error estimate E: an entry passes when |D - F| <= 10 E + 1e-13 max|F| (ten
times the estimate, since an honest estimate is within 10x of the true error;
the small floor admits rounding where E is 0), or, where the engine gives no
estimate, when the relative discrepancy is at most 1e-6.
"""

from __future__ import annotations

import numpy as np

from derivd.engines import coloring, finite, sparse
from derivd.engines.common import Wrt, check_deadline, require_dense
from derivd.errors import ShapeError, ValidationFailed

VERIFY_SAFETY = 10.0
FD_WHOLE = "finite differences build it whole (a program's sparse answer needs an AD mode)"


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


# ---------------------------------------------------------------- patterns a Jacobian may be coloured by

def program_pattern(fn, values, slots: Wrt, settings):
    """A program's detected Jacobian pattern and its column colouring, when colouring saves evaluations."""
    plan = sparse.jacobian_plan(fn, values, slots, "forward", settings)
    if plan.pattern is None or plan.ncolors >= slots.n:
        return None
    coo = plan.pattern.tocoo()
    return coo.row.astype(np.int64), coo.col.astype(np.int64), plan.colors


def caller_pattern(pattern: dict | None, shape: tuple[int, int]):
    """A black box's Jacobian pattern as the caller gave it (checked, then coloured), or None."""
    if pattern is None:
        return None
    rows = np.asarray(pattern["rows"], dtype=np.int64)
    cols = np.asarray(pattern["cols"], dtype=np.int64)
    if rows.shape != cols.shape:
        raise ShapeError("pattern rows and cols must have one length",
                         shapes=[list(rows.shape), list(cols.shape)], field="pattern")
    if rows.size and (rows.min() < 0 or rows.max() >= shape[0] or cols.min() < 0 or cols.max() >= shape[1]):
        raise ValidationFailed(f"pattern has an entry outside the Jacobian's shape {list(shape)}", field="pattern")
    rows, cols = np.unique(np.stack([rows, cols]), axis=1) if rows.size else (rows, cols)
    return rows, cols, coloring.color_columns(rows, cols, shape)


# ---------------------------------------------------------------- answers, one per endpoint

def _x(p) -> np.ndarray:
    return p.slots.join([p.values[n] for n in p.slots.names], ())


def _split(p, flat) -> dict[str, np.ndarray]:
    return dict(zip(p.slots.names, p.slots.split(np.asarray(flat))))


def _answer(out: dict, r: finite.FDResult) -> dict:
    out["fd"] = {"evaluations": r.evaluations, "max_error_estimate": float(np.max(r.error, initial=0.0))}
    return out


def _one(p, kind: str, v=None, pattern=None) -> finite.FDResult:
    return derivative(kind, p.points, _x(p), p.fd, p.settings.fd_max_evaluations, v, pattern)


def gradient(p) -> dict:
    r = _one(p, "gradient")
    return _answer({"engine": "finite", "value": float(r.value[0]), "gradient": _split(p, r.derivative)}, r)


def jacobian(p) -> dict:
    """Dense, or coloured by the program's or the caller's pattern (COO with ``sparse``)."""
    m, n = p.m, p.slots.n
    require_dense(m, n, "dense Jacobian", p.settings, FD_WHOLE)  # before any pattern detection
    pattern = p.jacobian_pattern()
    r = _one(p, "jacobian", pattern=pattern)
    out = {"engine": "finite", "value": r.value, "jacobian": r.derivative, "shape": [m, n]}
    if pattern is not None:
        rows, cols, colors = pattern
        out["sparsity"] = {"nnz": int(rows.size), "colors": int(colors.max()) + 1}
        if p.sparse:
            out["jacobian"] = {"rows": rows, "cols": cols, "values": r.derivative[rows, cols], "shape": [m, n]}
    elif p.sparse:
        rows, cols = np.nonzero(r.derivative)
        out["jacobian"] = {"rows": rows, "cols": cols, "values": r.derivative[rows, cols], "shape": [m, n]}
    return _answer(out, r)


def vjp(p) -> dict:
    require_dense(p.m, p.slots.n, "dense Jacobian", p.settings, FD_WHOLE)
    r = _one(p, "jacobian")
    out = {"engine": "finite", "value": r.value, "vjp": _split(p, p.u @ r.derivative)}
    r.error = np.abs(p.u) @ r.error
    return _answer(out, r)


def jvp(p) -> dict:
    r = _one(p, "jvp", p.directions[0])
    return _answer({"engine": "finite", "value": r.value, "jvp": r.derivative}, r)


def hvp(p) -> dict:
    require_budget({"hvp": len(p.directions)}, p.slots.n, p.fd, p.settings.fd_max_evaluations)
    results = [_one(p, "hvp", v) for v in p.directions]
    r = results[0]
    out = {"engine": "finite", "value": float(r.value[0])}
    if p.many:
        out["hvps"] = [_split(p, q.derivative) for q in results]
    else:
        out["hvp"] = _split(p, r.derivative)
    r.evaluations = sum(q.evaluations for q in results)
    r.error = np.max([q.error for q in results], axis=0)
    return _answer(out, r)


def hessian(p) -> dict:
    n = p.slots.n
    require_budget({"hessian": 1, "gradient": 1}, n, p.fd, p.settings.fd_max_evaluations)
    require_dense(n, n, "dense Hessian", p.settings, FD_WHOLE)
    g = _one(p, "gradient")
    r = _one(p, "hessian")
    out = {"engine": "finite", "value": float(r.value[0]), "gradient": _split(p, g.derivative),
           "hessian": r.derivative}
    r.evaluations += g.evaluations
    return _answer(out, r)


# ---------------------------------------------------------------- verify: an AD answer against FD

def require_verifiable(p) -> None:
    """Refuse ``verify`` whose finite differences would pass the FD budget or build a dense matrix
    over the entries limit, before anything is computed."""
    n = p.slots.n
    kind = {"vjp": "jacobian"}.get(p.endpoint, p.endpoint)
    count = len(p.directions) if p.endpoint == "hvp" else 1
    require_budget({kind: count}, n, p.fd, p.settings.fd_max_evaluations)
    if kind in ("jacobian", "hessian"):
        require_dense(p.m if kind == "jacobian" else n, n, f"dense finite-difference {kind.capitalize()}",
                      p.settings, "verify compares with one; leave it off at this size")


def _join(p, d: dict) -> np.ndarray:
    return p.slots.join([d[n] for n in p.slots.names], ())


def _dense(matrix) -> np.ndarray:
    """A response's matrix as a dense array (a sparse one is COO)."""
    if not isinstance(matrix, dict):
        return matrix
    out = np.zeros(matrix["shape"])
    out[np.asarray(matrix["rows"], dtype=np.int64), np.asarray(matrix["cols"], dtype=np.int64)] = matrix["values"]
    return out


def verify_gradient(p, response: dict) -> dict:
    return verification(_join(p, response["gradient"]), _one(p, "gradient"))


def verify_jacobian(p, response: dict) -> dict:
    return verification(_dense(response["jacobian"]), _one(p, "jacobian"))


def verify_jvp(p, response: dict) -> dict:
    return verification(response["jvp"], _one(p, "jvp", p.directions[0]))


def verify_vjp(p, response: dict) -> dict:
    r = _one(p, "jacobian")
    return verification(_join(p, response["vjp"]), r, p.u @ r.derivative, np.abs(p.u) @ r.error)


def verify_hvp(p, response: dict) -> dict:
    got = [_join(p, h) for h in (response["hvps"] if p.many else [response["hvp"]])]
    checks = [verification(g, _one(p, "hvp", v)) for g, v in zip(got, p.directions)]
    worst = max(checks, key=lambda c: c["max_rel_err"])
    return {**worst, "passed": all(c["passed"] for c in checks),
            "fd_evaluations": sum(c["fd_evaluations"] for c in checks)}


def verify_hessian(p, response: dict) -> dict:
    return verification(_dense(response["hessian"]), _one(p, "hessian"))
