"""Worked models: gradient time vs f for a GMM and an LSTM, beside jax, torch and autograd.

Run: ``python bench/models.py [--quick]`` (threads are pinned to one here, before numpy
loads). Prints markdown tables: for each engine the time of f, of value+gradient, their
ratio, and the one-off compile time where there is one; peers run in the same process
where they import. Then the cost of a long loop: lowering and compiling the gradient of
a 10,000-step recurrence, and running it.

* GMM: ADBench's objective (Cholesky-parameterised precisions, Wishart prior) at
  d = 10, K = 5, n = 1000; the gradient is over alphas, means and icf (325 numbers).
* LSTM: ADBench's 2-layer LSTM (hidden 14) over a sequence of c characters; the
  gradient is over main_params and extra_params (266 numbers).
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from derivd.config import Settings  # noqa: E402
from derivd.dsl import InputSpec  # noqa: E402
from derivd.engines import reverse  # noqa: E402
from derivd.engines.function import CompiledFunction  # noqa: E402
from timing import best  # bench/timing.py (the script's folder is on sys.path)
from tests.models.test_gmm import gmm_program, lower_index  # noqa: E402


def ours(src: str, at: dict, constants: dict, wrt: list[str], repeat: int):
    """derivd: f (the evaluation tape), value+gradient (the reverse tape), and the compile of both."""
    specs = {k: InputSpec(np.shape(v), "f8", "at") for k, v in at.items()}
    specs.update({k: InputSpec(np.shape(v), "i8" if np.asarray(v).dtype.kind in "iu" else "f8", "const")
                  for k, v in constants.items()})
    values = {**at, **constants}
    t0 = time.perf_counter()
    fn = CompiledFunction(src, specs, Settings())
    tape, _ = fn.eval_tape()
    reverse.gradient(fn, values, wrt)
    compile_s = time.perf_counter() - t0
    tf = best(lambda: fn.run(tape, values), repeat)
    tg = best(lambda: reverse.gradient(fn, values, wrt), repeat)
    return tf, tg, compile_s


# ---------------------------------------------------------------- GMM


def gmm_generic(xp, logsumexp, alphas, means, icf, x, lower):
    """ADBench's GMM objective in any numpy-like namespace ``xp`` (the peers' version of the DSL)."""
    n, d = x.shape
    k = means.shape[0]
    logdiag = icf[:, :d]
    off = xp.concatenate([xp.zeros((k, 1), dtype=icf.dtype), icf[:, d:]], 1)
    q = xp.reshape(off[:, lower], (k, d, d)) + xp.reshape(xp.exp(logdiag), (k, d, 1)) * xp.eye(d, dtype=icf.dtype)
    xc = xp.reshape(x, (n, 1, d)) - xp.reshape(means, (1, k, d))
    qx = xp.sum(xp.reshape(q, (1, k, d, d)) * xp.reshape(xc, (n, k, 1, d)), 3)
    log_joint = xp.reshape(alphas + xp.sum(logdiag, 1), (1, k)) - 0.5 * xp.sum(qx ** 2, 2)
    loglik = xp.sum(logsumexp(log_joint, 1)) - n * logsumexp(alphas, 0) - n * d / 2 * np.log(2 * np.pi)
    prior = 0.5 * (xp.sum(xp.exp(logdiag) ** 2) + xp.sum(icf[:, d:] ** 2))
    return prior - loglik


def gmm_peers(at, constants, repeat):
    names = ["alphas", "means", "icf"]
    out = {}
    try:
        import jax
        import jax.numpy as jnp
        from jax.scipy.special import logsumexp
        jax.config.update("jax_enable_x64", True)
        x, lower = jnp.asarray(constants["x"]), jnp.asarray(constants["lower"])
        f = lambda a, m, c: gmm_generic(jnp, logsumexp, a, m, c, x, lower)  # noqa: E731
        jf, jg = jax.jit(f), jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))
        args = [jnp.asarray(at[n]) for n in names]
        t0 = time.perf_counter()
        jax.block_until_ready(jg(*args))
        jax.block_until_ready(jf(*args))
        compile_s = time.perf_counter() - t0
        out["jax (jit)"] = (best(lambda: jax.block_until_ready(jf(*args)), repeat),
                            best(lambda: jax.block_until_ready(jg(*args)), repeat), compile_s)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)
        x, lower = torch.tensor(constants["x"]), torch.tensor(constants["lower"])
        ts = [torch.tensor(at[n]) for n in names]

        class T:  # the numpy names gmm_generic uses, on torch
            concatenate, zeros, reshape, exp, eye, sum = torch.cat, torch.zeros, torch.reshape, torch.exp, \
                torch.eye, torch.sum

        def f(*args):
            return gmm_generic(T, lambda v, axis: torch.logsumexp(v, axis), *args, x, lower)

        def grad():
            vs = [t.clone().requires_grad_(True) for t in ts]
            y = f(*vs)
            y.backward()
            return y, [v.grad for v in vs]

        with torch.no_grad():
            tf = best(lambda: f(*ts), repeat)
        out["torch eager"] = (tf, best(grad, repeat), None)
    except ImportError:
        pass
    try:
        import autograd
        import autograd.numpy as anp
        from autograd.scipy.special import logsumexp
        f = lambda a, m, c: gmm_generic(anp, logsumexp, a, m, c, constants["x"], constants["lower"])  # noqa: E731
        g = autograd.value_and_grad(lambda p: f(*p))
        args = [at[n] for n in names]
        out["autograd"] = (best(lambda: f(*args), repeat), best(lambda: g(args), repeat), None)
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------- LSTM (ADBench lstm.h: 2 layers)


def lstm_program(c: int, b: int = 14) -> str:
    return f"""
def gate(a, W, Bv): return sigmoid(a * W + Bv)
h0 = state[0]
c0 = state[1]
h1 = state[2]
c1 = state[3]
total = 0.0
for t in range({c - 1}):
    inp = seq[t] * extra_params[0]
    f0 = gate(inp, main_params[0, 0:{b}], main_params[1, 0:{b}])
    i0 = gate(h0, main_params[0, {b}:{2 * b}], main_params[1, {b}:{2 * b}])
    o0 = gate(inp, main_params[0, {2 * b}:{3 * b}], main_params[1, {2 * b}:{3 * b}])
    g0 = tanh(h0 * main_params[0, {3 * b}:] + main_params[1, {3 * b}:])
    c0 = c0 * f0 + i0 * g0
    h0 = o0 * tanh(c0)
    f1 = gate(h0, main_params[2, 0:{b}], main_params[3, 0:{b}])
    i1 = gate(h1, main_params[2, {b}:{2 * b}], main_params[3, {b}:{2 * b}])
    o1 = gate(h0, main_params[2, {2 * b}:{3 * b}], main_params[3, {2 * b}:{3 * b}])
    g1 = tanh(h1 * main_params[2, {3 * b}:] + main_params[3, {3 * b}:])
    c1 = c1 * f1 + i1 * g1
    h1 = o1 * tanh(c1)
    ypred = h1 * extra_params[1] + extra_params[2]
    total = total + sum(seq[t + 1] * (ypred - log(sum(exp(ypred)) + 2)))
-total / {(c - 1) * b}
"""


def lstm_step(xp, sigmoid, mp, ep, seq_t, seq_next, state, b=14):
    h0, c0, h1, c1 = state
    inp = seq_t * ep[0]
    f0, i0 = sigmoid(inp * mp[0, :b] + mp[1, :b]), sigmoid(h0 * mp[0, b:2 * b] + mp[1, b:2 * b])
    o0, g0 = sigmoid(inp * mp[0, 2 * b:3 * b] + mp[1, 2 * b:3 * b]), xp.tanh(h0 * mp[0, 3 * b:] + mp[1, 3 * b:])
    c0 = c0 * f0 + i0 * g0
    h0 = o0 * xp.tanh(c0)
    f1, i1 = sigmoid(h0 * mp[2, :b] + mp[3, :b]), sigmoid(h1 * mp[2, b:2 * b] + mp[3, b:2 * b])
    o1, g1 = sigmoid(h0 * mp[2, 2 * b:3 * b] + mp[3, 2 * b:3 * b]), xp.tanh(h1 * mp[2, 3 * b:] + mp[3, 3 * b:])
    c1 = c1 * f1 + i1 * g1
    h1 = o1 * xp.tanh(c1)
    ypred = h1 * ep[1] + ep[2]
    return (h0, c0, h1, c1), xp.sum(seq_next * (ypred - xp.log(xp.sum(xp.exp(ypred)) + 2)))


def lstm_peers(at, constants, repeat):
    out = {}
    seq, state = constants["seq"], constants["state"]
    c, b = seq.shape
    scale = (c - 1) * b
    try:
        import jax
        import jax.numpy as jnp
        jax.config.update("jax_enable_x64", True)

        def f(mp, ep):
            def step(carry, xs):
                carry, term = lstm_step(jnp, jax.nn.sigmoid, mp, ep, xs[0], xs[1], carry)
                return carry, term

            _, terms = jax.lax.scan(step, tuple(jnp.asarray(state)), (jnp.asarray(seq[:-1]), jnp.asarray(seq[1:])))
            return -jnp.sum(terms) / scale

        jf, jg = jax.jit(f), jax.jit(jax.value_and_grad(f, argnums=(0, 1)))
        args = [jnp.asarray(at["main_params"]), jnp.asarray(at["extra_params"])]
        t0 = time.perf_counter()
        jax.block_until_ready(jg(*args))
        jax.block_until_ready(jf(*args))
        compile_s = time.perf_counter() - t0
        out["jax (jit, scan)"] = (best(lambda: jax.block_until_ready(jf(*args)), repeat),
                                  best(lambda: jax.block_until_ready(jg(*args)), repeat), compile_s)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(1)
        st, sq = torch.tensor(state), torch.tensor(seq)

        def f(mp, ep):
            carry, total = tuple(st), 0.0
            for t in range(c - 1):
                carry, term = lstm_step(torch, torch.sigmoid, mp, ep, sq[t], sq[t + 1], carry)
                total = total + term
            return -total / scale

        mp, ep = torch.tensor(at["main_params"]), torch.tensor(at["extra_params"])

        def grad():
            a, e = mp.clone().requires_grad_(True), ep.clone().requires_grad_(True)
            y = f(a, e)
            y.backward()
            return y, a.grad, e.grad

        with torch.no_grad():
            tf = best(lambda: f(mp, ep), repeat)
        out["torch eager"] = (tf, best(grad, repeat), None)
    except ImportError:
        pass
    try:
        import autograd
        import autograd.numpy as anp

        def f(mp, ep):
            carry, total = tuple(state), 0.0
            for t in range(c - 1):
                carry, term = lstm_step(anp, lambda v: 0.5 * (anp.tanh(0.5 * v) + 1), mp, ep, seq[t], seq[t + 1],
                                        carry)
                total = total + term
            return -total / scale

        g = autograd.value_and_grad(lambda p: f(*p))
        args = [at["main_params"], at["extra_params"]]
        out["autograd"] = (best(lambda: f(*args), repeat), best(lambda: g(args), repeat), None)
    except ImportError:
        pass
    return out


# ---------------------------------------------------------------- tables


def table(title, ours_row, peers):
    print(f"## {title}\n")
    print("| engine | f (ms) | value+gradient (ms) | ratio | compile (ms) |")
    print("|---|---|---|---|---|")
    for name, (tf, tg, tc) in [("derivd", ours_row)] + list(peers.items()):
        tcs = f"{tc * 1e3:.0f}" if tc is not None else "–"
        print(f"| {name} | {tf * 1e3:.3f} | {tg * 1e3:.3f} | {tg / tf:.2f} | {tcs} |")
    print()


def long_loop(n: int = 10_000):
    """Lowering and compiling the gradient of an n-step recurrence, then running it."""
    from derivd.transforms import vjp
    from derivd.compile.codegen import compile_graph
    from derivd.dsl import lower

    src = f"h = x[0]\nfor i in range({n}):\n    h = h + 0.001 * sin(h * w[i % 3] + i)\nh"
    specs = {"x": InputSpec((1,), "f8", "at"), "w": InputSpec((3,), "f8", "at")}
    rows = []
    for unroll, label in ((Settings().loop_unroll_nodes, "loop node (default)"), (10**9, "unrolled")):
        if unroll == 10**9 and n > 2_000:
            continue  # unrolled, 10,000 steps take ~30 s to compile: measured at 2,000 below
        t0 = time.perf_counter()
        program = lower(src, specs, Settings(loop_unroll_nodes=unroll))
        g = program.graph
        xs = [g.inputs["x"], g.inputs["w"]]
        grads = vjp(g, xs, [program.output], [g.const(1.0)])
        tape = compile_graph(g, xs, [program.output] + grads)
        compile_s = time.perf_counter() - t0
        run_s = best(lambda: tape.run(np.array([0.3]), np.array([0.5, -0.2, 0.9])), 3)
        rows.append((n, label, compile_s, run_s, len(g.live_nodes([program.output] + grads))))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="a 100-character LSTM and fewer repeats")
    args = parser.parse_args()
    repeat = 5 if args.quick else 20
    rng = np.random.default_rng(0)

    k, d, n = 5, 10, 1000
    at = {"alphas": rng.normal(size=k), "means": rng.normal(size=(k, d)),
          "icf": rng.normal(size=(k, d + d * (d - 1) // 2)) * 0.3}
    constants = {"x": rng.normal(size=(n, d)), "lower": lower_index(d)}
    table(f"GMM objective, d={d} K={k} n={n} (gradient over {sum(v.size for v in at.values())} numbers)",
          ours(gmm_program(k, d, n), at, constants, list(at), repeat), gmm_peers(at, constants, repeat))

    c = 100 if args.quick else 1024
    at = {"main_params": rng.normal(size=(4, 56)) * 0.3, "extra_params": rng.normal(size=(3, 14)) * 0.3}
    constants = {"state": rng.normal(size=(4, 14)) * 0.3, "seq": rng.normal(size=(c, 14))}
    table(f"LSTM, 2 layers, hidden 14, {c} characters ({c - 1} steps, a loop node)",
          ours(lstm_program(c), at, constants, list(at), max(3, repeat // 4)), lstm_peers(at, constants, 3))

    print("## A long loop: the gradient of h = h + 0.001 sin(h w[i % 3] + i), N steps\n")
    print("| N | representation | lower + vjp + compile (ms) | run value+gradient (ms) | graph nodes |")
    print("|---|---|---|---|---|")
    for n_steps in (2_000, 10_000):
        for n_, label, tc, tr, nodes in long_loop(n_steps):
            print(f"| {n_} | {label} | {tc * 1e3:.0f} | {tr * 1e3:.0f} | {nodes} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
