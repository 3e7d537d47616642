"""One sweep over the whole registry for Taylor rules: adding a primitive adds no code here.

For every primitive with a Taylor rule and each of its sample cases
(``sample``, ops/registry.py), at a random point and for a batch of two
random directions v, the coefficients c_1..c_4 of f(x + t v) from the taylor
transform must equal the slow reference built from nested forward mode,
c_k = D^k f[v, ..., v] / k! (the jvp transform applied k times). Points lie at
least 0.1 from kinks and domain edges (the hints' promise), so the one-sided
conventions of non-smooth primitives agree with the jvp rules' there.

A primitive without a Taylor rule must raise NoDerivativeRule naming it, and a
primitive with no derivative at all (masks, casts) carries coefficient 0 only. A tuple-valued
primitive (eigh, svd, qr) is checked through its ``view``: one array of its elements.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from derivd.compile.codegen import compile_graph
from derivd.errors import NoDerivativeRule
from derivd.ir.graph import Graph
from derivd.ops import REGISTRY
from derivd.ops.registry import BOOL, FLOAT, INT
from derivd.transforms import jvp
from derivd.transforms.taylor import taylor
from tests.references import DIFFERENTIATED, NumpyDraws, sample

ORDER = 4
BATCH = 2


def nested_jvp_coefficients(graph, wrt, output, directions, order):
    """Nodes d^k/dt^k f(x + t v) / k! for k = 0..order: the jvp transform applied k times.

    ``directions`` are input nodes (one per ``wrt``), constants to every jvp, so the
    k-th application differentiates the (k-1)-th derivative along the same v. Stops
    early (fewer nodes) where a rule is missing at some order.
    """
    outs = [output]
    for k in range(1, order + 1):
        try:
            (d,) = jvp(graph, wrt, directions, [outs[-1]])
        except NoDerivativeRule:
            break
        outs.append(d if d is not None else graph.apply("zeros", (), {"shape": output.shape}))
    return [o if k == 0 else o * (1.0 / math.factorial(k)) for k, o in enumerate(outs)]


def build(name, case):
    g = Graph()
    role = {"mask": (BOOL, "const"), "index": (INT, "const")}
    args = [g.input(f"a{i}", tuple(spec[1]), *role.get(spec[0], (FLOAT, "at")))
            for i, spec in enumerate(case["args"])]
    diff = [a for a, spec in zip(args, case["args"]) if spec[0] in DIFFERENTIATED]
    out = g.apply(name, args, case["params"])
    return g, args, diff, REGISTRY[name].view(out) if REGISTRY[name].tuple_valued else out


# Primitives the sweep cannot draw (a loop needs a body) name the tests that cover them (``tested_in``).
ALL = sorted(n for n in REGISTRY if not REGISTRY[n].tested_in)
WITH_RULE = [n for n in ALL if REGISTRY[n].taylor is not None and REGISTRY[n].differentiable]
WITHOUT_RULE = [n for n in ALL if REGISTRY[n].taylor is None and REGISTRY[n].differentiable]
NO_DERIVATIVE = [n for n in ALL if not REGISTRY[n].differentiable and REGISTRY[n].sample]
# cases with a differentiated argument (cases of nothing but masks and indices have no series to check)
CASES = [(n, i) for n in WITH_RULE for i, case in enumerate(REGISTRY[n].sample)
         if any(spec[0] in DIFFERENTIATED for spec in case["args"])]


def test_every_primitive_with_inputs_is_swept():
    """A primitive with a Taylor rule and inputs but no sample case would escape the sweep."""
    unswept = [n for n in WITH_RULE if not REGISTRY[n].sample and REGISTRY[n].name not in
               ("zeros", "ones", "eye", "tril_ones", "arange")]
    assert not unswept, f"primitives with a Taylor rule but no sample: {unswept}"


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_taylor_rule_matches_nested_jvp(name, index):
    case = REGISTRY[name].sample[index]
    rng = np.random.default_rng(zlib.crc32(f"{name}/{index}".encode()))
    g, args, diff, out = build(name, case)
    seeds = [g.input(f"s{i}", (ORDER, BATCH) + x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
    (ys,) = taylor(g, diff, seeds, [out])
    dirs = [g.input(f"v{i}", x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
    reference = nested_jvp_coefficients(g, diff, out, dirs, ORDER)
    assert len(reference) > 1, f"{name}: not even a first derivative by nested jvp"
    outs = [out] + ([ys] if ys is not None else []) + reference
    tape = compile_graph(g, args + seeds + dirs, outs)

    values = [sample(spec, NumpyDraws(rng)) for spec in case["args"]]
    v = [rng.uniform(-1, 1, (BATCH,) + x.shape) for x in diff]
    series = []
    for vi, x in zip(v, diff):
        s = np.zeros((ORDER, BATCH) + x.shape)
        s[0] = vi
        series.append(s)
    with np.errstate(all="ignore"):
        got = tape.run(*values, *series, *[vi[0] for vi in v])
    ys_value = np.asarray(got[1]) if ys is not None else np.zeros((ORDER, BATCH) + out.shape)
    for b in range(BATCH):
        with np.errstate(all="ignore"):
            want = tape.run(*values, *series, *[vi[b] for vi in v])[-len(reference):]
        for k in range(1, len(reference)):
            w = np.asarray(want[k])
            scale = max(1.0, float(np.max(np.abs(w), initial=0.0)))
            np.testing.assert_allclose(ys_value[k - 1, b], w, rtol=1e-9, atol=1e-10 * scale,
                                       err_msg=f"{name} case {index}: coefficient {k}, direction {b}")


@pytest.mark.parametrize("name", WITHOUT_RULE)
def test_a_primitive_without_a_taylor_rule_raises(name):
    """No silent zeros: the transform names the primitive (any shapes do; no rule is consulted)."""
    g = Graph()
    x = g.input("x", (3,), FLOAT, "at")
    node = g._new(name, (x,), (), (3,), FLOAT)
    with pytest.raises(NoDerivativeRule, match=f"no Taylor rule for '{name}'"):
        taylor(g, [x], [g.input("s", (2, 3), FLOAT, "extra")], [node])


@pytest.mark.parametrize("name", NO_DERIVATIVE)
def test_masks_and_casts_carry_coefficient_zero_only(name):
    case = REGISTRY[name].sample[0]
    g, args, diff, out = build(name, case)
    floats = [a for a in args if a.dtype == FLOAT]
    seeds = [g.input(f"s{i}", (ORDER,) + x.shape, FLOAT, "extra") for i, x in enumerate(floats)]
    assert taylor(g, floats, seeds, [out]) == [None]
