"""The registry sweep on both compile tiers: every primitive's derivative programs, numpy vs XLA.

For each primitive the sweeps can draw (``sample``, ops/registry.py), one graph
holds, for every sample case: its value, the jvp along a tangent, the vjp of a
cotangent, the jvp of that vjp (second order), and the Taylor coefficients
1..2 of a line through the point (where the primitive has a Taylor rule). The
graph is compiled by both tiers (compile/codegen.py, compile/xla.py) and run at
one random point: the tiers must agree to 1e-9 relative to each output's scale.
The derivatives themselves are checked against finite differences by the
tier-1 sweeps (tests/ops, tests/transforms); this one proves tier 2 runs the
same graphs to the same numbers. Adding a primitive adds no code here: its
numpy template serves tier 2 by default, else it declares ``Primitive.xla``;
every primitive must have one (``test_every_primitive_lowers``), the helpers
the sweeps draw only through others' rules (frechet, taylor_*) included.

One XLA compile per primitive: about 0.1-0.5 s each, several seconds for the matrix functions (a
loop of inverses per block matrix) and the polygamma family. Compiled to Taylor order 2 (the
kernels' recurrences are the same code at every order, which the tier-1 sweeps check to higher
orders), with the options every tape has (``xla.XLA_OPTIONS``: XLA's fusion emitters off, which
compiles fast): about two minutes on a quiet two-core machine.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

pytest.importorskip("jax")

from derivd.compile import xla  # noqa: E402
from derivd.compile.codegen import compile_graph  # noqa: E402
from derivd.config import Settings  # noqa: E402
from derivd.errors import NoDerivativeRule  # noqa: E402
from derivd.ir.graph import Graph  # noqa: E402
from derivd.ops import REGISTRY  # noqa: E402
from derivd.ops.registry import BOOL, FLOAT, INT  # noqa: E402
from derivd.transforms import jvp, vjp  # noqa: E402
from derivd.transforms.taylor import taylor  # noqa: E402
from tests.references import DIFFERENTIATED, NumpyDraws, sample  # noqa: E402

ORDER = 2
RTOL = 1e-9
SETTINGS = Settings(xla_cache_dir="")
SWEPT = sorted(n for n, p in REGISTRY.items() if not p.tested_in and p.sample)


def programs(name):
    """One graph: every case's value and derivative programs. Returns (graph, inputs, outputs, specs)."""
    prim = REGISTRY[name]
    g = Graph()
    inputs, outputs, specs = [], [], []
    role = {"mask": (BOOL, "const"), "index": (INT, "const")}
    for c, case in enumerate(prim.sample):
        args = [g.input(f"a{c}_{i}", tuple(spec[1]), *role.get(spec[0], (FLOAT, "at")))
                for i, spec in enumerate(case["args"])]
        inputs += args
        specs += list(case["args"])
        out = g.apply(name, args, case["params"])
        out = prim.view(out) if prim.tuple_valued else out
        outputs.append(out)
        diff = [a for a, spec in zip(args, case["args"]) if spec[0] in DIFFERENTIATED]
        if not diff or not prim.differentiable:
            continue
        t = [g.input(f"t{c}_{i}", x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
        u = g.input(f"u{c}", out.shape, FLOAT, "extra")
        seeds = [g.input(f"s{c}_{i}", (ORDER, 1) + x.shape, FLOAT, "extra") for i, x in enumerate(diff)]
        inputs += t + [u] + seeds
        specs += [("real", x.shape, ((-1.0, 1.0),)) for x in diff] + [("real", out.shape, ((-1.0, 1.0),))]
        specs += [("real", (ORDER, 1) + x.shape, ((-1.0, 1.0),)) for x in diff]
        found = jvp(g, diff, t, [out]) + vjp(g, diff, [out], [u])
        grads = [x for x in found[1:] if x is not None]
        if grads:
            found += jvp(g, diff, t, grads)
        if prim.taylor is not None:
            try:
                found += taylor(g, diff, seeds, [out])
            except NoDerivativeRule:  # a rule the series needs of another primitive: the Taylor sweep says which
                pass
        outputs += [x for x in found if x is not None]
    return g, inputs, outputs, specs


@pytest.mark.parametrize("name", SWEPT)
def test_both_tiers_agree(name):
    g, inputs, outputs, specs = programs(name)
    assert xla.missing_lowering(g, outputs) is None, "every primitive has a tier-2 lowering (Primitive.xla)"
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    values = [sample(spec, NumpyDraws(rng)) for spec in specs]
    with np.errstate(all="ignore"):
        want = compile_graph(g, inputs, outputs).run(*values)
    got = xla.compile_graph(g, inputs, outputs, SETTINGS).run(*values)
    assert len(got) == len(want)
    for k, (a, b, node) in enumerate(zip(got, want, outputs)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape == tuple(node.shape), f"{name}: output {k} ({node.prim}) shape"
        if node.dtype != FLOAT:
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: output {k} ({node.prim})")
            continue
        scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL * scale, err_msg=f"{name}: output {k} ({node.prim})")


def test_every_primitive_lowers():
    """A primitive without a lowering would keep every tape using it on tier 1 (the sweep above
    reaches the helper primitives only through the rules that use them)."""
    from derivd import ops

    missing = sorted(n for n, p in ops.REGISTRY.items()
                     if p.template is None and p.xla is None and n not in ("loop", "loop_get"))
    assert missing == []
