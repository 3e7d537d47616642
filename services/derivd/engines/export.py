"""A derivative program as one standalone Python module (``GET /v1/functions/{id}/program``).

``export_module(fn, wrt, constants, derivative)`` builds the derivative's
graph on ``fn`` (a ``CompiledFunction`` of its own: the transforms append to
its graph) and writes it with codegen's own ``_source``, so every line is a
primitive's template filled with names and params codegen formats itself. The
rest of the module is written here from values whose form is checked: input
names are identifiers, constants are arrays whose every element is formatted
by ``ops.evaluate.literal``, and the few helpers a template may call
(``RUNTIME``) are derivd's own functions, copied by ``inspect.getsource``. No
text a caller sent reaches the module (the header names the program by its
sha256). The same program, shapes and constants give the same text.

``derivative`` is one of ``DERIVATIVES``; each exported function takes the
program's inputs (constants are embedded) and answers flat, as a session does:

* ``value_and_gradient(...) -> (value, gradient)``; the gradient is the wrt
  inputs' gradients flattened and concatenated in wrt order;
* ``jacobian(...) -> (value, J)``: the output flattened, J of shape (m, n);
* ``hvp(..., v) -> (value, gradient, H v)`` for a flat direction ``v``;
* ``hessian(...) -> (value, gradient, H)``, H of shape (n, n).

A tape the scalar fast path compiled falls back to its all-numpy twin on an
arithmetic exception, as the service's tapes do. Programs with loops, or
primitives whose implementation is not in ``RUNTIME``, are refused (422
``export_unsupported``), naming what is missing.
"""

from __future__ import annotations

import hashlib
import inspect
import keyword
import math
import re

import numpy as np

from derivd import __version__, ops
from derivd.compile.codegen import _source
from derivd.engines.common import Wrt, or_zeros, require_scalar
from derivd.engines.reverse import gradient_nodes
from derivd.errors import DerivdError
from derivd.ops import evaluate as ev
from derivd.ops import reductions, shape
from derivd.ops.registry import FLOAT
from derivd.transforms import jvp as jvp_transform

DERIVATIVES = ("value_and_gradient", "jacobian", "hvp", "hessian")
RESERVED = {"np", "math", "sp", "v"}

# Helpers a template may call, by the name the generated code uses: derivd's own functions (their
# source is copied into the module) and the name the module binds to each.
RUNTIME = {
    "_mul0": ([ev._mul0], "_mul0"),
    "_impl_index_scatter": ([shape._as_slice, shape._item_tuple, shape._index_scatter], "_index_scatter"),
    "_impl_index_add": ([shape._as_slice, shape._item_tuple, shape._index_add_inplace, shape._index_add],
                        "_index_add"),
    "_inplace_index_add": ([shape._as_slice, shape._item_tuple, shape._index_add_inplace], "_index_add_inplace"),
    "_impl_logsumexp": ([reductions._logsumexp], "_logsumexp"),
}
CONSTANTS = {"_inf": "math.inf", "_nan": "math.nan"}


def unsupported(what: str) -> DerivdError:
    return DerivdError(f"this program cannot be exported: {what}", code="export_unsupported", status=422)


def export_module(fn, wrt: list[str], constants: dict[str, np.ndarray], derivative: str, program_sha256: str) -> str:
    """The module's text: ``fn`` (a ``CompiledFunction`` nobody else uses) differentiated as ``derivative``."""
    if derivative not in DERIVATIVES:
        raise DerivdError(f"unknown derivative {derivative!r}: one of {', '.join(DERIVATIVES)}",
                          code="invalid_request", status=422, field="derivative")
    names = list(fn.graph.inputs)
    for name in names:
        if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_") or name in RESERVED:
            raise unsupported(f"input {name!r} cannot be a parameter name of the module")
    slots = fn.wrt(wrt)
    if derivative != "jacobian":
        require_scalar(fn.out_shape, derivative)
    n = slots.n
    extra, outputs = _graph(fn, slots, derivative)
    params = [node for node in fn.graph.inputs.values() if node.params["role"] != "extra"]
    tape_inputs = params + extra
    nodes = fn.graph.live_nodes(outputs)
    for node in nodes:
        if node.prim == "loop":
            raise unsupported("it has a loop (exported modules are straight-line numpy)")
    uses_scalar = any(
        node.shape == () and node.dtype == FLOAT and ops.get(node.prim).scalar_template is not None
        and all(a.shape == () for a in node.inputs)
        for node in nodes if node.prim not in ("input", "const"))
    tapes = [_source(nodes, tape_inputs, outputs, scalar=False, name="_tape_numpy")]
    if uses_scalar:
        tapes.append(_source(nodes, tape_inputs, outputs, scalar=True, name="_tape_fast"))
    code = "\n".join(tapes)
    needs_scipy = bool(re.search(r"\bsp\.", code))
    runtime = _runtime(code)

    at_names = [p.params["name"] for p in params if p.params["role"] != "const"]
    const_names = [p.params["name"] for p in params if p.params["role"] == "const"]
    args = ", ".join(at_names)
    call = ", ".join(p.params["name"] if p.params["role"] != "const" else f"_const_{p.params['name']}"
                     for p in params)
    signature = ", ".join(f"{p.params['name']}: {_kind(p)}" for p in params)
    lines = [
        f'"""{derivative} of a derivd program, written by derivd {__version__}: needs numpy'
        f'{" and scipy" if needs_scipy else ""} only.',
        "",
        f"program: sha256 {program_sha256}",
        f"inputs: {signature} (constants embedded below)",
        f"wrt (the flat order of gradients, directions and Jacobian columns): {', '.join(wrt)}; n = {n}",
        f"output shape: {list(fn.out_shape)}",
        "",
        _usage(derivative, args),
        '"""',
        "",
        "import math",
        "",
        "import numpy as np",
    ]
    if needs_scipy:
        lines.append("import scipy.special as sp")
    lines += ["", f"_N = {n}", f"_SHAPES = {tuple(tuple(s) for s in slots.shapes)!r}", ""]
    for name in const_names:
        lines.append(f"_const_{name} = {_array(np.asarray(constants[name]))}")
    lines += ["", *runtime, "", code]
    if uses_scalar:
        lines += ["", "def _tape(*args):",
                  "    try:",
                  "        return _tape_fast(*args)",
                  "    except (ArithmeticError, ValueError):  # where Python raises, numpy answers inf/nan",
                  "        return _tape_numpy(*args)", ""]
    else:
        lines += ["", "_tape = _tape_numpy", ""]
    lines += _wrapper(derivative, args, call, at_names, wrt, slots)
    return "\n".join(lines).rstrip() + "\n"


def _graph(fn, slots: Wrt, derivative: str):
    """(extra inputs, outputs) of the derivative's graph, as the engines build them."""
    n = slots.n
    if derivative == "value_and_gradient":
        return [], [fn.output] + gradient_nodes(fn, slots)
    if derivative == "jacobian":
        tangents = [fn.extra_input(f"__t_{w}", (n,) + s) for w, s in zip(slots.names, slots.shapes)]
        dy = or_zeros(fn, jvp_transform(fn.graph, slots.nodes, tangents, [fn.output]), [(n,) + fn.out_shape])
        return tangents, [fn.output] + dy
    batch = () if derivative == "hvp" else (n,)
    grads = gradient_nodes(fn, slots)
    tangents = [fn.extra_input(f"__hv_{w}", batch + s) for w, s in zip(slots.names, slots.shapes)]
    hv = or_zeros(fn, jvp_transform(fn.graph, slots.nodes, tangents, grads), [batch + s for s in slots.shapes])
    return tangents, [fn.output] + grads + hv


def _runtime(code: str) -> list[str]:
    """The helpers ``code`` calls, each function's source once, in order, then the names bound to them."""
    used = sorted(set(re.findall(r"\b(_impl_\w+|_inplace_\w+|_mul0|_inf|_nan|_run_loop|_body\d+)\b", code)))
    sources, bindings, seen = [], [], set()
    for name in used:
        if name in CONSTANTS:
            bindings.append(f"{name} = {CONSTANTS[name]}")
            continue
        if name not in RUNTIME:
            raise unsupported(f"it uses {name.removeprefix('_impl_').removeprefix('_inplace_')}, "
                              "whose implementation is not exported")
        functions, bound = RUNTIME[name]
        for f in functions:
            if f.__name__ not in seen:
                seen.add(f.__name__)
                sources.append(inspect.getsource(f))
        if bound != name:
            bindings.append(f"{name} = {bound}")
    return ["\n".join(sources), *bindings] if sources or bindings else []


def _kind(node) -> str:
    return f"{node.dtype}{list(node.shape)}" + (" constant" if node.params["role"] == "const" else "")


def _array(arr: np.ndarray) -> str:
    """An array as source: each element formatted by ``literal`` from its Python value."""
    kind = arr.dtype.kind
    dtype = "np.bool_" if kind == "b" else "np.int64" if kind in "iu" else "np.float64"
    cast = bool if kind == "b" else int if kind in "iu" else float
    values = ", ".join(ev.literal(cast(x)) for x in arr.reshape(-1).tolist())
    return f"np.array([{values}], dtype={dtype}).reshape({tuple(int(s) for s in arr.shape)!r})"


def _usage(derivative: str, args: str) -> str:
    return {
        "value_and_gradient": f"value, gradient = value_and_gradient({args})  # gradient: flat, length n",
        "jacobian": f"value, J = jacobian({args})  # value: flat, length m; J: (m, n)",
        "hvp": f"value, gradient, Hv = hvp({args}{', ' if args else ''}v)  # v, gradient, Hv: flat, length n",
        "hessian": f"value, gradient, H = hessian({args})  # H: (n, n)",
    }[derivative]


def _wrapper(derivative: str, args: str, call: str, at_names: list[str], wrt: list[str], slots: Wrt) -> list[str]:
    """The exported function: inputs as float64 arrays, the tape, the answers flat in wrt order. Its own
    names start with ``_`` (no input's can) or are ``v`` (reserved), so no input shadows them."""
    k = len(wrt)
    offsets = [0]
    for s in slots.shapes:
        offsets.append(offsets[-1] + math.prod(s))
    sep = ", " if args else ""
    out = [f"def hvp({args}{sep}v):" if derivative == "hvp" else f"def {derivative}({args}):"]
    out += [f"    {name} = np.asarray({name}, dtype=np.float64)" for name in at_names]
    flat = "np.concatenate([np.reshape(_p, -1) for _p in {0}]) if {0} else np.zeros(0)"
    if derivative == "value_and_gradient":
        out += [f"    _y, *_grads = _tape({call})",
                f"    return float(np.reshape(_y, -1)[0]), {flat.format('_grads')}"]
    elif derivative == "jacobian":
        seeds = [f"_seeds[:, {offsets[i]}:{offsets[i + 1]}].reshape((_N,) + _SHAPES[{i}])" for i in range(k)]
        out += ["    _seeds = np.eye(_N)",
                f"    _y, _dy = _tape({call}{', ' if call else ''}{', '.join(seeds)})",
                "    _y = np.reshape(np.asarray(_y, dtype=np.float64), -1)",
                "    return _y, np.reshape(_dy, (_N, _y.size)).T.copy()"]
    else:
        if derivative == "hvp":
            out.append("    _v = np.asarray(v, dtype=np.float64).reshape(-1)")
            dirs = [f"_v[{offsets[i]}:{offsets[i + 1]}].reshape(_SHAPES[{i}])" for i in range(k)]
        else:
            out.append("    _v = np.eye(_N)")
            dirs = [f"_v[:, {offsets[i]}:{offsets[i + 1]}].reshape((_N,) + _SHAPES[{i}])" for i in range(k)]
        out += [f"    _y, *_rest = _tape({call}{', ' if call else ''}{', '.join(dirs)})",
                f"    _grads, _hv = _rest[:{k}], _rest[{k}:]",
                f"    _gradient = {flat.format('_grads')}"]
        if derivative == "hvp":
            out.append(f"    return float(np.reshape(_y, -1)[0]), _gradient, {flat.format('_hv')}")
        else:
            out.append("    _H = np.stack([np.concatenate([np.reshape(_h[_i], -1) for _h in _hv]) for _i in range(_N)])"
                       " if _N else np.zeros((0, 0))")
            out.append("    return float(np.reshape(_y, -1)[0]), _gradient, _H.T.copy()")
    return out


def program_sha256(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()
