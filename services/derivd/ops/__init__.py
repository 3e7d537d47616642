"""The primitive registry. Importing this package registers every primitive;
adding one means adding one ``register`` statement to one of the family modules
below (ops/registry.py says what the statement holds)."""

from derivd.ops import control, elementwise, linalg, reductions, shape, special, taylor_kernels  # noqa: F401  (registration)
from derivd.ops.registry import REGISTRY, Primitive, apply, get  # noqa: F401
