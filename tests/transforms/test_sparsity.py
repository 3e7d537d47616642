"""Sparsity detection (transforms/sparsity.py): a detected pattern never misses a true nonzero.

The reference is what the derivative *is*: dense Jacobians (forward mode, identity seeds)
and dense Hessians (forward over reverse) computed at many random points. Soundness is
"observed ⊆ detected" at every point, for

* every primitive of the registry, at the cases its sample hints declare (one sweep:
  adding a primitive adds no code here), for the Jacobian and for the Hessian of ⟨w, f⟩;
* random programs composed of the language's functions (hypothesis).

Precision is pinned on cases whose patterns are known in closed form (diagonal, banded,
bilinear, gathers, unreached entries), so "everything is dense" would fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.dsl import InputSpec
from derivd.engines import forward, forward_over_reverse
from derivd.engines.function import CompiledFunction
from derivd.errors import NoDerivativeRule
from derivd.ir.graph import Graph
from derivd.ops import REGISTRY
from derivd.ops.registry import BOOL, FLOAT, INT
from derivd.transforms import jvp, vjp
from derivd.transforms.sparsity import PatternTooLarge, hessian_pattern, jacobian_pattern
from tests.references import DIFFERENTIATED, HypothesisDraws, sample

SETTINGS = Settings()


def observed(matrix: np.ndarray) -> np.ndarray:
    """Entries that are not exactly zero (NaN counts as nonzero: it must lie in the pattern too)."""
    return ~(np.asarray(matrix) == 0)


def assert_covers(pattern, matrix, what):
    missing = observed(matrix) & ~pattern.toarray()
    assert not missing.any(), f"{what}: nonzero entries {np.argwhere(missing)[:5].tolist()} outside the pattern"


# ---------------------------------------------------------------- one primitive at a time


class PrimitiveCase:
    """f = prim(args) and s = sum(w * f); tapes for the dense Jacobian of f and Hessian of s."""

    def __init__(self, name, case):
        g = self.graph = Graph()
        role = {"mask": ("const", BOOL), "index": ("const", INT)}
        self.specs = case["args"]
        self.args = [g.input(f"a{i}", tuple(spec[1]), *role.get(spec[0], ("at", FLOAT))[::-1])
                     for i, spec in enumerate(self.specs)]
        self.diff = [a for a, spec in zip(self.args, self.specs) if spec[0] in DIFFERENTIATED]
        self.out = g.apply(name, self.args, case["params"])
        self.out = REGISTRY[name].view(self.out) if REGISTRY[name].tuple_valued else self.out
        self.n = sum(x.size for x in self.diff)
        self.active = bool(self.diff) and self.out.dtype == FLOAT
        if not self.active:
            return
        self.w = g.input("w", self.out.shape, FLOAT, "const")
        self.s = g.apply("sum", [g.apply("mul", [self.w, self.out], {})], {"axes": tuple(range(-self.out.ndim, 0))})
        eye = [g.input(f"e{i}", (self.n,) + x.shape, FLOAT, "extra") for i, x in enumerate(self.diff)]
        self.eye = eye
        (jf,) = jvp(g, self.diff, eye, [self.out])
        self.jac_tape = compile_graph(g, self.args + eye, [jf]) if jf is not None else None
        self.hess_tape = None
        try:
            grads = vjp(g, self.diff, [self.s], [g.const(1.0)])
            rows = [(i, gi) for i, gi in enumerate(grads) if gi is not None]
            hv = jvp(g, self.diff, eye, [gi for _, gi in rows]) if rows else []
            kept = [(i, h) for (i, _), h in zip(rows, hv) if h is not None]
            if kept:
                self.hv_inputs = [i for i, _ in kept]
                self.hess_tape = compile_graph(g, self.args + [self.w] + eye, [h for _, h in kept])
        except NoDerivativeRule:  # first derivatives only: its Hessian is refused, not computed
            pass

    def constants(self, values):
        return {f"a{i}": v for i, (v, spec) in enumerate(zip(values, self.specs)) if spec[0] not in DIFFERENTIATED}

    def identity(self):
        e, out, start = np.eye(self.n), [], 0
        for x in self.diff:
            out.append(e[:, start:start + x.size].reshape((self.n,) + x.shape))
            start += x.size
        return out

    def jacobian(self, values):
        with np.errstate(all="ignore"):
            (jf,) = self.jac_tape.run(*values, *self.identity())
        return np.asarray(jf).reshape(self.n, -1).T

    def hessian(self, values, w):
        with np.errstate(all="ignore"):
            hv = self.hess_tape.run(*values, w, *self.identity())
        # rows of H grouped by the differentiated input their gradient belongs to
        h = np.zeros((self.n, self.n))
        offsets = np.cumsum([0] + [x.size for x in self.diff])
        for block, i in zip(hv, self.hv_inputs):
            h[offsets[i]:offsets[i + 1], :] = np.asarray(block).reshape(self.n, -1).T
        return h


_CASES: dict[tuple, PrimitiveCase] = {}


def primitive_case(name, index) -> PrimitiveCase:
    if (name, index) not in _CASES:
        _CASES[(name, index)] = PrimitiveCase(name, REGISTRY[name].sample[index])
    return _CASES[(name, index)]


SAMPLED = sorted(n for n, p in REGISTRY.items() if p.sample)


@pytest.mark.parametrize("name", SAMPLED)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_primitive_pattern_covers_its_derivatives(name, data):
    for index in range(len(REGISTRY[name].sample)):
        c = primitive_case(name, index)
        if not c.active:
            continue
        values = [sample(spec, HypothesisDraws(data)) for spec in c.specs]
        consts = c.constants(values)
        jp = jacobian_pattern(c.graph, c.diff, c.out, consts)
        assert jp.shape == (c.out.size, c.n)
        if c.jac_tape is not None:
            assert_covers(jp, c.jacobian(values), f"{name} case {index} Jacobian")
        else:
            assert jp.nnz == 0 or not REGISTRY[name].differentiable
        if c.hess_tape is not None:
            w = np.random.default_rng(index).standard_normal(c.out.shape) + 2.0
            hp = hessian_pattern(c.graph, c.diff, c.s, consts)
            assert (hp != hp.T).nnz == 0, "a Hessian pattern is symmetric"
            assert_covers(hp, c.hessian(values, w), f"{name} case {index} Hessian")


# ---------------------------------------------------------------- random programs

N = 6
UNARY = ["sin", "cos", "tanh", "sigmoid", "atan", "softplus", "square", "abs", "relu", "erf"]


def _vectors(children):
    scalars = st.one_of(
        children.map(lambda a: f"sum({a})"),
        children.map(lambda a: f"logsumexp({a})"),
        st.tuples(children, st.integers(0, N - 1)).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(children, st.integers(0, N - 2)).map(lambda t: f"prod({t[0]}[{t[1]}:{t[1] + 2}])"),
    )
    return st.one_of(
        st.tuples(st.sampled_from(UNARY), children).map(lambda t: f"{t[0]}({t[1]})"),
        children.map(lambda a: f"exp(sin({a}))"),
        st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(children, children).map(lambda t: f"({t[0]} / (1 + square({t[1]})))"),
        st.tuples(children, st.integers(1, N - 1)).map(lambda t: f"concat([{t[0]}[{t[1]}:], {t[0]}[:{t[1]}]])"),
        children.map(lambda a: f"{a}[idx]"),
        children.map(lambda a: f"{a}[::-1]"),
        st.tuples(children, children, children).map(lambda t: f"where({t[0]} > 0, {t[1]}, {t[2]})"),
        children.map(lambda a: f"(B @ {a})"),
        st.tuples(children, scalars).map(lambda t: f"({t[0]} * {t[1]})"),
        st.tuples(children, children).map(lambda t: f"maximum({t[0]}, {t[1]})"),
        children.map(lambda a: f"reshape(softmax(reshape({a}, (2, 3)), axis=1), ({N},))"),
        children.map(lambda a: f"reshape(transpose(reshape({a}, (2, 3))), ({N},))"),
    )


vectors = st.recursive(st.sampled_from(["x", "y", "x[idx]", "(x * y)"]), _vectors, max_leaves=7)
SPECS = {"x": InputSpec((N,), FLOAT, "at"), "y": InputSpec((N,), FLOAT, "at"),
         "idx": InputSpec((N,), INT, "const"), "B": InputSpec((N, N), FLOAT, "const")}
_FUNCTIONS: dict[str, CompiledFunction] = {}


def compiled(source: str) -> CompiledFunction:
    if source not in _FUNCTIONS:
        _FUNCTIONS[source] = CompiledFunction(source, SPECS, SETTINGS)
    return _FUNCTIONS[source]


def banded(rng) -> np.ndarray:
    b = np.triu(np.tril(rng.standard_normal((N, N)), 1), -1)  # B is a constant: its zeros are not used
    return b


points = st.integers(0, 2**32 - 1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vectors, st.lists(points, min_size=3, max_size=3))
def test_random_program_jacobian_pattern_covers_dense_jacobians(program, seeds):
    fn = compiled(f"[{program}, sum({program}) * x[0]]")
    idx = np.random.default_rng(seeds[0]).integers(0, N, N)
    wrt = [fn.input_node("x"), fn.input_node("y")]
    pattern = jacobian_pattern(fn.graph, wrt, fn.output, {"idx": idx})
    for seed in seeds:
        rng = np.random.default_rng(seed)
        values = {"x": rng.uniform(-1, 1, N), "y": rng.uniform(-1, 1, N), "idx": idx, "B": banded(rng)}
        _, jac, _ = forward.jacobian(fn, values, ["x", "y"], SETTINGS)
        assert_covers(pattern, jac, program)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vectors, st.lists(points, min_size=3, max_size=3))
def test_random_program_hessian_pattern_covers_dense_hessians(program, seeds):
    specs = dict(SPECS, w=InputSpec((N,), FLOAT, "const"))
    fn = _FUNCTIONS.setdefault("H:" + program, CompiledFunction(f"sum(({program}) * w)", specs, SETTINGS))
    idx = np.random.default_rng(seeds[0]).integers(0, N, N)
    wrt = [fn.input_node("x"), fn.input_node("y")]
    pattern = hessian_pattern(fn.graph, wrt, fn.output, {"idx": idx})
    assert (pattern != pattern.T).nnz == 0
    for seed in seeds:
        rng = np.random.default_rng(seed)
        values = {"x": rng.uniform(-1, 1, N), "y": rng.uniform(-1, 1, N), "idx": idx, "B": banded(rng),
                  "w": rng.uniform(0.5, 1.5, N)}
        _, _, hess, _ = forward_over_reverse.hessian(fn, values, ["x", "y"], SETTINGS)
        assert_covers(pattern, hess, program)


# ---------------------------------------------------------------- precision on known patterns


def patterns(source, shapes, constants=None):
    specs = {k: InputSpec(s, FLOAT, "at") for k, s in shapes.items()}
    for k, v in (constants or {}).items():
        specs[k] = InputSpec(np.shape(v), INT if np.asarray(v).dtype.kind in "iu" else FLOAT, "const")
    fn = CompiledFunction(source, specs, SETTINGS)
    wrt = [fn.input_node(k) for k in shapes]
    j = jacobian_pattern(fn.graph, wrt, fn.output, constants).toarray()
    h = hessian_pattern(fn.graph, wrt, fn.output, constants).toarray() if fn.output.size == 1 else None
    return j, h


def band(n, lo, hi):
    i = np.arange(n)
    return (i[:, None] - i[None, :] >= -hi) & (i[:, None] - i[None, :] <= lo)


def test_elementwise_is_diagonal_and_linear_maps_have_no_curvature():
    j, _ = patterns("sin(x) * 2 + abs(x)", {"x": (5,)})
    np.testing.assert_array_equal(j, np.eye(5, dtype=bool))
    _, h = patterns("sum(abs(x) - x + relu(x) + maximum(x, 0.5))", {"x": (5,)})
    assert not h.any()
    _, h = patterns("sum(exp(x))", {"x": (5,)})
    np.testing.assert_array_equal(h, np.eye(5, dtype=bool))


def test_extended_rosenbrock_hessian_is_tridiagonal():
    j, h = patterns("sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)", {"x": (8,)})
    assert j.all()
    np.testing.assert_array_equal(h, band(8, 1, 1))


def test_products_pair_only_their_factors():
    _, h = patterns("sum(x * y)", {"x": (3,), "y": (3,)})
    want = np.zeros((6, 6), dtype=bool)
    want[np.arange(3), np.arange(3) + 3] = want[np.arange(3) + 3, np.arange(3)] = True
    np.testing.assert_array_equal(h, want)
    _, h = patterns("x @ y", {"x": (3,), "y": (3,)})  # matmul pairs x[k] with y[k] only
    np.testing.assert_array_equal(h, want)
    _, h = patterns("sum(x / y)", {"x": (3,), "y": (3,)})  # 1/y is curved: (y, y) too
    want[np.arange(3) + 3, np.arange(3) + 3] = True
    np.testing.assert_array_equal(h, want)


def test_gathers_use_the_request_indices():
    idx = np.array([4, 0, 4])
    j, h = patterns("x[idx] * x[:3]", {"x": (5,)}, {"idx": idx})
    want = np.zeros((3, 5), dtype=bool)
    want[np.arange(3), idx] = want[np.arange(3), np.arange(3)] = True
    np.testing.assert_array_equal(j, want)


def test_entries_that_never_reach_the_output_add_no_curvature():
    _, h = patterns("sum(exp(x)[:2])", {"x": (6,)})
    want = np.zeros((6, 6), dtype=bool)
    want[[0, 1], [0, 1]] = True
    np.testing.assert_array_equal(h, want)


def test_blocks_and_arrowheads():
    j, h = patterns("sum(logsumexp(reshape(x, (3, 2)), axis=1))", {"x": (6,)})
    np.testing.assert_array_equal(h, np.kron(np.eye(3), np.ones((2, 2))).astype(bool))
    _, h = patterns("sum(exp(x[:-1] * x[-1]))", {"x": (5,)})
    want = np.eye(5, dtype=bool)
    want[-1, :] = want[:, -1] = True
    want[-1, -1] = True
    np.testing.assert_array_equal(h, want)


def test_a_pattern_over_the_budget_is_refused():
    fn = CompiledFunction("sum(x) * x", {"x": InputSpec((100,), FLOAT, "at")}, SETTINGS)
    with pytest.raises(PatternTooLarge):
        jacobian_pattern(fn.graph, [fn.input_node("x")], fn.output, max_nnz=5_000)
    assert jacobian_pattern(fn.graph, [fn.input_node("x")], fn.output, max_nnz=20_000).nnz == math.prod((100, 100))


# ---------------------------------------------------------------- through loop nodes

LOOPS = Settings(loop_unroll_nodes=0)  # every uniform loop stays a loop node, however short
# Bounded recurrences: an overflow would make 0 * inf = NaN entries that no pattern may exclude.
LOOP_PROGRAMS = [
    "s = x\nfor i in range({K}):\n    s = sin(s) * y + x\ns",  # diagonal
    "s = x\nfor i in range({K}):\n    s = s + 0.1 * concat([tanh(s[1:] * s[:-1]), zeros(1)])\ns",  # a growing band
    "a = x\nb = y\nfor i in range({K}):\n    t = tanh(a * b)\n    b = 0.5 * a + sin(b)\n    a = t\n[a, b]",
    "s = x\nfor i in range({K}):\n    s = s * cos(x[i % 6])\ns",  # the counter indexes: that read is dense
    "s = x\nfor i in range({K}):\n    s = s + 0.1 * tanh(s[idx]) * y\ns",  # a captured index array
    "s = x\nfor i in range({K}):\n    s = 0.5 * s + 0.25 * s[::-1]\nexp(s[:3])",  # mixing, then a slice
]


def loop_function(source: str) -> CompiledFunction:
    key = "L:" + source
    if key not in _FUNCTIONS:
        _FUNCTIONS[key] = CompiledFunction(source, SPECS, LOOPS)
        assert any(n.prim == "loop" for n in _FUNCTIONS[key].program_nodes), "the test needs a loop node"
    return _FUNCTIONS[key]


@pytest.mark.parametrize("iterations", [3, 70])  # exact iteration, and the fixed point (over 64)
@pytest.mark.parametrize("template", LOOP_PROGRAMS)
def test_loop_patterns_cover_dense_jacobians_and_hessians(template, iterations):
    source = template.format(K=iterations)
    fn = loop_function(source)
    idx = np.array([2, 2, 5, 0, 1, 3])
    wrt = [fn.input_node("x"), fn.input_node("y")]
    jac_pattern = jacobian_pattern(fn.graph, wrt, fn.output, {"idx": idx})
    h_fn = loop_function(f"{source.rsplit(chr(10), 1)[0]}\nsum(({source.rsplit(chr(10), 1)[1]}) * arange(1, 7)[0])")
    h_pattern = hessian_pattern(h_fn.graph, [h_fn.input_node("x"), h_fn.input_node("y")], h_fn.output, {"idx": idx})
    assert (h_pattern != h_pattern.T).nnz == 0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        values = {"x": rng.uniform(-0.9, 0.9, N), "y": rng.uniform(-0.9, 0.9, N), "idx": idx, "B": banded(rng)}
        _, jac, _ = forward.jacobian(fn, values, ["x", "y"], SETTINGS)
        assert_covers(jac_pattern, jac, source)
        _, _, hess, _ = forward_over_reverse.hessian(h_fn, values, ["x", "y"], SETTINGS)
        assert_covers(h_pattern, hess, source)


def test_loop_patterns_are_exact_where_the_structure_is_plain():
    diagonal = loop_function(LOOP_PROGRAMS[0].format(K=500))
    j = jacobian_pattern(diagonal.graph, [diagonal.input_node("x")], diagonal.output).toarray()
    np.testing.assert_array_equal(j, np.eye(N, dtype=bool))
    for k in (2, 100):  # the band grows one diagonal per step, until it fills
        fn = loop_function(LOOP_PROGRAMS[1].format(K=k))
        j = jacobian_pattern(fn.graph, [fn.input_node("x")], fn.output).toarray()
        np.testing.assert_array_equal(j, band(N, 0, k), err_msg=f"{k} steps")
    fn = loop_function("s = x\nfor i in range(300):\n    s = sin(s) * 0.5 + x\nsum(s)")
    h = hessian_pattern(fn.graph, [fn.input_node("x")], fn.output).toarray()
    np.testing.assert_array_equal(h, np.eye(N, dtype=bool))
