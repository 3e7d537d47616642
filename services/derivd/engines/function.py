"""A lowered program and its compiled tapes, built once per transform.

``CompiledFunction`` is what the tape cache holds: the IR of one program at one
signature (input shapes and dtypes), and a tape per transform asked of it
(``("jvp", wrt, batch)``, ``("vjp", wrt, batch)``, ...). Transforms append to the
program's graph, so building is serialised by a lock; running a tape is not.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable

import numpy as np

from derivd.compile.codegen import Tape, compile_graph
from derivd.dsl import InputSpec, lower
from derivd.errors import DerivdError


class CompiledFunction:
    def __init__(self, source: str, specs: dict[str, InputSpec], settings):
        t0 = time.perf_counter()
        self.source = source
        self.specs = specs
        self.settings = settings
        self.program = lower(source, specs, settings)
        self.graph = self.program.graph
        self.output = self.program.output
        self._tapes: dict[tuple, Tape] = {}
        self._lock = threading.Lock()
        self.compile_seconds = time.perf_counter() - t0

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.output.shape

    def input_node(self, name: str):
        spec = self.specs[name]
        return self.graph.input(name, spec.shape, spec.dtype, spec.role)

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
            extra, outputs = build()
            params = [n for name, n in self.graph.inputs.items() if n.params[1][1] != "extra"]
            tape = compile_graph(self.graph, params + extra, outputs, name="tape")
            tape.arg_names = [dict(n.params)["name"] for n in params]
            self._tapes[key] = tape
            return tape, time.perf_counter() - t0

    def extra_input(self, name: str, shape: tuple[int, ...]):
        """A tangent/cotangent input of a derivative tape.

        Never a user's name (those can't start with ``__``); the shape is part of the
        name, since tapes of different batch sizes live in the same graph.
        """
        return self.graph.input(f"{name}{list(shape)}", shape, "f8", role="extra")

    def run(self, tape: Tape, values: dict[str, np.ndarray], *extra):
        args = [values[n] for n in tape.arg_names]
        with np.errstate(all="ignore"):
            try:
                return tape.run(*args, *extra)
            except np.linalg.LinAlgError as e:
                raise DerivdError(f"linear algebra failed at this point: {e}", code="linalg_error",
                                  status=422) from None


class FunctionCache:
    """In-process LRU of compiled functions keyed by source hash and signature."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_compile(self, key: tuple, make: Callable[[], CompiledFunction]) -> tuple[CompiledFunction, bool]:
        with self._lock:
            fn = self._items.get(key)
            if fn is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return fn, True
        fn = make()
        with self._lock:
            self.misses += 1
            self._items[key] = fn
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return fn, False
