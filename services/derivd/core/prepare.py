"""A request checked once, before any engine runs: ``Prepared``.

``check_request`` refuses what needs no function (an unknown mode, a missing or
too high Taylor order) before anything is lowered. Once the function is known
(a compiled program, or a black box's sizes), ``prepare`` checks the rest in
one place: the inputs and their limits, ``wrt``, a scalar output where the
endpoint needs one, and the data the endpoint's row says it reads — directions
``v`` (shaped like the inputs) or ``vs``, the cotangent ``u`` (as long as the
output), ``order``. The endpoint functions then only compute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from derivd.dsl import InputSpec
from derivd.dsl.indexing import mask_constants
from derivd.dsl.parse import parse
from derivd.engines import finite_answers as fd
from derivd.engines.common import Wrt, require_dense, require_scalar
from derivd.errors import DerivdError, LimitExceeded, ShapeError, UnknownName, ValidationFailed
from derivd.ir.cost import describe
from derivd.ops.registry import BOOL, FLOAT, INT

MODES = ("auto", "forward", "reverse", "taylor", "finite")


@dataclass
class Prepared:
    """What an endpoint function reads: checked, shaped, and nothing left to validate.

    ``fn`` is the compiled program, or None for a black box, whose batched evaluation is
    ``box_points`` and whose Jacobian pattern the caller may give (``pattern``). ``v`` is the one
    direction per input (jvp, taylor, hvp with ``v``); ``directions`` the flat ``(k, n)``
    directions, from ``v`` or (``many``) the caller's ``vs`` as ``block``; ``u`` the flat cotangent."""

    endpoint: str
    mode: str
    settings: object
    wrt: list[str]
    values: dict[str, np.ndarray]
    out_shape: tuple[int, ...]
    fn: object = None
    fd: dict | None = None
    verify: bool = False
    sparse: bool = False
    v: dict[str, np.ndarray] | None = None
    block: np.ndarray | None = None
    u: np.ndarray | None = None
    order: int | None = None
    box_points: Callable | None = None
    pattern: dict | None = None

    @cached_property
    def slots(self) -> Wrt:
        """The differentiated inputs' places in a flat vector."""
        if self.fn is not None:
            return self.fn.wrt(self.wrt)
        return Wrt.of_shapes(self.wrt, [np.shape(self.values[n]) for n in self.wrt])

    @property
    def m(self) -> int:
        return math.prod(self.out_shape)

    @property
    def many(self) -> bool:
        """Whether the caller sent several directions (``vs``): the answer lists one per direction."""
        return self.block is not None

    @cached_property
    def directions(self) -> np.ndarray:
        """The flat ``(k, n)`` directions: ``vs``, or ``v`` as one row."""
        if self.block is not None:
            return self.block
        return self.slots.join([self.v[n] for n in self.wrt], ())[None, :]

    @cached_property
    def points(self) -> Callable[[np.ndarray], np.ndarray]:
        """The batched ``F(X)`` finite differences evaluate: over flat points of the ``wrt`` inputs."""
        if self.fn is None:
            return self.box_points
        return fd.program_points(self.fn, self.values, self.slots)

    def jacobian_pattern(self) -> tuple | None:
        """(rows, cols, colours) finite differences may colour a Jacobian by: the program's detected
        pattern when colouring saves evaluations, a black box's as its caller gave it, else None."""
        if self.fn is not None:
            return fd.program_pattern(self.fn, self.values, self.slots, self.settings)
        return fd.caller_pattern(self.pattern, (self.m, self.slots.n))


def check_request(row, req, settings) -> None:
    """What is refused before the function is even resolved or lowered."""
    check_mode(req.mode)
    if "order" in row.reads:
        taylor_order(req.order, settings)
    if req.mode == "finite" and row.differentiates:
        require_finite(row)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValidationFailed(f"unknown mode {mode!r}; one of {', '.join(MODES)}", field="mode")


def require_finite(row) -> None:
    """Refuse an endpoint finite differences cannot answer (Taylor coefficients, tensors)."""
    if row.finite is None:
        raise DerivdError(f"{row.name} is not available by finite differences", code="unsupported_mode",
                          status=422, mode="finite")


def prepare(row, req, settings, *, wrt: list[str], values: dict, out_shape, fn=None,
            box_points=None, checked: bool = False) -> Prepared:
    """``req`` for ``row`` once its function's shapes are known: every check the endpoint needs.
    ``checked``: the checks that depend only on the kind of request (``core.service.Plan``: endpoint,
    program, shapes, mode, sparse) passed for an earlier request of it; those of its point still run."""
    if not checked:
        if fn is not None:
            require_affordable(fn, settings)
        if row.scalar:
            require_scalar(out_shape, row.name)
    p = Prepared(row.name, req.mode, settings, wrt, values, tuple(out_shape), fn, req.fd, req.verify, req.sparse,
                 box_points=box_points, pattern=req.pattern)
    if not checked and row.name in DENSE_ANSWERS and not (req.sparse and req.mode in COLOURED):
        dense_answer(p)
    reads = row.reads
    if "v" in reads or ("v|vs" in reads and req.vs is None):
        p.v = directions(req.v, wrt, values, "v")
    elif "v|vs" in reads:
        if req.v is not None:
            raise ValidationFailed("give `v` or `vs`, not both", field="vs")
        slots = p.slots
        p.block = np.array([slots.join([d[n] for n in wrt], ()) for d in
                            (directions(d, wrt, values, f"vs[{i}]") for i, d in enumerate(req.vs))]
                           ).reshape(len(req.vs), slots.n)
    if "u" in reads:
        p.u = cotangent(req.u, p.m)
    if "order" in reads:
        p.order = req.order  # checked by check_request
    return p


# The endpoints whose answer is a matrix, built dense unless the caller asks ``sparse`` in a mode that
# colours a pattern (Taylor mode and finite differences build it whole, whatever they answer).
DENSE_ANSWERS = ("jacobian", "hessian")
COLOURED = ("auto", "forward", "reverse")


def dense_answer(p: Prepared) -> None:
    """Refuse a dense Jacobian or Hessian over ``max_jacobian_entries``, whatever the mode or the engine
    (an ``auto`` Hessian found sparse is still written out whole), before any pass or detection."""
    n = sum(math.prod(np.shape(p.values[w])) for w in p.wrt)  # no slots: the warm path needs none
    rows = p.m if p.endpoint == "jacobian" else n
    advice = fd.FD_WHOLE if p.mode == "finite" else "`sparse: true` answers with its nonzeros where the pattern allows"
    require_dense(rows, n, f"dense {p.endpoint.capitalize()}", p.settings, advice)


def require_affordable(fn, settings) -> None:
    """Refuse a program whose one evaluation costs more than ``max_program_flops`` (``ir.cost``'s
    floor from its shapes: a chain of large matrix products in a long loop, say): it could not finish
    within its deadline, and a single numpy call in it could not be stopped there."""
    flops = fn.flops
    limit = settings.max_program_flops
    if flops > limit:
        raise LimitExceeded(f"the program needs at least {describe(flops)} floating-point operations per "
                            f"evaluation, over the limit max_program_flops={describe(int(limit))}",
                            limit="max_program_flops", value=flops, max=limit)


def taylor_order(order, settings) -> int:
    if order is None or order < 0:
        raise ValidationFailed("this endpoint needs `order`, a non-negative integer", field="order")
    if order > settings.max_taylor_order:
        raise LimitExceeded(f"Taylor order {order} is over the limit max_taylor_order="
                            f"{settings.max_taylor_order}", limit="max_taylor_order", value=order,
                            max=settings.max_taylor_order)
    return order


def input_specs(at: dict, constants: dict, settings, source: str | None = None) -> dict[str, InputSpec]:
    """The program's signature: shape and dtype of each input, within ``max_intermediate_bytes``; with
    the ``source``, the values of the boolean constants it indexes with (static masks, dsl/indexing.py)."""
    both = set(at) & set(constants)
    if both:
        name = sorted(both)[0]
        raise ValidationFailed(f"input {name!r} is given in both `at` and `constants`", name=name)
    specs = {}
    for name, arr in at.items():
        specs[name] = InputSpec(tuple(np.shape(arr)), FLOAT, "at")
    booleans = {name for name, arr in constants.items() if arr.dtype.kind == "b"}
    masks = mask_constants(parse(source, settings), booleans) if booleans and source is not None else set()
    for name, arr in constants.items():
        kind = arr.dtype.kind
        dtype = BOOL if kind == "b" else INT if kind in "iu" else FLOAT
        specs[name] = InputSpec(tuple(arr.shape), dtype, "const", arr if name in masks else None)
    for name, spec in specs.items():
        nbytes = 8 * math.prod(spec.shape)
        if nbytes > settings.max_intermediate_bytes:
            raise LimitExceeded(f"input {name!r} of shape {list(spec.shape)} is over the limit "
                                f"max_intermediate_bytes={settings.max_intermediate_bytes}",
                                limit="max_intermediate_bytes", value=nbytes,
                                max=settings.max_intermediate_bytes, name=name)
    return specs


def wrt_names(wrt, at: dict, constants: dict) -> list[str]:
    """The differentiated inputs: ``wrt`` checked against ``at`` and ``constants``, else all of ``at``."""
    if wrt is None:
        return list(at)
    for name in wrt:
        if name in constants:
            raise ValidationFailed(f"wrt names {name!r}, which is a constant: constants are not differentiated",
                                   name=name, field="wrt")
        if name not in at:
            raise UnknownName(f"wrt names {name!r}, which is not in `at`", name=name, field="wrt")
    if len(set(wrt)) != len(wrt):
        raise ValidationFailed("wrt repeats a name", field="wrt")
    return list(wrt)


def directions(v, wrt: list[str], values: dict, field_name: str) -> dict[str, np.ndarray]:
    """One direction per ``wrt`` input, each shaped like its input (a flat one of the right size is
    reshaped); a missing, misshapen or extra name is refused, naming ``field_name``."""
    if v is None:
        raise ValidationFailed(f"this endpoint needs `{field_name}`: a direction per wrt input", field=field_name)
    out = {}
    for name in wrt:
        if name not in v:
            raise ValidationFailed(f"`{field_name}` has no direction for input {name!r}", name=name,
                                   field=field_name)
        d = np.asarray(v[name], dtype=np.float64)
        shape = np.shape(values[name])
        if d.shape != shape:
            if d.size == int(np.prod(shape)):
                d = d.reshape(shape)
            else:
                raise ShapeError(f"`{field_name}[{name!r}]` has shape {list(d.shape)}; input {name!r} has "
                                 f"shape {list(shape)}", shapes=[list(d.shape), list(shape)], name=name)
        out[name] = d
    extra = set(v) - set(wrt)
    if extra:
        raise ValidationFailed(f"`{field_name}` names {sorted(extra)[0]!r}, which is not differentiated",
                               field=field_name)
    return out


def cotangent(u, m: int) -> np.ndarray:
    """``u`` flat, as long as the output (``m`` elements)."""
    if u is None:
        raise ValidationFailed("vjp needs `u`, a flat cotangent as long as the output", field="u")
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if u.size != m:
        raise ShapeError(f"u has {u.size} elements; the output has {m}", shapes=[[u.size], [m]])
    return u
