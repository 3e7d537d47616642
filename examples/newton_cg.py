"""Newton–CG on the extended Rosenbrock function, with Hessian-vector products from derivd.

Newton's step solves H p = -g; conjugate gradients needs H only through
products H v, which derivd computes exactly (forward over reverse) without ever
forming H. CG stops early on small residuals (truncated Newton) or negative
curvature, and a backtracking line search on f keeps each step a descent.

    python examples/newton_cg.py [--url http://127.0.0.1:8000] [--n 10]

Exits 0 when ||∇f|| < 1e-8 at the minimiser x* = (1, ..., 1).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import derivd_client as dd

ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"


def cg(hvp, g, tol):
    """Approximately solve H p = -g by conjugate gradients, using only hvp(v) = H v."""
    p = np.zeros_like(g)
    r = -g.copy()
    d = r.copy()
    for _ in range(len(g)):
        hd = hvp(d)
        curvature = d @ hd
        if curvature <= 0:  # negative curvature: stop with what we have (or the steepest descent)
            return p if p.any() else -g
        alpha = (r @ r) / curvature
        p = p + alpha * d
        r_new = r - alpha * hd
        if np.linalg.norm(r_new) < tol:
            break
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return p


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DERIVD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()

    x = np.zeros(args.n)  # from here Newton reaches the global minimiser (n >= 4 also has a local one)
    products = 0
    with dd.Client(args.url) as client:
        for it in range(100):
            r = client.gradient(ROSENBROCK, x=x)
            f, g = r.value, r.gradient["x"]
            print(f"iter {it:2d}  f {f:.6e}  |g| {np.linalg.norm(g):.2e}")
            if np.linalg.norm(g) < 1e-8:
                break

            def hvp(v, at=x):
                nonlocal products
                products += 1
                return client.hvp(ROSENBROCK, x=at, v=v).hvp["x"]

            step = cg(hvp, g, tol=min(0.01, np.sqrt(np.linalg.norm(g))) * np.linalg.norm(g))
            t = 1.0
            while client.evaluate(ROSENBROCK, x=x + t * step).value > f + 1e-4 * t * (g @ step) and t > 1e-10:
                t /= 2
            x = x + t * step
    ok = np.linalg.norm(g) < 1e-8 and np.allclose(x, 1.0, atol=1e-6)
    print(f"{'converged' if ok else 'NOT converged'} after {it} Newton steps and {products} Hessian-vector products")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
