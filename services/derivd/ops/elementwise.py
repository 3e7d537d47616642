"""Elementwise primitives: each one line, its derivative written in terms of
its input ``x`` and output ``y``.

Conventions at points of non-differentiability (README, "Kinks"): the
derivative of ``abs``, ``sign``, ``relu`` at 0 is 0; ``sqrt`` and ``cbrt`` at 0
have the one-sided derivative +inf; ``floor ceil round`` and ``//`` have
derivative 0 everywhere; ``maximum``/``minimum`` split a tie equally (½, ½);
``hypot`` at (0, 0) has derivative 0; ``x ** y`` has derivative 0 in ``y``
where ``x == 0``, and ``x ** 0`` (a literal or a value) is the constant 1, derivative 0 also at
``x == 0`` (in every order). ``fmax``/``fmin`` split a tie as ``maximum``/``minimum`` and give a
NaN argument's derivative to the other; ``heaviside(x, h0)`` has derivative 0 in ``x`` and 1 in
``h0`` where ``x == 0``; ``sinc`` is smooth at 0 (its series there).
"""

from __future__ import annotations

import math

import numpy as np

from derivd.ops.registry import (
    AWAY_FROM_0, BOOL, FLOAT, REAL, Primitive, apply, broadcast_shapes, elementwise_cases, floats, language,
    register, result_dtype, scale,
)
from derivd.ops.taylor_kernels import bilinear, composite, constant, integral, linear


def op(name):
    return lambda *args, **params: apply(name, *args, **params)


cos, sin, exp, log, sqrt, square = op("cos"), op("sin"), op("exp"), op("log"), op("sqrt"), op("square")
where, sigmoid, cbrt, reciprocal = op("where"), op("sigmoid"), op("cbrt"), op("reciprocal")
cosh, sinh, floor, mul0 = op("cosh"), op("sinh"), op("floor"), op("mul0")


def _float_shape(x, **_):
    return x[0], FLOAT


NONLINEAR, PIECEWISE_LINEAR, ZERO = ("elementwise", "all"), ("elementwise", ()), ("zero", ())


def unary(name, template, deriv, scalar=None, *, domain=REAL, taylor=None, sparsity=NONLINEAR, dsl=True,
          doc="", aliases=()):
    """An elementwise function with derivative ``deriv(x, y)`` (``None``: zero derivative), swept on
    ``domain`` (intervals), a language function of one array unless ``dsl`` is False (also called
    ``aliases``)."""

    def jvp(primals, tangents, out):
        (t,) = tangents
        if deriv is None or t is None:
            return None
        return t * deriv(primals[0], out)

    def vjp(primals, out, ct):
        if deriv is None:
            return [None]
        return [scale(ct, deriv(primals[0], out))]

    register(Primitive(name, _float_shape, template=template, scalar_template=scalar,
                       jvp=jvp, vjp=vjp, taylor=taylor, broadcasting=True, doc=doc,
                       sparsity=ZERO if deriv is None else sparsity, sample=elementwise_cases(domain),
                       dsl={n: floats(name, 1, n) for n in (name, *aliases)} if dsl else {}))


# Taylor rule shapes of elementwise functions (the generic ones and the taylor_* recurrences
# are in taylor_kernels.py).


def riccati(a, b, c):
    """y' = x' (a + b y + c y²): exp (0, 1, 0), tan (1, 0, 1), tanh (1, 0, -1),
    sigmoid (0, 1, -1), 1/x (0, 0, -1), one recurrence (taylor_riccati)."""
    return lambda p, s, out, jet: apply("taylor_riccati", s[0], out, a=a, b=b, c=c)


def logarithm(scale, shift=0.0):
    """y = scale · log(x + shift), by the log recurrence on u = x + shift."""
    return lambda p, s, out, jet: scale * apply("taylor_log", s[0], p[0] + shift)


def power(r):
    """y = x^r for a constant r (sqrt, cbrt), by the power recurrence."""
    return lambda p, s, out, jet: apply("taylor_pow", s[0], p[0], out, r)


def paired(mate, sign, second=False):
    """sin/cos (sign -1) and sinh/cosh (+1) share one recurrence (taylor_sincos), which
    stacks both series on a new axis 0; ``second`` picks the cos/cosh half."""

    def rule(p, s, out, jet):
        other = apply(mate, p[0])
        both = apply("taylor_sincos", s[0], other if second else out, out if second else other, sign=sign)
        return apply("index", both, items=(int(second),) + tuple((0, d, 1) for d in both.shape[1:]))

    return rule


PI_2 = 1.1283791670955126  # 2 / sqrt(pi)
LN2, LN10 = 0.6931471805599453, 2.302585092994046
PI, DEGREE = math.pi, math.pi / 180.0

_POS = ((0.2, 3.0),)
_UNIT = ((-0.8, 0.8),)
_NOT_INT = ((-1.9, -1.1), (-0.9, -0.1), (0.1, 0.9), (1.1, 1.9))  # away from floor's and ceil's jumps
_NOT_HALF = ((-1.4, -0.6), (-0.4, 0.4), (0.6, 1.4))  # away from round's

unary("neg", "(-{0})", lambda x, y: -1.0, "(-{0})", taylor=linear, sparsity=PIECEWISE_LINEAR, dsl=False)
unary("exp", "np.exp({0})", lambda x, y: y, "math.exp({0})", taylor=riccati(0.0, 1.0, 0.0))
unary("exp2", "np.exp2({0})", lambda x, y: y * LN2, "math.pow(2.0, {0})", taylor=riccati(0.0, LN2, 0.0))
unary("expm1", "np.expm1({0})", lambda x, y: y + 1.0, "math.expm1({0})", taylor=riccati(1.0, 1.0, 0.0))
unary("log", "np.log({0})", lambda x, y: reciprocal(x), "math.log({0})", taylor=logarithm(1.0), domain=_POS)
unary("log2", "np.log2({0})", lambda x, y: reciprocal(x * LN2), "math.log2({0})", taylor=logarithm(1 / LN2),
      domain=_POS)
unary("log10", "np.log10({0})", lambda x, y: reciprocal(x * LN10), "math.log10({0})", taylor=logarithm(1 / LN10),
      domain=_POS)
unary("log1p", "np.log1p({0})", lambda x, y: reciprocal(x + 1.0), "math.log1p({0})",
      taylor=logarithm(1.0, shift=1.0), domain=((-0.8, 2.0),))
unary("sin", "np.sin({0})", lambda x, y: cos(x), "math.sin({0})", taylor=paired("cos", -1.0))
unary("cos", "np.cos({0})", lambda x, y: -sin(x), "math.cos({0})", taylor=paired("sin", -1.0, second=True))
unary("tan", "np.tan({0})", lambda x, y: square(y) + 1.0, "math.tan({0})", taylor=riccati(1.0, 0.0, 1.0),
      domain=((-1.2, 1.2),))
unary("asin", "np.arcsin({0})", lambda x, y: reciprocal(sqrt(1.0 - square(x))), "math.asin({0})", taylor=integral,
      domain=_UNIT)
unary("acos", "np.arccos({0})", lambda x, y: -reciprocal(sqrt(1.0 - square(x))), "math.acos({0})",
      taylor=integral, domain=_UNIT)
unary("atan", "np.arctan({0})", lambda x, y: reciprocal(square(x) + 1.0), "math.atan({0})", taylor=integral)
unary("sinh", "np.sinh({0})", lambda x, y: cosh(x), "math.sinh({0})", taylor=paired("cosh", 1.0))
unary("cosh", "np.cosh({0})", lambda x, y: sinh(x), "math.cosh({0})", taylor=paired("sinh", 1.0, second=True))
unary("tanh", "np.tanh({0})", lambda x, y: 1.0 - square(y), "math.tanh({0})", taylor=riccati(1.0, 0.0, -1.0))
unary("asinh", "np.arcsinh({0})", lambda x, y: reciprocal(sqrt(square(x) + 1.0)), "math.asinh({0})",
      taylor=integral)
unary("acosh", "np.arccosh({0})", lambda x, y: reciprocal(sqrt(square(x) - 1.0)), "math.acosh({0})",
      taylor=integral, domain=((1.2, 3.0),))
unary("atanh", "np.arctanh({0})", lambda x, y: reciprocal(1.0 - square(x)), "math.atanh({0})", taylor=integral,
      domain=_UNIT)
unary("sqrt", "np.sqrt({0})", lambda x, y: 0.5 * reciprocal(y), "math.sqrt({0})", taylor=power(0.5), domain=_POS)
unary("cbrt", "np.cbrt({0})", lambda x, y: reciprocal(3.0 * square(y)), None, taylor=power(1 / 3),
      domain=AWAY_FROM_0)
unary("square", "np.square({0})", lambda x, y: 2.0 * x, "({0} * {0})", taylor=composite(lambda x, y: x * x))
unary("reciprocal", "np.reciprocal({0})", lambda x, y: -square(y), "(1.0 / {0})", taylor=riccati(0.0, 0.0, -1.0),
      domain=AWAY_FROM_0)
unary("abs", "np.abs({0})", lambda x, y: apply("sign", x), "abs({0})", taylor=linear, sparsity=PIECEWISE_LINEAR,
      domain=AWAY_FROM_0)
unary("sign", "np.sign({0})", None, "(1.0 if {0} > 0 else -1.0 if {0} < 0 else {0} * 0.0)", taylor=constant,
      domain=AWAY_FROM_0)
unary("floor", "np.floor({0})", None, "float(math.floor({0}))", taylor=constant, domain=_NOT_INT)
unary("ceil", "np.ceil({0})", None, "float(math.ceil({0}))", taylor=constant, domain=_NOT_INT)
unary("round", "np.round({0})", None, "float(round({0}))", taylor=constant, domain=_NOT_HALF)
unary("erf", "sp.erf({0})", lambda x, y: PI_2 * exp(-square(x)), "math.erf({0})", taylor=integral)
unary("erfc", "sp.erfc({0})", lambda x, y: -PI_2 * exp(-square(x)), "math.erfc({0})", taylor=integral)
unary("sigmoid", "sp.expit({0})", lambda x, y: y * sigmoid(-x), None,
      doc="dedicated (not exp-based) so large |x| neither overflows nor loses digits", taylor=riccati(0.0, 1.0, -1.0))
# softplus as numpy's logaddexp(0, x) computes it, in three ufuncs numpy runs 3x faster than logaddexp's
# one (1000 entries: 5 against 16 µs; the same digits, within 2.3e-16 of mpmath on [-40, 40]).
unary("softplus", "(np.maximum({0}, 0.0) + np.log1p(np.exp(-np.abs({0}))))", lambda x, y: sigmoid(x), None,
      doc="log(1 + e^x) computed as max(x, 0) + log1p(e^-|x|): no overflow for large x, no lost digits for "
          "very negative x", taylor=integral)
unary("relu", "np.maximum({0}, 0.0)", lambda x, y: apply("step", x), "max({0}, 0.0)", taylor=linear,
      sparsity=PIECEWISE_LINEAR, domain=AWAY_FROM_0)
unary("step", "np.greater({0}, 0.0).astype(np.float64)", None, "float({0} > 0.0)",
      doc="Heaviside step (1 for x > 0): relu's derivative; its own is 0", taylor=constant, domain=AWAY_FROM_0,
      dsl=False)
unary("deg2rad", "np.deg2rad({0})", lambda x, y: DEGREE, "math.radians({0})", taylor=linear, sparsity=PIECEWISE_LINEAR,
      aliases=("radians",), doc="degrees to radians: x·π/180")
unary("rad2deg", "np.rad2deg({0})", lambda x, y: 1.0 / DEGREE, "math.degrees({0})", taylor=linear,
      sparsity=PIECEWISE_LINEAR, aliases=("degrees",), doc="radians to degrees: x·180/π")


def _sinc_near_0(x, derivative=False):
    """sinc(x) = Σ_k (-π²x²)^k / (2k+1)! (or its derivative), to 10 terms: exact in double
    precision for |x| < 0.1, and so are its derivatives of every order the rules take."""
    x2 = square(x)
    terms = [(-PI * PI) ** k / math.factorial(2 * k + 1) * (2 * k if derivative else 1) for k in range(11)]
    if derivative:
        terms = terms[1:]
    out = terms[-1]
    for c in reversed(terms[:-1]):
        out = out * x2 + c
    return out * x if derivative else out


def _sinc_parts(x):
    near = apply("lt", apply("abs", x), 0.1)
    return near, where(near, 1.0, x)


def _sinc_deriv(x, y):
    """(cos(πx) - sinc(x)) / x, by the series near 0 (its limit there is 0, its own derivative -π²/3)."""
    near, safe = _sinc_parts(x)
    return where(near, _sinc_near_0(x, derivative=True), (cos(PI * x) - y) / safe)


def _sinc_build(x, y):
    near, safe = _sinc_parts(x)
    return where(near, _sinc_near_0(x), sin(PI * safe) / (PI * safe))


unary("sinc", "np.sinc({0})", _sinc_deriv, taylor=composite(_sinc_build),
      doc="numpy's normalised sinc, sin(πx)/(πx), 1 at 0; derivatives of every order near 0 from its series")


@language("nan_to_num")
def nan_to_num(lib, x, copy=True, nan=0.0, posinf=None, neginf=None):
    """nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None): NaN, +inf and -inf replaced
    (by default with 0 and the largest finite floats, numpy's); derivative 1 in x where x is
    finite, and 1 in the replacement where it is used."""
    x = lib.as_float(x)
    big = float(np.finfo(np.float64).max)
    pos = lib.as_float(big if posinf is None else posinf)
    neg = lib.as_float(-big if neginf is None else neginf)
    other = where(apply("ne", x, x), lib.as_float(nan), where(apply("gt", x, 0.0), pos, neg))
    return where(apply("isfinite", x), x, other)


# ---------------------------------------------------------------- binary


def _binary_shape(a, b, **_):
    return broadcast_shapes(a[0], b[0]), result_dtype(a[1], b[1])


def _float_binary_shape(a, b, **_):
    return broadcast_shapes(a[0], b[0]), FLOAT


def binary(name, template, scalar, da, db, *, domains=(REAL, REAL), shape=_float_binary_shape, taylor=None,
           sparsity=NONLINEAR, dsl=False, doc=""):
    """A binary elementwise function with partials ``da(a, b, y)``, ``db(a, b, y)`` (``None``: zero),
    swept on ``domains`` (one per argument); ``dsl``: a language function of two arrays.
    """

    def jvp(primals, tangents, out):
        a, b = primals
        ta, tb = tangents
        terms = []
        if ta is not None and da is not None:
            terms.append(ta * da(a, b, out))
        if tb is not None and db is not None:
            terms.append(tb * db(a, b, out))
        if not terms:
            return None
        return terms[0] if len(terms) == 1 else terms[0] + terms[1]

    def vjp(primals, out, ct):
        a, b = primals
        return [None if da is None else scale(ct, da(a, b, out)),
                None if db is None else scale(ct, db(a, b, out))]

    register(Primitive(name, shape, template=template, scalar_template=scalar,
                       jvp=jvp, vjp=vjp, taylor=taylor, broadcasting=True, doc=doc,
                       sparsity=ZERO if da is None and db is None else sparsity,
                       sample=elementwise_cases(*domains), dsl={name: floats(name, 2)} if dsl else {}))


def _add_jvp(sign):
    def jvp(primals, tangents, out):
        ta, tb = tangents
        if tb is None:
            return ta
        if sign < 0:
            tb = -tb
        return tb if ta is None else ta + tb
    return jvp


def _div_taylor(p, s, out, jet):
    """y = a / b: linear in a for a constant b, else y_k = (a_k - Σ_{j=1..k} b_j y_{k-j}) / b_0."""
    (a, b), (sa, sb) = p, s
    if sb is None:
        return sa / b
    return apply("taylor_div", 0.0 if sa is None else sa, sb, out, b)


def _integer(node, bound=2**16):
    """The value of an integer-valued literal within ±bound, else None."""
    if node.prim == "const" and node.dtype != BOOL:
        v = node.params["value"]
        if float(v).is_integer() and abs(v) <= bound:
            return int(v)
    return None


def _pow_taylor(p, s, out, jet):
    """x ** e. An integer literal e: products by repeated squaring (exact, also at x <= 0);
    another constant e: the power recurrence; a varying e: exp(e log x)."""
    (x, e), (sx, se) = p, s
    if se is not None:
        return apply("taylor_riccati", jet.series(e * log(x)), out, a=0.0, b=1.0, c=0.0)
    r = _integer(e)
    if r is None:  # x ** 0 is the constant 1, also at x = 0 (where the recurrence divides by 0)
        return where(apply("eq", e, 0.0), 0.0, apply("taylor_pow", sx, x, out, e))
    prod, base, n = None, x, abs(r)
    while n:
        if n & 1:
            prod = base if prod is None else prod * base
        n >>= 1
        if n:
            base = base * base
    return None if prod is None else jet.series(reciprocal(prod) if r < 0 else prod)


_QUOTIENT = ((-2.6, -2.3), (0.1, 0.9), (2.3, 2.6)), ((1.4, 1.5),)  # a / b stays 0.1 from an integer
_TIE_FREE = ((-2.0, -1.0), (1.0, 2.0)), ((-0.5, 0.5),)

register(Primitive("add", _binary_shape, "({0} + {1})", scalar_template="({0} + {1})",
                   jvp=_add_jvp(1), vjp=lambda p, out, ct: [ct, ct], taylor=linear, broadcasting=True,
                   sparsity=PIECEWISE_LINEAR, sample=elementwise_cases(REAL, REAL)))
register(Primitive("sub", _binary_shape, "({0} - {1})", scalar_template="({0} - {1})",
                   jvp=_add_jvp(-1), vjp=lambda p, out, ct: [ct, -ct], taylor=linear, broadcasting=True,
                   sparsity=PIECEWISE_LINEAR, sample=elementwise_cases(REAL, REAL)))
binary("mul", "({0} * {1})", "({0} * {1})", lambda a, b, y: b, lambda a, b, y: a, shape=_binary_shape,
       taylor=bilinear, sparsity=("elementwise", ((0, 1),)))
binary("div", "({0} / {1})", "({0} / {1})",
       lambda a, b, y: reciprocal(b), lambda a, b, y: -(y / b), taylor=_div_taylor, domains=(REAL, AWAY_FROM_0),
       sparsity=("elementwise", ((0, 1), (1, 1))))
binary("pow", "np.power({0}, {1})", "math.pow({0}, {1})",
       lambda a, b, y: mul0(b, apply("pow", a, b - 1.0)),
       lambda a, b, y: y * where(apply("eq", a, 0.0), 0.0, log(where(apply("eq", a, 0.0), 1.0, a))),
       taylor=_pow_taylor, domains=(_POS, REAL), dsl=True)
binary("atan2", "np.arctan2({0}, {1})", "math.atan2({0}, {1})",
       lambda a, b, y: b / (square(a) + square(b)), lambda a, b, y: -a / (square(a) + square(b)),
       taylor=integral, domains=(AWAY_FROM_0, AWAY_FROM_0), dsl=True)


def _safe(y):
    return where(apply("eq", y, 0.0), 1.0, y)


binary("hypot", "np.hypot({0}, {1})", "math.hypot({0}, {1})",
       lambda a, b, y: a / _safe(y), lambda a, b, y: b / _safe(y),
       taylor=composite(lambda a, b, y: sqrt(square(a) + square(b)), vanish_at_zero=True),
       domains=(AWAY_FROM_0, AWAY_FROM_0), dsl=True)


def _tie_weight(greater):
    # 1 where a wins, 0 where b wins, 1/2 on a tie.
    return lambda a, b, y: where(apply(greater, a, b), 1.0, where(apply("eq", a, b), 0.5, 0.0))


binary("maximum", "np.maximum({0}, {1})", "max({0}, {1})",
       _tie_weight("gt"), lambda a, b, y: 1.0 - _tie_weight("gt")(a, b, y), taylor=linear,
       sparsity=PIECEWISE_LINEAR, domains=_TIE_FREE, dsl=True)
binary("minimum", "np.minimum({0}, {1})", "min({0}, {1})",
       _tie_weight("lt"), lambda a, b, y: 1.0 - _tie_weight("lt")(a, b, y), taylor=linear,
       sparsity=PIECEWISE_LINEAR, domains=_TIE_FREE, dsl=True)


def _logaddexp_build(a, b, y, base=1.0):
    """log(e^a + e^b) = m + log(e^(a-m) + e^(b-m)) for any m; m = max(a, b) (finite) keeps the
    exponents <= 0, and whatever rule m's derivative follows cancels."""
    a, b = (a, b) if base == 1.0 else (a * base, b * base)
    m = apply("maximum", a, b)
    m = where(apply("isfinite", m), m, 0.0)
    out = m + log(exp(a - m) + exp(b - m))
    return out if base == 1.0 else out / base


binary("logaddexp", "np.logaddexp({0}, {1})", None, lambda a, b, y: exp(a - y), lambda a, b, y: exp(b - y),
       taylor=composite(_logaddexp_build), dsl=True,
       doc="log(e^a + e^b) without overflow; derivatives e^(a-y), e^(b-y)")
binary("logaddexp2", "np.logaddexp2({0}, {1})", None, lambda a, b, y: apply("exp2", a - y),
       lambda a, b, y: apply("exp2", b - y), taylor=composite(lambda a, b, y: _logaddexp_build(a, b, y, LN2)),
       dsl=True, doc="log2(2^a + 2^b) without overflow; derivatives 2^(a-y), 2^(b-y)")


def _nan_ignoring(weight):
    """fmax/fmin: a NaN argument loses (the other gets derivative 1), else maximum's or minimum's weights."""
    return lambda a, b, y: where(apply("ne", b, b), 1.0, where(apply("ne", a, a), 0.0, weight(a, b, y)))


binary("fmax", "np.fmax({0}, {1})", None, _nan_ignoring(_tie_weight("gt")),
       lambda a, b, y: 1.0 - _nan_ignoring(_tie_weight("gt"))(a, b, y), taylor=linear, sparsity=PIECEWISE_LINEAR,
       domains=_TIE_FREE, dsl=True, doc="maximum ignoring NaN (numpy's); a tie gives ½ to each")
binary("fmin", "np.fmin({0}, {1})", None, _nan_ignoring(_tie_weight("lt")),
       lambda a, b, y: 1.0 - _nan_ignoring(_tie_weight("lt"))(a, b, y), taylor=linear, sparsity=PIECEWISE_LINEAR,
       domains=_TIE_FREE, dsl=True, doc="minimum ignoring NaN (numpy's); a tie gives ½ to each")
binary("heaviside", "np.heaviside({0}, {1})", None, None, lambda a, b, y: where(apply("eq", a, 0.0), 1.0, 0.0),
       taylor=linear, sparsity=PIECEWISE_LINEAR, domains=(AWAY_FROM_0, REAL), dsl=True,
       doc="heaviside(x, h0): 0 below 0, 1 above, h0 at 0; derivative 0 in x (the jump too), 1 in h0 where x == 0")
binary("mod", "np.mod({0}, {1})", "({0} % {1})",
       lambda a, b, y: 1.0, lambda a, b, y: -floor(a / b), shape=_binary_shape, taylor=linear,
       sparsity=PIECEWISE_LINEAR, domains=_QUOTIENT)
binary("floordiv", "np.floor_divide({0}, {1})", "({0} // {1})", None, None, shape=_binary_shape,
       taylor=constant, domains=_QUOTIENT)


def _sum_terms(terms):
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


register(Primitive(
    "mul0", _float_binary_shape, "_mul0({0}, {1})", scalar_template="(0.0 if {0} == 0 else {0} * {1})",
    jvp=lambda p, t, out: _sum_terms([None if t[0] is None else mul0(t[0], p[1]),
                                      None if t[1] is None else mul0(p[0], t[1])]),
    vjp=lambda p, out, ct: [mul0(ct, p[1]), mul0(ct, p[0])],
    taylor=bilinear, broadcasting=True, sparsity=("elementwise", ((0, 1),)), sample=elementwise_cases(REAL, REAL),
    doc="a * b, but 0 wherever a == 0 even if b is inf or nan: scales masked cotangents; "
        "its own rules use mul0 again so the convention survives forward-over-reverse",
))


# ---------------------------------------------------------------- masks


def _mask_shape(*avals, **_):
    return broadcast_shapes(*[a[0] for a in avals]), BOOL


def mask(name, template, scalar, *domains):
    """A boolean elementwise function of ``domains`` (intervals, or "mask" for a mask argument)."""
    register(Primitive(name, _mask_shape, template=template, scalar_template=scalar,
                       broadcasting=True, differentiable=False, sample=elementwise_cases(*domains)))


mask("lt", "({0} < {1})", "({0} < {1})", REAL, REAL)
mask("le", "({0} <= {1})", "({0} <= {1})", REAL, REAL)
mask("gt", "({0} > {1})", "({0} > {1})", REAL, REAL)
mask("ge", "({0} >= {1})", "({0} >= {1})", REAL, REAL)
mask("eq", "({0} == {1})", "({0} == {1})", REAL, REAL)
mask("ne", "({0} != {1})", "({0} != {1})", REAL, REAL)
mask("and", "np.logical_and({0}, {1})", "({0} and {1})", "mask", "mask")
mask("or", "np.logical_or({0}, {1})", "({0} or {1})", "mask", "mask")
mask("not", "np.logical_not({0})", "(not {0})", "mask")
mask("isfinite", "np.isfinite({0})", "math.isfinite({0})", REAL)


def _where_shape(c, a, b, **_):
    return broadcast_shapes(c[0], a[0], b[0]), result_dtype(a[1], b[1])


def _where_jvp(primals, tangents, out):
    c = primals[0]
    _, ta, tb = tangents
    if ta is None and tb is None:
        return None
    return where(c, 0.0 if ta is None else ta, 0.0 if tb is None else tb)


def _where_vjp(primals, out, ct):
    c = primals[0]
    ca, cb = where(c, ct, 0.0), where(c, 0.0, ct)
    ca.masked = cb.masked = True
    return [None, ca, cb]


register(Primitive(
    "where", _where_shape, "np.where({0}, {1}, {2})", scalar_template="({1} if {0} else {2})",
    jvp=_where_jvp, vjp=_where_vjp, taylor=linear, broadcasting=True, sparsity=PIECEWISE_LINEAR,
    sample=elementwise_cases("mask", REAL, REAL),
    doc="select elementwise; both sides are evaluated, and the cotangent of the untaken side "
        "is marked so that no NaN or inf of that side reaches the gradient",
))
