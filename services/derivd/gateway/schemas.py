"""The REST skin's own request schema (storing a function); the derivative requests' schemas are
``core.schemas``, one per row of the endpoint table (``REQUESTS``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from derivd.core.endpoints import ENDPOINTS
from derivd.core.schemas import Array

REQUESTS = {name: row.schema for name, row in ENDPOINTS.items()}


class FunctionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dsl: str
    constants: dict[str, Array] = Field(default_factory=dict)

