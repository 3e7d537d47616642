"""A lowered program and its compiled tapes, built once per transform.

``CompiledFunction`` is what the tape cache holds: the IR of one program at one
signature (input shapes and dtypes), and a tape per transform asked of it
(``("jvp", wrt, batch)``, ``("vjp", wrt, batch)``, ...). Transforms append to the
program's graph, so building is serialised by a lock; running a tape is not.

With a shared tape cache (``derivd.cache.TapeCache`` with Redis), the lowered
program and each transform's graph are looked up there before being built
here, and stored after: a function another process compiled costs only code
generation from its verified graph (``load_or_lower``, ``CompiledFunction.tape``).

Each tape is a ``TieredTape`` (engines/tiers.py) when tier 2 is on: numpy
answers first, XLA takes over once the tape is hot.
"""

from __future__ import annotations

import threading
import time
from functools import cached_property
from typing import Callable

import numpy as np

from derivd.compile.codegen import Tape, compile_graph
from derivd.dsl import InputSpec, Program, lower
from derivd.engines import tiers
from derivd.engines.common import Wrt
from derivd.errors import DerivdError
from derivd.ir.cost import graph_flops


WRT_KEPT = 64  # wrt tuples (and bound endpoints) kept per function (a caller cycling through more only rebuilds them)


class CompiledFunction:
    def __init__(self, source: str, specs: dict[str, InputSpec], settings, program: Program | None = None,
                 shared=None, key=None):
        """``program``: the lowered program if already at hand (rebuilt from a shared graph), else
        ``source`` is lowered here; ``shared``/``key``: the tape cache and this function's ``TapeKey``."""
        t0 = time.perf_counter()
        self.source = source
        self.specs = specs
        self.settings = settings
        self.program = program or lower(source, specs, settings)
        self.graph = self.program.graph
        self.output = self.program.output
        self.shared, self.key = shared, key
        self._tapes: dict[tuple, Tape] = {}
        self._wrts: dict[tuple, Wrt] = {}
        self._bound: dict[tuple, Callable] = {}
        self._lock = threading.Lock()
        self.compile_seconds = time.perf_counter() - t0

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.output.shape

    @cached_property
    def program_nodes(self) -> list:
        """The program's own live nodes (the output's ancestors): fixed once lowered, while
        transforms keep growing the graph. Sparsity checks read them per request."""
        return self.graph.live_nodes([self.output])

    @cached_property
    def flops(self) -> int:
        """``ir.cost``'s floor of one evaluation's floating-point operations (checked per request
        against ``max_program_flops``; fixed once lowered, so counted once)."""
        return graph_flops(self.program_nodes)

    @cached_property
    def widest_node_bytes(self) -> int:
        """Bytes of the program's widest intermediate: what batched passes are sized by. A loop's
        counts as the states its vjp keeps, one per iteration (count x its carried values)."""
        def width(n) -> int:
            if n.prim == "loop":
                p = n.params
                return 8 * p["count"] * sum(max(1, c.size) for c in p["body"].carried)
            return 8 * max(1, n.size)

        return max((width(n) for n in self.program_nodes), default=8)

    def wrt(self, names) -> Wrt:
        """The differentiated inputs ``names`` with their slots, built once per tuple of names (every
        request of a warm kind asks for the same); at most ``WRT_KEPT`` tuples are kept."""
        key = tuple(names)
        found = self._wrts.get(key)
        if found is None:
            if len(self._wrts) >= WRT_KEPT:
                self._wrts.clear()
            found = self._wrts[key] = Wrt(self, key)
        return found

    def bound(self, key: tuple, bind: Callable[..., Callable], *args) -> tuple[Callable, float]:
        """``bind(*args)`` made once per ``key`` (an endpoint bound to this function and its ``wrt``: its
        tapes and checks looked up once, ``core.derivatives.bound_gradient``) and kept here, so that it
        lives and goes with the function in the tape cache; and the seconds making it took now (0 once
        made: a tape compiled for it counts as compile time)."""
        found = self._bound.get(key)
        if found is not None:
            return found, 0.0
        t0 = time.perf_counter()
        found = bind(*args)
        if len(self._bound) >= WRT_KEPT:
            self._bound.clear()
        self._bound[key] = found
        return found, time.perf_counter() - t0

    def input_node(self, name: str):
        spec = self.specs[name]
        return self.graph.input(name, spec.shape, spec.dtype, spec.role)

    def eval_tape(self):
        """The program itself (no transform): ``(tape, compile seconds now)``."""
        return self.tape(("eval",), lambda: ([], [self.output]))

    def tape(self, key: tuple, build: Callable[[], tuple[list, list]]) -> tuple[Tape, float]:
        """The tape for ``key`` and the seconds spent compiling it now (0 on a hit).

        ``build()`` appends the transform to the graph and returns
        ``(extra_inputs, outputs)``; the tape takes the program's inputs in
        ``self.graph.inputs`` order first, then the extra inputs.
        """
        tape = self._tapes.get(key)
        if tape is not None:
            return tape, 0.0
        with self._lock:
            tape = self._tapes.get(key)
            if tape is not None:
                return tape, 0.0
            t0 = time.perf_counter()
            loaded = self.shared.load(self.key.with_transform(key)) if self.shared is not None else None
            if loaded is not None:
                graph, inputs, outputs = loaded
                params = [n for n in inputs if n.params["role"] != "extra"]
                tape = compile_graph(graph, inputs, outputs, name="tape")
            else:
                extra, outputs = build()
                params = [n for name, n in self.graph.inputs.items() if n.params["role"] != "extra"]
                graph, inputs = self.graph, params + extra
                tape = compile_graph(graph, inputs, outputs, name="tape")
                if self.shared is not None:
                    self.shared.store(self.key.with_transform(key), self.graph, params + extra, outputs)
            if tiers.enabled(self.settings):
                tape = tiers.TieredTape(tape, graph, inputs, outputs, self.settings)
            tape.arg_names = [n.params["name"] for n in params]
            self._tapes[key] = tape
            return tape, time.perf_counter() - t0

    def extra_input(self, name: str, shape: tuple[int, ...]):
        """A tangent/cotangent input of a derivative tape.

        Never a user's name (those can't start with ``__``); the shape is part of the
        name, since tapes of different batch sizes live in the same graph.
        """
        return self.graph.input(f"{name}{list(shape)}", shape, "f8", role="extra")

    def run(self, tape: Tape, values: dict[str, np.ndarray], *extra):
        try:
            return _quietly(tape.run, [values[n] for n in tape.arg_names], extra)
        except np.linalg.LinAlgError as e:
            raise DerivdError(f"linear algebra failed at this point: {e}", code="linalg_error",
                              status=422) from None


@np.errstate(all="ignore")  # as a decorator, numpy's own wrapper: half the cost of a `with` block each run
def _quietly(run, args: list, extra: tuple):
    """A tape's run, its floating-point warnings silenced (an inf or nan is an answer, not an error)."""
    return run(*args, *extra)


def load_or_lower(source: str, specs: dict[str, InputSpec], settings, cache, key) -> CompiledFunction:
    """The function ``source`` at ``specs``: its lowered program rebuilt from ``cache``'s shared level
    when some process lowered it already, else lowered here and shared under ``key``."""
    loaded = cache.load(key)
    if loaded is not None:
        graph, _, (output,) = loaded
        return CompiledFunction(source, specs, settings, Program(graph, output, list(graph.inputs)), cache, key)
    fn = CompiledFunction(source, specs, settings, shared=cache, key=key)
    cache.store(key, fn.graph, list(fn.graph.inputs.values()), [fn.output])
    return fn
