"""Reductions over ``axes`` (a tuple of negative axes; the empty tuple is the identity).

``max``/``min`` split the derivative equally among tied maxima. ``logsumexp``
and ``norm2`` have dedicated rules: logsumexp is computed around its maximum
(no overflow) and its derivative is the softmax; the gradient of ``norm2`` at
0 is 0 (the minimum-norm subgradient) instead of 0/0.
"""

from __future__ import annotations

import numpy as np

from derivd.errors import ShapeError
from derivd.ops.registry import FLOAT, Primitive, apply, register, result_dtype, scale


def reduced_shape(shape, axes):
    n = len(shape)
    for a in axes:
        if not -n <= a < 0:
            raise ShapeError(f"axis {a + n} is out of range for an array of shape {list(shape)}",
                             shape=list(shape), axis=a + n)
    return tuple(d for i, d in enumerate(shape) if i - n not in axes)


def expand(y, in_shape, axes):
    """Broadcast a reduced ``y`` (``batch + reduced``) back to ``batch + in_shape``."""
    nb = len(y.shape) - (len(in_shape) - len(axes))
    keep = tuple(1 if i - len(in_shape) in axes else d for i, d in enumerate(in_shape))
    r = apply("reshape", y, shape=y.shape[:nb] + keep, in_ndim=len(y.shape))
    return apply("broadcast_to", r, shape=y.shape[:nb] + tuple(in_shape), in_ndim=len(r.shape))


def _shape(keep_dtype):
    def rule(x, axes):
        return reduced_shape(x[0], axes), (result_dtype(x[1]) if keep_dtype else FLOAT)
    return rule


def reduction(name, template, jvp, vjp, keep_dtype=False, impl=None, doc=""):
    register(Primitive(name, _shape(keep_dtype), template=template, impl=impl, jvp=jvp, vjp=vjp, doc=doc))


reduction(
    "sum", "np.sum({0}, axis={axes})",
    jvp=lambda p, t, out, axes: None if t[0] is None else apply("sum", t[0], axes=axes),
    vjp=lambda p, out, ct, axes: [expand(ct, p[0].shape, axes)],
    keep_dtype=True,
)


def _tie_weights(x, out, axes):
    hit = apply("where", apply("eq", x, expand(out, x.shape, axes)), 1.0, 0.0)
    return hit / expand(apply("sum", hit, axes=axes), x.shape, axes)


for _name in ("max", "min"):
    reduction(
        _name, "np.%s({0}, axis={axes})" % _name,
        jvp=lambda p, t, out, axes: None if t[0] is None else apply(
            "sum", t[0] * _tie_weights(p[0], out, axes), axes=axes),
        vjp=lambda p, out, ct, axes: [scale(expand(ct, p[0].shape, axes), _tie_weights(p[0], out, axes))],
        keep_dtype=True,
    )


def _prod_others(x, axes):
    """For each element, the product of the others in its reduction group (no division, so exact at 0)."""
    axes = tuple(a + x.ndim for a in axes)
    rest = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, rest + list(axes))
    flat = moved.reshape(moved.shape[: len(rest)] + (-1,))
    ones = np.ones(flat.shape[:-1] + (1,))
    left = np.cumprod(np.concatenate([ones, flat[..., :-1]], axis=-1), axis=-1)
    right = np.cumprod(np.concatenate([ones, flat[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    return np.transpose((left * right).reshape(moved.shape), np.argsort(rest + list(axes)))


register(Primitive("prod_others", lambda x, axes: (x[0], FLOAT), impl=_prod_others,
                   doc="d prod / d x_i; no rules of its own, so prod has first derivatives only"))
reduction(
    "prod", "np.prod({0}, axis={axes})",
    jvp=lambda p, t, out, axes: None if t[0] is None else apply(
        "sum", t[0] * apply("prod_others", p[0], axes=axes), axes=axes),
    vjp=lambda p, out, ct, axes: [scale(expand(ct, p[0].shape, axes), apply("prod_others", p[0], axes=axes))],
)


def _logsumexp(x, axes):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - m), axis=axes)) + np.squeeze(m, axis=axes)


def _softmax_of(x, out, axes):
    return apply("exp", x - expand(out, x.shape, axes))


reduction(
    "logsumexp", None, impl=_logsumexp,
    jvp=lambda p, t, out, axes: None if t[0] is None else apply("sum", t[0] * _softmax_of(p[0], out, axes), axes=axes),
    vjp=lambda p, out, ct, axes: [scale(expand(ct, p[0].shape, axes), _softmax_of(p[0], out, axes))],
    doc="log(sum(exp(x))) shifted by the maximum: no overflow; derivative is the softmax",
)


def _safe_norm(out):
    return apply("where", apply("eq", out, 0.0), 1.0, out)


reduction(
    "norm2", "np.sqrt(np.sum(np.square({0}), axis={axes}))",
    jvp=lambda p, t, out, axes: None if t[0] is None else apply("sum", t[0] * p[0], axes=axes) / _safe_norm(out),
    vjp=lambda p, out, ct, axes: [expand(scale(ct, apply("reciprocal", _safe_norm(out))), p[0].shape, axes) * p[0]],
    doc="Euclidean norm; gradient 0 at the origin (minimum-norm subgradient), not 0/0",
)
