"""Requests of a registered black box: evaluated over HTTP, differentiated by finite differences only.

A black box has one input ``x`` (``input_size`` numbers) and ``output_size``
outputs; its batched ``F`` is the registry's caller (``blackbox.BlackBoxCaller``),
which sends many points per HTTP request. What a program request may carry
and a black box cannot (constants, other inputs, an AD mode, ``verify``) is
refused here, before any call goes out.
"""

from __future__ import annotations

import numpy as np

from derivd.blackbox import BlackBoxCaller
from derivd.core.prepare import prepare, require_finite
from derivd.errors import ShapeError, ValidationFailed


def answer(row, req, registry, settings) -> dict:
    """``row``'s answer for ``req``, whose function is ``{"blackbox": name}``."""
    spec = registry.get(str(req.function["blackbox"]))
    if req.constants:
        raise ValidationFailed("a black box takes no constants", field="constants")
    if set(req.at) != {"x"}:
        raise ValidationFailed("a black-box request names its one input `x` in `at`", field="at")
    if req.wrt not in (None, ["x"]):
        raise ValidationFailed("a black box is differentiated with respect to `x` only", field="wrt")
    if req.mode not in ("auto", "finite"):
        raise ValidationFailed(f"a black box can only be differentiated by finite differences; mode "
                               f"{req.mode!r} needs a program (use auto or finite)", field="mode")
    if req.verify:
        raise ValidationFailed("verify compares automatic differentiation with finite differences; "
                               "a black box has only the latter", field="verify")
    x = np.asarray(req.at["x"], dtype=np.float64)
    if x.size != spec.input_size:
        raise ShapeError(f"black box {spec.name!r} takes x of {spec.input_size} numbers; got shape "
                         f"{list(x.shape)}", shapes=[list(x.shape), [spec.input_size]])
    x = x.reshape(-1)
    caller = BlackBoxCaller(spec, settings, settings.blackbox_max_batch_points)

    def evaluate(X):
        return caller.evaluate(np.atleast_2d(X), req.deadline)

    if not row.differentiates:
        response = {"value": evaluate(x)[0], "engine": "blackbox"}
    else:
        require_finite(row)
        p = prepare(row, req, settings, wrt=["x"], values={"x": x}, out_shape=(spec.output_size,),
                    box_points=evaluate)
        response = row.finite(p)
    response["blackbox"] = {"name": spec.name, "evaluations": caller.evaluations}
    return response
