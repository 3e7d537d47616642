"""The primitive registry. Importing this package registers every primitive;
adding one means adding a record to one of the family modules below."""

from derivd.ops import control, elementwise, linalg, reductions, shape  # noqa: F401  (registration)
from derivd.ops.registry import REGISTRY, Primitive, apply, get  # noqa: F401
