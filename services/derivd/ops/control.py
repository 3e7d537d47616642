"""Control flow: the ``loop`` node and ``loop_get``, its outputs (ir/loop.py says what they mean).

A loop's value is a tuple (``tuple_valued``): its rules take and give one tangent,
cotangent or series per element, as a dict {index: node}, and ``loop_get``'s rules
read or fill an entry (ops/registry.py, "Rule interface"). The loop's own rules are
loops over the derivative of its body, built from the IR and the transforms, so they
live in transforms/loops.py and are named here by path. ``loop`` has no template: the
code generator emits the loop itself. The sweeps cannot draw a body; tests/dsl/test_loops.py
checks both primitives against finite differences.
"""

from __future__ import annotations

from derivd.errors import ShapeError
from derivd.ops.registry import BOOL, FLAG, FLOAT, INT, SHAPE, SIZE, Param, Primitive, register


def _loop_shape(*args, body, count, reverse, collect):
    want = body.avals(body.carried + body.captured)
    got = tuple((tuple(a[0]), a[1]) for a in args)
    if got != want:
        raise ShapeError(f"loop arguments {[list(s) for s, _ in got]} do not match its body "
                         f"{[list(s) for s, _ in want]}")
    if count < 0:
        raise ShapeError(f"a loop runs a non-negative number of times, not {count}")
    return (), FLOAT  # a tuple, read only by loop_get


def _loop_get_shape(loop, index, aval):
    return tuple(aval[0]), aval[1]


BODY = Param("a loop body", lambda v: getattr(v, "is_loop_body", False))  # ir/loop.py's Body
AVAL = Param("an element's (shape, dtype)",
             lambda v: type(v) is tuple and len(v) == 2 and SHAPE.ok(v[0]) and v[1] in (FLOAT, INT, BOOL))
RULES = "derivd.transforms.loops:"

# Sparsity: a final state reads the loop's inputs through the body's pattern iterated; curvature: any
# pair of the entries it reads (the body may be nonlinear in all of them). A final state is linear in
# the loop.
register(Primitive("loop", _loop_shape, jvp=RULES + "jvp", vjp=RULES + "vjp", taylor=RULES + "taylor",
                   tuple_valued=True, sparsity=("loop", "all"), tested_in="tests/dsl/test_loops.py",
                   params={"body": BODY, "count": SIZE, "reverse": FLAG, "collect": FLAG},
                   doc="run a body count times (ir/loop.py); its value is a tuple"))
register(Primitive("loop_get", _loop_get_shape, template="{0}[{index}]",
                   jvp=lambda p, t, out, index, aval: t[0].get(index),
                   vjp=lambda p, out, ct, index, aval: [{index: ct}],
                   taylor=lambda p, s, out, jet, index, aval: s[0].get(index),
                   sparsity=("loop_get", ()), tested_in="tests/dsl/test_loops.py",
                   params={"index": SIZE, "aval": AVAL},
                   doc="element index of a loop's tuple: a final state, or a stack of states"))
