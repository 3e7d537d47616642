"""What a black-box registration holds, and what of it clients may see back."""

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import get_settings

# Names travel in URL paths (DELETE /v1/blackboxes/{name}) and in error
# messages, so they are kept to a plain identifier.
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
# The caller owns these: Host and the body framing must match the checked
# connection and the JSON it sends (letting a registration override them would
# reopen request smuggling and virtual-host games the SSRF check closes), and
# answers are read uncompressed, so they are counted against the size cap as
# they arrive.
_RESERVED_HEADERS = frozenset({
    "host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade",
    "accept", "accept-encoding", "user-agent",
})


class BlackBoxSpec(BaseModel):
    """One registered black box.

    ``headers`` (typically credentials for the black box) are stored and sent
    on every call but never shown: they are excluded from :meth:`public` and
    from ``repr`` so they cannot leak through responses or logs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(min_length=1, max_length=2048)
    input_size: int = Field(ge=1, le=1_000_000)
    output_size: int = Field(ge=1, le=1_000_000)
    batch: bool = False
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    max_concurrency: int = Field(
        default_factory=lambda: get_settings().blackbox_default_max_concurrency, ge=1, le=1024
    )
    headers: dict[str, str] = Field(default_factory=dict, max_length=32, repr=False)

    @field_validator("headers")
    @classmethod
    def _headers_are_safe(cls, headers: dict[str, str]) -> dict[str, str]:
        for key, value in headers.items():
            if not _HEADER_NAME.match(key):
                raise ValueError(f"header name {key!r} is not a valid HTTP token")
            if key.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {key!r} is set by derivd and cannot be registered")
            if len(value) > 8192 or any(c in value for c in "\r\n\0"):
                raise ValueError(f"header {key!r} has a value that is too long or holds a line break")
        return headers

    def public(self) -> dict:
        """The registration as clients see it: everything but the headers."""
        return self.model_dump(mode="json", exclude={"headers"})
