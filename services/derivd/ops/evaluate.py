"""Numpy evaluation of primitives: the expression a primitive's templates make,
shared by the compiler (whole tapes) and by constant folding (one node)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import scipy.special as sp

from derivd.ops.registry import FLOAT, Primitive


def _mul0(a, b):
    with np.errstate(invalid="ignore"):
        return np.where(a == 0, 0.0, a * b)


BASE_NAMESPACE = {"np": np, "math": math, "sp": sp, "_mul0": _mul0, "_inf": math.inf, "_nan": math.nan}


def literal(v) -> str:
    """Python source for a param value, formatted here from its type: a number, a bool, None, a
    string (its repr: a literal, never code) or a tuple of these. Anything else is refused, so
    generated source holds no text a graph carried."""
    t = type(v)
    if t is float:
        if math.isnan(v):
            return "_nan"
        if math.isinf(v):
            return "_inf" if v > 0 else "(-_inf)"
        return repr(v)
    if t in (int, bool, str) or v is None:
        return repr(v)
    if t is tuple:
        return "(" + "".join(literal(x) + ", " for x in v) + ")"
    raise TypeError(f"a param value of type {t.__name__} has no literal form")


def integer(v) -> str:
    """Python source for an int param (an index, a count), refused unless it is one."""
    if type(v) is not int:
        raise TypeError(f"expected an int, not {type(v).__name__}")
    return repr(v)


def expression(prim: Primitive, args: list[str], params: dict, avals, scalar: bool) -> str:
    """The Python expression computing ``prim`` from argument expressions."""
    if scalar and prim.scalar_template is not None:
        return prim.scalar_template.format(*args)
    if prim.template is None:
        kw = "".join(f", {k}={literal(v)}" for k, v in params.items())
        return f"_impl_{prim.name}({', '.join(args)}{kw})"
    if callable(prim.template):
        return prim.template(args, params, avals)
    return prim.template.format(*args, **{k: literal(v) for k, v in params.items()})


_FOLDERS: dict[tuple, Callable] = {}


def eval_primitive(prim: Primitive, values: list, params: dict):
    """Evaluate one primitive on concrete values (constant folding, tests)."""
    key = (prim.name, tuple(sorted(params.items())), tuple(np.shape(v) for v in values))  # templates may read shapes
    fn = _FOLDERS.get(key)
    if fn is None:
        names = [f"a{i}" for i in range(len(values))]
        avals = [(np.shape(v), FLOAT) for v in values]
        src = f"lambda {', '.join(names)}: {expression(prim, names, params, avals, scalar=False)}"
        ns = dict(BASE_NAMESPACE)
        if prim.impl is not None:
            ns[f"_impl_{prim.name}"] = prim.impl
        fn = eval(compile(src, f"<fold {prim.name}>", "eval"), ns)  # our template, not user text
        _FOLDERS[key] = fn
    return fn(*values)
