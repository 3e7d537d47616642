"""One sweep over ``derivd.ops.REGISTRY``: every primitive, every rule, against finite differences.

Each primitive declares where its arguments may be drawn (``sample``,
see ``ops/registry.py``, decoded by ``tests.references.sample``); adding a
primitive adds no code here. For each case
hypothesis draws a point (and a direction, a cotangent), and we check, with
J the Jacobian of the primitive's own numpy evaluation:

* the shape rule agrees with the evaluation (shape and dtype);
* jvp ≈ J v by an 8th-order central difference (rtol 1e-6);
* the forward Jacobian (batched identity tangents) ≈ J by finite differences;
* the reverse Jacobian (batched identity cotangents) equals the forward one;
* ⟨u, J v⟩ = ⟨Jᵀu, v⟩ (the vjp is the transpose of the jvp);
* a batch of 3 tangents gives the 3 single jvps;
* second order: the jvp of the vjp (the Hessian of ⟨u, f⟩ times v) ≈ the
  finite difference of the vjp along v;
* a primitive without a rule raises NoDerivativeRule: never a silent zero.

A tuple-valued primitive (eigh, svd, qr) is checked through its ``view``: one array of its elements.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from derivd.compile.codegen import compile_graph
from derivd.errors import NoDerivativeRule
from derivd.ir.graph import Graph
from derivd.ops import REGISTRY
from derivd.ops.evaluate import eval_primitive
from derivd.ops.registry import BOOL, FLOAT, INT
from derivd.transforms import jvp, vjp
from tests.references import DIFFERENTIATED, HypothesisDraws, central_difference, sample

STEP = 0.01  # directions have max-norm 1, so a point moves at most 0.04: inside every hint's 0.1 margin
RTOL = 1e-6
NUMPY_DTYPE = {FLOAT: np.float64, INT: np.int64, BOOL: np.bool_}
BATCH = 3

SWEEP = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def unit_arrays(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0))


# ---------------------------------------------------------------- the derivative programs of one case


class Derivatives:
    """Graph and tapes for one primitive at one case's shapes (values are bound per example).

    Inputs of the tapes: the case's arguments, then one tangent per differentiated
    argument, a batch of BATCH tangents, the cotangent u.
    Outputs: y, J v, the batched jvps, the vjp uᵀJ, the forward and reverse
    Jacobians, and H(⟨u, f⟩) v (the jvp of the vjp).
    """

    def __init__(self, name, case):
        self.prim = REGISTRY[name]
        self.case = case
        g = self.graph = Graph()
        dtype = {"mask": BOOL, "index": INT}
        self.args = [g.input(f"a{i}", tuple(spec[1]), dtype.get(spec[0], FLOAT),
                             "const" if spec[0] in dtype else "at") for i, spec in enumerate(case["args"])]
        self.diff = [a for a, spec in zip(self.args, case["args"]) if spec[0] in DIFFERENTIATED]
        self.out = g.apply(name, self.args, case["params"])
        self.value_tape = None
        if self.prim.tuple_valued:  # swept through one array of its elements
            self.out = self.prim.view(self.out)
            self.value_tape = compile_graph(g, self.args, [self.out])
        if not self.diff or not self.prim.differentiable:
            return
        out_shape, shapes = self.out.shape, [x.shape for x in self.diff]
        self.n = sum(math.prod(s) for s in shapes)
        self.m = math.prod(out_shape)
        t = [g.input(f"t{i}", s, FLOAT, "extra") for i, s in enumerate(shapes)]
        tb = [g.input(f"tb{i}", (BATCH,) + s, FLOAT, "extra") for i, s in enumerate(shapes)]
        eye = [g.input(f"e{i}", (self.n,) + s, FLOAT, "extra") for i, s in enumerate(shapes)]
        u = g.input("u", out_shape, FLOAT, "extra")
        ub = g.input("ub", (self.m,) + out_shape, FLOAT, "extra")
        self.extra = t + tb + eye + [u, ub]
        (dy,) = jvp(g, self.diff, t, [self.out])
        (dyb,) = jvp(g, self.diff, tb, [self.out])
        (jf,) = jvp(g, self.diff, eye, [self.out])
        grads = vjp(g, self.diff, [self.out], [u])
        jr = vjp(g, self.diff, [self.out], [ub])
        real_grads = [x for x in grads if x is not None]
        hv = jvp(g, self.diff, t, real_grads) if real_grads else []
        self.zero = dy is None
        fill = [(dy, (self.m,)), (dyb, (BATCH, self.m)), (jf, (self.n, self.m))]
        fill += [(c, s) for c, s in zip(grads, shapes)] + [(c, (self.m,) + s) for c, s in zip(jr, shapes)]
        self.layout = [shape for _, shape in fill]
        nodes = [node for node, _ in fill if node is not None]
        self.present = [node is not None for node, _ in fill]
        self.tape = compile_graph(g, self.args + self.extra, [self.out] + nodes + [h for h in hv if h is not None])
        self.hv_present = [h is not None for h in hv]
        self.grad_tape = compile_graph(g, self.args + [u], real_grads) if real_grads else None

    def evaluate(self, values):
        with np.errstate(all="ignore"):
            if self.value_tape is not None:
                return np.asarray(self.value_tape.run(*values)[0])
            return eval_primitive(self.prim, list(values), self.out.params)

    def run(self, values, tangents, batch, eye, u, ub):
        with np.errstate(all="ignore"):
            outs = list(self.tape.run(*values, *tangents, *batch, *eye, u, ub))
        y = outs.pop(0)
        results = []
        for present, shape in zip(self.present, self.layout):
            results.append(np.asarray(outs.pop(0)).reshape(shape) if present else np.zeros(shape))
        hv = [np.asarray(outs.pop(0)) if p else None for p in self.hv_present]
        return y, results, hv

    def gradient(self, values, u):
        with np.errstate(all="ignore"):
            return [np.asarray(v) for v in self.grad_tape.run(*values, u)]


_BUILT: dict[tuple, Derivatives] = {}


def derivatives(name, index) -> Derivatives:
    key = (name, index)
    if key not in _BUILT:
        _BUILT[key] = Derivatives(name, REGISTRY[name].sample[index])
    return _BUILT[key]


def flat(parts):
    return np.concatenate([np.reshape(p, (-1,)) for p in parts]) if parts else np.zeros(0)


def split(vector, shapes, lead=()):
    out, start = [], 0
    for s in shapes:
        size = math.prod(s)
        out.append(vector[..., start:start + size].reshape(lead + tuple(s)))
        start += size
    return out


def close(got, want, what):
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=RTOL * scale, err_msg=what)


# ---------------------------------------------------------------- the sweep

# Primitives the sweep cannot draw (a loop needs a body) name the tests that cover them (``tested_in``).
ALL = sorted(n for n in REGISTRY if not REGISTRY[n].tested_in)
RULELESS = [n for n in ALL if REGISTRY[n].differentiable and REGISTRY[n].jvp is None and REGISTRY[n].vjp is None]
SAMPLED = [n for n in ALL if n not in RULELESS or REGISTRY[n].sample]


@pytest.mark.parametrize("name", [n for n in ALL if n not in RULELESS])
def test_every_primitive_with_rules_declares_where_to_sample(name):
    cases = REGISTRY[name].sample
    assert cases, f"primitive {name!r} has no sample (ops/registry.py, 'sweep hints')"


@pytest.mark.parametrize("name", RULELESS)
def test_a_primitive_without_rules_refuses_to_be_differentiated(name):
    """No silent zeros: a node of a rule-less primitive on a differentiated path raises,
    in both modes. The node is made directly (any shapes will do: no rule is consulted)."""
    g = Graph()
    x = g.input("x", (3,), FLOAT, "at")
    node = g._new(name, (x,), (), (3,), FLOAT)
    with pytest.raises(NoDerivativeRule, match=name):
        jvp(g, [x], [g.input("t", (3,), FLOAT, "extra")], [node])
    with pytest.raises(NoDerivativeRule, match=name):
        vjp(g, [x], [node], [g.input("u", (3,), FLOAT, "extra")])


@pytest.mark.parametrize("name", SAMPLED)
@SWEEP
@given(data=st.data())
def test_rules_match_finite_differences(name, data):
    prim = REGISTRY[name]
    index = data.draw(st.sampled_from(range(len(prim.sample))), label="case")
    case = prim.sample[index]
    values = [sample(spec, HypothesisDraws(data)) for spec in case["args"]]
    is_diff = [spec[0] in DIFFERENTIATED for spec in case["args"]]

    d = derivatives(name, index)
    y = np.asarray(d.evaluate(values))
    assert y.shape == d.out.shape, f"shape rule says {d.out.shape}, numpy gives {y.shape}"
    assert y.dtype == NUMPY_DTYPE[d.out.dtype], f"shape rule says {d.out.dtype}, numpy gives {y.dtype}"
    if not prim.differentiable:
        # no tangent flows through it, so it must not turn a differentiated float into a float
        assert d.out.dtype != FLOAT or not any(is_diff)
        return
    if not any(is_diff):
        return

    shapes = [x.shape for x in d.diff]
    pos = [i for i, flag in enumerate(is_diff) if flag]
    n, m = d.n, d.m

    def f_at(point):
        args = list(values)
        for i, p in zip(pos, split(point, shapes)):
            args[i] = p
        return args

    x0 = flat([values[i] for i in pos])
    v = data.draw(unit_arrays((n,)), label="v")
    v = v / max(1.0, float(np.max(np.abs(v)))) if np.any(v) else np.ones(n)
    u = data.draw(unit_arrays(d.out.shape), label="u")
    vb = data.draw(unit_arrays((BATCH, n)), label="batch of tangents")
    eye = np.eye(n)
    ub = np.eye(m).reshape((m,) + d.out.shape)

    _, (dy, dyb, jf, *rest), hv = d.run(values, split(v, shapes), split(vb, shapes, (BATCH,)),
                                        split(eye, shapes, (n,)), u, ub)
    grads, jr = rest[:len(shapes)], rest[len(shapes):]
    jf = jf.T  # (m, n)
    jr = np.concatenate([c.reshape(m, -1) for c in jr], axis=1)
    g = flat(grads)

    # jvp and the forward Jacobian against finite differences of the numpy evaluation
    fd_v = central_difference(lambda t: [np.reshape(d.evaluate(f_at(x0 + t * v)), -1)], STEP)[0]
    close(dy, fd_v, f"{name}: jvp vs finite differences")
    fd_jac = np.stack([central_difference(lambda t, j=j: [np.reshape(d.evaluate(f_at(x0 + t * eye[j])), -1)], STEP)[0]
                       for j in range(n)], axis=1)
    close(jf, fd_jac, f"{name}: forward Jacobian vs finite differences")
    # reverse mode is the transpose of forward mode
    np.testing.assert_allclose(jr, jf, rtol=1e-12, atol=1e-12 * max(1.0, np.max(np.abs(jf))),
                               err_msg=f"{name}: reverse vs forward Jacobian")
    lhs, rhs = float(np.dot(np.reshape(u, -1), dy)), float(np.dot(g, v))
    assert abs(lhs - rhs) <= 1e-12 * (1 + abs(lhs) + np.abs(u).sum() * np.abs(jf).sum()), \
        f"{name}: <u, Jv> = {lhs} but <J'u, v> = {rhs}"
    # a batch of tangents is the same as that many single jvps
    for k in range(BATCH):
        _, (dy_k, *_), _ = d.run(values, split(vb[k], shapes), split(vb, shapes, (BATCH,)),
                                 split(eye, shapes, (n,)), u, ub)
        np.testing.assert_allclose(dyb[k], dy_k, rtol=1e-13, atol=1e-13 * max(1.0, np.max(np.abs(dy_k))),
                                   err_msg=f"{name}: batched jvp {k} vs single jvp")

    # second order: d/dt vjp(x + t v) = H(<u, f>) v
    if d.grad_tape is None:
        assert d.zero and not np.any(jf), f"{name}: no vjp but a nonzero jvp"
        return
    fd_hv = central_difference(lambda t: d.gradient(f_at(x0 + t * v), u), STEP)
    got = [h if h is not None else np.zeros_like(w) for h, w in zip(hv, fd_hv)]
    for k, (a, b) in enumerate(zip(got, fd_hv)):
        close(np.reshape(a, -1), np.reshape(b, -1), f"{name}: jvp of vjp (input {k}) vs finite differences of vjp")
