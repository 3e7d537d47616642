"""The primitive registry. Importing this package registers every primitive;
adding one means adding one ``register`` statement to one of the family modules
below (ops/registry.py says what the statement holds)."""

from derivd.ops import (  # noqa: F401  (registration)
    contractions, control, decomposition_series, elementwise, linalg, matrix_equations, reductions, shape, special,
    statistics, taylor_kernels,
)
from derivd.ops.registry import REGISTRY, Primitive, apply, get  # noqa: F401
