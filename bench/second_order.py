"""Second-order benchmark (issue 4): HVP cost vs f, and a sparse Hessian by colouring.

Run: ``OMP_NUM_THREADS=1 python bench/second_order.py [--quick]``. Two tables:

1. Extended Rosenbrock at n = 1e6: time of f and of one Hessian-vector product
   (forward over reverse); the target is HVP <= 6x f. Beside jax (jit, float64):
   f and jvp-of-grad.
2. A function with a tridiagonal Hessian at n = 1e4: the full Hessian by star
   colouring (passes = colours, target <= 4), cold (pattern detection, colouring,
   compilation) and warm (cached), against the dense Hessian by batched HVPs of the
   identity (n passes), through ``Service.compute``; beside jax's dense
   ``jax.hessian`` (at n = 2000: at 1e4 its 800 MB answer is no fair fight on a
   shared machine) and jax doing our compressed product by hand (vmap of
   jvp-of-grad over the same seeds).

Peers run in the same process at one thread each; ratios are from the same run (the
machine is shared and noisy: compare columns, not runs).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS"):
    os.environ.setdefault(var, "1" if var != "XLA_FLAGS" else
                          "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import time

import numpy as np

from derivd.allocator import tune_allocator
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.dsl import InputSpec
from derivd.engines import coloring, forward_over_reverse, sparse
from derivd.engines.common import Wrt
from derivd.engines.function import CompiledFunction
from timing import best  # bench/timing.py (the script's folder is on sys.path)

ROSENBROCK = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"
TRIDIAGONAL = "sum(log1p(x[1:]**2 + x[:-1]**2)) + sum(x**4)"


def jax_or_none():
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    return jax


def hvp_vs_f(n: int, repeat: int) -> list[tuple]:
    rng = np.random.default_rng(0)
    x, v = rng.uniform(-1, 1, n), rng.standard_normal(n)
    fn = CompiledFunction(ROSENBROCK, {"x": InputSpec((n,), "f8", "at")}, Settings())
    values = {"x": x}
    tape, _ = fn.eval_tape()
    forward_over_reverse.hvp(fn, values, ["x"], {"x": v})  # compile
    f_s = best(lambda: fn.run(tape, values), repeat)
    hvp_s = best(lambda: forward_over_reverse.hvp(fn, values, ["x"], {"x": v}), repeat)
    rows = [("derivd", f_s, hvp_s)]
    jax = jax_or_none()
    if jax is not None:
        import jax.numpy as jnp

        def f(z):
            return jnp.sum(100 * (z[1:] - z[:-1] ** 2) ** 2 + (1 - z[:-1]) ** 2)

        jf = jax.jit(f)
        jhvp = jax.jit(lambda z, d: jax.jvp(jax.grad(f), (z,), (d,))[1])
        xj, vj = jnp.asarray(x), jnp.asarray(v)
        jax.block_until_ready(jf(xj))
        jax.block_until_ready(jhvp(xj, vj))
        rows.append(("jax (jit)", best(lambda: jax.block_until_ready(jf(xj)), repeat),
                     best(lambda: jax.block_until_ready(jhvp(xj, vj)), repeat)))
    return rows


def sparse_hessian(n: int, n_jax_dense: int, repeat: int) -> list[tuple]:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, n)
    rows = []
    service = Service(Settings(max_jacobian_entries=10**8))  # the dense comparison at n = 1e4 is 1e8 entries

    def request(**kw):
        return service.compute("hessian", Request(function={"dsl": TRIDIAGONAL}, at={"x": x}, **kw))[0]

    t = time.perf_counter()
    first = request(sparse=True)
    cold = time.perf_counter() - t
    warm = best(lambda: request(sparse=True), repeat)
    colors = first["sparsity"]["colors"]
    rows.append((f"derivd star colouring, n={n}", colors, cold, warm, f"nnz {first['sparsity']['nnz']}"))
    coo = first["hessian"]
    h = np.zeros((n, n)) if n <= 20_000 else None
    if h is not None:
        t = time.perf_counter()
        dense = request(mode="forward")["hessian"]
        dense_s = time.perf_counter() - t
        h[coo["rows"], coo["cols"]] = coo["values"]
        scale = np.abs(dense).max()
        err = np.abs(h - dense).max() / scale
        rows.append((f"derivd dense (identity seeds), n={n}", n, dense_s, dense_s,
                     f"one run; max abs(sparse - dense) / max = {err:.1e}"))
        del dense, h
    jax = jax_or_none()
    if jax is not None:
        import jax.numpy as jnp

        def f(z):
            return jnp.sum(jnp.log1p(z[1:] ** 2 + z[:-1] ** 2)) + jnp.sum(z**4)

        fn = CompiledFunction(TRIDIAGONAL, {"x": InputSpec((n,), "f8", "at")}, Settings())
        seeds = coloring.seeds(sparse.hessian_plan(fn, {"x": x}, Wrt(fn, ["x"]), Settings()).colors)
        compressed = jax.jit(jax.vmap(lambda d, z: jax.jvp(jax.grad(f), (z,), (d,))[1], in_axes=(0, None)))
        xj, sj = jnp.asarray(x), jnp.asarray(seeds)
        t = time.perf_counter()
        jax.block_until_ready(compressed(sj, xj))
        compile_s = time.perf_counter() - t
        rows.append((f"jax vmap(jvp(grad)) on the same {len(seeds)} seeds, n={n}", len(seeds),
                     compile_s, best(lambda: jax.block_until_ready(compressed(sj, xj)), repeat), "(no decompression)"))
        xs = jnp.asarray(x[:n_jax_dense])
        hess = jax.jit(jax.hessian(f))
        t = time.perf_counter()
        jax.block_until_ready(hess(xs))
        compile_s = time.perf_counter() - t
        rows.append((f"jax.hessian (dense), n={n_jax_dense}", n_jax_dense, compile_s,
                     best(lambda: jax.block_until_ready(hess(xs)), repeat), "dense"))
        t = time.perf_counter()
        service_small = Service(Settings())
        small = service_small.compute("hessian", Request(function={"dsl": TRIDIAGONAL}, at={"x": x[:n_jax_dense]},
                                                        mode="forward"))[0]
        cold_small = time.perf_counter() - t
        warm_small = best(lambda: service_small.compute("hessian", Request(
            function={"dsl": TRIDIAGONAL}, at={"x": x[:n_jax_dense]}, mode="forward")), repeat)
        rows.append((f"derivd dense (identity seeds), n={n_jax_dense}", n_jax_dense, cold_small, warm_small,
                     "dense"))
        np.testing.assert_allclose(small["hessian"], np.asarray(hess(xs)), rtol=1e-10, atol=1e-10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="n = 1e5 and 2e3, fewer repeats")
    args = parser.parse_args()
    n_hvp, n_hess, n_jax, repeat = (10**5, 2000, 500, 3) if args.quick else (10**6, 10**4, 2000, 7)
    tune_allocator()  # as `derivd serve` does; the peers in this process get it too

    print(f"## HVP vs f, extended Rosenbrock, n = {n_hvp:.0e} (one thread)\n")
    print("| implementation | f (ms) | HVP (ms) | HVP / f |")
    print("| --- | ---: | ---: | ---: |")
    for name, f_s, h_s in hvp_vs_f(n_hvp, repeat):
        print(f"| {name} | {f_s * 1e3:.1f} | {h_s * 1e3:.1f} | {h_s / f_s:.2f} |")

    print(f"\n## Full Hessian of `{TRIDIAGONAL}` (tridiagonal), n = {n_hess:.0e}\n")
    print("| implementation | HVP passes | cold (s) | warm (s) | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, passes, cold, warm, note in sparse_hessian(n_hess, n_jax, repeat):
        print(f"| {name} | {passes} | {cold:.3f} | {warm:.4f} | {note} |")


if __name__ == "__main__":
    main()
