"""The canonical JSON form of graphs: exact round trips, and refusal of anything else.

* Every primitive in the registry, with its derivative graphs (jvp, batched
  jvp, vjp, jvp of vjp) at every sample case the registry declares: the replayed
  graph serialises to the same bytes, and its compiled tape gives the same
  numbers, bit for bit, as the original's.
* Random programs (hypothesis) through the engines' own tape path, with the
  replayed gradient tape checked against an analytic gradient.
* Anything that is not such a graph (unknown primitive, wrong recorded shape,
  forward reference, stray types) is refused with GraphFormatError.
"""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from derivd.cache.keys import TapeKey
from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.dsl import InputSpec, lower
from derivd.engines import forward, reverse
from derivd.engines.function import CompiledFunction
from derivd.ir.graph import Graph
from derivd.ir.loop import counter_node, loop, make_body
from derivd.ir.serialize import GraphFormatError, dumps, from_json, to_json
from derivd.ops import REGISTRY
from derivd.ops.registry import BOOL, FLOAT, INT
from derivd.transforms import jvp, vjp
from derivd.transforms.taylor import taylor
from tests.references import DIFFERENTIATED, NumpyDraws, sample

SETTINGS = Settings()
NUMPY = {FLOAT: np.float64, INT: np.int64, BOOL: np.bool_}


def primitive_graph(name, case):
    """The primitive applied to inputs, with its jvp, batched jvp, vjp, jvp-of-vjp and Taylor series
    (3 coefficients) as outputs."""
    g = Graph()
    role = {"mask": ("const", BOOL), "index": ("const", INT)}
    args = [g.input(f"a{i}", tuple(spec[1]), *role.get(spec[0], ("at", FLOAT))[::-1])
            for i, spec in enumerate(case["args"])]
    out = g.apply(name, args, case["params"])
    out = REGISTRY[name].view(out) if REGISTRY[name].tuple_valued else out
    outputs, extra = [out], []
    diff = [a for a, spec in zip(args, case["args"]) if spec[0] in DIFFERENTIATED]
    if diff and REGISTRY[name].differentiable and REGISTRY[name].jvp is not None:
        t = [g.input(f"t{i}", x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
        tb = [g.input(f"tb{i}", (2,) + x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
        u = g.input("u", out.shape, FLOAT, "extra")
        extra = t + tb + [u]
        grads = [c for c in vjp(g, diff, [out], [u]) if c is not None]
        outputs += [d for d in jvp(g, diff, t, [out]) + jvp(g, diff, tb, [out]) + grads if d is not None]
        outputs += [d for d in jvp(g, diff, t, grads) if d is not None] if grads else []
    if diff and REGISTRY[name].differentiable and REGISTRY[name].taylor is not None:  # the taylor_* kernels too
        series = [g.input(f"s{i}", (3,) + x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
        extra += series
        outputs += [y for y in taylor(g, diff, series, [out]) if y is not None]
    return g, args + extra, outputs


CASES = [(name, i) for name in sorted(REGISTRY) for i in range(len(REGISTRY[name].sample))]


@pytest.mark.parametrize("name,index", CASES)
def test_every_primitive_and_its_derivatives_round_trip_exactly(name, index):
    case = REGISTRY[name].sample[index]
    g, inputs, outputs = primitive_graph(name, case)
    text = dumps(g, outputs, inputs)
    g2, inputs2, outputs2 = from_json(text)
    assert dumps(g2, outputs2, inputs2) == text
    assert [n.shape for n in outputs2] == [n.shape for n in outputs]

    rng = np.random.default_rng(index)
    values = [sample(spec, NumpyDraws(rng)) for spec in case["args"]]
    values += [rng.uniform(-1, 1, n.shape) for n in inputs[len(values):]]
    with np.errstate(all="ignore"):
        want = compile_graph(g, inputs, outputs).run(*values)
        got = compile_graph(g2, inputs2, outputs2).run(*values)
    for a, b in zip(got, want):  # the same source; LAPACK's last bits may follow memory alignment
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)  # (logm: 1 ulp, 2 runs in 5)
        eps = 4 * np.finfo(np.float64).eps
        scale = max(1.0, float(np.max(np.abs(b[np.isfinite(b)]), initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=eps, atol=eps * scale, equal_nan=True)


class Recorder:
    """A stand-in shared cache level that keeps what ``CompiledFunction.tape`` stores."""

    def __init__(self):
        self.stored = {}

    def load(self, key):
        return None

    def store(self, key, graph, inputs, outputs):
        self.stored[key.transform] = dumps(graph, outputs, inputs)


# Random scalar programs of x (a vector of 3) and y (a scalar): leaves, smooth unary
# functions, + - *, and reductions, with the gradient built alongside by the chain rule.
UNARY = {"sin": (np.sin, np.cos), "cos": (np.cos, lambda v: -np.sin(v)), "tanh": (np.tanh, lambda v: 1 - np.tanh(v) ** 2),
         "exp": (np.exp, np.exp), "square": (np.square, lambda v: 2 * v)}


@st.composite
def programs(draw, depth=3):
    """``(text, f, grad)``: DSL text of an expression of shape (3,), its numpy value and d/d(x, y)."""
    if depth == 0 or draw(st.booleans()) and depth < 3:
        leaf = draw(st.sampled_from(["x", "y", "c", "xi"]))  # every leaf is a vector of 3
        if leaf == "x":
            return "x", lambda x, y: x, lambda x, y: (np.eye(3), np.zeros(3))
        if leaf == "y":
            return "(y * ones(3))", lambda x, y: y + 0 * x, lambda x, y: (np.zeros((3, 3)), np.ones(3))
        if leaf == "xi":
            i = draw(st.integers(0, 2))
            e = np.zeros((3, 3))
            e[:, i] = 1
            return f"(x[{i}] * ones(3))", lambda x, y: x[i] + 0 * x, lambda x, y: (e, np.zeros(3))
        c = draw(st.sampled_from([0.5, 2.0, -1.5]))
        return f"({c!r} * ones(3))", lambda x, y: c + 0 * x, lambda x, y: (np.zeros((3, 3)), np.zeros(3))
    kind = draw(st.sampled_from(["unary", "add", "sub", "mul", "sum"]))
    a, fa, ga = draw(programs(depth=depth - 1))
    if kind == "unary":
        name = draw(st.sampled_from(sorted(UNARY)))
        f, df = UNARY[name]
        return (f"{name}({a})", lambda x, y: f(fa(x, y)),
                lambda x, y: tuple(df(fa(x, y))[:, None] * g if g.ndim == 2 else df(fa(x, y)) * g for g in ga(x, y)))
    if kind == "sum":  # sum(a) broadcast back to a vector: a scalar times ones
        return (f"(sum({a}) * ones(3))", lambda x, y: np.sum(fa(x, y)) + 0 * x,
                lambda x, y: tuple(np.broadcast_to(g.sum(axis=0), g.shape).copy() for g in ga(x, y)))
    b, fb, gb = draw(programs(depth=depth - 1))
    op = {"add": "+", "sub": "-", "mul": "*"}[kind]
    if kind == "mul":
        return (f"({a} * {b})", lambda x, y: fa(x, y) * fb(x, y),
                lambda x, y: tuple(_scale(fb(x, y), p) + _scale(fa(x, y), q) for p, q in zip(ga(x, y), gb(x, y))))
    sign = 1 if kind == "add" else -1
    return (f"({a} {op} {b})", lambda x, y: fa(x, y) + sign * fb(x, y),
            lambda x, y: tuple(p + sign * q for p, q in zip(ga(x, y), gb(x, y))))


def _scale(v, g):
    return v[:, None] * g if g.ndim == 2 else v * g


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.lists(st.floats(-1.5, 1.5), min_size=4, max_size=4))
def test_replayed_tapes_of_random_programs_give_the_analytic_gradient(program, point):
    text, f, grad = program
    source = f"sum({text})"
    x, y = np.array(point[:3]), np.array(point[3])
    specs = {"x": InputSpec((3,), FLOAT, "at"), "y": InputSpec((), FLOAT, "at")}
    shared = Recorder()
    fn = CompiledFunction(source, specs, SETTINGS, shared=shared, key=TapeKey.for_program(source, specs))
    reverse.gradient(fn, {"x": x, "y": y}, ["x", "y"])
    forward.jacobian(fn, {"x": x, "y": y}, ["x", "y"], SETTINGS)
    assert set(shared.stored) == {("vjp", ("x", "y"), None), ("jvp", ("x", "y"), (4,))}

    gx, gy = grad(x, y)
    want = np.concatenate([gx.sum(axis=0), [gy.sum()]])
    for transform, text_ in shared.stored.items():
        g2, inputs, outputs = from_json(text_)
        assert dumps(g2, outputs, inputs) == text_
        tape = compile_graph(g2, inputs, outputs)
        values = {"x": x, "y": y}  # the program's inputs by name, then the tangents (x's, then y's)
        tangents = iter([np.eye(4)[:, :3], np.eye(4)[:, 3]])
        params = [n.params for n in inputs]
        args = [values[p["name"]] if p["role"] != "extra" else next(tangents) for p in params]
        if transform[0] == "vjp":
            value, dx, dy = tape.run(*args)
            got = np.concatenate([np.ravel(dx), np.ravel(dy)])
        else:
            value, cols = tape.run(*args)
            got = np.ravel(cols)
        np.testing.assert_allclose(value, np.sum(f(x, y)), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_tape_parameters_keep_their_order_even_when_unused():
    g = Graph()
    a, b, c = g.input("a", (2,)), g.input("b", (), INT, "const"), g.input("c", (3,))
    out = g.apply("sin", [c], {})
    g2, inputs, (out2,) = from_json(dumps(g, [out], [c, a, b]))
    assert [n.params["name"] for n in inputs] == ["c", "a", "b"]
    assert [(n.shape, n.dtype, n.params["role"]) for n in inputs] == [((3,), FLOAT, "at"), ((2,), FLOAT, "at"),
                                                                           ((), INT, "const")]
    x = np.array([0.1, 0.7, -2.0])
    (y,) = compile_graph(g2, inputs, [out2]).run(x, np.zeros(2), 0)
    np.testing.assert_array_equal(y, np.sin(x))


def test_literals_keep_their_values_and_types_non_finite_included():
    g = Graph()
    x = g.input("x", (3,))
    outs = [g.apply("mul", [x, math.inf], {}), g.apply("add", [x, -math.inf], {}),
            g.apply("maximum", [x, math.nan], {}), g.apply("mul", [x, 3], {}),
            g.apply("where", [g.apply("gt", [x, 0.0], {}), x, True], {})]
    doc = to_json(g, outs, [x])
    assert {"float": "inf"} in [p[1] for n in doc["nodes"] for p in n[2]]
    g2, inputs, outs2 = from_json(orjson.dumps(doc))
    consts = sorted((type(n.params["value"]).__name__, repr(n.params["value"])) for n in g2.nodes if n.prim == "const")
    assert consts == sorted((type(n.params["value"]).__name__, repr(n.params["value"])) for n in g.nodes
                            if n.prim == "const")
    v = np.array([-1.0, 0.25, 2.0])
    with np.errstate(all="ignore"):
        for a, b in zip(compile_graph(g2, inputs, outs2).run(v), compile_graph(g, [x], outs).run(v)):
            np.testing.assert_array_equal(a, b)


def _doc():
    g = Graph()
    x = g.input("x", (3,))
    s = g.apply("sum", [g.apply("sin", [x], {})], {"axes": (-1,)})
    return to_json(g, [s], [x])


def _broken(edit):
    doc = orjson.loads(orjson.dumps(_doc()))
    edit(doc)
    return doc


@pytest.mark.parametrize("edit,reason", [
    (lambda d: d["nodes"][1].__setitem__(0, "system"), "unknown primitive"),
    (lambda d: d["nodes"][1].__setitem__(3, [4]), "rebuilds as"),
    (lambda d: d["nodes"][2].__setitem__(3, [1]), "rebuilds as"),
    (lambda d: d["nodes"][2].__setitem__(4, "i8"), "rebuilds as"),
    (lambda d: d["nodes"][1].__setitem__(1, [2]), "earlier node"),
    (lambda d: d["nodes"][1].__setitem__(1, [-1]), "earlier node"),
    (lambda d: d["nodes"][0].__setitem__(4, "object"), "unknown dtype"),
    (lambda d: d["nodes"][0][3].__setitem__(0, -3), "not a size"),
    (lambda d: d["nodes"][0].__setitem__(2, [["name", "x"]]), "name and a role"),
    (lambda d: d["nodes"][2].__setitem__(2, [["axes", {"float": "huge"}]]), "unknown param"),
    (lambda d: d["nodes"][2].__setitem__(2, [["axes", [5]]]), "param axes must be distinct negative axes"),
    (lambda d: d["nodes"][2].__setitem__(2, [["axes", ["-1"]]]), "param axes must be distinct negative axes"),
    (lambda d: d["nodes"][2].__setitem__(2, [["axes", [-1]], ["evil", "x"]]), r"takes params \['axes'\]"),
    (lambda d: d["nodes"][1].__setitem__(2, [["evil", 1]]), r"sin takes params \[\]"),
    (lambda d: d["nodes"][0].__setitem__(2, [["name", "x"], ["role", "root"]]), "name and a role"),
    (lambda d: d.__setitem__("outputs", [7]), "names no node"),
    (lambda d: d.__setitem__("inputs", [1]), "not an input"),
    (lambda d: d.__setitem__("format", "derivd-graph/0"), "not a derivd-graph/1"),
    (lambda d: d["nodes"].append(["const", [], [["value", "import os"]], [], "f8"]), "one number"),
    (lambda d: d["nodes"].__setitem__(1, ["sin", [0]]), "not a rebuildable graph"),
])
def test_anything_else_is_refused(edit, reason):
    with pytest.raises(GraphFormatError, match=reason):
        from_json(orjson.dumps(_broken(edit)))


def test_loops_and_their_derivatives_round_trip_exactly():
    """Loop nodes (a body in a param), the collecting and reverse loops of their vjp, the loop of
    the jvp of that vjp and of the Taylor series replay node for node and compute the same numbers."""
    src = "s = x\nfor i in range(40):\n    s = tanh(s * w[i % 3] + x[(i + 1) % 3])\nsum(s * s)"
    program = lower(src, {"x": InputSpec((3,), FLOAT, "at"), "w": InputSpec((3,), FLOAT, "at")},
                    Settings(loop_unroll_nodes=0))
    g, out = program.graph, program.output
    assert any(n.prim == "loop" for n in g.nodes)
    x, w = g.inputs["x"], g.inputs["w"]
    v, u = g.input("v", (3,), FLOAT, "extra"), g.input("u", (), FLOAT, "extra")
    s = g.input("s", (3, 3), FLOAT, "extra")
    grads = vjp(g, [x, w], [out], [u])
    outputs = [out, *grads, *jvp(g, [x], [v], grads), *taylor(g, [x], [s], [out])]
    inputs = [x, w, v, u, s]
    text = dumps(g, outputs, inputs)
    g2, inputs2, outputs2 = from_json(text)
    assert dumps(g2, outputs2, inputs2) == text
    rng = np.random.default_rng(3)
    values = [rng.uniform(-1, 1, n.shape) for n in inputs]
    for a, b in zip(compile_graph(g2, inputs2, outputs2).run(*values), compile_graph(g, inputs, outputs).run(*values)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Text that would run inside the server if it reached generated source unformatted.
PAYLOAD = "0] + [(_ for _ in ()).throw(RuntimeError('ran text from a graph'))][0"


def _loop_doc():
    body_graph = Graph()
    k = counter_node(body_graph)
    state = body_graph.input("__c0", (2,), FLOAT, "loop")
    body = make_body(body_graph, k, [state], [], [state * 2.0])
    g = Graph()
    x = g.input("x", (2,))
    return to_json(g, loop(g, body, [x], [], count=3), [x])


def _set_param(node, name, value):
    node[2] = [[k, value if k == name else v] for k, v in node[2]]


@pytest.mark.parametrize("prim,param,value,reason", [
    ("index", "items", [PAYLOAD], "param items must be index items"),
    ("index", "items", [[0, PAYLOAD, 1]], "param items must be index items"),
    ("loop", "reverse", "False or " + PAYLOAD, "param reverse must be a bool"),
    ("loop", "collect", 1, "param collect must be a bool"),
    ("loop", "count", "3", "param count must be a size"),
    ("loop", "count", 2**63 - 1, "param count must be a size"),
    ("loop_get", "index", "0", "param index must be a size"),
])
def test_a_validly_signed_entry_with_hostile_params_is_refused_not_run(prim, param, value, reason):
    """A signed tape is still input: replay checks every param against its primitive's schema."""
    if prim == "index":
        g = Graph()
        x = g.input("x", (4,))
        doc = to_json(g, [g.apply("index", [x], {"items": ((1, 3, 1),)})], [x])
    else:
        doc = _loop_doc()
    doc = orjson.loads(orjson.dumps(doc))
    _set_param(next(n for n in doc["nodes"] if n[0] == prim), param, value)
    with pytest.raises(GraphFormatError, match=reason):
        from_json(orjson.dumps(doc))


def test_code_generation_formats_every_param_itself():
    """A graph carrying text where a number belongs (built here without replay's checks) is
    refused by the code generator before anything is compiled, let alone run."""
    g = Graph()
    x = g.input("x", (4,))
    out = g.apply("index", [x], {"items": (PAYLOAD,)})  # the shape rule alone does not look at the item
    with pytest.raises(TypeError, match="expected an int"):
        compile_graph(g, [x], [out])
    body_graph = Graph()
    k = counter_node(body_graph)
    state = body_graph.input("__c0", (2,), FLOAT, "loop")
    body = make_body(body_graph, k, [state], [], [state * 2.0])
    y = g.input("y", (2,))
    node = g.apply("loop", [y], {"body": body, "count": 3, "reverse": "False or " + PAYLOAD, "collect": False})
    final = g.apply("loop_get", [node], {"index": 0, "aval": ((2,), FLOAT)})
    with pytest.raises(TypeError, match="expected a bool"):
        compile_graph(g, [y], [final])


def test_the_intact_document_is_accepted_and_limits_hold_on_replay():
    from_json(orjson.dumps(_doc()))
    with pytest.raises(GraphFormatError, match="max_graph_nodes"):
        from_json(orjson.dumps(_doc()), Settings(max_graph_nodes=2))
    with pytest.raises(GraphFormatError):
        from_json(b"{not json")
