"""The derivative requests' schemas: one pydantic model per endpoint (``core.endpoints`` names it).

Structure is validated by pydantic; arrays are ``Any`` and decoded by numpy
in the skins (element-by-element validation of a large array would cost more
than the derivative). REST validates a body with these models and the OpenAPI
document publishes them; gRPC checks its ``fd`` options with ``FDOptions``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Array = Any  # number | nested list | {"dtype", "shape", "data"}


class FDOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["central", "forward", "backward"] = "central"
    order: int = Field(2, ge=1, le=16)
    step: float | None = Field(None, gt=0)
    extrapolation: bool = False


class DerivRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: dict[str, Any] = Field(description='{"dsl": program} | {"id": stored id} | {"blackbox": name}')
    at: dict[str, Array] = Field(default_factory=dict, description="the point: differentiable inputs")
    constants: dict[str, Array] = Field(default_factory=dict, description="inputs not differentiated")
    wrt: list[str] | None = None
    mode: Literal["auto", "forward", "reverse", "taylor", "finite"] = "auto"
    fd: FDOptions | None = None
    verify: bool = False
    encoding: Literal["list", "base64"] = "list"


class EvaluateRequest(DerivRequest):
    pass


class GradientRequest(DerivRequest):
    pass


class SparsityPattern(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: list[int]
    cols: list[int]


class JacobianRequest(DerivRequest):
    sparse: bool = False
    pattern: SparsityPattern | None = Field(
        None, description="extension: the Jacobian's nonzero pattern, known to the caller (black boxes); "
                          "finite differences then perturb structurally orthogonal columns together")


class JvpRequest(DerivRequest):
    v: dict[str, Array]


class VjpRequest(DerivRequest):
    u: Array


class HvpRequest(DerivRequest):
    v: dict[str, Array] | None = None
    vs: list[dict[str, Array]] | None = Field(None, description="extension: many directions in one pass")


class HessianRequest(DerivRequest):
    sparse: bool = Field(False, description="extension: COO on the detected pattern, by star colouring")


class TaylorRequest(DerivRequest):
    """c_0..c_K of f(x + t v), c_k = (1/k!) d^k/dt^k f(x + t v) at t = 0 (``coefficients``, K+1 flat
    lists), and the directional derivatives k! c_k (``derivatives``, extension)."""

    v: dict[str, Array]
    order: int = Field(ge=0, description="K, at most the server's max_taylor_order (64 by default)")


class DerivativesRequest(DerivRequest):
    """Extension: every derivative tensor of order 1..``order`` (at most 4) at once, interpolated
    from univariate Taylor series along binom(n+order-1, order) directions (Griewank, Utke &
    Walther 2000). Response: ``value``, ``tensors`` (order e: shape [n]*e for an output of one
    element, else [m] + [n]*e, n running over the flattened wrt inputs), ``directions`` (how many
    series were propagated), ``engine: "taylor"``. Refused with 413 when the directions or the
    tensors' entries exceed max_taylor_directions or max_tensor_entries."""

    order: int = Field(ge=1, le=4, description="the highest derivative order d (1 to 4)")
