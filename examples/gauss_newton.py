"""Nonlinear least squares by Gauss–Newton, with Jacobians from derivd's /v1/jacobian.

Fits y ≈ a·exp(-b·t) + c to noisy samples. Each iteration asks the server for
the residuals r(p) and their exact Jacobian J(p), then takes the Gauss–Newton
step solving min ||J s + r|| (by least squares, not the normal equations), halving
it until the sum of squares drops. The model is stored once (POST /v1/functions,
with t and y as constants) and referred to by id afterwards.

    python examples/gauss_newton.py [--url http://127.0.0.1:8000]

Exits 0 when converged: the step is tiny and the gradient Jᵀr is ~0.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import derivd_client as dd

RESIDUALS = "p[0] * exp(-p[1] * t) + p[2] - y"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DERIVD_URL", "http://127.0.0.1:8000"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 4.0, 40)
    truth = np.array([2.5, 1.3, 0.5])
    y = truth[0] * np.exp(-truth[1] * t) + truth[2] + 0.01 * rng.normal(size=t.size)

    with dd.Client(args.url) as client:
        model = client.register_function(RESIDUALS, constants={"t": t, "y": y})
        p = np.array([1.0, 0.5, 0.0])
        for it in range(50):
            answer = client.jacobian(model, p=p)
            r, J = answer.value, answer.jacobian
            cost = 0.5 * r @ r
            step = np.linalg.lstsq(J, -r, rcond=None)[0]
            scale = 1.0
            while scale > 1e-8:
                trial = client.evaluate(model, p=p + scale * step).value
                if 0.5 * trial @ trial < cost:
                    break
                scale /= 2
            p = p + scale * step
            print(f"iter {it:2d}  cost {cost:.6e}  |step| {np.linalg.norm(scale * step):.2e}")
            if np.linalg.norm(scale * step) < 1e-10 * (1 + np.linalg.norm(p)):
                break
        final = client.jacobian(model, p=p)
        gradient = final.jacobian.T @ final.value
    print(f"fit a={p[0]:.6f} b={p[1]:.6f} c={p[2]:.6f}  (truth {truth.tolist()})"
          f"  |J^T r| = {np.linalg.norm(gradient):.2e}")
    converged = np.linalg.norm(gradient) < 1e-8 and np.allclose(p, truth, atol=0.05)
    print("converged" if converged else "NOT converged")
    return 0 if converged else 1


if __name__ == "__main__":
    sys.exit(main())
