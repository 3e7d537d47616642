"""Taylor-mode benchmark (issue 4): coefficients to order K of f(x + t v) against f itself.

Run: ``OMP_NUM_THREADS=1 python bench/taylor.py [--quick]``. The target case is
order 10 of ``sum(exp(sin(x)) * log1p(x**2))`` at n = 10^4 (goal: <= 30x f).
Beside it, ``jax.experimental.jet`` (jitted, one thread) when jax imports,
in the same run; its series are derivatives y^(k), ours coefficients y^(k)/k!,
and the two are checked against each other before timing. The machine is
shared and noisy: compare the columns of one run, not runs.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS"):
    os.environ.setdefault(var, "1" if var != "XLA_FLAGS" else
                          "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import math
import time

import numpy as np

from derivd.config import Settings
from derivd.dsl import InputSpec
from derivd.engines import taylor
from derivd.engines.function import CompiledFunction

PROGRAM = "sum(exp(sin(x)) * log1p(x**2))"


def paired(f, g, repeat: int, budget_s: float = 4.0) -> tuple[float, float]:
    """Minimum wall times of ``f()`` and ``g()``, run alternately so that both see the same
    machine (it is shared: a quiet moment should not favour one of them)."""
    tf, tg, start = [], [], time.perf_counter()
    for _ in range(repeat):
        for fn, times in ((f, tf), (g, tg)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s and len(tf) >= 3:
            break
    return min(tf), min(tg)


def ours(x, v, order, repeat):
    settings = Settings()
    fn = CompiledFunction(PROGRAM, {"x": InputSpec(x.shape, "f8", "at")}, settings)
    tape, _ = fn.eval_tape()
    t0 = time.perf_counter()
    _, c, _ = taylor.coefficients(fn, {"x": x}, ["x"], {"x": v}, order, settings)
    compile_s = time.perf_counter() - t0
    tf, tt = paired(lambda: fn.run(tape, {"x": x}),
                    lambda: taylor.coefficients(fn, {"x": x}, ["x"], {"x": v}, order, settings), repeat)
    return tf, tt, compile_s, c[:, 0]


def jax_jet(x, v, order, repeat):
    try:
        import jax
        import jax.numpy as jnp
        from jax.experimental.jet import jet
    except Exception as e:  # noqa: BLE001 - any import failure means "not available here"
        return None, f"jax unavailable ({type(e).__name__})"
    jax.config.update("jax_enable_x64", True)

    def f(x):
        return jnp.sum(jnp.exp(jnp.sin(x)) * jnp.log1p(x**2))

    xj, vj = jnp.asarray(x), jnp.asarray(v)
    zeros = [jnp.zeros_like(xj)] * (order - 1)
    f_jit = jax.jit(f)
    series_jit = jax.jit(lambda x, v: jet(f, (x,), ((v, *zeros),)))
    y, s = series_jit(xj, vj)
    jax.block_until_ready(s)
    f_jit(xj).block_until_ready()
    tf, tt = paired(lambda: f_jit(xj).block_until_ready(), lambda: jax.block_until_ready(series_jit(xj, vj)), repeat)
    derivatives = np.concatenate([[float(y)], np.asarray(s, dtype=np.float64)])
    return (tf, tt, derivatives), f"jax {jax.__version__}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats and orders")
    args = parser.parse_args()
    repeat = 5 if args.quick else 30
    n = 10**4
    rng = np.random.default_rng(0)
    x, v = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)

    print(f"# Taylor mode: `{PROGRAM}`, n = {n}, one thread\n")
    print("| order K | f (ms) | taylor (ms) | taylor / f | jax f (ms) | jax jet (ms) | jet / jax f | "
          "agree (max rel) |")
    print("|---|---|---|---|---|---|---|---|")
    for order in ([2, 10] if args.quick else [1, 2, 4, 10, 20]):
        tf, tt, compile_s, coeffs = ours(x, v, order, repeat)
        peer, note = jax_jet(x, v, order, repeat)
        cells = [f"{order}", f"{tf * 1e3:.3f}", f"{tt * 1e3:.3f}", f"**{tt / tf:.1f}x**"]
        if peer is None:
            cells += ["-", "-", "-", note]
        else:
            jf, jt, derivs = peer
            ours_derivs = coeffs * np.array([math.factorial(k) for k in range(order + 1)])
            rel = np.max(np.abs(ours_derivs - derivs) / np.maximum(np.abs(derivs), 1e-300))
            cells += [f"{jf * 1e3:.3f}", f"{jt * 1e3:.3f}", f"{jt / jf:.1f}x", f"{rel:.1e}"]
        print("| " + " | ".join(cells) + " |")
        if order == 10:
            target = (tt / tf, compile_s)
    print(f"\norder 10: taylor / f = {target[0]:.1f}x (target <= 30x); building the Taylor tape took "
          f"{target[1] * 1e3:.0f} ms once (cached per program, signature and order)")


if __name__ == "__main__":
    main()
