"""Control flow: the ``loop`` node and ``loop_get``, its outputs (ir/loop.py says what they mean).

They have no jvp, vjp or Taylor rule here because their derivatives are loops
over the derivative of their body: the transforms build those (transforms/loops.py).
A transform that does not know loops finds no rule and raises NoDerivativeRule.
``loop`` has no template either: the code generator emits the loop itself.
"""

from __future__ import annotations

from derivd.errors import ShapeError
from derivd.ops.registry import FLOAT, Primitive, register


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


# A final state reads the loop's inputs through the body's pattern iterated; curvature: any pair of
# the entries it reads (the body may be nonlinear in all of them). A final state is linear in the loop.
register(Primitive("loop", _loop_shape, sparsity=("loop", "all"), tested_in="tests/dsl/test_loops.py",
                   doc="run a body count times (ir/loop.py); its value is a tuple"))
register(Primitive("loop_get", _loop_get_shape, template="{0}[{index}]", sparsity=("loop_get", ()),
                   tested_in="tests/dsl/test_loops.py",
                   doc="element index of a loop's tuple: a final state, or a stack of states"))
