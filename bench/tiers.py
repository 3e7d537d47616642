"""The compile tiers: numpy (tier 1), XLA (tier 2) and jax, on the programs where time is spent.

Run: ``python bench/tiers.py [--quick]`` (one thread each: BLAS and XLA are pinned here,
before numpy and jax load, and the process to one core). Prints one markdown table, all rows from the same run:
warm time of each workload on tier 1 (``xla_tier=off``), on tier 2 (``xla_tier=always``:
the tape compiled by XLA before its first answer), and in jax (``jit``, its own AD), and
the one-off compile of tier 2 and of jax. jax is timed on device arrays and, for scale, on the
same numpy arrays our tapes take. What runs on tier 2 is our derivative graph, never jax's
differentiation. jax runs in this process with tier 2's dispatch (``xla.SYNCHRONOUS``: each run on
the calling thread, set before jax starts), which is faster for jax too: at jax's default the
scalar-heavy row's jax took ~22 us a call, 17 us here.

Every array (points, constants, directions) is handed over as the service hands it: encoded as the
SDK sends a large array (base64 of its bytes) and decoded by the gateway's decoder
(``gateway.codecs.decode``, whose ``core.request.array_from_bytes`` gRPC and the session socket share),
which allocates large arrays 64-byte aligned, so XLA reads them in place (``wire``). A numpy array
made here would be 16-byte aligned, and tier 2 would copy it first (compile/staging.py).

* LSTM: ADBench's 2 layers, hidden 14, 1023 steps (bench/models.py), value+gradient;
  jax: ``lax.scan`` and ``value_and_grad``.
* Rosenbrock n = 1e6, value+gradient; jax: ``value_and_grad``.
* HVP of Rosenbrock n = 1e6 (our tape also gives f, as the endpoint answers it); jax: jvp of grad.
* Scalar-heavy: ~500 scalar operations on 10 inputs (bench/foundation.py), value+gradient.
* A 2000-step scalar loop ``h = h + 0.001 sin(h w[i % 3] + i)``, value+gradient; jax:
  ``fori_loop``.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
# XLA splits a long loop over as many threads as the compiling process may run on, whatever XLA_FLAGS say:
# jax compiles here, so this process keeps to one core (tier 2's compile process keeps to xla_threads = 1).
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import base64  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from derivd.config import Settings  # noqa: E402
from derivd.dsl import InputSpec  # noqa: E402
from derivd.engines import forward_over_reverse, reverse, tiers  # noqa: E402
from derivd.engines.function import CompiledFunction  # noqa: E402
from derivd.gateway import codecs  # noqa: E402
from foundation import ROSENBROCK, _pyfunc, scalar_chain  # noqa: E402
from models import lstm_program, lstm_step  # noqa: E402
from timing import best  # noqa: E402

jax.config.update("jax_enable_x64", True)
TIERS = {"tier 1 (numpy)": Settings(xla_tier="off", xla_cache_dir=""),
         "tier 2 (XLA)": Settings(xla_tier="always", xla_cache_dir="")}
LOOP = "h = x[0]\nfor i in range(2000):\n    h = h + 0.001 * sin(h * w[i % 3] + i)\nh"


def wire(a: np.ndarray) -> np.ndarray:
    """``a`` as the service hands it to an engine: base64 on the wire, decoded by the gateway."""
    a = np.asarray(a, dtype=np.float64)
    return codecs.decode({"dtype": "float64", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode()},
                         "at")


def ours(src, at, constants, run, settings):
    """(a warm call of ``run(fn, values)`` for the program ``src``, its first call's seconds: the compile)."""
    specs = {k: InputSpec(np.shape(v), "f8", "at") for k, v in at.items()}
    specs.update({k: InputSpec(np.shape(v), "f8", "const") for k, v in constants.items()})
    values = {**at, **constants}
    fn = CompiledFunction(src, specs, settings)
    t0 = time.perf_counter()
    run(fn, values)
    compile_s = time.perf_counter() - t0
    for _ in range(tiers.AUDIT_FIRST):  # tier 2's first answers are audited by tier 1 in the background
        run(fn, values)
    tiers.settle()
    return lambda: run(fn, values), compile_s


def jaxed(f, args):
    """(a call of the jitted ``f`` on device arrays, one on the numpy arrays ``args`` our tapes take,
    compile seconds)."""
    f = jax.jit(f)
    arrays = [jnp.asarray(a) for a in args]
    t0 = time.perf_counter()
    jax.block_until_ready(f(*arrays))
    compile_s = time.perf_counter() - t0
    return (lambda: jax.block_until_ready(f(*arrays))), (lambda: jax.block_until_ready(f(*args))), compile_s


def gradient(wrt):
    return lambda fn, values: reverse.gradient(fn, values, wrt)


def workloads(quick: bool):
    rng = np.random.default_rng(0)
    c = 100 if quick else 1024
    at = {"main_params": wire(rng.normal(size=(4, 56)) * 0.3), "extra_params": wire(rng.normal(size=(3, 14)) * 0.3)}
    constants = {"state": wire(rng.normal(size=(4, 14)) * 0.3), "seq": wire(rng.normal(size=(c, 14)))}
    seq, state = constants["seq"], constants["state"]

    def lstm(mp, ep):
        def step(carry, xs):
            return lstm_step(jnp, jax.nn.sigmoid, mp, ep, xs[0], xs[1], carry)

        _, terms = jax.lax.scan(step, tuple(jnp.asarray(state)), (jnp.asarray(seq[:-1]), jnp.asarray(seq[1:])))
        return -jnp.sum(terms) / ((c - 1) * 14)

    yield (f"LSTM {c - 1} steps, value+gradient", lstm_program(c), at, constants, gradient(list(at)),
           jax.value_and_grad(lstm, argnums=(0, 1)), [at["main_params"], at["extra_params"]])

    n = 10**5 if quick else 10**6
    x = wire(rng.uniform(-1, 1, n))
    v = wire(rng.uniform(-1, 1, n))

    def rosen(x):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    yield (f"Rosenbrock n={n:.0e}, value+gradient", ROSENBROCK, {"x": x}, {}, gradient(["x"]),
           jax.value_and_grad(rosen), [x])
    yield (f"HVP, Rosenbrock n={n:.0e}", ROSENBROCK, {"x": x}, {},
           lambda fn, values: forward_over_reverse.hvp(fn, values, ["x"], {"x": v}),
           lambda x, v: jax.jvp(jax.grad(rosen), (x,), (v,)), [x, v])

    src = scalar_chain()
    f = _pyfunc(src, {"sin": jnp.sin, "cos": jnp.cos, "exp": jnp.exp, "tanh": jnp.tanh})
    x = wire(np.linspace(0.1, 1.0, 10))
    yield ("scalar-heavy, ~500 ops, value+gradient", src, {"x": x}, {}, gradient(["x"]), jax.value_and_grad(f), [x])

    x, w = wire([0.3, 0.1]), wire([0.5, -0.2, 0.9])

    def loop(x, w):
        return jax.lax.fori_loop(0, 2000, lambda i, h: h + 0.001 * jnp.sin(h * w[i % 3] + i), x[0])

    yield ("2000-step scalar loop, value+gradient", LOOP, {"x": x, "w": w}, {},
           gradient(["x", "w"]), jax.value_and_grad(loop, argnums=(0, 1)), [x, w])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args()
    repeat = 5 if args.quick else 20
    print("| workload | tier 1 (numpy) ms | tier 2 (XLA) ms | jax (jit) ms | tier 2 / jax | jax on numpy ms | "
          "tier 2 compile (s) | jax compile (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, src, at, constants, run, jf, jargs in workloads(args.quick):
        tier1, _ = ours(src, at, constants, run, TIERS["tier 1 (numpy)"])
        tier2, c2 = ours(src, at, constants, run, TIERS["tier 2 (XLA)"])
        on_device, on_numpy, cj = jaxed(jf, jargs)
        t1, t2, tj, tn = (best(call, repeat) for call in (tier1, tier2, on_device, on_numpy))
        print(f"| {name} | {t1 * 1e3:.3f} | {t2 * 1e3:.3f} | {tj * 1e3:.3f} | {t2 / tj:.2f} | {tn * 1e3:.3f} | "
              f"{c2:.2f} | {cj:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
