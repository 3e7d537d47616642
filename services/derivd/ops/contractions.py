"""Contractions: ``einsum tensordot inner kron cross``, numpy's definitions, as compositions of
primitives (``ops.registry.language``) that inherit their rules to every order.

``einsum`` takes any subscripts numpy does (repeated letters in one operand for diagonals,
``...`` for broadcast leading axes, implicit output: the letters used once, in alphabetical
order, after the ``...`` axes). It is lowered onto ``matmul``: diagonals are taken first (the
operand times an identity, summed), letters no other operand or the output needs are summed out,
then operands are contracted left to right, each pair as one batched matrix product (letters
both keep: the batch; letters only they share: the inner dimension); a final transpose orders the
output. So its derivative in each operand is again a matmul of the others (an einsum), and its
Taylor series is matmul's bilinear one.
"""

from __future__ import annotations

import math

from derivd.errors import ProgramError, ShapeError
from derivd.ops.registry import apply, language, nullary


def _refuse(message):
    return ProgramError(f"einsum: {message}", code="bad_arguments")


def _transpose(x, perm):
    perm = tuple(perm)
    return x if perm == tuple(range(len(perm))) else apply("transpose", x, perm=perm)


def _reshape(x, shape):
    shape = tuple(shape)
    return x if shape == x.shape else apply("reshape", x, shape=shape, in_ndim=x.ndim)


# ---------------------------------------------------------------- subscripts


def _parse(subscripts, operands):
    """(input terms, output term): lists of letters, ``...`` replaced by letters of their own
    (right-aligned, so the ``...`` axes of different operands broadcast as numpy's)."""
    if not isinstance(subscripts, str):
        raise _refuse("the first argument must be a subscripts string such as 'ij,jk->ik'")
    spec = subscripts.replace(" ", "")
    lhs, arrow, rhs = spec.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise _refuse(f"{len(terms)} operand terms in {subscripts!r} for {len(operands)} operands")
    for t in terms + [rhs]:
        bad = set(t.replace("...", "")) - set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
        if bad or t.count("...") > 1 or t.replace("...", "").count(".") or "->" in rhs:
            raise _refuse(f"invalid subscripts {subscripts!r}")
    widths = []
    for t, x in zip(terms, operands):
        explicit = len(t.replace("...", ""))
        width = x.ndim - explicit if "..." in t else 0
        if width < 0 or ("..." not in t and explicit != x.ndim):
            raise _refuse(f"term {t!r} does not match an operand of shape {list(x.shape)}")
        widths.append(width)
    rank = max(widths, default=0)
    ellipsis = [chr(0x100 + i) for i in range(rank)]  # letters no subscript can use
    inputs = [list(t.replace("...", "".join(ellipsis[rank - w:]))) if "..." in t else list(t)
              for t, w in zip(terms, widths)]
    if arrow:
        if "..." not in rhs and rank:
            raise _refuse(f"the output {rhs!r} needs '...' for the operands' '...' axes (numpy's rule)")
        rhs_letters = list(rhs.replace("...", "".join(ellipsis)))
        if len(set(rhs_letters)) != len(rhs_letters):
            raise _refuse(f"a letter repeats in the output {rhs!r}")
        missing = set(rhs_letters) - {c for t in inputs for c in t}
        if missing:
            raise _refuse(f"output letter(s) {sorted(missing)} appear in no operand")
        return inputs, rhs_letters
    counts = {}
    for t in inputs:
        for c in t:
            counts[c] = counts.get(c, 0) + 1
    used = [c for c in ellipsis if c in counts]
    return inputs, used + sorted(c for c, k in counts.items() if k == 1 and c not in ellipsis)


def _sizes(inputs, operands):
    """Each letter's size: equal wherever it appears, or 1 (broadcast)."""
    sizes = {}
    for t, x in zip(inputs, operands):
        for c, d in zip(t, x.shape):
            if sizes.get(c, 1) not in (1, d) and d != 1:
                raise ShapeError(f"einsum: letter {c!r} has sizes {sizes[c]} and {d}",
                                 shapes=[list(o.shape) for o in operands])
            sizes[c] = d if sizes.get(c, 1) == 1 else sizes[c]
    return sizes


# ---------------------------------------------------------------- steps


def _diagonal(x, term):
    """Repeated letters of one operand: keep the diagonal (x times an identity, summed)."""
    term = list(term)
    for c in dict.fromkeys(term):
        while term.count(c) > 1:
            i = term.index(c)
            j = term.index(c, i + 1)
            n = x.shape[i]
            eye = _reshape(nullary(x, "eye", n=n), tuple(n if k in (i, j) else 1 for k in range(x.ndim)))
            x = apply("sum", x * eye, axes=(j - x.ndim,))
            del term[j]
    return x, term


def _sum_out(x, term, needed):
    axes = tuple(i - len(term) for i, c in enumerate(term) if c not in needed)
    if not axes:
        return x, term
    return apply("sum", x, axes=axes), [c for c in term if c in needed]


def _broadcast(x, term, letters, sizes):
    """``x`` with the sizes of ``letters`` it has as 1 broadcast to the full size."""
    shape = tuple(sizes[c] if c in letters else d for c, d in zip(term, x.shape))
    return x if shape == x.shape else apply("broadcast_to", x, shape=shape, in_ndim=x.ndim)


def _pair(a, ta, b, tb, keep, sizes):
    """Contract two operands into one whose term is batch + left + right letters (one matmul)."""
    shared = [c for c in ta if c in tb]
    batch = [c for c in shared if c in keep]
    inner = [c for c in shared if c not in keep]
    left = [c for c in ta if c not in tb]
    right = [c for c in tb if c not in ta]
    a = _broadcast(a, ta, shared, sizes)
    b = _broadcast(b, tb, shared, sizes)
    dims = [sizes[c] for c in batch] + [a.shape[ta.index(c)] for c in left] + [b.shape[tb.index(c)] for c in right]
    nb, ni = math.prod(sizes[c] for c in batch), math.prod(sizes[c] for c in inner)
    nl, nr = math.prod(dims[len(batch):len(batch) + len(left)]), math.prod(dims[len(batch) + len(left):])
    a = _reshape(_transpose(a, [ta.index(c) for c in batch + left + inner]), (nb, nl, ni))
    b = _reshape(_transpose(b, [tb.index(c) for c in batch + inner + right]), (nb, ni, nr))
    return _reshape(apply("matmul", a, b), dims), batch + left + right


def einsum_of(subscripts, operands):
    """numpy's ``einsum(subscripts, *operands)`` on graph nodes (floats)."""
    inputs, output = _parse(subscripts, operands)
    sizes = _sizes(inputs, operands)
    xs, terms = [], []
    for x, t in zip(operands, inputs):
        x, t = _diagonal(x, t)
        xs.append(x)
        terms.append(t)
    for i in range(len(xs)):
        needed = set(output).union(*[set(t) for k, t in enumerate(terms) if k != i])
        xs[i], terms[i] = _sum_out(xs[i], terms[i], needed)
    x, term = xs[0], terms[0]
    for k in range(1, len(xs)):
        keep = set(output).union(*[set(t) for t in terms[k + 1:]])
        x, term = _pair(x, term, xs[k], terms[k], keep, sizes)
        x, term = _sum_out(x, term, keep)
    x, term = _sum_out(x, term, set(output))
    x = _broadcast(x, term, output, sizes)
    return _transpose(x, [term.index(c) for c in output])


@language("einsum")
def einsum(lib, subscripts, *operands):
    """einsum(subscripts, *operands): numpy's, with any subscripts (diagonals, '...', implicit
    output); lowered onto matmul, so its derivatives are einsums of the other operands."""
    if not operands:
        raise _refuse("needs at least one operand")
    return einsum_of(subscripts, [lib.as_float(x) for x in operands])


def _letters(n, start=0):
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"[start:start + n]


@language("tensordot")
def tensordot(lib, a, b, axes=2):
    """tensordot(a, b, axes=2): axes an int N (the last N of a with the first N of b) or a pair of
    axis lists; the rest of a's axes, then the rest of b's."""
    a, b = lib.as_float(a), lib.as_float(b)
    if isinstance(axes, int) and not isinstance(axes, bool):
        if not 0 <= axes <= min(a.ndim, b.ndim):
            raise ShapeError(f"tensordot: axes={axes} for shapes {list(a.shape)} and {list(b.shape)}",
                             shapes=[list(a.shape), list(b.shape)])
        pa, pb = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    elif isinstance(axes, (tuple, list)) and len(axes) == 2:
        pa, pb = (list(v) if isinstance(v, (tuple, list)) else [v] for v in axes)
        pa = [a.ndim + lib.axis(a, v) for v in pa]
        pb = [b.ndim + lib.axis(b, v) for v in pb]
        if len(pa) != len(pb):
            raise ProgramError("tensordot: the two axis lists differ in length", code="bad_arguments")
    else:
        raise ProgramError("tensordot: axes must be an int or a pair of axis lists", code="bad_arguments")
    la = list(_letters(a.ndim))
    lb = list(_letters(b.ndim, a.ndim))
    for i, j in zip(pa, pb):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"tensordot: axis {i} of {list(a.shape)} and axis {j} of {list(b.shape)} differ",
                             shapes=[list(a.shape), list(b.shape)])
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in pa] + [c for j, c in enumerate(lb) if j not in pb]
    return einsum_of("".join(la) + "," + "".join(lb) + "->" + "".join(out), [a, b])


@language("inner")
def inner(lib, a, b):
    """inner(a, b): the sum over the last axes of both (a scalar operand multiplies)."""
    a, b = lib.as_float(a), lib.as_float(b)
    if a.ndim == 0 or b.ndim == 0:
        return a * b
    return tensordot(lib, a, b, ([-1], [-1]))


@language("kron")
def kron(lib, a, b):
    """kron(a, b): the Kronecker product (numpy's: the shorter shape padded with leading 1s)."""
    a, b = lib.as_float(a), lib.as_float(b)
    n = max(a.ndim, b.ndim)
    sa, sb = (1,) * (n - a.ndim) + a.shape, (1,) * (n - b.ndim) + b.shape
    ea = _reshape(a, tuple(d for s in sa for d in (s, 1)))
    eb = _reshape(b, tuple(d for s in sb for d in (1, s)))
    return _reshape(ea * eb, tuple(x * y for x, y in zip(sa, sb)))


def _moved(x, src, dst):
    """numpy's moveaxis for one axis (both negative or not)."""
    order = [i for i in range(x.ndim) if i != src % x.ndim]
    order.insert(dst % x.ndim, src % x.ndim)
    return _transpose(x, order)


@language("cross")
def cross(lib, a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None): the cross product of 3-vectors
    (of 2-vectors: the z-component, a scalar) along the given axes, broadcasting the others."""
    a, b = lib.as_float(a), lib.as_float(b)
    if axis is not None:
        axisa = axisb = axisc = axis
    a = _moved(a, lib.axis(a, axisa), -1)
    b = _moved(b, lib.axis(b, axisb), -1)
    if a.shape[-1] != b.shape[-1] or a.shape[-1] not in (2, 3):
        raise ShapeError(f"cross: vectors of length 2 or 3, both the same; got {a.shape[-1]} and {b.shape[-1]}",
                         shapes=[list(a.shape), list(b.shape)])

    def comp(v, i):
        return apply("index", v, items=(i,))

    if a.shape[-1] == 2:
        return comp(a, 0) * comp(b, 1) - comp(a, 1) * comp(b, 0)
    a0, a1, a2 = (comp(a, i) for i in range(3))
    b0, b1, b2 = (comp(b, i) for i in range(3))
    parts = [a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0]
    out = apply("concat", *[_reshape(p, p.shape + (1,)) for p in parts], axis=-1)
    return _moved(out, -1, lib.axis(out, axisc))
