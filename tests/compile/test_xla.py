"""Tier 2 (compile/xla.py) and the tiering (engines/tiers.py) through the service.

Tier 2's numbers: loops (lax.scan, forward and reverse, collected states) and the
endpoints on them against tier 1 and analytic references; literals as arguments
(one executable for programs that differ only in a literal's value). The
tiering: a hot tape moves to tier 2 in the background and says so; a tier 2
that disagrees with tier 1 is discarded and counted; a non-finite answer of
tier 2 is recomputed by tier 1 (its errors included); a lowering that fails
keeps the tape on tier 1. Compiles run in a child process: XLA's crash there
leaves the tape on tier 1 and the next compile to a new child, as does a child
killed while idle; a request past its deadline kills the compile it waits for.
Without jax nothing changes (a subprocess with jax hidden), and compiled
executables persist in the cache directory, loaded by the next process without
compiling.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import scipy.special as scipy_special

pytest.importorskip("jax")

from derivd.compile import xla, xla_process  # noqa: E402
from derivd.config import Settings  # noqa: E402
from derivd.core import Request, Service  # noqa: E402
from derivd.engines import tiers  # noqa: E402
from derivd.errors import DeadlineExceeded, DerivdError  # noqa: E402
from derivd.ir.graph import Graph  # noqa: E402
from derivd.ops import REGISTRY  # noqa: E402
from tests.references import central_difference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALWAYS = Service(Settings(xla_tier="always", loop_unroll_nodes=0, xla_cache_dir=""))
OFF = Service(Settings(xla_tier="off", loop_unroll_nodes=0))

X = np.array([0.3, -0.8, 1.2, 0.5, -0.1, 0.9])
W = np.array([0.5, -0.2, 0.9])
LOOPS = [  # (program, inputs, constants): loop nodes (loop_unroll_nodes=0)
    ("h = x[0]\nfor i in range(6):\n    h = h + 0.1 * sin(h * w[i % 3] + i) * x[i]\nh", {"x": X, "w": W}, None),
    ("h = x[:3]\nfor t in range(5, 0, -2):\n    h = tanh(W @ h + b * t)\nsum(h ** 2)",
     {"x": X, "W": np.outer(W, W) - 0.3, "b": W}, None),
    ("acc = zeros(2)\nfor i in range(4):\n    acc = acc + x[idx[i]] * m[i]\nsum(acc ** 2)",
     {"x": X, "m": np.arange(8.0).reshape(4, 2) / 7}, {"idx": np.array([2, 2, -1, 0])}),
    # ten scalar states and their cotangents, tangents: more than PACKED_STATES_MIN of a shape, packed in the scans
    ("".join(f"s{j} = x[{j % 6}] * {j + 1}\n" for j in range(10)) + "for i in range(5):\n"
     + "".join(f"    s{j} = s{j} + 0.1 * sin(s{(j + 1) % 10} * w[i % 3] + {j})\n" for j in range(10))
     + " + ".join(f"s{j} * {j - 4}" for j in range(10)), {"x": X, "w": W}, None),
]


def compute(service, endpoint, dsl, at, constants=None, **fields):
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}
    return service.compute(endpoint, Request(function={"dsl": dsl}, at=at, constants=constants or {}, **fields))[0]


@pytest.mark.parametrize("dsl,at,constants", LOOPS, ids=["scalar", "matrix", "gather", "packed"])
def test_loops_on_tier_2_agree_with_tier_1(dsl, at, constants):
    v = {k: np.linspace(-0.5, 0.7, np.size(a)).reshape(np.shape(a)) for k, a in at.items()}
    for endpoint, fields in [("gradient", {}), ("hvp", {"v": v})]:
        got = compute(ALWAYS, endpoint, dsl, at, constants, **fields)
        want = compute(OFF, endpoint, dsl, at, constants, **fields)
        assert got["tier"] == 2 and "tier" not in want
        key = "gradient" if endpoint == "gradient" else "hvp"
        for name in want[key]:
            np.testing.assert_allclose(got[key][name], want[key][name], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(got["value"], want["value"], rtol=1e-12)


def test_a_gradient_runs_its_forward_loop_once_on_tier_2(monkeypatch):
    """The gradient's value and its reverse loop's states come from one loop run (its collecting twin):
    the executable holds two scans, forward and reverse, not the forward twice."""
    kept = []
    real = xla.compile_graph
    monkeypatch.setattr(xla, "compile_graph", lambda *args: kept.append(real(*args)) or kept[-1])
    dsl, at, _ = LOOPS[0]
    got = compute(Service(Settings(xla_tier="always", loop_unroll_nodes=0, xla_cache_dir="")), "gradient", dsl, at)
    assert got["tier"] == 2
    assert kept[-1].source.count("_scan(") == 2
    assert kept[-1].executable.as_text().count(" while(") == 2


def test_states_packed_for_a_scan_come_back_in_their_places():
    """``_Packing``: of eleven states, the nine scalars travel in one array (the stacks of a collecting
    loop in one array too), each other apart; unpacked, each is itself again."""
    import jax.numpy as jnp

    avals = [((), "f8")] * 4 + [((2,), "f8"), ((), "i8")] + [((), "f8")] * 5
    packing = xla._Packing(avals)
    assert sorted(map(len, packing.groups)) == [1, 1, 9]
    values = [jnp.asarray(v, dtype=jnp.int64 if d == "i8" else jnp.float64) * np.ones(s)
              for v, (s, d) in enumerate(avals)]
    for got, want in zip(packing.unpack(packing.pack(values)), values):
        np.testing.assert_array_equal(got, want)
    stacks = [jnp.stack([v, v + 10, v + 20]) for v in values]  # the scan's stacks: (count, *packed)
    packed = [jnp.stack([p, p + 10, p + 20]) for p in packing.pack(values)]
    for got, want in zip(packing.unpack(packed, axis=1), stacks):
        np.testing.assert_array_equal(got, want)


def test_a_reverse_loop_gradient_on_tier_2_matches_finite_differences():
    dsl = "h = x[0]\nfor i in range(40):\n    h = h + 0.05 * sin(h * w[i % 3] + i) * x[i % 6]\nh"
    got = compute(ALWAYS, "gradient", dsl, {"x": X, "w": W})
    assert got["tier"] == 2

    def f(x):
        h = x[0]
        for i in range(40):
            h = h + 0.05 * np.sin(h * W[i % 3] + i) * x[i % 6]
        return h

    for j in range(6):
        e = np.eye(6)[j]
        fd = central_difference(lambda t: np.array([f(X + t * e)]), 1e-3)[0]
        assert abs(got["gradient"]["x"][j] - fd) < 1e-9


def test_literals_are_arguments_one_executable_serves_every_value():
    with xla._LOCK:  # emptied: after a long run it is full (EXECUTABLES_KEPT), and a new one pushes an old one out
        xla._EXECUTABLES.clear()
    before = len(xla._EXECUTABLES)
    for c in (2.5, 3.5):
        got = compute(ALWAYS, "gradient", f"sum(sin(x) * {c} + x ** 3)", {"x": X})
        assert got["tier"] == 2
        np.testing.assert_allclose(got["gradient"]["x"], c * np.cos(X) + 3 * X ** 2, rtol=1e-13)
    assert len(xla._EXECUTABLES) == before + 1


def test_scalar_inputs_in_one_vector_keep_their_places_among_the_others():
    """The executable takes a tape's float64 numbers in one vector (``PACKED_MIN``), its other inputs (here a
    vector between them, and a constant number) where they were: analytic gradient and Hessian-vector product."""
    dsl = "a * sin(b) + sum(x * x) * c + exp(a * k)"
    at = {"a": 0.7, "b": -1.3, "x": [0.5, -2.0, 1.5], "c": 2.5}
    a, b, x, c, k = 0.7, -1.3, np.array(at["x"]), 2.5, 0.3
    got = compute(ALWAYS, "gradient", dsl, at, {"k": np.float64(k)})
    assert got["tier"] == 2
    want = {"a": np.sin(b) + k * np.exp(a * k), "b": a * np.cos(b), "x": 2 * c * x, "c": np.sum(x * x)}
    for name, g in want.items():
        np.testing.assert_allclose(got["gradient"][name], g, rtol=1e-13)
    np.testing.assert_allclose(got["value"], a * np.sin(b) + np.sum(x * x) * c + np.exp(a * k), rtol=1e-14)
    v = {"a": 1.0, "b": 0.5, "x": [0.1, 0.2, -0.3], "c": -1.0}
    got = compute(ALWAYS, "hvp", dsl, at, {"k": np.float64(k)}, v=v)
    assert got["tier"] == 2
    vx = np.array(v["x"])
    want = {"a": k * k * np.exp(a * k) * 1.0 + np.cos(b) * 0.5, "b": np.cos(b) * 1.0 - a * np.sin(b) * 0.5,
            "x": 2 * c * vx + 2 * x * -1.0, "c": 2 * x @ vx}
    for name, h in want.items():
        np.testing.assert_allclose(got["hvp"][name], h, rtol=1e-13)


def test_tier_2_runs_its_executables_on_the_calling_thread():
    """jax's dispatch to XLA's thread pool is off once tier 2 has run (``xla.SYNCHRONOUS``; the time it saves is
    measured in bench/tiers.py)."""
    import jax

    assert compute(ALWAYS, "gradient", "sum(sin(x))", {"x": X})["tier"] == 2
    assert jax.config.values[xla.SYNCHRONOUS] is False


def test_a_hot_tape_moves_to_tier_2_in_the_background():
    """A 2000-step loop: tier 1 runs its iterations in Python, tier 2 is one lax.scan (~100x faster)."""
    settings = dict(xla_after_runs=3, xla_after_seconds=1e9, xla_cache_dir="", loop_unroll_nodes=0)
    service = Service(Settings(xla_tier="auto", **settings))
    dsl = "h = x[0]\nfor i in range(2000):\n    h = h + 0.001 * sin(h * w[i % 3] + i) * x[1]\nh"
    at = {"x": np.array([0.3, 0.8]), "w": W}
    want = compute(Service(Settings(xla_tier="off", **settings)), "gradient", dsl, at)
    accepted = tiers.COUNTS["accepted"]
    tiers_seen = [compute(service, "gradient", dsl, at)["tier"] for _ in range(3)]
    assert tiers_seen == [1, 1, 1]  # the third run made it hot: compiling now, off the request
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # a run after the check (in the compile thread) answers on tier 2
        got = compute(service, "gradient", dsl, at)
        for name in at:
            np.testing.assert_allclose(got["gradient"][name], want["gradient"][name], rtol=1e-9)
        if got["tier"] == 2:
            break
        time.sleep(0.05)
    assert got["tier"] == 2 and tiers.COUNTS["accepted"] == accepted + 1


def test_a_hot_tape_faster_than_a_call_of_xla_is_never_compiled(monkeypatch):
    """A gradient of six inputs runs in a few µs on numpy, less than calling any XLA executable costs."""
    compiled = []
    monkeypatch.setattr(xla, "compile_graph", lambda *args: compiled.append(args))
    service = Service(Settings(xla_tier="auto", xla_after_runs=3, xla_after_seconds=1e9, xla_cache_dir="",
                               xla_min_run_s=1e-3))
    small = tiers.COUNTS["small"]
    for _ in range(6):
        got = compute(service, "gradient", "sum(x ** 3) * 0.625", {"x": X})
        assert got["tier"] == 1
        np.testing.assert_allclose(got["gradient"]["x"], 1.875 * X ** 2, rtol=1e-15)
    time.sleep(0.2)  # a compile would have been handed to the compile thread by now
    assert compiled == [] and tiers.COUNTS["small"] == small + 1


def test_a_hot_tape_whose_tier_2_runs_slower_stays_on_tier_1(monkeypatch):
    """Calling an executable costs more than a small numpy tape runs (here made 20 ms to be sure)."""
    real = xla.compile_graph

    def slow(*args):
        tape = real(*args)
        run = tape.run
        tape.run = lambda *a: time.sleep(0.02) or run(*a)
        return tape

    monkeypatch.setattr(xla, "compile_graph", slow)
    service = Service(Settings(xla_tier="auto", xla_after_runs=3, xla_after_seconds=1e9, xla_cache_dir="",
                               xla_min_run_s=0.0))
    dsl, at = "sum(x ** 3) * 0.75", {"x": X}
    slower = tiers.COUNTS["slower"]
    deadline = time.monotonic() + 60
    while tiers.COUNTS["slower"] == slower and time.monotonic() < deadline:
        got = compute(service, "gradient", dsl, at)
        assert got["tier"] == 1
        np.testing.assert_allclose(got["gradient"]["x"], 2.25 * X ** 2, rtol=1e-14)
        time.sleep(0.01)
    assert tiers.COUNTS["slower"] == slower + 1
    assert compute(service, "gradient", dsl, at)["tier"] == 1


def test_always_answers_from_tier_1_while_a_compile_outlasts_its_wait(monkeypatch):
    """xla_always_wait_s: a compile slower than it (here made 1 s) leaves the first answer to tier 1;
    once it ends, the next run checks it and tier 2 answers."""
    real = xla.compile_graph
    monkeypatch.setattr(xla, "compile_graph", lambda *args: time.sleep(1.0) or real(*args))
    service = Service(Settings(xla_tier="always", xla_always_wait_s=0.05, xla_cache_dir=""))
    dsl, at = "sum(x ** 3) * 0.25", {"x": X}
    first = compute(service, "gradient", dsl, at)
    assert first["tier"] == 1
    np.testing.assert_allclose(first["gradient"]["x"], 0.75 * X ** 2, rtol=1e-14)
    time.sleep(1.5)
    got = compute(service, "gradient", dsl, at)
    assert got["tier"] == 2
    np.testing.assert_allclose(got["gradient"]["x"], 0.75 * X ** 2, rtol=1e-13)


def test_a_tier_2_that_disagrees_is_discarded_and_counted(monkeypatch):
    real = xla.compile_graph

    def skewed(*args):
        tape = real(*args)
        run = tape.run
        tape.run = lambda *a: tuple(o * (1 + 1e-6) for o in run(*a))
        return tape

    monkeypatch.setattr(xla, "compile_graph", skewed)
    rejected = tiers.COUNTS["rejected"]
    for _ in range(2):
        got = compute(ALWAYS, "gradient", "sum(x ** 4) * 1.25", {"x": X})
        assert got["tier"] == 1
        np.testing.assert_allclose(got["gradient"]["x"], 5 * X ** 3, rtol=1e-14)
    assert tiers.COUNTS["rejected"] == rejected + 1


def test_a_tier_2_wrong_away_from_its_checked_point_is_caught_by_the_audit(monkeypatch):
    """One point's agreement cannot show a lowering right elsewhere (jax's eigh once read the mean of
    A and A^T: equal at a symmetric first point): tier 1 reruns tier 2's first answers in the
    background, and at the first disagreement tier 2 is dropped for good."""
    real = xla.compile_graph

    def wrong_where_x0_is_positive(*args):
        tape = real(*args)
        run = tape.run
        tape.run = lambda *a: (lambda out: out if a[0].flat[0] < 0 else tuple(o * 1.001 for o in out))(run(*a))
        return tape

    monkeypatch.setattr(xla, "compile_graph", wrong_where_x0_is_positive)
    service = Service(Settings(xla_tier="always", xla_cache_dir=""))
    dsl = "sum(x ** 3) * 0.5"
    rejected = tiers.COUNTS["rejected"]
    first = compute(service, "gradient", dsl, {"x": X - 1})  # checked here: tier 2 agrees
    assert first["tier"] == 2
    np.testing.assert_allclose(first["gradient"]["x"], 1.5 * (X - 1) ** 2, rtol=1e-14)
    compute(service, "gradient", dsl, {"x": X})  # tier 2 answers off by 1e-3; the audit sees it
    deadline = time.monotonic() + 60
    while tiers.COUNTS["rejected"] == rejected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tiers.COUNTS["rejected"] == rejected + 1
    got = compute(service, "gradient", dsl, {"x": X})
    assert got["tier"] == 1
    np.testing.assert_allclose(got["gradient"]["x"], 1.5 * X ** 2, rtol=1e-14)


def test_a_lowering_that_fails_keeps_the_tape_on_tier_1(monkeypatch):
    """The compile process traces with its own registry: its work is done here instead (``compile_job``,
    as the child runs it), where the broken lowering is seen; it answers "failed"."""
    def broken(jx, *args, **params):
        raise NotImplementedError("not this one")

    monkeypatch.setattr(REGISTRY["logsumexp"], "xla", broken)
    monkeypatch.setattr(xla_process, "compile", lambda job, settings, ticket=None:
                        xla.compile_job(xla.configure(settings), job))
    monkeypatch.setattr(xla, "_EXECUTABLES", type(xla._EXECUTABLES)())
    unlowerable = tiers.COUNTS["unlowerable"]
    got = compute(ALWAYS, "gradient", "logsumexp(x * 2.0)", {"x": X})
    assert got["tier"] == 1 and tiers.COUNTS["unlowerable"] == unlowerable + 1
    softmax = np.exp(2 * X) / np.sum(np.exp(2 * X))
    np.testing.assert_allclose(got["gradient"]["x"], 2 * softmax, rtol=1e-13)


def test_an_xla_option_this_jax_lacks_is_left_out_and_tier_2_still_answers(monkeypatch):
    """XLA refuses a compile naming an option it does not know: a compile (in the compile process too,
    which gets each tape's options) keeps only those it knows."""
    options = {**xla.XLA_OPTIONS, "xla_cpu_no_such_option": True}
    monkeypatch.setattr(xla, "XLA_OPTIONS", options)
    monkeypatch.setattr(xla, "_EXECUTABLES", type(xla._EXECUTABLES)())  # compiled again, with these options
    assert xla._known(xla.configure(ALWAYS.settings), options) == {
        k: v for k, v in options.items() if k != "xla_cpu_no_such_option"}
    got = compute(ALWAYS, "gradient", "sum(x ** 2 * 1.5)", {"x": X})
    assert got["tier"] == 2
    np.testing.assert_allclose(got["gradient"]["x"], 3 * X, rtol=1e-14)


DEEP = """
import json, numpy as np
from derivd.config import Settings
from derivd.core import Request, Service
service = Service(Settings(xla_tier="always", xla_cache_dir="", xla_always_wait_s=600))
dsl = "s = x[0]\\n" + "s = s * 1.0001 + 1\\n" * 6000 + "s"
got = service.compute("gradient", Request(function={"dsl": dsl}, at={"x": np.array([0.5, 1.0])}))[0]
print(json.dumps({"value": got["value"], "gradient": got["gradient"]["x"].tolist(), "tier": got["tier"]}))
"""


def test_a_graph_deeper_than_xla_compiles_without_its_fusion_emitters_keeps_them():
    """A 6,000-long chain crashed XLA's compile (SIGSEGV) without its fusion emitters: such a graph
    keeps them and tier 2 answers it. In a child process, where a crash fails this test alone."""
    out = subprocess.run([sys.executable, "-c", DEEP], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "services")))
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    a = 1.0001
    assert got["tier"] == 2
    assert got["value"] == pytest.approx(0.5 * a ** 6000 + (a ** 6000 - 1) / (a - 1), rel=1e-12)
    np.testing.assert_allclose(got["gradient"], [a ** 6000, 0.0], rtol=1e-12)


def test_the_chain_rule_measures_the_longest_dependency_chain():
    g = Graph()
    x = g.input("x", (), "f8", "at")
    long, short = x, g.apply("sin", [x], {})
    for _ in range(30):
        long = g.apply("sin", [long], {})
    out = g.apply("add", [long, short], {})
    assert xla._longest_chain(g, [out]) == 1 + 30 + 1  # x, 30 sines, the add


@pytest.mark.parametrize("step, levels", [("concat([t, t])", 15), ("t + t[::-1]", 30)])
def test_a_graph_read_through_doubling_concatenations_or_slices_stays_on_tier_1(step, levels):
    """XLA crashed (SIGSEGV) compiling 13 levels of t = concat([t, t]) under a sum (the fuzz suite's
    huge17 with DERIVD_XLA_TIER=always), and took 8 s at 18 levels of t + t[::-1], doubling per level;
    tier 1 answers them, the tape counted unlowerable, and no compile starts."""
    dsl = "t = x\n" + f"t = {step}\n" * levels + "sum(t)"  # unrolled, as the language unrolls a small loop
    x = np.array([0.5, -1.0, 2.0])
    before = tiers.COUNTS["unlowerable"]
    got = compute(ALWAYS, "evaluate", dsl, {"x": x})
    assert got["tier"] == 1 and tiers.COUNTS["unlowerable"] == before + 1
    assert got["value"] == pytest.approx(np.sum(x) * 2 ** levels, rel=1e-12)


def test_remapped_paths_count_the_ways_a_value_is_re_indexed():
    """Elementwise readers share an index (a Rosenbrock-like x[1:], x[:-1] pair: 2 ways); each level of
    concat([t, t]) doubles the ways."""
    g = Graph()
    x = g.input("x", (4,), "f8", "at")
    head, tail = (g.apply("index", [x], {"items": (s,)}) for s in ((1, 4, 1), (0, 3, 1)))
    out = g.apply("sum", [g.apply("mul", [g.apply("sin", [head], {}), tail], {})], {"axes": (-1,)})
    assert xla._remapped_paths(g, [out]) == 2
    t = x
    for level in range(1, 5):
        t = g.apply("concat", [t, t], {"axis": -1})
        assert xla._remapped_paths(g, [t]) == 2 ** level


def test_a_compile_that_crashes_xla_costs_its_tape_tier_2_not_the_server(monkeypatch):
    """The compile runs in a child process: XLA's crash (SIGSEGV compiling a 6,000-long chain of dependent
    additions without its fusion emitters, let through here by lifting the guard that keeps them on for such
    a graph) kills the child alone. The tape answers on tier 1, counted unlowerable, and the next compile
    starts a new child."""
    monkeypatch.setattr(xla, "DEEP_CHAIN", 10 ** 9)
    service = Service(Settings(xla_tier="always", xla_cache_dir="", xla_always_wait_s=600))
    x = np.array([0.5, 1.0])
    compute(service, "gradient", "sum(sinh(x) * 0.5)", {"x": x})  # a child runs (a program of this test's own)
    crashing = xla_process.pid()
    unlowerable = tiers.COUNTS["unlowerable"]
    got = compute(service, "gradient", "s = x[0]\n" + "s = s + 1\n" * 6000 + "s", {"x": x})
    assert got["tier"] == 1 and tiers.COUNTS["unlowerable"] == unlowerable + 1
    assert got["value"] == 6000.5
    np.testing.assert_array_equal(got["gradient"]["x"], [1.0, 0.0])
    assert crashing is not None and not psutil.pid_exists(crashing)
    got = compute(service, "gradient", "sum(sin(x) * 2.5)", {"x": x})
    assert got["tier"] == 2 and xla_process.pid() not in (None, crashing)
    np.testing.assert_allclose(got["gradient"]["x"], 2.5 * np.cos(x), rtol=1e-14)


def test_a_compile_process_killed_while_idle_is_replaced_at_the_next_compile():
    """Programs of this test's own: compiled here, not found compiled in this process already."""
    compute(ALWAYS, "gradient", "sum(x ** 3 * 0.125 + sinh(x))", {"x": X})
    killed = xla_process.pid()
    os.kill(killed, signal.SIGKILL)
    _until_dead(killed)
    unlowerable = tiers.COUNTS["unlowerable"]
    got = compute(ALWAYS, "gradient", "sum(x ** 3 * 0.375 - cosh(x))", {"x": X})
    assert got["tier"] == 2 and tiers.COUNTS["unlowerable"] == unlowerable
    assert xla_process.pid() not in (None, killed)
    np.testing.assert_allclose(got["gradient"]["x"], 1.125 * X ** 2 - np.sinh(X), rtol=1e-14)


def _until_dead(pid: int) -> None:
    """Wait until ``pid``, a child of this process, has exited, every thread of it (only then can it be
    reaped), without reaping it; or until it was reaped."""
    deadline = time.monotonic() + 10
    while True:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_request_past_its_deadline_kills_the_compile_it_waits_for(monkeypatch):
    """With always a first request waits for its compile; at its deadline the compile process is killed
    (a compile cannot be stopped otherwise) and the request fails as any late one (504). Not a failed
    lowering: the next request compiles the tape again (here given the time)."""
    monkeypatch.setattr(xla, "REMAPPED_PATHS_MAX", 10 ** 9)  # 2^17 paths of t + t[::-1]: ~4 s to compile
    service = Service(Settings(xla_tier="always", xla_cache_dir="", xla_always_wait_s=600))
    dsl, x = "t = x\n" + "t = t + t[::-1]\n" * 17 + "sum(t * t)", np.array([0.5, 1.0, -2.0])
    compute(service, "gradient", "sum(tanh(x) * 0.25)", {"x": x})  # a child runs (a program of this test's own)
    compiling = xla_process.pid()
    unlowerable = tiers.COUNTS["unlowerable"]
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        compute(service, "gradient", dsl, {"x": x}, deadline=time.monotonic() + 0.3)
    assert time.monotonic() - t0 < 2.0  # not the compile's ~4 s
    _until_dead(compiling)
    assert tiers.COUNTS["unlowerable"] == unlowerable
    got = compute(service, "evaluate", dsl, {"x": x})
    assert got["tier"] == 2  # compiled again, by a new child
    t = x
    for _ in range(17):
        t = t + t[::-1]
    assert got["value"] == pytest.approx(np.sum(t * t), rel=1e-12)


def test_a_non_finite_answer_of_tier_2_is_tier_1s_with_its_errors():
    """XLA answers NaN where numpy raises (a singular matrix) or where jax would clamp an index."""
    dsl = "sum(inv(a))"
    regular = np.array([[2.0, 1.0], [1.0, 3.0]])
    assert compute(ALWAYS, "gradient", dsl, {"a": regular})["tier"] == 2
    with pytest.raises(DerivdError) as e:
        compute(ALWAYS, "gradient", dsl, {"a": np.ones((2, 2))})
    assert e.value.code == "linalg_error"
    dsl = "sum(x[idx] ** 2)"
    assert compute(ALWAYS, "gradient", dsl, {"x": X}, {"idx": np.array([0, 5])})["tier"] == 2
    with pytest.raises(DerivdError, match="out of range"):
        compute(ALWAYS, "gradient", dsl, {"x": X}, {"idx": np.array([0, 6])})


@pytest.mark.parametrize("size", [xla.SPLIT_MIN - 1, xla.SPLIT * 1100, xla.SPLIT * 1100 + 5])
def test_the_finiteness_flag_finds_every_inf_and_nan_wherever_it_is(size):
    """One inf, -inf or NaN anywhere (first, either side of a row boundary of the two-stage form, last:
    next to its zero padding) raises the flag; finite values of any size, huge ones included, do not."""
    import jax
    import jax.numpy as jnp

    jx = xla._namespace(jax)["_jx"]
    flag = jax.jit(lambda o: xla._not_finite(jx, o))
    rows = -(-size // xla.SPLIT)
    o = np.random.default_rng(size).uniform(-1, 1, size) * 1.7e308
    assert not flag(jnp.asarray(o))
    for at in sorted({0, rows - 1, rows, size // 2, size - 2, size - 1}):
        for bad in (np.inf, -np.inf, np.nan):
            spoilt = o.copy()
            spoilt[at] = bad
            assert flag(jnp.asarray(spoilt)), (at, bad)


@pytest.mark.parametrize("size", [xla.SPLIT_MIN - 1, xla.SPLIT * 1100, xla.SPLIT * 1100 + 5])
def test_a_long_sum_on_tier_2_is_the_exact_sum_within_rounding(size):
    """Whole sums of long vectors run in two stages (rows, then their partial sums, and the tail apart)."""
    import math

    x = np.random.default_rng(size).normal(size=size)
    x[-1] = 1e3  # in the tail when size % SPLIT
    got = compute(ALWAYS, "gradient", "sum(x ** 3) + sum(x)", {"x": x})
    assert got["tier"] == 2
    want = math.fsum(x ** 3) + math.fsum(x)
    assert abs(got["value"] - want) <= 1e-13 * math.fsum(np.abs(x) ** 3)
    np.testing.assert_allclose(got["gradient"]["x"], 3 * x ** 2 + 1, rtol=1e-15)


def test_a_large_output_non_finite_in_one_entry_is_answered_by_tier_1():
    """sqrt's derivative at 0 is inf in one entry of a long gradient whose value is finite."""
    n = xla.SPLIT * 1100 + 5
    for at in (0, n // 2, n - 1):
        x = np.linspace(1.0, 2.0, n)
        x[at] = 0.0
        got = compute(ALWAYS, "gradient", "sum(sqrt(x))", {"x": x})
        assert got["tier"] == 1 and np.isfinite(got["value"])
        assert np.isinf(got["gradient"]["x"][at]) and np.isfinite(np.delete(got["gradient"]["x"], at)).all()
    assert compute(ALWAYS, "gradient", "sum(sqrt(x))", {"x": np.linspace(1.0, 2.0, n)})["tier"] == 2


@pytest.mark.parametrize("at", [0, 4, 9])
def test_a_small_answer_non_finite_in_one_entry_is_answered_by_tier_1(at):
    """A small all-float answer is one flat vector whose finiteness the host tests (``XlaTape.run``):
    an inf or a NaN in any entry of the gradient, or in the value, is tier 1's; huge finite numbers
    are tier 2's."""
    x = np.linspace(1.0, 2.0, 10)
    x[at] = 0.0
    got = compute(ALWAYS, "gradient", "sum(sqrt(x))", {"x": x})
    assert got["tier"] == 1 and np.isinf(got["gradient"]["x"][at])
    np.testing.assert_allclose(np.delete(got["gradient"]["x"], at), 0.5 / np.sqrt(np.delete(x, at)), rtol=1e-15)
    x[at] = np.nan
    got = compute(ALWAYS, "gradient", "sum(x * x)", {"x": x})
    assert got["tier"] == 1 and np.isnan(got["value"]) and np.isnan(got["gradient"]["x"][at])
    x[at] = 1e300
    got = compute(ALWAYS, "gradient", "sum(x * 1e8)", {"x": x})
    assert got["tier"] == 2 and got["value"] == pytest.approx(np.sum(x) * 1e8, rel=1e-15)
    np.testing.assert_array_equal(got["gradient"]["x"], np.full(10, 1e8))


def test_tier_2_keeps_numpys_conventions_where_jaxs_defaults_differ():
    """Checked at the first point, answered from the second (DERIVD_XLA_TIER=always found both): eigh
    reads A's lower triangle only (jax's would read the mean of A and Aᵀ: 0.43 off on a non-symmetric
    A), and pinv inverts a singular value above 1e-15 times the largest (jax's default cutoff,
    10 max(m, n) eps, dropped it: every entry off)."""
    rng = np.random.default_rng(15)
    q, u, v = (np.linalg.qr(rng.normal(size=(3, 3)))[0] for _ in range(3))
    symmetric = (q * [-1.0, 0.5, 2.0]) @ q.T
    for a in (symmetric, symmetric + np.triu(rng.normal(size=(3, 3)), 1)):
        got = compute(ALWAYS, "evaluate", "w, V = eigh(a)\nconcatenate([w, ravel(V)])", {"a": a})
        w, vectors = np.linalg.eigh(a)  # LAPACK's syevd on both tiers: the same signs
        assert got["tier"] == 2
        np.testing.assert_allclose(got["value"], np.concatenate([w, vectors.ravel()]), rtol=1e-12, atol=1e-12)
    for smallest in (0.25, 3e-15):
        a = u @ np.diag([1.0, 0.5, smallest]) @ v.T
        got = compute(ALWAYS, "evaluate", "pinv(a)", {"a": a})
        assert got["tier"] == 2
        np.testing.assert_allclose(got["value"], np.linalg.pinv(a), rtol=1e-9, atol=1e-9 / smallest)


def test_integer_floor_division_by_zero_is_numpys_zero_on_tier_2():
    """numpy's k // 0 is 0 for integers; jax's -1 or -2 (5 // 0, -5 // 0) answered a wrong value and
    gradient from the second point on."""
    dsl, x = "sum(x * (k // d))", np.array([1.0, 2.0, 3.0])
    for d, want in (([1, 2, 3], [5, -3, 0]), ([1, 0, 3], [5, 0, 0]), ([0, 0, -1], [0, 0, -2])):
        got = compute(ALWAYS, "gradient", dsl, {"x": x}, {"k": np.array([5, -5, 2]), "d": np.array(d)})
        assert got["tier"] == 2
        np.testing.assert_array_equal(got["gradient"]["x"], want)
        assert got["value"] == np.dot(x, want)


SPECIAL = "concatenate([beta(a, b), betaln(b, a), gammaincc(s, b), polygamma(3, y), log_ndtr(z)])"


def test_special_functions_on_tier_2_are_scipys():
    """Where jax's own were off (measured against scipy over wide ranges; checked at the first point,
    answered from the second): beta 1e-6 off at (4.9, 8.2), betaln 5e-7, gammaincc 2e-7 at a = 3e-8,
    polygamma of any sign at negative x, log_ndtr 6% at 7.9; scipy's on the host, whose beta(74.9,
    96.5) had come out 0 in XLA's flush-to-zero mode."""
    import scipy.special as sp

    ordinary = {"a": [1.5, 2.0], "b": [0.7, 3.0], "s": [0.5, 1.5], "y": [0.5, 2.0], "z": [-1.0, 0.5]}
    hard = {"a": [4.905942125967912, 74.90288436251117], "b": [8.191961943924989, 96.50157255119939],
            "s": [3.3255328592644615e-08, 1e-8], "y": [-10.078266795423287, -2.5], "z": [7.935588516112331, 7.9]}
    for at in (ordinary, hard):
        at = {k: np.array(v) for k, v in at.items()}
        got = compute(ALWAYS, "evaluate", SPECIAL, at)
        want = np.concatenate([sp.beta(at["a"], at["b"]), sp.betaln(at["b"], at["a"]), sp.gammaincc(at["s"], at["b"]),
                               sp.polygamma(3, at["y"]), sp.log_ndtr(at["z"])])
        assert got["tier"] == 2
        np.testing.assert_allclose(got["value"], want, rtol=1e-11, atol=0)


def test_a_host_callback_computes_subnormal_intermediates_without_the_fp_mode_reset(monkeypatch):
    """Where the mode cannot be reset (not Linux), a callback computes on a thread made outside XLA."""
    import jax
    import scipy.special as sp

    monkeypatch.setattr(xla, "_LIBM", None)
    f = jax.jit(lambda a, b: xla._callback(sp.beta, (1,), np.float64, a, b))
    np.testing.assert_allclose(f(np.array([74.90288436251117]), np.array([96.50157255119939])),
                               [3.8187567692153834e-52], rtol=1e-14)


@pytest.mark.parametrize("f", ["sqrtm", "logm"])
def test_a_matrix_function_without_a_real_value_is_tier_1s_nan(f):
    """Tier 2's own square root and logarithm (no Schur form): a rotation by 60 degrees has a real one,
    a negative eigenvalue none, and there the iteration's check lets tier 1 answer its nan."""
    rotation = np.array([[0.5, -np.sqrt(0.75)], [np.sqrt(0.75), 0.5]])  # exp(±iπ/3)
    got = compute(ALWAYS, "evaluate", f"{f}(a)", {"a": rotation})
    half = np.pi / 6 if f == "sqrtm" else np.pi / 3  # the principal root is the rotation by 30 degrees
    want = np.array([[np.cos(half), -np.sin(half)], [np.sin(half), np.cos(half)]]) if f == "sqrtm" else \
        np.array([[0.0, -half], [half, 0.0]])
    assert got["tier"] == 2
    np.testing.assert_allclose(got["value"], want, rtol=1e-13, atol=1e-14)
    got = compute(ALWAYS, "evaluate", f"{f}(a)", {"a": np.array([[-1.0, 0.3], [0.0, 2.0]])})
    assert got["tier"] == 1 and np.all(np.isnan(got["value"]))


def test_rest_says_which_tier_answered():
    """A live gateway with the default settings (auto, pinned: DERIVD_XLA_TIER=always runs the suite
    too): tier 1 answers a new program first."""
    import httpx

    from tests.conftest import LiveServer

    with LiveServer(Settings(xla_tier="auto")) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        r = client.post("/v1/gradient", json={"function": {"dsl": "sum(x ** 2) * 0.5"}, "at": {"x": [1.0, 2.0]}})
        assert r.status_code == 200, r.text
        assert r.json()["tier"] == 1 and r.json()["gradient"]["x"] == [1.0, 2.0]
        assert 'tier;desc="numpy"' in r.headers["server-timing"]
        assert "derivd_tier2_tapes" in client.get("/metrics").text


def test_without_jax_nothing_changes():
    """jax hidden: the service imports and answers as before, with no ``tier`` anywhere."""
    code = (
        "import sys; sys.modules['jax'] = None\n"
        "import numpy as np\n"
        "from derivd.config import Settings\n"
        "from derivd.core import Request, Service\n"
        "from derivd.compile import xla\n"
        "assert not xla.available()\n"
        "r = Service(Settings(xla_tier='always')).compute('gradient', Request(function={'dsl': 'sum(x ** 3)'},"
        " at={'x': np.array([1.0, 2.0])}))[0]\n"
        "assert 'tier' not in r and list(r['gradient']['x']) == [3.0, 12.0], r\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "services")})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_compiled_executables_persist_in_the_cache_directory(tmp_path):
    """A fresh process with xla_cache_dir set leaves its compiled executable there; the next process
    loads it, without starting a compile process, and answers on tier 2."""
    code = (
        "import numpy as np\n"
        "from derivd.compile import xla_process\n"
        "from derivd.config import Settings\n"
        "from derivd.core import Request, Service\n"
        f"s = Service(Settings(xla_tier='always', xla_cache_dir={str(tmp_path)!r}))\n"
        "r = s.compute('gradient', Request(function={'dsl': 'sum(cos(x) * x)'}, at={'x': np.ones(3)}))[0]\n"
        "assert r['tier'] == 2, r\n"
        "assert np.allclose(r['gradient']['x'], np.cos(1.0) - np.sin(1.0), rtol=1e-14, atol=0), r\n"
        "print(xla_process.pid() is not None)\n")
    started = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "services")})
        assert out.returncode == 0, out.stderr
        started.append(out.stdout.strip())
        assert any(tmp_path.iterdir()), "no compiled executable in the cache directory"
    assert started == ["True", "False"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: nothing to split over")
def test_one_xla_thread_means_executables_that_run_on_one_thread(monkeypatch):
    """XLA splits a long loop over as many threads as the compiling process may run on, whatever XLA_FLAGS
    say: the compile process runs on ``xla_threads`` cores, so its executables keep to one thread here."""
    kept = []
    real = xla.compile_graph
    monkeypatch.setattr(xla, "compile_graph", lambda *args: kept.append(real(*args)) or kept[-1])
    service = Service(Settings(xla_tier="always", xla_cache_dir="", xla_threads=1))
    x = np.linspace(-1.0, 1.0, 200_003)
    got = compute(service, "gradient", "sum(sin(x) * exp(x) * 0.75)", {"x": x})
    assert got["tier"] == 2
    np.testing.assert_allclose(got["gradient"]["x"], 0.75 * (np.cos(x) + np.sin(x)) * np.exp(x), rtol=1e-13, atol=1e-15)
    assert len(psutil.Process(xla_process.pid()).cpu_affinity()) == 1
    hlo = kept[-1].executable.as_text()
    assert "fusion" in hlo and "outer_dimension_partitions" not in hlo


def test_products_with_a_transposed_matrix_and_the_sigmoid_on_tier_2():
    """The logistic loss's gradient (X.T @ g, one dot_general; softplus's derivative, the sigmoid sharing its
    exponential) and Hessian-vector product on tier 2 against the closed forms, at margins that reach both
    tails of the sigmoid (|y X w| up to ~800, past exp's overflow) and in the other order (g @ X.T-shaped)."""
    rng = np.random.default_rng(11)
    X, w, v = rng.normal(size=(60, 4)), np.array([40.0, -30.0, 25.0, 10.0]), rng.normal(size=4)
    y = np.where(rng.normal(size=60) > 0, 1.0, -1.0)
    dsl = "sum(softplus(-y * (X @ w)))"
    s = scipy_special.expit(-y * (X @ w))  # the sigmoid of each margin's negative
    got = compute(ALWAYS, "gradient", dsl, {"w": w}, {"X": X, "y": y})
    assert got["tier"] == 2
    np.testing.assert_allclose(got["gradient"]["w"], -X.T @ (y * s), rtol=1e-12, atol=1e-12)
    got = compute(ALWAYS, "hvp", dsl, {"w": w}, {"X": X, "y": y}, v={"w": v})
    assert got["tier"] == 2
    np.testing.assert_allclose(got["hvp"]["w"], X.T @ (s * (1 - s) * (X @ v)), rtol=1e-12, atol=1e-12)
    got = compute(ALWAYS, "gradient", "sum((w @ transpose(X)) ** 2)", {"w": w}, {"X": X})
    assert got["tier"] == 2
    np.testing.assert_allclose(got["gradient"]["w"], 2 * X.T @ (X @ w), rtol=1e-12)
