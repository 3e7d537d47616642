"""Graph -> Python source of straight-line numpy calls -> callable.

The source is generated from the validated IR only: every line is a
primitive's own template (our code) filled with variable names it made and
params it formats itself from their types (``literal``, ``integer``: numbers,
bools, string literals, tuples of them; anything else is refused before
``exec``), never text a graph carried.

Three specialisations make programs fast:

* rank-0 float nodes whose primitive has a ``scalar_template`` are computed
  on Python floats with ``math`` (about 10x cheaper than numpy scalars). Python
  raises where numpy returns inf/nan (``1/0``, ``math.log(0)``, overflow), so a
  tape that uses the scalar path falls back to its all-numpy twin on such an
  exception: the same numbers numpy gives, at numpy's speed, only then.
* a temporary is deleted after its last use, so peak memory follows the
  live set, not the length of the tape.
* a large product used only by a sum over some of its axes (a matrix-vector
  product written with broadcasting, and the vjp of any broadcast product) is
  one ``np.einsum`` of the two factors, size-1 axes squeezed, instead of the
  product materialised and reduced: through BLAS when few batch axes are
  shared (GMM's ``sum(Q * xc, axis=3)``: 1.6 ms -> 0.07 ms), else numpy's
  plain loops (a column-wise dot: 122 -> 70 us). A factor is read before a
  same-rank ``broadcast_to``, so a vjp contracts its cotangent itself.

A tape checks the request's deadline (``derivd.deadlines``) after every
``CHECK_FLOPS`` of work or ``CHECK_LINES`` lines (``ir.cost`` estimates each
node's work), so a long tape stops soon after its caller's 504; a short one
(the warm path) has no check at all. A loop node checks between iterations.
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass
from typing import Callable

from derivd.deadlines import check as check_deadline
from derivd.ir.cost import node_flops
from derivd.ir.loop import run_loop
from derivd.ops.evaluate import BASE_NAMESPACE, expression, integer, literal
from derivd.ops.registry import FLOAT


# Primitives whose result is always a new array of their own (never a view of an input),
# so a consumer with an ``inplace_impl`` may overwrite it once it is dead.
FRESH = {"index_scatter", "index_add"}

# A summed product at least this large is contracted by einsum (below, einsum's planning costs more
# than the temporary it saves).
CONTRACT_MIN_SIZE = 4096
MAX_BLAS_BATCH = 8  # batch entries (axes both factors keep) up to which einsum may go through BLAS

# A tape checks the deadline once this much work (ir.cost: about a millisecond of numpy) or this many
# lines have run since its last check. 256 lines are ~25 us of scalar code or ~0.5 ms of small-array
# numpy: soon enough for a deadline of seconds. At 64 the checks cost a 500-op scalar gradient ~8%.
CHECK_FLOPS = 2 * 10**6
CHECK_LINES = 256


@dataclass
class Tape:
    """A compiled graph: ``run(*inputs)`` returns the tuple of outputs."""

    run: Callable
    source: str
    n_nodes: int


def compile_graph(graph, inputs: list, outputs: list, name: str = "tape") -> Tape:
    from derivd import ops

    nodes = graph.live_nodes(outputs)
    uses_scalar = any(
        n.shape == () and n.dtype == FLOAT and ops.get(n.prim).scalar_template is not None
        and all(a.shape == () for a in n.inputs)
        for n in nodes if n.prim not in ("input", "const")
    )
    ns = dict(BASE_NAMESPACE, _run_loop=run_loop, _check_deadline=check_deadline)
    for n in nodes:
        if n.prim == "loop":  # its body, compiled once: the loop runs it count times
            body = n.params["body"]
            if body.tape is None:
                body.tape = compile_graph(body.graph, body.inputs, body.outputs, name="body")
            ns[f"_body{n.id}"] = body.tape.run
        if n.prim not in ("input", "const"):
            prim = ops.get(n.prim)
            if prim.impl is not None:
                ns[f"_impl_{prim.name}"] = prim.impl
            if prim.inplace_impl is not None:
                ns[f"_inplace_{prim.name}"] = prim.inplace_impl

    def build(scalar: bool):
        source = _source(nodes, inputs, outputs, scalar=scalar, name=name)
        scope = dict(ns)
        exec(compile(source, f"<derivd {name}{' scalar' if scalar else ''}>", "exec"), scope)  # from the IR only
        return scope[name], source

    if not uses_scalar:
        plain_fn, source = build(False)
        return Tape(plain_fn, source, len(nodes))
    fast_fn, source = build(True)
    fallback = []  # the all-numpy twin, compiled the first time the fast path raises

    def run(*args):
        try:
            return fast_fn(*args)
        except (ArithmeticError, ValueError):
            if not fallback:
                fallback.append(build(False)[0])
            return fallback[0](*args)

    return Tape(run, source, len(nodes))


def _source(nodes, inputs, outputs, scalar: bool, name: str) -> str:
    from derivd import ops

    var: dict[int, str] = {}
    for i, n in enumerate(inputs):
        var[n.id] = f"a{i}"
    last_use: dict[int, int] = {}
    for pos, n in enumerate(nodes):
        for a in n.inputs:
            last_use[a.id] = pos
    keep = {o.id for o in outputs}
    contracted = _contractions(nodes, keep)  # sum id -> the product it reduces (never written out), factors
    position = {n.id: pos for pos, n in enumerate(nodes)}
    for sum_id, (_, factors) in contracted.items():  # the factors are read where the sum is
        for a in factors:
            last_use[a.id] = max(last_use[a.id], position[sum_id])
    folded = {product.id for product, _ in contracted.values()}
    read = {a.id for n in nodes if n.id not in folded for a in n.inputs} | keep
    read |= {a.id for _, factors in contracted.values() for a in factors}
    folded |= {n.id for n in nodes if n.prim == "broadcast_to" and n.id not in read}  # only the products read it
    twins = _collecting_twins(nodes)
    for loop_id, twin in twins.items():  # one run serves both: the twin's tuple starts with the finals
        last_use[twin.id] = max(last_use.get(twin.id, -1), last_use.get(loop_id, -1))
    lines = [f"def {name}({', '.join(f'a{i}' for i in range(len(inputs)))}):"]
    if scalar:
        for i, n in enumerate(inputs):
            if n.shape == () and n.dtype == FLOAT:
                lines.append(f"    a{i} = float(a{i})")
    work, lines_unchecked = 0, 0  # since the last deadline check
    for pos, n in enumerate(nodes):
        if n.prim == "input":
            if n.id not in var:  # an input the caller did not pass: cannot happen after validation
                raise KeyError(f"input {n.params['name']!r} not bound")
            continue
        if n.prim == "const":
            var[n.id] = literal(n.params["value"])
            continue
        if n.id in folded:
            continue
        prim = ops.get(n.prim)
        use_scalar = scalar and n.shape == () and n.dtype == FLOAT and all(a.shape == () for a in n.inputs)
        args = [var[a.id] for a in n.inputs if a.id not in folded]
        if n.prim == "loop" and n.id in twins:
            twin = twins[n.id]
            if twin.id not in var:
                var[twin.id] = f"t{twin.id}"
                lines.append(f"    t{twin.id} = {_loop_call(twin, args)}")
            var[n.id] = var[twin.id]
            continue
        if n.prim == "loop" and n.id in var:  # run already, for its twin
            continue
        reads = n.inputs
        if n.id in contracted:
            product, reads = contracted[n.id]
            expr = _einsum(n, product, reads, var)
        elif n.prim == "loop":
            expr = _loop_call(n, args)
        else:
            expr = expression(prim, args, n.params, [(a.shape, a.dtype) for a in n.inputs], use_scalar)
            first = n.inputs[0] if n.inputs else None
            if (prim.inplace_impl is not None and first is not None and first.prim in FRESH
                    and last_use.get(first.id) == pos and first.id not in keep):
                kw = "".join(f", {k}={literal(v)}" for k, v in n.params.items())
                expr = f"_inplace_{prim.name}({', '.join(args)}{kw})"
            if (scalar and n.shape == () and n.dtype == FLOAT and not (use_scalar and prim.scalar_template)
                    and not prim.tuple_valued):
                expr = f"float({expr})"  # numpy scalars out of arrays: Python floats from here on
        v = f"t{n.id}"
        var[n.id] = v
        lines.append(f"    {v} = {expr}")
        dead = [var[a.id] for a in reads
                if last_use.get(a.id) == pos and a.id not in keep and a.prim not in ("input", "const")
                and (a.shape != () or a.prim == "loop") and a.id not in twins]
        if dead:
            lines.append(f"    del {', '.join(sorted(set(dead)))}")
        work, lines_unchecked = work + (0 if n.prim == "loop" else node_flops(n)), lines_unchecked + 1
        if (work >= CHECK_FLOPS or lines_unchecked >= CHECK_LINES) and pos < len(nodes) - 1:
            lines.append("    _check_deadline()")
            work, lines_unchecked = 0, 0
    lines.append(f"    return ({''.join(var[o.id] + ', ' for o in outputs)})")
    return "\n".join(lines) + "\n"


def _contractions(nodes, keep) -> dict:
    """Sums whose input is a large float product used by nothing else: {sum id: (product, factors)},
    each factor read before a same-rank ``broadcast_to`` (its size-1 axes are what einsum squeezes)."""
    uses: dict[int, int] = {}
    for n in nodes:
        for a in n.inputs:
            uses[a.id] = uses.get(a.id, 0) + 1
    out = {}
    for n in nodes:
        product = n.inputs[0] if n.prim == "sum" else None
        if not (product is not None and product.prim == "mul" and uses[product.id] == 1
                and product.id not in keep and product.size >= CONTRACT_MIN_SIZE and product.dtype == FLOAT):
            continue
        factors = [a.inputs[0] if a.prim == "broadcast_to" and a.inputs[0].ndim == a.ndim else a
                   for a in product.inputs]
        if all(a.dtype == FLOAT and a.shape != () and a.prim != "const" for a in factors):
            out[n.id] = (product, factors)
    return out


def _einsum(total, product, factors, var) -> str:
    """``sum(a * b, axes)`` as ``np.einsum``: one letter per axis of the product; a factor's axis of
    size 1 that the product broadcasts is squeezed out, so numpy sees the contraction's true shape."""
    rank = product.ndim
    summed = {axis % rank for axis in total.params["axes"]}
    specs, operands = [], []
    for a in factors:
        offset = rank - a.ndim
        kept = [t for t in range(a.ndim) if not (a.shape[t] == 1 and product.shape[offset + t] != 1)]
        specs.append("".join(string.ascii_letters[offset + t] for t in kept))
        squeezed = tuple(a.shape[t] for t in kept)
        operands.append(var[a.id] if squeezed == a.shape else f"np.reshape({var[a.id]}, {squeezed!r})")
    result = "".join(string.ascii_letters[t] for t in range(rank) if t not in summed)
    # numpy's optimised path is BLAS on a tensordot that treats axes both factors keep (batch axes) as
    # outer ones and takes a diagonal after: worth it for a few batches, ruinous for many (a column-wise
    # dot over 512 columns: 15x slower than the product and sum), where its plain loops are the right call.
    batch = math.prod(product.shape[string.ascii_letters.index(c)] for c in set(specs[0]) & set(specs[1])
                      if c in result)
    optimize = ", optimize=True" if batch <= MAX_BLAS_BATCH else ""
    return f"np.einsum('{specs[0]},{specs[1]}->{result}', {operands[0]}, {operands[1]}{optimize})"


def _collecting_twins(nodes) -> dict:
    """Loop nodes that another, collecting, loop node repeats (same body, inputs and direction):
    the reverse mode asks for the states of a loop whose final values the program already uses."""
    collecting = {}
    for n in nodes:
        if n.prim == "loop" and n.params["collect"]:
            p = n.params
            collecting[(id(p["body"]), tuple(a.id for a in n.inputs), p["count"], p["reverse"])] = n
    twins = {}
    for n in nodes:
        if n.prim == "loop" and not n.params["collect"]:
            p = n.params
            twin = collecting.get((id(p["body"]), tuple(a.id for a in n.inputs), p["count"], p["reverse"]))
            if twin is not None:
                twins[n.id] = twin
    return twins


def _loop_call(n, args) -> str:
    """A loop node: its body (compiled separately, ``_body<id>``) run by ``run_loop``."""
    p = n.params
    m = len(p["body"].carried)
    carried, captured = "".join(a + ", " for a in args[:m]), "".join(a + ", " for a in args[m:])
    return (f"_run_loop(_body{n.id}, ({carried}), ({captured}), {integer(p['count'])}, {_flag(p['reverse'])}, "
            f"{_flag(p['collect'])})")


def _flag(v) -> str:
    if type(v) is not bool:
        raise TypeError(f"expected a bool, not {type(v).__name__}")
    return repr(v)
