"""Hessian-vector product streams: many directions at one point (gRPC ``HessianVectorProducts``).

The function is resolved, compiled and run to its value and gradient once
(``Service.hvp_stream``); each direction then costs one run of the HVP tape
(``engines.forward_over_reverse.HvpSession``), after the same check of its names and shapes
as a unary ``hvp``'s ``v`` (``core.prepare.directions``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from derivd.core.prepare import directions
from derivd.engines.forward_over_reverse import HvpSession


@dataclass
class HvpStream:
    session: HvpSession
    wrt: list[str]
    values: dict[str, np.ndarray]
    compile_seconds: float = 0.0
    compute_seconds: float = 0.0
    engine: str = "forward-over-reverse"
    tier: int | None = None  # the compile tier that answered the start (None: tier 2 off), as a response's tier

    @property
    def value(self) -> float:
        return self.session.value

    @property
    def gradient(self) -> dict[str, np.ndarray]:
        return self.session.gradient

    def hvp(self, v: dict[str, np.ndarray], field_name: str = "v") -> dict[str, np.ndarray]:
        return self.session.hvp(directions(v, self.wrt, self.values, field_name))
