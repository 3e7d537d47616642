"""``GET /v1/functions/{id}/program``: a stored function's derivative program as a Python module.

Query: ``derivative`` (``value_and_gradient``, ``jacobian``, ``hvp`` or
``hessian``), one ``shape=NAME:DIMS`` per input that is not a stored constant
(DIMS like ``10`` or ``3x4``; empty for a scalar), and optionally ``wrt``
(comma-separated; default: those inputs, in the program's order). The
function is lowered afresh at those shapes (its own graph: the derivative's
transforms never touch the tape cache's) within the request's deadline, and
``engines.export`` writes the module; the answer is ``text/x-python``.
"""

from __future__ import annotations

import numpy as np
from fastapi import Request
from fastapi.responses import Response

from derivd.engines.export import export_module, program_sha256
from derivd.core.prepare import input_specs, wrt_names
from derivd.engines.function import CompiledFunction
from derivd.errors import ValidationFailed


def parse_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    """``["x:10", "A:3x4", "s:"]`` -> ``{"x": (10,), "A": (3, 4), "s": ()}``."""
    shapes = {}
    for item in values:
        name, sep, dims = item.partition(":")
        try:
            if not sep or not name:
                raise ValueError
            shape = tuple(int(d) for d in dims.split("x")) if dims else ()
            if any(d < 0 for d in shape):
                raise ValueError
        except ValueError:
            raise ValidationFailed(f"shape {item!r} is not NAME:DIMS (e.g. x:10, A:3x4, s: for a scalar)",
                                   field="shape") from None
        shapes[name] = shape
    return shapes


def program(service, dispatcher, fid: str, derivative: str, shape: list[str], wrt: str | None) -> str:
    stored = service.get_function(fid)
    shapes = parse_shapes(shape)
    missing = [n for n in stored.inputs if n not in stored.constants and n not in shapes]
    if missing:
        raise ValidationFailed(f"give the shape of input(s) {missing} as shape=NAME:DIMS", field="shape",
                               names=missing)
    at = {name: np.zeros(s) for name, s in shapes.items()}
    specs = input_specs(at, stored.constants, service.settings, stored.dsl)
    names = wrt_names(wrt.split(",") if wrt else None, at, stored.constants)

    def build() -> str:
        fn = CompiledFunction(stored.dsl, specs, service.settings)
        return export_module(fn, names, stored.constants, derivative, program_sha256(stored.dsl))

    text, _ = dispatcher.call(dispatcher.budget(), build)
    return text


def add_route(app, service, dispatcher) -> None:
    def get_program(fid: str, request: Request, derivative: str = "value_and_gradient", wrt: str | None = None):
        text = program(service, dispatcher, fid, derivative, request.query_params.getlist("shape"), wrt)
        return Response(text, media_type="text/x-python; charset=utf-8")

    app.add_api_route("/v1/functions/{fid}/program", get_program, methods=["GET"], tags=["functions"],
                      summary="the derivative program as a standalone numpy module")
