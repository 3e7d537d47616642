"""The endpoints answered by univariate Taylor series (``engines.taylor``).

``taylor`` gives the coefficients c_0..c_K of f(x + t v) and the directional
derivatives k! c_k; ``derivatives`` every derivative tensor up to ``order``;
``hvp`` and ``hessian`` in mode ``taylor`` are their second-order cases. Each
takes a ``Prepared`` request and returns the response and its compile seconds.
"""

from __future__ import annotations

import math

import numpy as np

from derivd.engines import taylor as engine


def taylor(p):
    order = p.order
    y, c, seconds = engine.coefficients(p.fn, p.values, p.wrt, p.v, order, p.settings)
    factorials = np.array([float(math.factorial(k)) for k in range(order + 1)])
    return {"value": y.reshape(-1), "coefficients": c, "derivatives": c * factorials[:, None],
            "engine": "taylor"}, seconds


def derivatives(p):
    y, tensors, count, seconds = engine.tensors(p.fn, p.values, p.wrt, p.order, p.settings)
    return {"value": y.reshape(-1), "tensors": tensors, "directions": count, "engine": "taylor"}, seconds


def hvp(p):
    y, hv, seconds = engine.hvps(p.fn, p.values, p.wrt, p.directions, p.settings)
    out = {"value": float(y.reshape(-1)[0]), "engine": "taylor"}
    split = [dict(zip(p.wrt, p.slots.split(h))) for h in hv]
    if p.many:
        out["hvps"] = split
    else:
        out["hvp"] = split[0]
    return out, seconds


def hessian(p):
    y, g, h, seconds = engine.hessian(p.fn, p.values, p.wrt, p.settings)
    return {"value": float(y.reshape(-1)[0]), "gradient": dict(zip(p.wrt, p.slots.split(g))),
            "hessian": h, "engine": "taylor"}, seconds
