"""Derivative transforms, each from graph to graph: jvp, vjp (and later taylor)."""

from derivd.transforms.jvp import jvp  # noqa: F401
from derivd.transforms.vjp import vjp  # noqa: F401
