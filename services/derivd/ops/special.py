"""scipy.special's real functions, each one line of a helper, with derivatives in the arguments
where they are defined.

Derivatives (DLMF: 5.15 polygamma, 7.10 erf, 10.6 and 10.29 Bessel, 8.8 incomplete gamma):

    gammaln' = digamma     gamma' = gamma · digamma    polygamma(n)' = polygamma(n + 1)
    betaln_a = ψ(a) - ψ(a + b)                         beta_a = beta · (ψ(a) - ψ(a + b))
    erfinv' = (√π/2) e^{y²}    ndtri' = √(2π) e^{y²/2}  ndtr' = φ    log_ndtr' = φ / Φ
    j0' = -j1   j1' = (j0 - jn(2, ·))/2   jn' = (jn(n-1, ·) - jn(n+1, ·))/2   (y the same)
    i0' = i1    i1' = (i0 + iv(2, ·))/2   iv' = (iv(v-1, ·) + iv(v+1, ·))/2
    gammainc_x = e^{-x} x^{a-1} / Γ(a) = -gammaincc_x      rgamma' = -rgamma · digamma
    betainc_x = x^{a-1} (1 - x)^{b-1} / B(a, b)

The order of a Bessel function, the shape parameter ``a`` of ``gammainc``/``gammaincc`` and ``a``,
``b`` of ``betainc`` take
no derivative here (none exists in closed form, and an integer order has none at all): they are
constants, and differentiating through one is a ``NoDerivativeRule`` (422) naming the argument.
``polygamma``'s ``n`` and ``multigammaln``'s ``d`` are integer literals (params).

Taylor rules: where every derivative has a closed form (the polygammas, Bessel functions:
J_ν⁽ᵐ⁾ = 2⁻ᵐ Σ_k (-1)^k C(m, k) J_{ν-m+2k}, Y the same, I_ν⁽ᵐ⁾ = 2⁻ᵐ Σ_k C(m, k) I_{ν-m+2k}), the
series of f(x(t)) = Σ_m f⁽ᵐ⁾(x_0) (x(t) - x_0)^m / m! (``by_derivatives``, ``taylor_compose``);
``integral`` where the derivative is a function of the inputs alone, a
composition (``composite``) where the function is one (gamma = gammasgn · exp(gammaln),
log_expit = -softplus(-x), entr = -x log x, ...), and for the inverse functions erfinv, erfcinv
and ndtri the recurrence of y' = c e^{b y²} x' (``taylor_expsq``).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special as sp

from derivd.errors import NoDerivativeRule, ProgramError
from derivd.ops.elementwise import binary, exp, log, square, unary
from derivd.ops.registry import (
    FLOAT, NUMBER, REGISTRY, SIZE, Primitive, apply, get, broadcast_shapes, elementwise_cases, floats, register, scale,
)
from derivd.ops.taylor_kernels import add_all, composite, constant, integral

SQRT_PI_2 = math.sqrt(math.pi) / 2
SQRT_2PI = math.sqrt(2 * math.pi)

_POS = ((0.3, 3.0),)  # gamma-family arguments, away from the poles at 0, -1, -2, ...
_GAMMA = ((-2.7, -2.3), (-1.7, -1.3), (-0.7, -0.3), (0.3, 3.0))  # also between the poles
_PROB = ((0.25, 0.75),)
_UNIT = ((-0.8, 0.8),)
_BESSEL_Y = ((0.5, 4.0),)


def fn(name):
    return lambda *args, **params: apply(name, *args, **params)


digamma, polygamma, gammaln, gammasgn, erfinv = fn("digamma"), fn("polygamma"), fn("gammaln"), fn("gammasgn"), fn(
    "erfinv")
softplus, ndtr, iv, ive, jn, yn, sign = fn("softplus"), fn("ndtr"), fn("iv"), fn("ive"), fn("jn"), fn("yn"), fn("sign")
i0, i1, j0, j1, y0, y1 = fn("i0"), fn("i1"), fn("j0"), fn("j1"), fn("y0"), fn("y1")


# ---------------------------------------------------------------- Taylor rule by all derivatives


def by_derivatives(derivative):
    """Taylor rule of ``f(..., x)`` (x its last argument) whose m-th derivative in x is the node
    ``derivative(m, *primals, **params)``: the series of Σ_m f⁽ᵐ⁾(x_0) (x(t) - x_0)^m / m!. The
    other arguments must be constants (``in_second``'s rules refuse them first)."""

    def rule(p, s, out, jet, **params):
        if any(x is not None for x in s[:-1]):
            get(out.prim).rule("jvp")(p, [1.0] * len(p), out, **params)  # raises, naming the argument
        if s[-1] is None:
            return None
        return apply("taylor_compose", s[-1], *[derivative(m, *p, **params) for m in range(1, s[-1].shape[0] + 1)])

    return rule


def _taylor_compose(xs, *derivatives):
    """y_k = Σ_{m=1..k} f⁽ᵐ⁾ / m! [u^m]_k with u = x(t) - x_0 (coefficients 1..K of x): powers of u
    by truncated Cauchy products."""
    K = len(xs)
    shape = np.broadcast_shapes(xs.shape[1:], *[np.shape(d) for d in derivatives])
    u = np.zeros((K + 1,) + shape)
    u[1:] = xs
    power, y = u.copy(), np.zeros((K,) + shape)
    for m in range(1, K + 1):
        if m > 1:
            nxt = np.zeros_like(u)
            for k in range(m, K + 1):
                nxt[k] = np.sum(power[m - 1:k] * u[k - m + 1:0:-1], axis=0)
            power = nxt
        y += (np.asarray(derivatives[m - 1]) / math.factorial(m)) * power[1:]
    return y


def _taylor_compose_xla(jx, xs, *derivatives):
    np_ = jx.np
    K = xs.shape[0]
    shape = np_.broadcast_shapes(xs.shape[1:], *[np_.shape(d) for d in derivatives])
    u = [np_.zeros(shape)] + [np_.broadcast_to(xs[k], shape) for k in range(K)]
    power, y = u, 0.0
    for m in range(1, K + 1):
        if m > 1:
            power = [np_.zeros(shape)] * m + [sum(power[j] * u[k - j] for j in range(m - 1, k))
                                              for k in range(m, K + 1)]
        y = y + (derivatives[m - 1] / math.factorial(m)) * np_.stack(power[1:])
    return y


register(Primitive("taylor_compose", lambda xs, *ds: (broadcast_shapes(xs[0], *[d[0] for d in ds]), FLOAT),
                   impl=_taylor_compose, xla=_taylor_compose_xla,
                   doc="(x series, f', f'', ..., f⁽ᴷ⁾ at x_0) -> series of f(x)"))


def bessel(prim, sign, order=None):
    """``derivative(m, [order,] x)`` of the Bessel function ``prim(order, x)`` (``order``: fixed here
    for j0, i1, ...): 2⁻ᵐ Σ_k sign^k C(m, k) prim(order - m + 2k, x)."""

    def derivative(m, *args):
        v, x = (order, args[0]) if order is not None else args
        return add_all((sign ** k * math.comb(m, k) / 2.0 ** m) * apply(prim, v - float(m - 2 * k), x)
                       for k in range(m + 1))

    return by_derivatives(derivative)


def names(prim: str, *aliases: str, arity: int = 1) -> None:
    """More language names of ``prim``, one array argument each (``psi`` for ``digamma``)."""
    for alias in aliases:
        REGISTRY[prim].dsl[alias] = floats(prim, arity, alias)


# ---------------------------------------------------------------- gamma family

unary("gammasgn", "sp.gammasgn({0})", None, domain=_GAMMA, taylor=constant,
      doc="the sign of gamma(x): piecewise constant, derivative 0")
unary("gammaln", "sp.gammaln({0})", lambda x, y: digamma(x), domain=_GAMMA,
      taylor=by_derivatives(lambda m, x: digamma(x) if m == 1 else polygamma(x, n=m - 1)),
      doc="log |gamma(x)|")
unary("gamma", "sp.gamma({0})", lambda x, y: y * digamma(x), domain=_GAMMA,
      taylor=composite(lambda x, y: gammasgn(x) * exp(gammaln(x))))
unary("rgamma", "sp.rgamma({0})", lambda x, y: -y * digamma(x), domain=_GAMMA,
      taylor=composite(lambda x, y: gammasgn(x) * exp(-gammaln(x))),
      doc="1 / gamma(x), entire: 0 at the poles of gamma")
unary("digamma", "sp.digamma({0})", lambda x, y: polygamma(x, n=1), domain=_GAMMA,
      taylor=by_derivatives(lambda m, x: polygamma(x, n=m)),
      doc="psi(x), the derivative of gammaln")
names("digamma", "psi")


def _polygamma_call(lib, n, x):
    if type(n) is not int or n < 0:
        raise ProgramError("polygamma(n, x) takes a literal integer order n >= 0", code="bad_arguments")
    return apply("polygamma", lib.as_float(x), n=n)


register(Primitive(
    "polygamma", lambda x, n: (x[0], FLOAT), template="sp.polygamma({n}, {0})",
    jvp=lambda p, t, out, n: None if t[0] is None else t[0] * polygamma(p[0], n=n + 1),
    vjp=lambda p, out, ct, n: [scale(ct, polygamma(p[0], n=n + 1))],
    taylor=by_derivatives(lambda m, x, n: polygamma(x, n=n + m)), broadcasting=True,
    sparsity=("elementwise", "all"), params={"n": SIZE},
    sample=[dict(c, params={"n": n}) for n, c in zip((0, 1, 2), elementwise_cases(_POS))],
    dsl={"polygamma": _polygamma_call}, doc="the n-th derivative of digamma, n a literal integer",
))


def _psi_diff(a, b):
    return digamma(a) - digamma(a + b)


binary("betaln", "sp.betaln({0}, {1})", None, lambda a, b, y: _psi_diff(a, b), lambda a, b, y: _psi_diff(b, a),
       domains=(_POS, _POS), taylor=integral, dsl=True)
binary("beta", "sp.beta({0}, {1})", None, lambda a, b, y: y * _psi_diff(a, b), lambda a, b, y: y * _psi_diff(b, a),
       domains=(_POS, _POS), dsl=True,
       taylor=composite(lambda a, b, y: exp(apply("betaln", a, b)) * gammasgn(a) * gammasgn(b) * gammasgn(a + b)))


def _multigammaln(a, d, np=np, sp=sp):
    """log of the multivariate gamma function: d(d-1)/4 log π + Σ_{j<d} gammaln(a - j/2); nan
    where scipy's refuses (a <= (d-1)/2) instead of an exception. ``np``, ``sp``: numpy and
    scipy.special, or jax's for tier 2."""
    a = np.asarray(a, dtype=np.float64)
    out = d * (d - 1) / 4 * math.log(math.pi) + sum(sp.gammaln(a - j / 2) for j in range(d))
    return np.where(a > (d - 1) / 2, out, np.nan)


def _multigammaln_call(lib, a, d):
    if type(d) is not int or d < 1:
        raise ProgramError("multigammaln(a, d) takes a literal integer dimension d >= 1", code="bad_arguments")
    return apply("multigammaln", lib.as_float(a), d=d)


def _multidigamma(a, d):
    out = digamma(a)
    for j in range(1, d):
        out = out + digamma(a - j / 2)
    return out


register(Primitive(
    "multigammaln", lambda a, d: (a[0], FLOAT), impl=_multigammaln,
    xla=lambda jx, a, d: _multigammaln(a, d, jx.np, jx.sp),
    jvp=lambda p, t, out, d: None if t[0] is None else t[0] * _multidigamma(p[0], d),
    vjp=lambda p, out, ct, d: [scale(ct, _multidigamma(p[0], d))],
    taylor=integral, broadcasting=True, sparsity=("elementwise", "all"), params={"d": SIZE},
    sample=[dict(c, params={"d": d}) for d, c in zip((1, 2, 3), elementwise_cases(((1.3, 4.0),)))],
    dsl={"multigammaln": _multigammaln_call},
    doc="log of the multivariate gamma function of dimension d (a literal); nan where a <= (d-1)/2",
))


# ---------------------------------------------------------------- incomplete gamma


def no_derivative(prim: str, argument: str):
    """The partial of ``prim`` in ``argument``: none exists in closed form, so a request for it
    is refused, naming both (never a zero)."""

    def refuse(*_):
        raise NoDerivativeRule(f"{prim}: no derivative in its argument {argument} (it has none in closed form); "
                               f"pass {argument} as a constant", primitive=prim, argument=argument)

    return refuse


def in_last(name, dx, constants):
    """The jvp and vjp of ``name(*c, x)``: differentiable in its last argument ``x`` (``dx(*c, x, y)``),
    refused in each argument named in ``constants`` (orders, shape parameters) whenever it varies."""
    refusals = [no_derivative(name, argument) for argument in constants]

    def jvp(p, t, out):
        for refuse, tangent in zip(refusals, t):
            if tangent is not None:
                refuse()
        return None if t[-1] is None else t[-1] * dx(*p, out)

    def vjp(p, out, ct):
        for i, refuse in enumerate(refusals):
            if p.varies[i]:
                refuse()
        return [None] * len(refusals) + [scale(ct, dx(*p, out))]

    return jvp, vjp


def in_second(name, template, dx, first, *, domains, taylor=integral, xla=None, doc=""):
    """``name(c, x)``: differentiable in ``x`` (``dx(c, x, y)``), refused in its first argument
    ``first`` (an order or a shape parameter) whenever that argument varies."""
    jvp, vjp = in_last(name, dx, (first,))
    code = {"impl": template} if callable(template) else {"template": template}  # a function, or numpy code
    register(Primitive(name, lambda c, x: (broadcast_shapes(c[0], x[0]), FLOAT), **code, xla=xla,
                       jvp=jvp, vjp=vjp, taylor=taylor, broadcasting=True, sparsity=("elementwise", "all"),
                       sample=_order_cases(*domains), dsl={name: floats(name, 2)}, doc=doc))


def _order_cases(first, x):
    """Cases of ``f(c, x)`` with the constant ``c`` an integer order (``first`` an int) or a
    float constant on intervals, and ``x`` on intervals, in each broadcasting pattern."""
    def c(shape):
        return ("index", shape, first) if isinstance(first, int) else ("fixed", shape, first)

    return [{"args": [c(a), ("real", b, x)], "params": {}}
            for a, b in [((), ()), ((3,), (3,)), ((), (2, 3)), ((2, 1), (1, 3)), ((3,), ())]]


def _gammainc_dx(a, x, y):
    return exp((a - 1.0) * log(x) - x - gammaln(a))


in_second("gammainc", "sp.gammainc({0}, {1})", _gammainc_dx, "a", domains=(((0.5, 3.0),), _POS),
          doc="the regularized lower incomplete gamma function P(a, x)")
in_second("gammaincc", "sp.gammaincc({0}, {1})", lambda a, x, y: -_gammainc_dx(a, x, y), "a",
          domains=(((0.5, 3.0),), _POS), doc="the regularized upper incomplete gamma function Q(a, x) = 1 - P(a, x)")


def _betainc_dx(a, b, x, y):
    return exp((a - 1.0) * log(x) + (b - 1.0) * apply("log1p", -x) - apply("betaln", a, b))


_betainc_jvp, _betainc_vjp = in_last("betainc", _betainc_dx, ("a", "b"))

register(Primitive(
    "betainc", lambda a, b, x: (broadcast_shapes(a[0], b[0], x[0]), FLOAT), template="sp.betainc({0}, {1}, {2})",
    jvp=_betainc_jvp, vjp=_betainc_vjp, taylor=integral, broadcasting=True, sparsity=("elementwise", "all"),
    sample=[{"args": [("fixed", sa, ((0.6, 3.0),)), ("fixed", sb, ((0.6, 3.0),)), ("real", sx, ((0.1, 0.9),))],
             "params": {}} for sa, sb, sx in [((), (), ()), ((3,), (3,), (3,)), ((), (2, 1), (1, 3))]],
    dsl={"betainc": floats("betainc", 3)},
    doc="the regularized incomplete beta function I_x(a, b); a and b are constants (no derivative)",
))


# ---------------------------------------------------------------- error function family


def expsq(c, b):
    """Taylor rule of y with y' = c e^{b y²} x' (erfinv, erfcinv, ndtri), one recurrence."""
    return lambda p, s, out, jet: apply("taylor_expsq", s[0], out, c=c, b=b)


def _taylor_expsq(xs, y0, c, b):
    """y' = c w x' with w = e^{z}, z = b y², so w' = z' w:
    y_k = (c/k) Σ_{j=1..k} j x_j w_{k-j};  z_k = b Σ_{i=0..k} y_i y_{k-i};  w_k = (1/k) Σ_{j=1..k} j z_j w_{k-j}."""
    shape = np.broadcast_shapes(np.shape(y0), xs.shape[1:])
    K = len(xs)
    x = np.broadcast_to(xs, (K,) + shape)
    y, z, w = np.empty((K + 1,) + shape), np.empty((K + 1,) + shape), np.empty((K + 1,) + shape)
    y[0] = y0
    z[0] = b * y[0] * y[0]
    w[0] = np.exp(z[0])
    for k in range(1, K + 1):
        j = np.arange(1.0, k + 1).reshape((-1,) + (1,) * len(shape))
        y[k] = c / k * np.sum(j * x[:k] * w[k - 1::-1], axis=0)
        z[k] = b * np.sum(y[: k + 1] * y[k::-1], axis=0)
        w[k] = np.sum(j * z[1:k + 1] * w[k - 1::-1], axis=0) / k
    return y[1:]


def _taylor_expsq_xla(jx, xs, y0, c, b):
    np_ = jx.np
    shape = np_.broadcast_shapes(np_.shape(y0), xs.shape[1:])
    x = np_.broadcast_to(xs, (xs.shape[0],) + shape)
    y = [np_.broadcast_to(y0, shape)]
    z = [b * y[0] * y[0]]
    w = [np_.exp(z[0])]
    for k in range(1, xs.shape[0] + 1):
        y.append(c / k * sum(j * x[j - 1] * w[k - j] for j in range(1, k + 1)))
        z.append(b * sum(y[i] * y[k - i] for i in range(k + 1)))
        w.append(sum(j * z[j] * w[k - j] for j in range(1, k + 1)) / k)
    return np_.stack(y[1:])


register(Primitive("taylor_expsq", lambda xs, y0, c, b: (broadcast_shapes(xs[0], y0[0]), FLOAT), impl=_taylor_expsq,
                   xla=_taylor_expsq_xla,
                   params={"c": NUMBER, "b": NUMBER}, doc="(x series, y0; c, b) -> y series for y' = c e^{b y²} x'"))

unary("erfinv", "sp.erfinv({0})", lambda x, y: SQRT_PI_2 * exp(square(y)), domain=_UNIT,
      taylor=expsq(SQRT_PI_2, 1.0))
unary("erfcinv", "sp.erfcinv({0})", lambda x, y: -SQRT_PI_2 * exp(square(y)), domain=((0.2, 1.8),),
      taylor=expsq(-SQRT_PI_2, 1.0))
unary("ndtri", "sp.ndtri({0})", lambda x, y: SQRT_2PI * exp(0.5 * square(y)), domain=_PROB,
      taylor=expsq(SQRT_2PI, 0.5), doc="the inverse of ndtr")
unary("ndtr", "sp.ndtr({0})", lambda x, y: exp(-0.5 * square(x)) / SQRT_2PI, taylor=integral,
      doc="the standard normal distribution function")
unary("log_ndtr", "sp.log_ndtr({0})", lambda x, y: exp(-0.5 * square(x) - y) / SQRT_2PI,
      taylor=composite(lambda x, y: log(ndtr(x))), domain=((-3.0, 3.0),),
      doc="log of ndtr, accurate far in the left tail (its derivative too: φ(x)/Φ(x) as exp(-x²/2 - y))")


# ---------------------------------------------------------------- logistic and entropy

unary("logit", "sp.logit({0})", lambda x, y: 1.0 / (x * (1.0 - x)), domain=_PROB, taylor=integral)
unary("log_expit", "sp.log_expit({0})", lambda x, y: apply("sigmoid", -x),
      taylor=composite(lambda x, y: -softplus(-x)), doc="log(expit(x)) without overflow or lost digits")
unary("entr", "sp.entr({0})", lambda x, y: -(log(x) + 1.0), domain=_POS, taylor=composite(lambda x, y: -(x * log(x))),
      doc="-x log x for x > 0, 0 at 0, -inf below")
binary("xlogy", "sp.xlogy({0}, {1})", None, lambda a, b, y: log(b), lambda a, b, y: a / b,
       domains=(((-2.0, 2.0),), _POS), taylor=composite(lambda a, b, y: a * log(b)), dsl=True)
binary("xlog1py", "sp.xlog1py({0}, {1})", None, lambda a, b, y: apply("log1p", b), lambda a, b, y: a / (1.0 + b),
       domains=(((-2.0, 2.0),), ((-0.7, 2.0),)), taylor=composite(lambda a, b, y: a * apply("log1p", b)), dsl=True)
binary("rel_entr", "sp.rel_entr({0}, {1})", None, lambda a, b, y: log(a / b) + 1.0, lambda a, b, y: -(a / b),
       domains=(_POS, _POS), taylor=composite(lambda a, b, y: a * (log(a) - log(b))), dsl=True)


# ---------------------------------------------------------------- Bessel functions

unary("i0", "sp.i0({0})", lambda x, y: i1(x), taylor=bessel("iv", 1, 0.0), doc="modified Bessel function of order 0")
unary("i1", "sp.i1({0})", lambda x, y: 0.5 * (i0(x) + iv(2.0, x)), taylor=bessel("iv", 1, 1.0))
unary("i0e", "sp.i0e({0})", lambda x, y: apply("i1e", x) - sign(x) * y, domain=((-3.0, -0.1), (0.1, 3.0)),
      taylor=composite(lambda x, y: exp(-apply("abs", x)) * i0(x)), doc="exp(-|x|) i0(x)")
unary("i1e", "sp.i1e({0})", lambda x, y: 0.5 * (apply("i0e", x) + ive(2.0, x)) - sign(x) * y,
      domain=((-3.0, -0.1), (0.1, 3.0)), taylor=composite(lambda x, y: exp(-apply("abs", x)) * i1(x)),
      doc="exp(-|x|) i1(x)")
unary("j0", "sp.j0({0})", lambda x, y: -j1(x), taylor=bessel("jn", -1, 0.0),
      doc="Bessel function of the first kind, order 0")
unary("j1", "sp.j1({0})", lambda x, y: 0.5 * (j0(x) - jn(2.0, x)), taylor=bessel("jn", -1, 1.0))
unary("y0", "sp.y0({0})", lambda x, y: -y1(x), domain=_BESSEL_Y, taylor=bessel("yn", -1, 0.0),
      doc="Bessel function of the second kind, order 0")
unary("y1", "sp.y1({0})", lambda x, y: 0.5 * (y0(x) - yn(2.0, x)), domain=_BESSEL_Y, taylor=bessel("yn", -1, 1.0))
def _iv(v, x):
    """scipy's iv, which answers nan for a subnormal x (where iv is its value at 1e-300 to double
    precision for v >= 0), mended there."""
    out = sp.iv(v, x)
    tiny = np.isnan(out) & (np.abs(x) < 1e-300)
    return np.where(tiny, sp.iv(v, np.copysign(1e-300, x)), out) if np.any(tiny) else out


in_second("iv", _iv, lambda v, x, y: 0.5 * (iv(v - 1.0, x) + iv(v + 1.0, x)), "v", domains=(3, _POS),
          taylor=bessel("iv", 1), xla=lambda jx, v, x: jx.host(_iv, v, x),
          doc="modified Bessel function of the first kind of real order v (a constant); tier 2 calls scipy's "
              "on the host (jax has no Bessel function of real order)")
in_second("ive", "sp.ive({0}, {1})", lambda v, x, y: 0.5 * (ive(v - 1.0, x) + ive(v + 1.0, x)) - sign(x) * y, "v",
          domains=(3, _POS), taylor=composite(lambda v, x, y: exp(-apply("abs", x)) * iv(v, x)),
          doc="exp(-|x|) iv(v, x)")
in_second("jn", "sp.jv({0}, {1})", lambda n, x, y: 0.5 * (jn(n - 1.0, x) - jn(n + 1.0, x)), "n",
          domains=(3, ((-3.0, 3.0),)), taylor=bessel("jn", -1),
          doc="Bessel function of the first kind of order n (a constant)")
in_second("yn", "sp.yn({0}, {1})", lambda n, x, y: 0.5 * (yn(n - 1.0, x) - yn(n + 1.0, x)), "n",
          domains=(3, _BESSEL_Y), taylor=bessel("yn", -1),
          doc="Bessel function of the second kind of integer order n (a constant)")
