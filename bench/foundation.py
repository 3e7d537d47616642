"""Foundation benchmark (issue 2): gradient cost vs f, compile time, scalar-heavy latency.

Run: ``OMP_NUM_THREADS=1 python bench/foundation.py [--quick]``. Prints a
markdown table; peers (jax, torch, autograd) run in the same process at one
thread each where they import. Ratios are from the same run: the machine is
shared and noisy, so compare columns, not runs.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS"):
    os.environ.setdefault(var, "1" if var != "XLA_FLAGS" else
                          "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import random
import sys
import time

import numpy as np

from derivd.config import Settings
from derivd.dsl import InputSpec
from derivd.engines import reverse
from derivd.engines.function import CompiledFunction
from derivd.allocator import tune_allocator
from timing import best  # bench/timing.py (the script's folder is on sys.path)

ROSENBROCK = "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"


def scalar_chain(steps: int = 50, n: int = 10, seed: int = 0) -> str:
    """A loop-free chain of ~500 scalar operations on 10 inputs, written out."""
    rnd = random.Random(seed)
    lines = [f"v{i} = x[{i}]" for i in range(n)]
    names = [f"v{i}" for i in range(n)]
    for k in range(steps):
        a, b, c, d = (rnd.choice(names) for _ in range(4))
        f = rnd.choice(["sin", "cos", "exp", "tanh"])
        lines.append(f"w{k} = {f}({a} * 0.3 + {b} * {c}) * 0.5 + tanh(0.1 * {d} * {d}) - {a} / (1 + {b} * {b})")
        names.append(f"w{k}")
    lines.append(" + ".join(names[-10:]))
    return "\n".join(lines)


def ours(src: str, x: np.ndarray, repeat: int):
    # Tier 1, the numpy tapes (bench/tiers.py times tier 2): in the default "auto", a tape made hot by
    # the timing loop is compiled by XLA in a background thread that shares the core with the timings.
    settings = Settings(xla_tier="off")
    t0 = time.perf_counter()
    fn = CompiledFunction(src, {"x": InputSpec(x.shape, "f8", "at")}, settings)
    tape, _ = fn.eval_tape()
    compile_f = time.perf_counter() - t0
    t0 = time.perf_counter()
    reverse.gradient(fn, {"x": x}, ["x"])
    compile_g = time.perf_counter() - t0
    tf = best(lambda: fn.run(tape, {"x": x}), repeat)
    tg = best(lambda: reverse.gradient(fn, {"x": x}, ["x"]), repeat)
    return tf, tg, compile_f + compile_g


def numpy_rosenbrock(x):
    a, b = x[:-1], x[1:]
    d = b - a * a
    f = np.sum(100 * d * d + (1 - a) ** 2)
    g = np.zeros_like(x)
    g[:-1] = -400 * a * d - 2 * (1 - a)
    g[1:] += 200 * d
    return f, g


def peers_rosenbrock(x, repeat):
    out = {}
    out["numpy by hand"] = (best(lambda: np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2), repeat),
                            best(lambda: numpy_rosenbrock(x), repeat), None)
    try:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        f = lambda x: jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)  # noqa: E731
        jf, jg = jax.jit(f), jax.jit(jax.value_and_grad(f))
        xj = jnp.asarray(x)
        t0 = time.perf_counter()
        jax.block_until_ready(jg(xj))
        compile_s = time.perf_counter() - t0
        jax.block_until_ready(jf(xj))
        out["jax (jit)"] = (best(lambda: jax.block_until_ready(jf(xj)), repeat),
                            best(lambda: jax.block_until_ready(jg(xj)), repeat), compile_s)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)
        xt = torch.tensor(x)

        def tgrad():
            v = xt.clone().requires_grad_(True)
            y = torch.sum(100 * (v[1:] - v[:-1] ** 2) ** 2 + (1 - v[:-1]) ** 2)
            y.backward()
            return v.grad

        out["torch eager"] = (best(lambda: torch.sum(100 * (xt[1:] - xt[:-1] ** 2) ** 2 + (1 - xt[:-1]) ** 2), repeat),
                              best(tgrad, repeat), None)
    except ImportError:
        pass
    try:
        import autograd
        import autograd.numpy as anp
        f = lambda x: anp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)  # noqa: E731
        g = autograd.value_and_grad(f)
        out["autograd"] = (best(lambda: f(x), repeat), best(lambda: g(x), repeat), None)
    except ImportError:
        pass
    return out


def peers_scalar(src_py: str, x, repeat):
    """The scalar chain in each peer: value and gradient latency (and jax's compile)."""
    out = {}
    body = src_py
    try:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)
        ns = {"sin": jnp.sin, "cos": jnp.cos, "exp": jnp.exp, "tanh": jnp.tanh}
        f = _pyfunc(body, ns)
        jg = jax.jit(jax.value_and_grad(f))
        xj = jnp.asarray(x)
        t0 = time.perf_counter()
        jax.block_until_ready(jg(xj))
        compile_s = time.perf_counter() - t0
        out["jax (jit)"] = (best(lambda: jax.block_until_ready(jg(xj)), repeat), compile_s)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)
        ns = {"sin": torch.sin, "cos": torch.cos, "exp": torch.exp, "tanh": torch.tanh}
        f = _pyfunc(body, ns)
        xt = torch.tensor(x)

        def tg():
            v = xt.clone().requires_grad_(True)
            f(v).backward()
            return v.grad

        out["torch eager"] = (best(tg, repeat), None)
    except ImportError:
        pass
    try:
        import autograd
        import autograd.numpy as anp
        ns = {"sin": anp.sin, "cos": anp.cos, "exp": anp.exp, "tanh": anp.tanh}
        g = autograd.value_and_grad(_pyfunc(body, ns))
        out["autograd"] = (best(lambda: g(x), repeat), None)
    except ImportError:
        pass
    return out


def _pyfunc(src: str, ns: dict):
    """The benchmark's own DSL text as a Python function for the peers (trusted text we generated)."""
    lines = src.split("\n")
    code = "def f(x):\n" + "".join(f"    {ln}\n" for ln in lines[:-1]) + f"    return {lines[-1]}\n"
    scope = dict(ns)
    exec(code, scope)  # noqa: S102 - the benchmark's own generated source, not user input
    return scope["f"]


def main() -> int:
    tune_allocator()  # as `derivd serve` does; the peers in this process get it too
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="n up to 1e5 only, fewer repeats")
    args = parser.parse_args()
    sizes = (1_000, 100_000) if args.quick else (1_000, 100_000, 1_000_000)
    repeat = 5 if args.quick else 20
    print("## Extended Rosenbrock: gradient vs f (same run, one thread)\n")
    print("| n | engine | f (ms) | value+gradient (ms) | ratio | compile of a new program (ms) |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        x = np.random.default_rng(0).uniform(-1, 1, n)
        tf, tg, tc = ours(ROSENBROCK, x, repeat)
        print(f"| {n:.0e} | derivd | {tf * 1e3:.3f} | {tg * 1e3:.3f} | {tg / tf:.2f} | {tc * 1e3:.1f} |")
        for name, (pf, pg, pc) in peers_rosenbrock(x, repeat).items():
            pcs = f"{pc * 1e3:.0f}" if pc is not None else "–"
            print(f"| {n:.0e} | {name} | {pf * 1e3:.3f} | {pg * 1e3:.3f} | {pg / pf:.2f} | {pcs} |")
    print("\n## Scalar-heavy: 50 statements, ~500 scalar ops on 10 inputs\n")
    src = scalar_chain()
    x = np.linspace(0.1, 1.0, 10)
    tf, tg, tc = ours(src, x, 200)
    print("| engine | value+gradient warm (µs) | compile (ms) |")
    print("|---|---|---|")
    print(f"| derivd | {tg * 1e6:.0f} | {tc * 1e3:.0f} |")
    for name, (pg, pc) in peers_scalar(src, x, 50).items():
        pcs = f"{pc * 1e3:.0f}" if pc is not None else "–"
        print(f"| {name} | {pg * 1e6:.0f} | {pcs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
