"""Loops lowered as loop nodes (dsl/loops.py, transforms/loops.py) against the same loops unrolled,
and both against finite differences of a numpy twin: values, forward and reverse Jacobians, and
second order (jvp of the vjp). ``loop_unroll_nodes`` picks the representation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.dsl import lower
from derivd.errors import DerivdError
from tests.dsl.support import SecondOrder, as_arrays, assert_close, second_order, specs_of
from tests.references import central_difference, fd_jacobian

LOOPED = Service(Settings(loop_unroll_nodes=0))
UNROLLED = Service(Settings(loop_unroll_nodes=10**9))


def run(service, endpoint, dsl, at, constants=None, **fields):
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}
    return service.compute(endpoint, Request(function={"dsl": dsl}, at=at, constants=as_arrays(constants),
                                            **fields))[0]


def loop_nodes(dsl, at, constants=None, settings=None) -> int:
    program = lower(dsl, specs_of(at, constants), settings or Settings(loop_unroll_nodes=0))
    return sum(n.prim == "loop" for n in program.graph.live_nodes([program.output]))


X = np.array([0.3, -0.8, 1.2, 0.5, -0.1, 0.9])
W = np.array([0.5, -0.2, 0.9])

# (program, numpy twin, inputs, constants, loop nodes when nothing is unrolled for size)
CASES = [
    ("h = x[0]\nfor i in range(6):\n    h = h + 0.1 * sin(h * w[i % 3] + i) * x[i]\nh",
     lambda x, w: _recurrence(x, w), {"x": X, "w": W}, None, 1),
    ("s = 0\nfor i in range(1, 6):\n    s = s + x[i] * x[i - 1] + x[-i]\ns",  # an int initial value, promoted
     lambda x: sum(x[i] * x[i - 1] + x[-i] for i in range(1, 6)), {"x": X}, None, 1),
    ("h = x\nfor t in range(5, 0, -2):\n    h = tanh(W @ h + b * t)\nsum(h ** 2)",  # a matrix recurrence, step -2
     lambda x, W, b: _tanh_rnn(x[:3], W, b), {"x": X[:3], "W": np.outer(W, W) - 0.3, "b": W}, None, 1),
    ("h = 0.5\nfor i in range(6):\n    h = h * 2 if i == 0 else h + x[i] * h\nh",  # a condition on i
     lambda x: _cond(x), {"x": X}, None, 1),
    ("for i in range(4):\n    x = x * 0.9 + sin(x[i])\n    y = x[0] * i\nsum(x) + y",  # an input reassigned, a
     lambda x: _reassign(x), {"x": X}, None, 1),                                      # temporary read after
    ("h = x[0]\nfor i in range(5):\n    h = where(h > 0, sqrt(h), 0) + x[i + 1]\nh",  # NaN on the untaken side
     lambda x: _sqrt_chain(x), {"x": X}, None, 1),
    ("acc = zeros(2)\nfor i in range(4):\n    acc = acc + x[idx[i]] * m[i]\nsum(acc ** 2)",  # gathers by constants
     lambda x, m, idx: np.sum(sum(x[idx[i]] * m[i] for i in range(4)) ** 2), {"x": X, "m": np.arange(8.0).reshape(4, 2) / 7},
     {"idx": np.array([2, 2, -1, 0])}, 1),
    ("s = x[0]\nfor i in range(3):\n    for j in range(2):\n        s = s * x[j + 1] + i * j\ns",  # nested, static inner
     lambda x: _nested(x), {"x": X}, None, 1),
    ("s = x[0]\nfor i in range(4):\n    for j in range(i):\n        s = s + x[j] * s\ns",  # inner bound needs i:
     lambda x: _triangle(x), {"x": X}, None, 2),  # the outer loop unrolls, the inner loops of 2 and 3 stay loops
    ("s = 0.0\nfor i in range(4):\n    s = s + sum(x[:i + 1])\ns",  # a slice bound needs i: unrolled
     lambda x: sum(np.sum(x[:i + 1]) for i in range(4)), {"x": X}, None, 0),
    ("n = 0\nfor i in range(4):\n    n = n + 1\nx[n] * 2",  # integer bookkeeping: unrolled
     lambda x: x[4] * 2, {"x": X}, None, 0),
    ("v = x[0]\nfor i in range(3):\n    v = x[:2] if i == 1 else x[1:3] * v\nsum(v)",  # v changes shape
     lambda x: _shapes(x), {"x": X}, None, 0),
    ("v = 1.0\nfor i in range(3):\n    v = x[:2] if i == 1 else x[1:3] + sum(v)\nsum(v)",  # and is reduced
     lambda x: _shapes_reduced(x), {"x": X}, None, 0),
    ("v = x[0]\nfor i in range(3):\n    v = x[1] if i == 1 else x[1:3] * v\nsum(v)",  # branches of two shapes
     lambda x: _branches(x), {"x": X}, None, 0),
]


def _recurrence(x, w):
    h = x[0]
    for i in range(6):
        h = h + 0.1 * np.sin(h * w[i % 3] + i) * x[i]
    return h


def _tanh_rnn(x, W, b):
    h = x
    for t in range(5, 0, -2):
        h = np.tanh(W @ h + b * t)
    return np.sum(h**2)


def _cond(x):
    h = 0.5
    for i in range(6):
        h = h * 2 if i == 0 else h + x[i] * h
    return h


def _reassign(x):
    for i in range(4):
        x = x * 0.9 + np.sin(x[i])
        y = x[0] * i
    return np.sum(x) + y


def _sqrt_chain(x):
    h = x[0]
    for i in range(5):
        h = (np.sqrt(h) if h > 0 else 0.0) + x[i + 1]
    return h


def _nested(x):
    s = x[0]
    for i in range(3):
        for j in range(2):
            s = s * x[j + 1] + i * j
    return s


def _triangle(x):
    s = x[0]
    for i in range(4):
        for j in range(i):
            s = s + x[j] * s
    return s


def _shapes_reduced(x):
    v = 1.0
    for i in range(3):
        v = x[:2] if i == 1 else x[1:3] + np.sum(v)
    return np.sum(v)


def _branches(x):
    v = x[0]
    for i in range(3):
        v = x[1] if i == 1 else x[1:3] * v
    return np.sum(v)


def _shapes(x):
    v = x[0]
    for i in range(3):
        v = x[:2] if i == 1 else x[1:3] * v
    return np.sum(v)


@pytest.mark.parametrize("dsl,f,at,constants,loops", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_loop_nodes_equal_unrolling_and_finite_differences(dsl, f, at, constants, loops):
    consts = as_arrays(constants)
    assert loop_nodes(dsl, at, constants) == loops
    fd = fd_jacobian(lambda **kw: f(**kw, **consts), at)
    want = np.reshape(f(**at, **consts), -1)
    results = {}
    for name, service in (("looped", LOOPED), ("unrolled", UNROLLED)):
        for mode in ("forward", "reverse"):
            r = run(service, "jacobian", dsl, at, constants, mode=mode)
            assert_close(r["value"], want, 1e-12, f"{name} value")
            assert_close(r["jacobian"], fd, 1e-6, f"{name} {mode} Jacobian vs finite differences")
            results[name, mode] = np.asarray(r["jacobian"])
    for key, jac in results.items():
        assert_close(jac, results["unrolled", "reverse"], 1e-12, f"{key} vs unrolled reverse")
    if np.size(want) == 1:
        _, g1, h1 = second_order(dsl, at, constants)  # default settings: these small loops unroll
        looped = SecondOrder(dsl, at, constants, Settings(loop_unroll_nodes=0))
        _, g2, h2 = looped(at)
        assert_close(g2, g1, 1e-12, "looped gradient")
        assert_close(h2, h1, 1e-10, "looped Hessian vs unrolled Hessian")
        fd_h = fd_jacobian(lambda **kw: looped(kw)[1], at)
        assert_close(h2, fd_h, 1e-6, "looped Hessian vs finite differences of its gradient")


def test_reverse_over_reverse_through_a_loop():
    """The vjp of a vjp: a loop over a reverse loop over the body (the Hessian's rows)."""
    from derivd.ops.registry import FLOAT
    from derivd.transforms import vjp

    dsl = CASES[0][0]
    at = {"x": X, "w": W}
    program = lower(dsl, specs_of(at, None), Settings(loop_unroll_nodes=0))
    g, out = program.graph, program.output
    xs = [g.inputs["x"], g.inputs["w"]]
    grads = vjp(g, xs, [out], [g.const(1.0)])
    u = [g.input("__u0", X.shape, FLOAT, "extra"), g.input("__u1", W.shape, FLOAT, "extra")]
    rows = vjp(g, xs, grads, u)
    tape = compile_graph(g, xs + u, rows)
    _, _, hess = second_order(dsl, at)
    for j in range(9):
        e = np.eye(9)[j]
        got = np.concatenate([np.reshape(r, -1) for r in tape.run(X, W, e[:6], e[6:])])
        assert_close(got, hess[j], 1e-10, f"row {j} of the Hessian by reverse-over-reverse")


def test_ten_thousand_steps_stay_one_loop_node_and_memory_grows_with_n():
    """The representation that makes long loops cheap: one loop node whatever N, and a reverse
    pass that stores one state per iteration (the stack's size is N times the state)."""
    from derivd.transforms import vjp

    for n in (1_000, 10_000):
        dsl = f"h = x[0]\nfor i in range({n}):\n    h = h + 0.001 * sin(h * w[i % 3] + i)\nh"
        program = lower(dsl, specs_of({"x": X, "w": W}, None), Settings())
        g, out = program.graph, program.output
        before = len(g.live_nodes([out]))
        grads = vjp(g, [g.inputs["x"], g.inputs["w"]], [out], [g.const(1.0)])
        nodes = g.live_nodes(grads)
        stacks = [m for m in nodes if m.prim == "loop_get" and m.shape[:1] == (n,)]
        assert before < 20 and len(nodes) < 60, (before, len(nodes))
        assert stacks and all(m.shape == (n,) for m in stacks)
        r = run(Service(Settings()), "gradient", dsl, {"x": X, "w": W})
        assert np.isfinite(r["value"]) and np.all(np.isfinite(r["gradient"]["x"]))


def test_a_loop_index_out_of_range_is_a_4xx_when_it_runs():
    with pytest.raises(DerivdError) as e:
        run(LOOPED, "evaluate", "s = 0.0\nfor i in range(6):\n    s = s + x[i + 1]\ns", {"x": X})
    assert e.value.status == 400 and "index 6" in e.value.message


def test_taylor_hvp_and_hessian_endpoints_through_loop_nodes():
    """Taylor coefficients (the loop over the body's Taylor transform), HVPs and Hessians through a
    loop node equal those of the unrolled loop; c1 and c2 equal finite differences along v."""
    dsl = "h = x[0]\nfor i in range(40):\n    h = h + 0.02 * sin(h * w[i % 3] + i) * x[i % 6]\nh"
    at = {"x": X, "w": W}
    v = {"x": np.linspace(-0.3, 0.4, 6), "w": np.array([0.1, 0.2, -0.3])}
    assert loop_nodes(dsl, at) == 1
    got = {}
    for name, service in (("looped", LOOPED), ("unrolled", UNROLLED)):
        r = run(service, "taylor", dsl, at, v=v, order=5)
        got[name, "taylor"] = np.reshape(r["coefficients"], -1)
        for mode in ("auto", "taylor"):
            r = run(service, "hvp", dsl, at, v=v, mode=mode)
            got[name, "hvp", mode] = np.concatenate([np.reshape(r["hvp"][k], -1) for k in at])
        got[name, "hessian"] = np.asarray(run(service, "hessian", dsl, at)["hessian"])
    for key, value in got.items():
        twin = ("unrolled",) + key[1:]
        assert_close(value, got[twin], 1e-10, f"{key} vs unrolled")
    assert_close(got["looped", "hvp", "auto"], got["looped", "hvp", "taylor"], 1e-10, "hvp: taylor vs auto")
    flat_v = np.concatenate([v["x"], v["w"]])
    assert_close(got["looped", "hessian"] @ flat_v, got["looped", "hvp", "auto"], 1e-10, "hessian @ v")

    def along(t):
        return run(UNROLLED, "evaluate", dsl, {"x": X + t * v["x"], "w": W + t * v["w"]})["value"]

    c1 = central_difference(along, 1e-3)
    c2 = central_difference(along, 1e-3, order=2) / 2
    assert_close(got["looped", "taylor"][1:3], [c1, c2], 1e-6, "c1, c2 vs finite differences")


STEP_EXPRESSIONS = [
    "h * {w} + {x}", "sin(h) * {x} + {i}", "tanh(h + v[{j}]) * {w}", "h if {i} % 2 == 0 else h * {x}",
    "where(h > 0, sqrt(h), {x})", "h + sum(v * {x})", "exp(-h * h) + {w}", "maximum(h, {x}) - 0.5 * {w}",
]
VECTOR_EXPRESSIONS = ["v * {w} + {x}", "tanh(v + h)", "v[::-1] * {x}", "concat([v[1:], v[:1]]) + {i}",
                      "softmax(v) * h", "where(v > {x}, v, -v)"]
INDICES = ["x[i]", "x[i - 1]", "x[-i - 1]", "x[idx[i % 4]]", "x[(2 * i) % 6]", "x[i // 2]"]
WEIGHTS = ["w[i % 3]", "w[0]", "w[(i + 1) % 3] * 0.5", "i / 4"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(n=st.integers(2, 6), steps=st.lists(st.tuples(st.booleans(), st.integers(0, 7), st.integers(0, 5),
                                                     st.integers(0, 5), st.integers(0, 3), st.integers(0, 2)),
                                           min_size=1, max_size=3))
def test_random_loops_as_loop_nodes_equal_unrolling(n, steps):
    """Hypothesis over loop bodies: the loop node gives the unrolled values and gradients."""
    lines = ["h = x[0]", "v = x[1:4]", f"for i in range({n}):"]
    for vector, e, k, k2, wi, j in steps:
        fill = {"x": INDICES[k], "w": WEIGHTS[wi], "i": "i", "j": j}
        if vector:
            lines.append("    v = " + VECTOR_EXPRESSIONS[e % len(VECTOR_EXPRESSIONS)].format(**fill))
        else:
            lines.append("    h = " + STEP_EXPRESSIONS[e].format(**fill))
        lines.append(f"    h = h * 0.5 + {INDICES[k2]} * 0.1")
    dsl = "\n".join(lines + ["h + sum(v)"])
    at, constants = {"x": X, "w": W}, {"idx": np.array([5, 0, -2, 3])}
    looped, unrolled = (run(s, "gradient", dsl, at, constants) for s in (LOOPED, UNROLLED))
    assert loop_nodes(dsl, at, constants) == 1
    assert_close(looped["value"], unrolled["value"], 1e-12, dsl)
    for name in at:
        assert_close(looped["gradient"][name], unrolled["gradient"][name], 1e-11, f"{dsl}\ngradient {name}")
