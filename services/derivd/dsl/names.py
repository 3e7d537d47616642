"""How the language's names are spelled: numpy's namespaces, methods and words for them.

numpy code reaches a function as ``np.sin``, ``numpy.linalg.det``, ``jnp.tanh``,
``scipy.special.expit`` or ``x.sum()``. None of that is a second list of
functions: a prefix resolves to a language function exactly when the real
module it stands for (``NAMESPACES``) has a public name of the same spelling,
and a method is the function of the same name with the array first exactly
when ``numpy.ndarray`` has that method. So every function a primitive
registers (or the library defines) is reachable under each namespace that
holds it, with no further declaration, and a name that numpy has but we do not
is refused by name ("numpy's `histogram` is not part of the language").

Where a namespace's function of the same name differs from ours, ``DEFAULTS``
gives the arguments that make it numpy's (``np.linalg.trace`` works on the last
two axes), and ``DIFFERENT`` refuses the ones that cannot be made equal.

``suggest`` answers an unknown name with the nearest known ones.
"""

from __future__ import annotations

import difflib

import numpy
import numpy.linalg
import scipy.linalg
import scipy.special

from derivd.errors import ProgramError

# the modules a dotted prefix stands for (jnp follows numpy's names and meanings)
NAMESPACES = {
    ("np",): numpy, ("numpy",): numpy, ("jnp",): numpy,
    ("np", "linalg"): numpy.linalg, ("numpy", "linalg"): numpy.linalg, ("jnp", "linalg"): numpy.linalg,
    ("scipy", "special"): scipy.special, ("special",): scipy.special, ("scipy", "linalg"): scipy.linalg,
}
ROOTS = {prefix[0] for prefix in NAMESPACES} | {"scipy"}
MEMBERS = {prefix: frozenset(n for n in dir(module) if not n.startswith("_")) for prefix, module in NAMESPACES.items()}
ARRAY_METHODS = frozenset(n for n in dir(numpy.ndarray) if not n.startswith("_"))

# numpy's and scipy's constants (a namespace attribute that is a value, not a function)
NAMESPACE_CONSTANTS = {"pi": numpy.pi, "e": numpy.e, "inf": numpy.inf, "newaxis": None}

# numpy's names for what the language has under another name (a primitive that registers one of
# these names itself takes it: dsl/library.py)
ALIASES = {
    "absolute": "abs", "fabs": "abs", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "arcsinh": "asinh",
    "arccosh": "acosh", "arctanh": "atanh", "arctan2": "atan2", "power": "pow", "true_divide": "divide",
    "remainder": "mod", "expit": "sigmoid", "row_stack": "vstack", "concatenate": "concat", "flatten": "ravel",
}

# a namespace's function that takes other defaults than ours: these make it the namespace's
DEFAULTS = {
    ("linalg", "trace"): {"axis1": -2, "axis2": -1},
    ("linalg", "diagonal"): {"axis1": -2, "axis2": -1},
    ("special", "softmax"): {"axis": None},
}

# numpy's positional arguments where the language's bare name reads them otherwise: max(a, b) is
# elementwise, as in Python, but np.max(a, 0) and a.max(0) reduce over axis 0
POSITIONAL = {"max": ("axis",), "min": ("axis",)}

# a namespace's function that means something else than ours under the same name
DIFFERENT = {
    ("scipy", "linalg", "cholesky"): "scipy.linalg.cholesky returns the upper factor; use np.linalg.cholesky "
                                     "(the lower one, L @ L.T == a)",
}

# numpy names that only make sense for complex numbers
COMPLEX = frozenset({"fft", "ifft", "rfft", "irfft", "fft2", "ifft2", "fftn", "ifftn", "real", "imag", "angle",
                     "conj", "conjugate", "iscomplex", "iscomplexobj", "isreal", "isrealobj", "real_if_close",
                     "sort_complex", "complex64", "complex128", "csingle", "cdouble"})

# dtype words accepted by astype (float64 is the only dtype of a differentiable value)
FLOAT_DTYPES = {"float", "float64", "double", "f8"}


def real_valued(what: str) -> ProgramError:
    return ProgramError(f"{what} works on complex numbers, and the language is real-valued (float64 arrays)",
                        code="complex_unsupported", status=422)


def dotted(e) -> tuple[str, ...] | None:
    """``np.linalg.det`` as ("np", "linalg", "det") when ``e`` is a chain of attributes on a name."""
    import ast
    parts = []
    while isinstance(e, ast.Attribute):
        parts.append(e.attr)
        e = e.value
    if not isinstance(e, ast.Name):
        return None
    parts.append(e.id)
    return tuple(reversed(parts))


def split(path: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
    """(namespace prefix, name) for the longest known prefix of ``path``, or None."""
    for cut in range(len(path) - 1, 0, -1):
        if path[:cut] in NAMESPACES:
            return path[:cut], ".".join(path[cut:])
    return None


def numpy_arguments(name: str, args: list, kwargs: dict) -> tuple[list, dict]:
    """A numpy-spelled call's positional arguments after the first, named where ``POSITIONAL`` says."""
    named = POSITIONAL.get(name, ())
    if len(args) > 1 and named:
        extra = args[1:1 + len(named)]
        kwargs = {**dict(zip(named, extra)), **kwargs}
        args = args[:1] + args[1 + len(extra):]
    return args, kwargs


def default_key(prefix: tuple[str, ...], name: str) -> tuple[str, str]:
    return (prefix[-1] if prefix[-1] in ("linalg", "special") else "numpy", name)


def suggest(name: str, known) -> str:
    """" (did you mean `sin`?)" with the nearest known names, or ""."""
    close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(f"`{c}`" for c in close) + "?)"
