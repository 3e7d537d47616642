"""What the language tests share: one in-process service, and references that do not use it.

``call`` runs a request through ``Service.compute`` (the path every skin takes).
``check_against_numpy`` compares with ``tests.references.fd_jacobian``, an
8th-order central difference of a *separate numpy implementation* of the same
function: the independent reference the DSL's derivatives are checked against.
``second_order`` builds the Hessian by the transforms directly (jvp of vjp), for
second-order checks that do not depend on which engine the service picks.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from derivd.compile.codegen import compile_graph
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.dsl import InputSpec, lower
from derivd.ops.registry import BOOL, FLOAT, INT, nullary
from derivd.transforms import jvp, vjp
from tests.references import fd_jacobian


@lru_cache(maxsize=1)
def service() -> Service:
    return Service(Settings())


def as_arrays(values: dict | None) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in (values or {}).items()}


def call(endpoint: str, dsl: str, at: dict, constants: dict | None = None, **fields) -> dict:
    """One request through ``Service.compute``; raises the service's DerivdError on refusal."""
    at = {k: np.asarray(v, dtype=np.float64) for k, v in at.items()}
    for key in ("v",):
        if key in fields:
            fields[key] = as_arrays(fields[key])
    response, _ = service().compute(endpoint, Request(function={"dsl": dsl}, at=at, constants=as_arrays(constants),
                                                     **fields))
    return response


def flat_gradient(dsl: str, at: dict, constants: dict | None = None) -> np.ndarray:
    grads = call("gradient", dsl, at, constants)["gradient"]
    return np.concatenate([np.reshape(grads[k], -1) for k in at])


def assert_close(got, want, rtol=1e-6, what=""):
    want = np.asarray(want, dtype=np.float64)
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=rtol * scale, err_msg=what)


def jacobians(dsl: str, at: dict, constants: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Value, forward-mode and reverse-mode Jacobians from the service."""
    fwd = call("jacobian", dsl, at, constants, mode="forward")
    rev = call("jacobian", dsl, at, constants, mode="reverse")
    return np.asarray(fwd["value"]), np.asarray(fwd["jacobian"]), np.asarray(rev["jacobian"])


def check_against_numpy(dsl: str, reference, at: dict, constants: dict | None = None, rtol: float = 1e-6):
    """Value equal to the numpy reference; both Jacobians equal to each other and to its finite differences."""
    value, jf, jr = jacobians(dsl, at, constants)
    consts = as_arrays(constants)
    want = np.reshape(np.asarray(reference(**at, **consts), dtype=np.float64), -1)
    assert_close(value, want, 1e-12, f"{dsl}: value")
    fd = fd_jacobian(lambda **kw: reference(**kw, **consts), at)
    assert_close(jf, fd, rtol, f"{dsl}: forward Jacobian vs finite differences of numpy")
    assert_close(jr, jf, 1e-12, f"{dsl}: reverse vs forward Jacobian")
    return value, jf


# ---------------------------------------------------------------- second order by the transforms


def specs_of(at: dict, constants: dict | None) -> dict[str, InputSpec]:
    specs = {k: InputSpec(np.shape(v), FLOAT, "at") for k, v in at.items()}
    for k, v in as_arrays(constants).items():
        kind = v.dtype.kind
        specs[k] = InputSpec(v.shape, BOOL if kind == "b" else INT if kind in "iu" else FLOAT, "const")
    return specs


class SecondOrder:
    """Value, gradient and Hessian (flat over ``at``) of a one-element program, compiled once for
    the shapes of ``at``: the vjp, then the jvp of it with a batch of identity tangents."""

    def __init__(self, dsl: str, at: dict, constants: dict | None = None, settings: Settings | None = None):
        program = lower(dsl, specs_of(at, constants), settings or Settings())
        g, out = program.graph, program.output
        assert out.size == 1
        xs = [g.input(k, np.shape(v), FLOAT, "at") for k, v in at.items()]
        one = g.const(1.0) if out.shape == () else nullary(out, "ones", shape=out.shape)
        grads = vjp(g, xs, [out], [one])
        grads = [gr if gr is not None else nullary(out, "zeros", shape=x.shape) for gr, x in zip(grads, xs)]
        n = sum(x.size for x in xs)
        tangents = [g.input(f"__t{i}", (n,) + x.shape, FLOAT, "extra") for i, x in enumerate(xs)]
        hess = jvp(g, xs, tangents, grads)
        hess = [h if h is not None else nullary(out, "zeros", shape=(n,) + x.shape) for h, x in zip(hess, xs)]
        self.inputs = [g.inputs[name] for name in g.inputs if not name.startswith("__t")]
        self.tape = compile_graph(g, self.inputs + tangents, [out] + grads + hess)
        self.constants = as_arrays(constants)
        eye, self.seeds, start = np.eye(n), [], 0
        for x in xs:
            self.seeds.append(eye[:, start:start + x.size].reshape((n,) + x.shape))
            start += x.size
        self.n, self.k = n, len(xs)

    def __call__(self, at: dict):
        values = {**{k: np.asarray(v, dtype=np.float64) for k, v in at.items()}, **self.constants}
        with np.errstate(all="ignore"):
            result = self.tape.run(*[values[node.params["name"]] for node in self.inputs], *self.seeds)
        k, n = self.k, self.n
        value = float(np.reshape(result[0], -1)[0])
        gradient = np.concatenate([np.reshape(r, -1) for r in result[1:1 + k]])
        hessian = np.concatenate([np.reshape(r, (n, -1)) for r in result[1 + k:]], axis=1)
        return value, gradient, hessian


def second_order(dsl: str, at: dict, constants: dict | None = None, settings: Settings | None = None):
    return SecondOrder(dsl, at, constants, settings)(at)
