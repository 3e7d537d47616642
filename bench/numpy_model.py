"""A model written the way numpy users write it (einsum, var, cumsum, keepdims): its value and
gradient in derivd beside the same model's gradient written by hand in numpy, and jax.

Run: ``python bench/numpy_model.py [--quick]`` (threads pinned to one before numpy loads).
The model: a linear layer, normalised per feature over the batch (mean and var with
keepdims), tanh, a running sum over the features (cumsum), a readout and the mean squared
error; the gradient is over the weights W (d × h) and the readout v (h). The target is the
derivd gradient within 2× of the hand-written numpy one (the ``vs numpy`` column).
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from derivd.config import Settings  # noqa: E402
from derivd.dsl import InputSpec  # noqa: E402
from derivd.engines import reverse  # noqa: E402
from derivd.engines.function import CompiledFunction  # noqa: E402
from timing import best  # noqa: E402  (bench/timing.py: the script's folder is on sys.path)

EPS = 1e-5

MODEL = f"""
Z = einsum('nd,dh->nh', X, W)
Zn = (Z - mean(Z, axis=0, keepdims=True)) / sqrt(var(Z, axis=0, keepdims=True) + {EPS})
C = cumsum(tanh(Zn), axis=1)
r = einsum('nh,h->n', C, v) - y
mean(r ** 2)
"""


def model(xp, W, v, X, y):
    """The same model in a numpy-like namespace ``xp`` (jax.numpy for the peer)."""
    Z = xp.einsum("nd,dh->nh", X, W)
    Zn = (Z - xp.mean(Z, axis=0, keepdims=True)) / xp.sqrt(xp.var(Z, axis=0, keepdims=True) + EPS)
    C = xp.cumsum(xp.tanh(Zn), axis=1)
    r = xp.einsum("nh,h->n", C, v) - y
    return xp.mean(r ** 2)


def by_hand(W, v, X, y):
    """Value and gradient (dW, dv), the backward pass written out in numpy."""
    n = X.shape[0]
    Z = X @ W
    Zc = Z - Z.mean(axis=0)
    inv = 1.0 / np.sqrt((Zc * Zc).mean(axis=0) + EPS)
    Zn = Zc * inv
    T = np.tanh(Zn)
    C = np.cumsum(T, axis=1)
    r = C @ v - y
    dr = r * (2.0 / n)
    dv = C.T @ dr
    dC = np.outer(dr, v)
    dZn = np.cumsum(dC[:, ::-1], axis=1)[:, ::-1] * (1.0 - T * T)
    dZ = inv * (dZn - dZn.mean(axis=0) - Zn * (dZn * Zn).mean(axis=0))
    return np.mean(r * r), X.T @ dZ, dv


def ours(at, constants, repeat):
    specs = {k: InputSpec(np.shape(x), "f8", "at") for k, x in at.items()}
    specs.update({k: InputSpec(np.shape(x), "f8", "const") for k, x in constants.items()})
    values = {**at, **constants}
    t0 = time.perf_counter()
    fn = CompiledFunction(MODEL, specs, Settings())
    tape, _ = fn.eval_tape()
    got = reverse.gradient(fn, values, list(at))
    compile_s = time.perf_counter() - t0
    tf = best(lambda: fn.run(tape, values), repeat)
    tg = best(lambda: reverse.gradient(fn, values, list(at)), repeat)
    return tf, tg, compile_s, got


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="the small size only, fewer repeats")
    args = parser.parse_args()
    repeat = 5 if args.quick else 20
    sizes = [(256, 16, 32)] if args.quick else [(256, 16, 32), (4096, 64, 128)]
    print("## A numpy-style model (einsum, var and mean with keepdims, cumsum): value+gradient\n")
    print("| n, d, h | engine | f (ms) | value+gradient (ms) | ratio | vs numpy by hand | compile (ms) |")
    print("|---|---|---|---|---|---|---|")
    for n, d, h in sizes:
        rng = np.random.default_rng(0)
        at = {"W": rng.normal(size=(d, h)) / np.sqrt(d), "v": rng.normal(size=h) / h}
        constants = {"X": rng.normal(size=(n, d)), "y": rng.normal(size=n)}
        W, v, X, y = at["W"], at["v"], constants["X"], constants["y"]
        tf, tg, tc, got = ours(at, constants, repeat)
        value, dW, dv = by_hand(W, v, X, y)
        grads = dict(zip(at, got[1]))
        hf = best(lambda: model(np, W, v, X, y), repeat)
        hg = best(lambda: by_hand(W, v, X, y), repeat)
        rows = [("derivd", tf, tg, tc), ("numpy by hand", hf, hg, None)]
        try:
            import jax
            import jax.numpy as jnp
            jax.config.update("jax_enable_x64", True)
            jf = jax.jit(lambda W, v: model(jnp, W, v, X, y))
            jg = jax.jit(jax.value_and_grad(lambda W, v: model(jnp, W, v, X, y), argnums=(0, 1)))
            Wj, vj = jnp.asarray(W), jnp.asarray(v)
            t0 = time.perf_counter()
            jax.block_until_ready(jg(Wj, vj))
            jc = time.perf_counter() - t0
            jax.block_until_ready(jf(Wj, vj))
            rows.append(("jax (jit)", best(lambda: jax.block_until_ready(jf(Wj, vj)), repeat),
                         best(lambda: jax.block_until_ready(jg(Wj, vj)), repeat), jc))
        except ImportError:
            pass
        for name, f_s, g_s, c_s in rows:
            cs = f"{c_s * 1e3:.0f}" if c_s is not None else "–"
            print(f"| {n}, {d}, {h} | {name} | {f_s * 1e3:.3f} | {g_s * 1e3:.3f} | {g_s / f_s:.2f} "
                  f"| {g_s / hg:.2f} | {cs} |")
        _check(grads, dW, dv)
    return 0


def _check(grads, dW, dv):
    """The benchmark measures right answers only: derivd's gradient equals the hand-written one."""
    try:
        np.testing.assert_allclose(grads["W"], dW, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(grads["v"], dv, rtol=1e-8, atol=1e-12)
    except AssertionError as e:
        print(f"\nderivd's gradient differs from the hand-written one: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
