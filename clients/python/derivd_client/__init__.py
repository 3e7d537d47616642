"""derivd's Python SDK: derivatives from a notebook, numpy in and numpy out.

    import derivd_client as dd

    with dd.Client("http://127.0.0.1:8000") as c:
        g = c.gradient("sum(x**2)", x=[1.0, 2.0, 3.0]).gradient["x"]

        def f(x, y):
            return dd.sum(dd.sin(x) * y)
        c.gradient(f, x=..., y=...)          # traced to DSL on the fly
        print(dd.trace(f, x=3, y=3))         # the DSL text itself

The ``dd.*`` operations mirror the language's functions and also run on
numpy arrays, so a traced function is its own numpy reference; they are the
names in ``ops.PUBLIC`` (ops.py says how to add one), exported here unlisted.
"""

__version__ = "0.1.0"

from . import errors  # noqa: E402
from .client import AsyncClient, Blackbox, Client, FunctionRef, Result, SparseJacobian  # noqa: E402
from .errors import (  # noqa: E402
    ClientError, ConnectionFailed, DeadlineExceeded, DerivdError, InvalidRequest, LimitExceeded, NotFound,
    ParseError, RequestTimeout, ServerError, ShapeError, UnknownName, UpstreamError,
)
from .ops import PUBLIC as _PUBLIC  # noqa: E402
from .ops import trace as _matrix_trace  # noqa: E402
from .trace import Program, Traced  # noqa: E402
from .trace import trace as _trace_function  # noqa: E402

globals().update({name: fn for name, fn in _PUBLIC.items() if name != "trace"})  # the language's functions

__all__ = [
    "errors", "ClientError", "ConnectionFailed", "DeadlineExceeded", "DerivdError", "InvalidRequest",
    "LimitExceeded", "NotFound", "ParseError", "RequestTimeout", "ServerError", "ShapeError", "UnknownName",
    "UpstreamError", "AsyncClient", "Blackbox", "Client", "FunctionRef", "Result", "SparseJacobian", "Program",
    "Traced", "trace", "__version__", *sorted(name for name in _PUBLIC if name != "trace"),
]


def trace(fn_or_matrix, **example_shapes):
    """``trace(f, x=3, A=(2, 2))`` traces the Python function ``f`` into a :class:`Program` (DSL text);
    ``trace(A)`` of an array is the language's matrix trace, so ``dd.trace`` reads as both."""
    if callable(fn_or_matrix):
        return _trace_function(fn_or_matrix, **example_shapes)
    if example_shapes:
        raise TypeError("trace(matrix) takes no keywords; to trace a function, pass the function")
    return _matrix_trace(fn_or_matrix)
