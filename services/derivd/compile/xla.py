"""Tier 2: a compiled graph lowered to ``jax.numpy``/``lax`` and compiled by XLA.

What runs is our graph, after our transforms: the derivative rules, Taylor
series and sparsity stay ours; XLA is only the code generator that fuses the
elementwise chains numpy pays a temporary for and compiles loops. JAX's own
differentiation is never used.

The lowering writes Python source from the validated IR, like compile/codegen.py,
and traces it with jax:

* a primitive's tier-2 form is declared with it (``Primitive.xla``); by default
  its numpy ``template`` serves, evaluated with ``jax.numpy`` as ``np`` and
  ``jax.scipy.special`` as ``sp`` (``_Spelled``: numpy's names where jax's differ). A
  primitive with neither (an ``impl`` alone) has no lowering: ``missing_lowering`` names it
  and its tapes stay on tier 1. scipy.special functions jax lacks or computes otherwise
  (real-order Bessel functions, beta, polygamma...) are called on the host (``_on_host``);
* a ``loop`` node is one ``lax.scan`` over its body (a nested function of the
  same source); with ``collect`` the scan stacks the states, so memory stays
  proportional to the iterations, as on tier 1;
* a lowering may record a check (``jx.fail_if``: an index out of range, which
  jax would clamp where numpy raises); the executable returns whether any
  failed, and ``XlaTape.run`` then returns None so that tier 1 answers;
* literals are arguments, not constants baked into the executable: the source
  names them ``c0, c1, ...``, so programs that differ only in their literal
  values share one source and one XLA executable per signature (``_EXECUTABLES``);
* a tape's float64 numbers (0-d inputs) are one vector argument too (``PACKED_MIN``).

XLA compiles in a child process (compile/xla_process.py, compile/xla_child.py), where it
can be stopped and where a crash of XLA's costs that compile alone: the child runs the
source (``compile_job``) and answers jax's serialized executable, which this process
loads (``_compiled``). A graph that calls back to the host (``_callback``) is compiled
here: jax cannot serialize an executable whose callbacks are functions of the process
that traced it.

``configure(settings)`` runs once per process (this one and the child) before jax
starts: float64 on, the platform (CPU unless configured), XLA's CPU threads (one
unless configured) and synchronous dispatch (``SYNCHRONOUS``). Of ``XLA_OPTIONS`` (XLA's CPU
code generation, measured) each compile uses those its XLA knows (``_known``). Compiled executables survive restarts in
``xla_cache_dir`` (compile/xla_store.py), not in jax's persistent cache (it cannot serve
an executable that crosses processes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import logging
import math
import os
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np

from derivd.allocator import freeze_heap
from derivd.compile import staging, xla_process, xla_store
from derivd.compile.codegen import _collecting_twins
from derivd.ops.evaluate import expression, integer, literal

log = logging.getLogger("derivd.xla")

# XLA's CPU options of every executable, each one where this XLA knows it (``_accepts``). Measured
# with jaxlib 0.10.2, one thread (bench/tiers.py and README, "Two compile tiers"):
# * YNNPACK fusions off: they take a reduction with the elementwise chain before it (a sum of
#   squares) and run it about 3x slower than XLA's own loop (Rosenbrock's f, n = 1e6: 2.5 ms against
#   0.8 ms);
# * fusion emitters off: they leave unvectorized a loop that reads a scalar argument on both sides
#   of a pad (literals are arguments here, and the vjp of a slice is a pad: Rosenbrock's H v alone,
#   n = 1e6, 1.0 ms against 0.57 ms, jax's own 0.51 ms), and compile 1.5-3x slower; warm, the other
#   bench programs run as fast or faster without them. But without them XLA's elemental emitter
#   recurses once per link of a chain of dependent operations: a gradient whose chain is about 6,000
#   long crashed the process (SIGSEGV; 4,000 did not, and 25,000 did not with the emitters on). A
#   graph whose longest chain passes DEEP_CHAIN keeps the emitters (``_options``).
XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_use_fusion_emitters": False}
DEEP_CHAIN = 2000
# jax's option that runs an executable on the calling thread, never handed to XLA's thread pool: jax hands
# over any run its cost model counts 1,000 floating-point operations or more, and the caller then waits on
# a futex while the pool's thread wakes, runs and wakes it (the scalar-heavy gradient, ~1,500 operations:
# 17 us a call, of which its kernels ~2 us, against 8 us run here; jaxlib 0.10.2, one core). A run waits
# for its answer either way (``XlaTape.run``), and releases the GIL while it runs.
SYNCHRONOUS = "jax_cpu_enable_async_dispatch"
EXECUTABLES_KEPT = 512  # compiled executables held per process, least recently used out first
_EXECUTABLES: OrderedDict[tuple, Callable] = OrderedDict()
_LOCK = threading.Lock()
# "jax": the module once configured; "known": XLA option (name, value) -> whether XLA knows it; "lapack": loaded
_STATE: dict = {}
_TRACING = threading.local()  # .host: whether the graph traced on this thread calls back to the host


class NotLowerable(Exception):
    """A graph tier 2 cannot run: a primitive without a lowering, or one that failed to trace."""


@functools.cache
def available() -> bool:
    """Whether jax is installed here (the ``xla`` extra), found without importing it (a second); looked
    up once a process: a look-up on the path costs ~0.1 ms until jax is imported, and every response
    asks (``tiers.enabled``)."""
    try:
        return importlib.util.find_spec("jax") is not None
    except ValueError:  # sys.modules["jax"] = None: hidden on purpose
        return False


def configure(settings) -> object:
    """Set jax up once for this process and return the module (``NotLowerable`` if it is missing).

    XLA reads its thread flags when its CPU backend starts, so they are set in the
    environment first; the platform and float64 are jax settings."""
    with _LOCK:
        if "jax" in _STATE:
            return _STATE["jax"]
        os.environ["XLA_FLAGS"] = xla_flags(settings)
        try:
            import jax
        except ImportError as e:
            raise NotLowerable(f"jax is not installed (pip install derivd[xla]): {e}") from None
        jax.config.update("jax_enable_x64", True)
        try:
            jax.config.update(SYNCHRONOUS, False)
        except AttributeError:  # a jax without the option dispatches as it does
            pass
        if settings.xla_platform:
            jax.config.update("jax_platforms", settings.xla_platform)
        _STATE["jax"] = jax
        freeze_heap(collect=False)  # jax's ~70,000 objects live as long as the process (allocator.py)
        return jax


def xla_flags(settings) -> str:
    """``XLA_FLAGS`` as ``configure`` leaves it: the environment's, with Eigen's threads in XLA's CPU
    operations off where ``xla_threads`` is 1 unless the environment says otherwise. The other limit on
    XLA's threads is the compile process's CPU affinity (compile/xla_child.py), which XLA reads."""
    flags = os.environ.get("XLA_FLAGS", "")
    if settings.xla_threads == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags = " ".join(f for f in (flags, "--xla_cpu_multi_thread_eigen=false") if f)
    return flags


def _known(jax, options: dict) -> dict:
    """``options`` without those this XLA does not know (it refuses a compile naming one): one tiny
    compile per option, once per process. Without one, that option's measured gain is lost, never a tape."""
    known = _STATE.setdefault("known", {})
    for item in options.items():
        if item not in known:
            known[item] = _accepts(jax, dict([item]))
    return {k: v for k, v in options.items() if known[(k, v)]}


def _accepts(jax, options: dict) -> bool:
    try:
        jax.jit(lambda x: x + 1.0, compiler_options=options).lower(
            jax.ShapeDtypeStruct((2,), np.float64)).compile()
    except Exception:  # an older or newer jaxlib: its defaults stand
        return False
    return True


def _namespace(jax) -> dict:
    """What the generated source sees, made per compile: ``_jx.checks`` collects that trace's checks."""
    import jax.numpy as jnp
    import jax.scipy.linalg as jsla
    import jax.scipy.special as jsp
    from jax import lax

    def mul0(a, b):
        return jnp.where(a == 0, 0.0, a * b)

    def fail_if(condition):
        """Record a condition under which tier 1 must answer instead (its error or convention)."""
        jx.checks.append(jnp.asarray(condition, dtype=bool))

    np_, sp_ = _Spelled(jnp, NUMPY_SPELLINGS), _Spelled(jsp, SCIPY_SPELLINGS)
    jx = SimpleNamespace(np=jnp, lax=lax, sp=jsp, linalg=jsla, host=_on_host, callback=_callback, checks=[],
                         fail_if=fail_if)
    jx.sum = functools.partial(_sum, jx)
    return {"np": np_, "sp": sp_, "lax": lax, "_jx": jx, "_mul0": mul0, "_inf": float("inf"),
            "_nan": float("nan"), "_scan": _scan_loop, "_finish": _finish}


class _Spelled:
    """A jax module read with numpy's and scipy's spellings where jax's differ (``spellings``), so
    that a template written for numpy serves as it stands."""

    def __init__(self, module, spellings: dict):
        self._module, self._spellings = module, spellings

    def __getattr__(self, name):
        found = self._spellings.get(name)
        return found(self._module) if found is not None else getattr(self._module, name)


def _floor_divide(jnp):
    """numpy's integer a // 0 is 0 (with a warning); jax's is -1 or -2 (found with the tier forced on)."""
    def floor_divide(a, b):
        quotient = jnp.floor_divide(a, b)
        if jnp.issubdtype(quotient.dtype, jnp.integer):
            return jnp.where(jnp.asarray(b) == 0, jnp.zeros_like(quotient), quotient)
        return quotient

    return floor_divide


# name -> (jax module -> the function under numpy's/scipy's name and signature)
NUMPY_SPELLINGS = {
    # kind="stable" (the only kind a template should ask for: ties in order) is jax's stable sort
    "argsort": lambda jnp: lambda a, axis=-1, kind=None: jnp.argsort(a, axis=axis, stable=True),
    "floor_divide": _floor_divide,
}
def _log_sigmoid(jsp):
    import jax

    return jax.nn.log_sigmoid


def _libm():
    """The C maths library when it has glibc's (and musl's) FE_DFL_ENV, ``(fenv_t *) -1``: Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    except OSError:
        return None


_LIBM = _libm()
_HOST: list = []  # elsewhere: the one thread host callbacks compute on (``_default_fp``)


def _default_fp(function, *args):
    """``function(*args)`` in the default floating-point mode. XLA runs an executable, and so its
    callbacks, with the CPU flushing subnormal numbers to zero (operands and results): scipy's
    beta(74.9, 96.5), 3.8e-52, came out 0 there, betaln(161, 10.3) -inf. On Linux the mode is
    reset around the call and restored (under 1 µs); elsewhere the call runs on a thread made while
    tracing, never from inside a run (a new thread inherits its creator's mode), at the cost of a
    thread switch (about 100 µs)."""
    if _LIBM is not None:
        saved = ctypes.create_string_buffer(256)  # fenv_t: 32 bytes on x86-64, 8 on arm64
        _LIBM.fegetenv(saved)
        _LIBM.fesetenv(ctypes.c_void_p(-1))
        try:
            return function(*args)
        finally:
            _LIBM.fesetenv(saved)
    return _HOST[0].submit(function, *args).result()


def _start_host() -> None:
    """The thread of ``_default_fp`` where the mode cannot be reset, started outside any run."""
    with _LOCK:
        if _LIBM is None and not _HOST:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="derivd-xla-host")
            pool.submit(int).result()
            _HOST.append(pool)


def _callback(function, shape, dtype, *args):
    """``function`` of whole numpy arrays, answering ``shape`` and ``dtype``, called back on the host
    from inside the executable (``jax.pure_callback``): for what jax lacks or computes otherwise
    (scipy's real-order Bessel functions, numpy's argpartition order), so that tier 2 has tier 1's
    own numbers, computed in the default floating-point mode (``_default_fp``). A callback costs a
    host round trip per call (tens of microseconds) and XLA cannot fuse it, but the rest of the tape
    stays compiled."""
    import jax

    _TRACING.host = True
    _start_host()

    def compute(*values):
        with np.errstate(all="ignore"):
            return np.asarray(function(*values), dtype=dtype).reshape(shape)

    def call(*values):  # writable numpy copies: jax may hand its own immutable arrays
        return _default_fp(compute, *[np.array(v) for v in values])

    return jax.pure_callback(call, jax.ShapeDtypeStruct(shape, dtype), *args, vmap_method="sequential")


def _on_host(function, *args):
    """An elementwise ``function`` (scipy's) on the broadcast float64 arguments, on the host."""
    import jax.numpy as jnp

    args = [jnp.asarray(a, dtype=jnp.float64) for a in args]
    shape = jnp.broadcast_shapes(*[a.shape for a in args])
    return _callback(function, shape, np.float64, *[jnp.broadcast_to(a, shape) for a in args])


def _scipy_on_host(name):
    """scipy.special's ``name``, which jax.scipy.special lacks, run on the host (``_on_host``)."""
    def spelled(jsp):
        import scipy.special

        return lambda *args: _on_host(getattr(scipy.special, name), *args)

    return spelled


def _erfcinv(jsp):
    """erfcinv(x) = -ndtri(x / 2) / √2: exact in the tail near 0, where erfinv(1 - x) loses x's digits."""
    return lambda x: jsp.ndtri(x / 2) * -0.7071067811865476


def _rgamma(jsp):
    """rgamma(x) = gammasgn(x) exp(-gammaln(x)): 0 at gamma's poles, where gammaln is inf."""
    import jax.numpy as jnp

    return lambda x: jsp.gammasgn(x) * jnp.exp(-jsp.gammaln(x))


def _log_ndtr(jsp):
    """log ndtr(x) = log1p(-ndtr(-x)) for x > 0: jax's log(ndtr(x)) up to x = 8 kept a few digits of a
    result near -1e-15 (6% off at x = 7.9; this: within 2e-11 of scipy's everywhere)."""
    import jax.numpy as jnp

    return lambda x: jnp.where(x > 0, jnp.log1p(-jsp.ndtr(-x)), jsp.log_ndtr(x))


def _expit(jsp):
    """expit(x) = (1 if x >= 0 else e) / (1 + e), e = exp(-|x|): the exponential softplus's lowering takes
    (``np.log1p(np.exp(-np.abs(x)))``), which XLA then computes once for both (jax's 1 / (1 + exp(-x))
    is a second one: the logistic gradient's executable, 18 us with it, 13 us without). Equal to
    scipy's within rounding, and 0 below -709, where exp(-x) overflows, as scipy's."""
    import jax.numpy as jnp

    def expit(x):
        e = jnp.exp(-jnp.abs(x))
        return jnp.where(x >= 0, 1.0, e) / (1.0 + e)

    return expit


# Called on the host, scipy's own numbers (measured against scipy over wide ranges, jaxlib 0.10.2):
# * scipy's real Bessel functions of the first and second kind and of real order: jax has i0, i1,
#   i0e, i1e and an integer-order jn recurrence only (inaccurate past small x);
# * beta and betaln: jax's are 1e-6 off at ordinary points (beta(4.9, 8.2)), betaln 5e-7 absolute
#   at (8.1, 0.42), and either of any sign at negative arguments;
# * gammaincc: 2e-7 relative off where a is small (1e-8), 1 - gammainc cancelling;
# * polygamma: jax's zeta form holds for x > 0 only (polygamma(3, -10.08): 4e37 for 1.6e5).
SCIPY_SPELLINGS = {"expit": _expit, "log_expit": _log_sigmoid, "erfcinv": _erfcinv, "rgamma": _rgamma,
                   "log_ndtr": _log_ndtr,
                   **{name: _scipy_on_host(name) for name in ("j0", "j1", "y0", "y1", "jv", "yn", "ive", "beta",
                                                              "betaln", "gammaincc", "polygamma")}}


def _finish(jx, outputs, flat):
    """The outputs and one flag: whether a check failed or a float output holds a non-finite number
    (then tier 1 answers: numpy raises or has its conventions where XLA gives NaN). In the
    executable, the test is one pass over each output (``_not_finite``), where numpy would take
    several. With ``flat`` (the outputs' shapes, for a small all-float64 tape) one float64 vector
    instead: the outputs raveled, then the checks' flag (NaN where one failed, else 0), so that a
    call hands one buffer to numpy (``XlaTape.run``), which tests that vector's finiteness itself:
    in the executable, the test read every output a second time, and XLA then kept apart what it
    fuses otherwise (the scalar-heavy gradient: 179 fusions with it, 111 without, README)."""
    import jax.numpy as jnp

    if flat is not None:
        failed = jnp.any(jnp.stack(jx.checks)) if jx.checks else False
        return jnp.concatenate([jnp.reshape(o, s).astype(jnp.float64).ravel() for o, s in zip(outputs, flat)]
                               + [jnp.where(failed, jnp.nan, 0.0)[None]])
    for o in outputs:
        if jnp.issubdtype(jnp.result_type(o), jnp.floating):
            jx.fail_if(_not_finite(jx, o))
    failed = jnp.any(jnp.stack(jx.checks)) if jx.checks else jnp.asarray(False)
    return tuple(outputs) + (failed,)


# Arrays of at least this many numbers are summed whole in two stages of SPLIT rows (``_total``)
SPLIT_MIN, SPLIT = 1 << 14, 16


def _total(jnp, lax, x):
    """The sum of all of ``x``'s numbers. XLA's CPU backend sums a long vector by writing out the
    elementwise chain before it and reducing that in a loop of its own (Rosenbrock's f at n = 1e6:
    0.6 ms, a copy of x 0.15-0.3 ms). Viewed as ``(SPLIT, m)`` rows (the last ``size % SPLIT`` numbers
    summed apart: a zero pad instead cost as much as it saved), the sum over the rows is one
    vectorized loop fused with that chain (0.2 ms), then the ``m`` partial sums are summed. The barrier
    keeps XLA from merging the two stages back into one reduction. The order of the additions differs
    from numpy's, as any of XLA's reductions does, within rounding."""
    x = jnp.ravel(x)
    if x.size < SPLIT_MIN:
        return jnp.sum(x)
    m = x.size // SPLIT
    rows = jnp.sum(x[:SPLIT * m].reshape(SPLIT, m), axis=0)
    return jnp.sum(lax.optimization_barrier(rows)) + jnp.sum(x[SPLIT * m:])


def _sum(jx, x, axes):
    """The ``sum`` primitive's lowering: a float array summed whole in two stages (``_total``), any
    other reduction as numpy's template writes it."""
    jnp = jx.np
    if len(axes) == x.ndim and jnp.issubdtype(x.dtype, jnp.floating):
        return _total(jnp, jx.lax, x)
    return jnp.add.reduce(x, axis=axes)


def _not_finite(jx, o):
    """Whether ``o`` holds an inf or a NaN, exactly: ``o * 0`` is NaN there and ±0 elsewhere, so its sum
    is NaN if and only if one is there (a sum of zeros never overflows). Summed in two stages
    (``_total``): 0.10 ms for 1e6 numbers where ``all(isfinite(o))`` took 0.19 ms (XLA wrote the
    booleans out, then reduced them)."""
    if o.size < SPLIT_MIN:
        return ~jx.np.all(jx.np.isfinite(o))
    return ~jx.np.isfinite(_total(jx.np, jx.lax, o * 0))


def _scan_loop(jx, body, carried, captured, avals, count, reverse, collect):
    """A ``loop`` node as one ``lax.scan``: state k+1 = body(k, state k, captured); with ``collect``
    the states before each iteration, stacked at index k whichever way the loop runs. ``avals``:
    each state's shape and dtype code ("f8", "i8", "b1": numpy's names), which the scan keeps.
    The checks of the body's iterations are carried out of the scan as one flag.

    Many states of one shape and dtype travel through the scan stacked in one array (``_Packing``).
    The counter k is carried: scanned over a range, each iteration sliced k out of it (the 2000-step
    scalar loop's gradient: 96 us against 81 us carried)."""
    import jax.numpy as jnp
    from jax import lax

    packing = _Packing(avals)

    def typed(values):
        return tuple(jnp.broadcast_to(jnp.asarray(v, dtype=d), s) for v, (s, d) in zip(values, avals))

    def step(carry, _):
        k, packed, failed = carry
        mark = len(jx.checks)
        new = typed(body(k, *packing.unpack(packed), *captured))
        inner = jx.checks[mark:]
        del jx.checks[mark:]  # tracers of this body: they leave the scan only through its carry
        if inner:
            failed = failed | jnp.any(jnp.stack(inner))
        return (k - 1 if reverse else k + 1, packing.pack(new), failed), (packed if collect else None)

    start = jnp.asarray(count - 1 if reverse else 0, dtype=jnp.int64)
    (_, final, failed), stacks = lax.scan(step, (start, packing.pack(typed(carried)), jnp.asarray(False)), None,
                                          length=count, reverse=reverse)
    jx.checks.append(failed)
    return packing.unpack(final) + (packing.unpack(stacks, axis=1) if collect else ())


PACKED_STATES_MIN = 8  # a scan stacks the states of one shape and dtype where it has more than this many


class _Packing:
    """States of one shape and dtype stacked in one array where there are more than ``PACKED_STATES_MIN``
    of them; each other state as it is.

    The LSTM's reverse loop carries 23 arrays of 14 numbers (the cotangents of its states and of
    its weights, sliced): stacked, its gradient's executable ran 1.10-1.14x faster (5.6-5.8 ms against
    6.4-6.7 ms, jaxlib 0.10.2, one core). Fewer are better apart: XLA fuses a concatenation of up to 8
    arrays (kMaxConcatenateArguments) into one kernel that computes every element behind a branch,
    unvectorized (the LSTM's 4 states stacked in its forward loop: 2-7% slower; the 23 stacked in rows
    of 8, each row fused, 1.2x slower)."""

    def __init__(self, avals):
        by_aval: dict = {}
        for j, (shape, dtype) in enumerate(avals):
            by_aval.setdefault((tuple(shape), dtype), []).append(j)
        self.groups = [g for g in by_aval.values() if len(g) > PACKED_STATES_MIN]
        self.groups += [[j] for g in by_aval.values() if len(g) <= PACKED_STATES_MIN for j in g]
        self.n = len(avals)

    def pack(self, values) -> tuple:
        import jax.numpy as jnp

        return tuple(values[g[0]] if len(g) == 1 else jnp.stack([values[j] for j in g]) for g in self.groups)

    def unpack(self, packed, axis: int = 0) -> tuple:
        """Each state from ``pack``'s arrays, or, with ``axis`` 1, each state's stack from the scan's."""
        out = [None] * self.n
        lead = (slice(None),) * axis
        for g, p in zip(self.groups, packed):
            for i, j in enumerate(g):
                out[j] = p if len(g) == 1 else p[lead + (i,)]
        return tuple(out)


def missing_lowering(graph, outputs) -> str | None:
    """The name of a primitive the graph (or a loop body in it) uses that has no tier-2 lowering."""
    from derivd import ops

    for n in graph.live_nodes(outputs):
        if n.prim in ("input", "const"):
            continue
        if n.prim == "loop":
            body = n.params["body"]
            inner = missing_lowering(body.graph, body.outputs)
            if inner is not None:
                return inner
            continue
        prim = ops.get(n.prim)
        if prim.xla is None and prim.template is None:
            return n.prim
    return None


@dataclass
class _Source:
    """Source being written: its lines, the literals made arguments, the primitives' lowerings."""

    lines: list = field(default_factory=list)
    consts: list = field(default_factory=list)  # literal values, argument c<i>
    const_var: dict = field(default_factory=dict)  # (type, value) -> name
    lowerings: dict = field(default_factory=dict)  # "_x_<name>" -> function

    def const(self, value) -> str:
        if type(value) is bool:
            return literal(value)
        key = (type(value), repr(value))
        if key not in self.const_var:
            self.const_var[key] = f"c{len(self.consts)}"
            self.consts.append(value)
        return self.const_var[key]


def _emit(src: _Source, graph, inputs, outputs, name: str, indent: str) -> None:
    """Append ``def name(a0, ...)`` computing ``outputs`` from ``inputs`` to ``src.lines``."""
    from derivd import ops

    nodes = graph.live_nodes(outputs)
    var = {n.id: f"a{i}" for i, n in enumerate(inputs)}
    twins = _collecting_twins(nodes)
    src.lines.append(f"{indent}def {name}({', '.join(f'a{i}' for i in range(len(inputs)))}):")
    inner = indent + "    "
    for n in nodes:
        if n.prim == "input":
            if n.id not in var:
                raise KeyError(f"input {n.params['name']!r} not bound")
            continue
        if n.prim == "const":
            var[n.id] = src.const(n.params["value"])
            continue
        args = [var[a.id] for a in n.inputs]
        if n.prim == "loop":
            if n.id in twins and twins[n.id].id in var:  # the collecting twin ran already: its finals lead
                var[n.id] = var[twins[n.id].id]
                continue
            if n.id in var:  # the collecting twin, run already for the loop it repeats (XLA keeps both scans)
                continue
            loop = twins.get(n.id, n)
            body, p = loop.params["body"], loop.params
            _emit(src, body.graph, body.inputs, body.outputs, f"_body{loop.id}", inner)
            m = len(body.carried)
            avals = literal(tuple((tuple(c.shape), c.dtype) for c in body.carried))
            carried, captured = "".join(a + ", " for a in args[:m]), "".join(a + ", " for a in args[m:])
            expr = (f"_scan(_jx, _body{loop.id}, ({carried}), ({captured}), {avals}, {integer(p['count'])}, "
                    f"{_flag(p['reverse'])}, {_flag(p['collect'])})")
            var[loop.id] = var[n.id] = f"t{loop.id}"
            src.lines.append(f"{inner}t{loop.id} = {expr}")
            continue
        prim = ops.get(n.prim)
        contraction = _transposed_product(n, var)
        if contraction is not None:
            expr = contraction
        elif prim.xla is not None:
            src.lowerings[f"_x_{prim.name}"] = prim.xla
            kw = "".join(f", {k}={literal(v)}" for k, v in n.params.items())
            expr = f"_x_{prim.name}(_jx, {', '.join(args)}{kw})"
        elif prim.template is not None:
            expr = expression(prim, args, n.params, [(a.shape, a.dtype) for a in n.inputs], scalar=False)
        else:
            raise NotLowerable(f"primitive {prim.name!r} has no tier-2 lowering")
        var[n.id] = f"t{n.id}"
        src.lines.append(f"{inner}t{n.id} = {expr}")
    src.lines.append(f"{inner}return ({''.join(var[o.id] + ', ' for o in outputs)})")


def _transposed_product(n, var) -> str | None:
    """A product of float64 matrices ``a @ b`` where either is a transposed matrix (``swap``: the
    gradient of ``X @ w`` is ``X.T @ g``), as one ``lax.dot_general`` contracting the untransposed
    matrix's other axis; else None. Written ``X.T @ g``, XLA's CPU backend copied ``X`` out transposed
    on every call and ran the product as a loop of its own, fused with what adds to it (the logistic
    gradient, X 1000 x 20: 26 us an executable, 18 us as one dot; jaxlib 0.10.2, one thread). Matrix-vector
    products only: the LSTM's matrix products in a scan ran 3.3x slower as dot_general (0.57 -> 1.9 ms)."""
    if n.prim != "matmul" or any(a.ndim != 2 or a.dtype != "f8" for a in n.inputs) or 1 not in n.shape:
        return None
    swapped = [a.prim == "transpose" and tuple(a.params["perm"]) == (1, 0) and a.inputs[0].ndim == 2
               for a in n.inputs]
    if not any(swapped):
        return None
    (a, b), (ta, tb) = [x.inputs[0] if t else x for x, t in zip(n.inputs, swapped)], swapped
    return f"lax.dot_general({var[a.id]}, {var[b.id]}, ((({int(ta) ^ 1},), ({int(tb)},)), ((), ())))"


def _flag(v) -> str:
    if type(v) is not bool:
        raise TypeError(f"expected a bool, not {type(v).__name__}")
    return repr(v)


# a tape whose outputs are all float64 and hold at most this many numbers in all answers them as one
# vector (``_finish``): one buffer for numpy per call instead of one per output and a flag to read
FLAT_OUTPUTS_MAX = 4096


class XlaTape:
    """A graph compiled by XLA: ``run(*inputs)`` returns the tuple of outputs as numpy arrays, or None
    where a lowering's check failed (an index out of range) or an output is not finite: there tier 1
    answers, with its error or its numbers. ``executable`` is compiled already: jax's ``Compiled``
    loaded from the compile process's (or, for a graph with host callbacks, jitted here); the
    literals wait on the device, packed in at most two vectors (``_CONST_VECTORS``).
    ``flat``: each output's (start, stop, shape) in the executable's one flat answer (its flag last,
    its finiteness tested here: ``_finish``), or None where it answers a tuple (large or non-float
    outputs). ``stage_at``: the positions of the executable's arguments large enough for ``staging``
    to align (a tape without any skips it: 0.2 us of a 10 us call). ``packed``: (the float64 numbers
    among the inputs, the other inputs), by position, where the executable takes those numbers in one
    vector (``PACKED_MIN``)."""

    def __init__(self, executable: Callable, consts: list, source: str, flat: list | None, stage_at: tuple = (),
                 packed: tuple | None = None):
        self.executable = executable
        self.packed = packed
        self.consts = consts
        self.source = source
        self.flat = flat
        self.stage_at = stage_at
        self.zeros = None if flat is None else np.zeros((flat[-1][1] if flat else 0) + 1)  # one per number answered
        # each output taken from the flat answer as tier 1 answers it: a number, or a view (reshaped past 1-d)
        self.parts = None if flat is None else [(a, None) if s == () else (slice(a, b), None if len(s) == 1 else s)
                                                for a, b, s in flat]

    def run(self, *args):
        if self.packed is not None:
            numbers, rest = self.packed
            args = [np.array([args[i] for i in numbers], dtype=np.float64), *[args[i] for i in rest]]
        if self.stage_at:
            args, staged = staging.stage(args, self.stage_at)  # misaligned large arrays aligned: read in place
        else:
            staged = []
        if self.flat is None:
            *outputs, failed = self.executable(*args, *self.consts)
            outputs = staging.release(staged, [np.asarray(o) for o in outputs])  # numpy: the run is over
            return None if np.asarray(failed) else tuple(outputs)
        out = np.asarray(self.executable(*args, *self.consts))  # no copy: a view of XLA's buffer
        staging.release(staged, [])  # a flat answer is a buffer of its own, never an input's
        if out.dot(self.zeros) != 0:  # x * 0 is ±0 for a finite x, NaN for inf and NaN (and the failed flag)
            return None
        return tuple([out[i] if s is None else out[i].reshape(s) for i, s in self.parts])


# a tape with at least this many float64 numbers among its inputs takes them in one vector: the executable's call
# converts each numpy argument to a buffer of its own (~1.2 us each: ten numbers 18 us a call, one vector of ten 6)
PACKED_MIN = 2
# the literals' vectors: argument name, numpy dtype, and which literals (by Python type) it carries
_CONST_VECTORS = (("_cf", np.float64, float), ("_ci", np.int64, int))


def _options(graph, outputs) -> dict:
    """XLA's options for this graph: ``XLA_OPTIONS``, with the fusion emitters left on where the graph's
    longest chain of dependent nodes (loop bodies' own chains included) passes ``DEEP_CHAIN``."""
    options = XLA_OPTIONS
    if "xla_cpu_use_fusion_emitters" in options and _longest_chain(graph, outputs) > DEEP_CHAIN:
        options = {k: v for k, v in options.items() if k != "xla_cpu_use_fusion_emitters"}
    return options


def _longest_chain(graph, outputs) -> int:
    depth: dict[int, int] = {}
    for n in graph.live_nodes(outputs):  # inputs before the nodes that read them
        own = 1
        if n.prim == "loop":
            body = n.params["body"]
            own = _longest_chain(body.graph, body.outputs)
        depth[n.id] = own + max((depth[a.id] for a in n.inputs), default=0)
    return max(depth.values(), default=0)


# XLA generates a fused value once per way its index is computed: a node read at shifted or
# permuted indices (a concatenation, a slice, a reversal) along paths that each remap it again is
# generated once per path, and the paths double with each level of t = concat([t, t]) or
# t + t[::-1]. Measured (jaxlib 0.10.2, with and without the fusion emitters): 2^13 paths of
# concatenations crashed XLA (SIGSEGV) compiling under a one-stage sum; reversals compiled in 0.3 s
# at 2^14, 8 s at 2^18, longer than any wait past it. Such a graph stays on tier 1: the compile process (xla_process.py)
# survives the crash and can be stopped, but the compile would be wasted.
REMAPPED_PATHS_MAX = 1024
REMAPPING = frozenset(("concat", "index", "transpose", "reshape", "broadcast_to", "gather", "take_along"))


def _remapped_paths(graph, outputs) -> int:
    """The most ways any node of the graph (or of a loop body) is read through re-indexing nodes
    (``REMAPPING``) within what XLA fuses, counted up to just past ``REMAPPED_PATHS_MAX``: elementwise
    readers share one index (XLA reuses a value generated at the same index), each re-indexing
    reader, and each operand slot of it, adds its own, and any other reader (a product, a sum, a
    decomposition, a loop: XLA does not fuse them into their readers) reads it once."""
    from derivd import ops

    nodes = graph.live_nodes(outputs)
    readers: dict[int, list] = {}
    for n in nodes:
        for a in n.inputs:
            readers.setdefault(a.id, []).append(n)
    paths = dict.fromkeys((o.id for o in outputs), 1)
    most = 1
    for n in reversed(nodes):  # readers before what they read
        if n.prim == "loop":
            body = n.params["body"]
            most = max(most, _remapped_paths(body.graph, body.outputs))
        shared, remapped = paths.get(n.id, 0), 0
        for r in readers.get(n.id, ()):
            if r.prim in REMAPPING:
                remapped += paths[r.id]
            elif r.prim != "loop" and (ops.get(r.prim).sparsity or ("",))[0] == "elementwise":
                shared = max(shared, paths[r.id])
            else:
                shared = max(shared, 1)
        paths[n.id] = min(shared + remapped, REMAPPED_PATHS_MAX + 1)
        most = max(most, paths[n.id])
    return most


def compile_graph(graph, inputs: list, outputs: list, settings, ticket=None) -> XlaTape:
    """Lower the graph and compile it now (seconds: call it off the request path), in the compile
    process unless it calls back to the host. Raises ``NotLowerable`` (a primitive without a lowering,
    a lowering that failed to trace, a compile that crashed XLA) or ``xla_process.Cancelled`` (the
    ``ticket`` cancelled, or the process stopping: the compile was killed)."""
    if not available():
        raise NotLowerable("jax is not installed (pip install derivd[xla])")
    missing = missing_lowering(graph, outputs)
    if missing is not None:
        raise NotLowerable(f"primitive {missing!r} has no tier-2 lowering")
    if _remapped_paths(graph, outputs) > REMAPPED_PATHS_MAX:
        raise NotLowerable(f"a value is read through over {REMAPPED_PATHS_MAX} chains of concatenations or "
                           "slices (XLA's compile grows with their number: it crashed at 8192)")
    src = _Source()
    _emit(src, graph, inputs, outputs, "tape", "")
    names = [f"a{i}" for i in range(len(inputs))]
    packed = [i for i, n in enumerate(inputs) if n.shape == () and n.dtype == "f8"]
    packed = packed if len(packed) >= PACKED_MIN else []
    rest = [i for i in range(len(inputs)) if i not in packed]
    params = (["_in"] if packed else []) + [names[i] for i in rest]
    unpack = [f"    a{i} = _in[{j}]" for j, i in enumerate(packed)]
    vectors = []  # each argument of the executable is a dispatch cost: two vectors, not n scalars
    for arg, dtype, kind in _CONST_VECTORS:
        which = [i for i, c in enumerate(src.consts) if (type(c) is float) == (kind is float)]
        if which:
            params.append(arg)
            unpack += [f"    c{i} = {arg}[{j}]" for j, i in enumerate(which)]
            vectors.append(np.array([src.consts[i] for i in which], dtype=dtype))
    sizes = [int(np.prod(n.shape)) for n in outputs]
    flat = None
    if all(n.dtype == "f8" for n in outputs) and sum(sizes) <= FLAT_OUTPUTS_MAX:
        flat = tuple(tuple(int(d) for d in n.shape) for n in outputs)
    source = "\n".join([f"def lowered({', '.join(params)}):"] + unpack + ["    " + line for line in src.lines]
                       + [f"    return _finish(_jx, tape({', '.join(names)}), {literal(flat)})"]) + "\n"
    avals = ([((len(packed),), "<f8")] if packed else []) + [(tuple(inputs[i].shape), np.dtype(inputs[i].dtype).str)
                                                             for i in rest] + [(v.shape, v.dtype.str) for v in vectors]
    options = _options(graph, outputs)
    key = (source, tuple(avals), tuple(sorted(options.items())))
    with _LOCK:
        executable = _EXECUTABLES.get(key)
        if executable is not None:
            _EXECUTABLES.move_to_end(key)
    if executable is None:
        executable = _compiled(source, src.lowerings, avals, options, settings, ticket)
        with _LOCK:
            _EXECUTABLES[key] = executable
            while len(_EXECUTABLES) > EXECUTABLES_KEPT:
                _EXECUTABLES.popitem(last=False)
    jax = configure(settings)
    offsets = np.cumsum([0] + sizes).tolist()
    layout = None if flat is None else [(a, b, s) for a, b, s in zip(offsets, offsets[1:], flat)]
    stage_at = tuple(j + bool(packed) for j, i in enumerate(rest)
                     if staging.worth_staging(math.prod(inputs[i].shape) * np.dtype(inputs[i].dtype).itemsize))
    return XlaTape(executable, [jax.device_put(v) for v in vectors], source, layout, stage_at,
                   (packed, rest) if packed else None)


def _compiled(source: str, lowerings: dict, avals: list, options: dict, settings, ticket) -> Callable:
    """The executable of ``source``: kept from an earlier process (``xla_store``), or compiled by the
    compile process and kept; loaded here (milliseconds). Compiled here where the graph calls back to
    the host (the compile process says so before compiling)."""
    job = (source, sorted(name[len("_x_"):] for name in lowerings), avals, options)
    kept = xla_store.path(settings, job, xla_flags(settings))
    executable = xla_store.load(kept)
    if executable is None:
        xla_process.start(settings)  # it imports jax while this process does (configure)
    jax = configure(settings)  # before any import of jax's: XLA's flags
    from jax.experimental.serialize_executable import deserialize_and_load

    _load_lapack(jax)
    if executable is not None:
        try:
            return deserialize_and_load(*executable)
        except Exception as e:  # from another jaxlib build: compiled again
            log.warning("kept XLA executable %s does not load (%s); compiling it again", kept, e)
    try:
        answer = xla_process.compile(job, settings, ticket)
    except xla_process.Crashed as e:
        raise NotLowerable(f"tier 2 could not compile the tape: {e}") from None
    if answer[0] == "compiled":
        xla_store.save(kept, answer[1:])
        return deserialize_and_load(*answer[1:])
    if answer[0] == "failed":
        raise NotLowerable(f"tier 2 could not compile the tape: {answer[1]}")
    executable = _jitted(jax, source, lowerings, options)  # "host": its callbacks must be this process's
    try:
        executable.lower(*_shapes(jax, avals)).compile()  # jit's own calls find it compiled
    except Exception as e:  # a lowering that does not trace at these shapes: tier 1 keeps the tape
        raise NotLowerable(f"tier 2 could not compile the tape: {type(e).__name__}: {e}") from e
    return executable


def _load_lapack(jax) -> None:
    """jax loads LAPACK's functions (the custom calls of inv, eigh, svd...) at its first lowering that
    calls one: an executable loaded from the compile process and run before any such lowering here
    crashed (SIGSEGV). One small lowering loads them, once per process."""
    with _LOCK:
        if "lapack" not in _STATE:
            jax.jit(jax.numpy.linalg.inv).lower(jax.ShapeDtypeStruct((2, 2), np.float64))
            _STATE["lapack"] = True


def compile_job(jax, job) -> tuple:
    """In the compile process: ``job`` (``_compiled``'s) traced and compiled. Answers
    ``("compiled", executable, in_tree, out_tree)`` (jax's ``serialize_executable``), ``("host",)``
    where the graph calls back to the host (traced, not compiled: the parent compiles it), or
    ``("failed", why)``. The lowerings are this process's registry's, named by primitive."""
    from jax.experimental.serialize_executable import serialize

    from derivd import ops

    source, prims, avals, options = job
    try:
        _TRACING.host = False
        jitted = _jitted(jax, source, {f"_x_{p}": ops.get(p).xla for p in prims}, options)
        lowered = jitted.lower(*_shapes(jax, avals))
        if _TRACING.host:
            return ("host",)
        return ("compiled", *serialize(lowered.compile()))
    except Exception as e:
        return ("failed", f"{type(e).__name__}: {e}")


def _jitted(jax, source: str, lowerings: dict, options: dict):
    """``source``'s function, jitted with those of ``options`` this XLA knows (not traced yet)."""
    scope = dict(_namespace(jax), **lowerings)
    exec(compile(source, "<derivd xla>", "exec"), scope)  # from the IR only
    return jax.jit(scope["lowered"], compiler_options=_known(jax, options) or None)


def _shapes(jax, avals: list) -> list:
    return [jax.ShapeDtypeStruct(shape, np.dtype(dtype)) for shape, dtype in avals]
