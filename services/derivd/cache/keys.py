"""Tape-cache keys: a named list of components, rendered readably.

A compiled tape is determined by the program text, the signature of its
inputs (name, role, dtype, shape), the transform chain applied to it and the
derivd version (which fixes the IR, the rules and the serial form). Constant
*values* are not a component: constants are inputs bound at run time, so they
never change the graph; their shapes and dtypes are in the signature. The one
exception is a boolean constant the program indexes with (``x[mask]``): its
True entries fix the graph's shapes, so its role reads ``mask=`` and a hash of
its values. A key
renders as, for example::

    derivd:tape:v0.1.0:prog=5f1c…(32 hex):sig=x:f8[3]|idx:i8[5]:const:xf=vjp([x];-)

``xf=lower`` is the lowered program itself; ``eval()`` its evaluation tape;
``jvp([x,y];[8])`` a forward tape over x and y with a batch of 8 tangents.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from derivd import __version__

# Above this, a signature renders as its hash: keys stay short enough to read in logs.
MAX_SIGNATURE_CHARS = 240


@dataclass(frozen=True)
class TapeKey:
    program: str  # sha256 hex of the program text
    signature: tuple[tuple[str, str, str, tuple[int, ...]], ...]  # (name, role, dtype, shape), by name
    transform: tuple | None = None  # None: the lowered program; else an engine's tape key
    version: str = __version__
    _hash: int = field(init=False, repr=False, compare=False)  # a key is hashed at every cache look-up

    def __post_init__(self):
        object.__setattr__(self, "_hash", hash((self.program, self.signature, self.transform, self.version)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def for_program(cls, source: str, specs: dict) -> "TapeKey":
        """The key of ``source`` lowered at ``specs`` ({name: InputSpec})."""
        signature = tuple(sorted((name, _role(s), s.dtype, tuple(s.shape)) for name, s in specs.items()))
        return cls(hashlib.sha256(source.encode()).hexdigest(), signature)

    def with_transform(self, transform: tuple) -> "TapeKey":
        return replace(self, transform=transform)

    def render(self, prefix: str = "derivd") -> str:
        sig = "|".join(f"{n}:{d}[{','.join(map(str, s))}]" + ("" if r == "at" else f":{r}")
                       for n, r, d, s in self.signature)
        if len(sig) > MAX_SIGNATURE_CHARS:
            sig = "sha256-" + hashlib.sha256(sig.encode()).hexdigest()[:32]
        xf = "lower" if self.transform is None else render_transform(self.transform)
        return f"{prefix}:tape:v{self.version}:prog={self.program[:32]}:sig={sig}:xf={xf}"


def _role(spec) -> str:
    """An input's role in the key: a static mask's with a hash of its values."""
    return spec.role if spec.mask is None else "mask=" + mask_digest(spec.mask)


def mask_digest(mask: np.ndarray) -> str:
    """A boolean array's values as 16 hex digits (its shape is keyed beside it)."""
    return hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()[:16]


def render_transform(key: tuple) -> str:
    """``("jvp", ("x", "y"), (8,))`` -> ``jvp([x,y];[8])``: a name, then its arguments."""
    name, *args = key
    return f"{name}({';'.join(_part(a) for a in args)})"


def _part(v) -> str:
    if isinstance(v, tuple):
        return "[" + ",".join(_part(x) for x in v) + "]"
    return "-" if v is None else str(v)
