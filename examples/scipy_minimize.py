"""scipy.optimize with derivd's derivatives: Rosenbrock by trust-ncg, a curve fit by least_squares.

``derivd_client.scipy`` sends the function once and hands scipy ``jac=True``
(value and gradient from one request per point) and ``hessp`` (Hessian-vector
products by the point's Hessian, fetched with its value and gradient: still one
request per point); the result is scipy's ``OptimizeResult`` with
derivd's request counts on it. With ``--grpc HOST:PORT`` the session is a gRPC
stream (one round trip per request, no HTTP or JSON); without it, the REST
client at ``--url``.

    python examples/scipy_minimize.py [--url http://127.0.0.1:8000] [--grpc 127.0.0.1:50051] [--n 20]

Exits 0 when both reach their known answers.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import derivd_client as dd
from derivd_client import scipy as dds

ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"
DECAY = "p[0] * exp(-p[1] * t) + p[2] - y"  # residuals of y ~ a exp(-k t) + c, p = (a, k, c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DERIVD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--grpc", help="HOST:PORT of derivd's gRPC server: use a gRPC session")
    parser.add_argument("--n", type=int, default=20)
    args = parser.parse_args()
    if args.grpc:
        from derivd_client.grpc_client import GrpcClient

        client = GrpcClient(args.grpc)
    else:
        client = dd.Client(args.url)

    with client:
        res = dds.minimize(ROSENBROCK, np.zeros(args.n), method="trust-ncg", client=client,
                           options={"gtol": 1e-10})
        print(f"trust-ncg: f {res.fun:.3e} after {res.nit} iterations, {res.requests} requests "
              f"({res.requests_per_iteration:.1f} per iteration, server {1e3 * res.server_seconds:.1f} ms in all)")
        rosen_ok = res.success and np.allclose(res.x, 1.0, atol=1e-8)

        t = np.linspace(0.0, 4.0, 30)
        y = 3.0 * np.exp(-0.7 * t) + 0.5
        fit = dds.least_squares(DECAY, np.array([1.0, 0.1, 0.0]), client=client, constants={"t": t, "y": y}, name="p")
        print(f"least_squares: a, k, c = {np.round(fit.x, 8).tolist()} after {fit.nfev} evaluations, "
              f"{fit.requests} requests")
        fit_ok = fit.success and np.allclose(fit.x, [3.0, 0.7, 0.5], rtol=1e-8)
    ok = rosen_ok and fit_ok
    print("both converged" if ok else "NOT converged")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
