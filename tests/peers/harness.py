"""Peer agreement: our gradient of a program against a peer AD library's of the same numpy code.

A case is ``Case(dsl, peer, at)``: ``dsl`` is the program in our language, ``peer`` the same
function written for the peer (a callable of the same inputs, in the order of ``at``, taking the
peer's numpy module as its first argument: ``lambda np, x: np.sum(np.cumsum(x) ** 2)``), and ``at``
the point. ``check(case)`` compares our ``/v1/gradient`` (through ``Service.compute``, reverse
mode, and forward mode) with the peer's gradient with respect to every input.

The peer is autograd (a test dependency: pure Python, small); where JAX is also installed, it is
checked too. Each area of the language keeps its cases in its own ``test_*.py`` beside this file,
one line per case; this module holds the one way they are checked.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tests.dsl.support import assert_close, call


@dataclass(frozen=True)
class Case:
    dsl: str
    peer: Callable  # peer(np_module, *inputs) -> scalar
    at: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    rtol: float = 1e-9

    def __str__(self) -> str:  # the test id
        return self.dsl


def _autograd_gradients(case: Case) -> list[np.ndarray]:
    import autograd
    import autograd.numpy as anp

    names = list(case.at)
    values = [np.asarray(case.at[n], dtype=np.float64) for n in names]
    consts = [case.constants[k] for k in case.constants]
    return [np.asarray(autograd.grad(lambda *xs: case.peer(anp, *xs, *consts), i)(*values))
            for i in range(len(names))]


def _jax_gradients(case: Case) -> list[np.ndarray]:
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    values = [jnp.asarray(np.asarray(case.at[n], dtype=np.float64)) for n in case.at]
    consts = [case.constants[k] for k in case.constants]
    grads = jax.grad(lambda *xs: case.peer(jnp, *xs, *consts), argnums=tuple(range(len(values))))(*values)
    return [np.asarray(g) for g in grads]


PEERS = {"autograd": _autograd_gradients}
if importlib.util.find_spec("jax") is not None:
    PEERS["jax"] = _jax_gradients


def check(case: Case) -> None:
    """Our gradients (reverse and forward mode) equal every installed peer's, input by input."""
    at = {k: np.asarray(v, dtype=np.float64) for k, v in case.at.items()}
    ours = {mode: call("gradient", case.dsl, at, case.constants, mode=mode)["gradient"]
            for mode in ("reverse", "forward")}
    for peer, gradients in PEERS.items():
        for name, want in zip(at, gradients(case)):
            for mode, got in ours.items():
                assert_close(got[name], np.reshape(want, np.shape(at[name])), rtol=case.rtol,
                             what=f"d/d{name} of {case.dsl}: ours ({mode}) vs {peer}")
