"""Limits on work are enforced before anything runs: a dense answer over max_jacobian_entries, finite
differences over fd_max_evaluations (summed over every FD derivative the answer needs), and verify's
own finite differences, refused with 413 naming the limit while no tape has run."""

from __future__ import annotations

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from derivd.engines import finite
from derivd.engines.finite_answers import options
from derivd.errors import LimitExceeded

VECTOR = "x * sum(x)"  # a dense Jacobian
DIAGONAL = "sin(x) * x"  # a diagonal one
SCALAR = "sum(x ** 3) + sum(x) ** 2"
X = np.linspace(0.1, 1.0, 20)


def refused(service, endpoint, dsl, limit, **fields):
    with pytest.raises(LimitExceeded) as e:
        service.compute(endpoint, Request(function={"dsl": dsl}, at={"x": X}, **fields))
    assert e.value.status == 413 and e.value.detail["limit"] == limit
    return e.value


@pytest.mark.parametrize("mode", ["auto", "forward", "reverse", "taylor", "finite"])
def test_a_dense_jacobian_over_the_entries_limit_is_refused_before_any_pass(tape_runs, mode):
    service = Service(Settings(max_jacobian_entries=399))  # 20 x 20 = 400
    err = refused(service, "jacobian", VECTOR, "max_jacobian_entries", mode=mode)
    assert err.detail["value"] == 400 and "20 x 20" in err.message
    assert tape_runs["n"] == 0


def test_a_sparse_answer_is_held_to_its_nonzeros_not_its_dense_size():
    service = Service(Settings(max_jacobian_entries=399))
    out, _ = service.compute("jacobian", Request(function={"dsl": DIAGONAL}, at={"x": X}, sparse=True))
    np.testing.assert_allclose(out["jacobian"]["values"], np.sin(X) + X * np.cos(X), rtol=1e-14)


def test_an_fd_hessian_counts_its_gradient_in_the_budget(tape_runs):
    opts = options(None)
    hessian_alone = finite.plan_evaluations("hessian", X.size, opts)
    service = Service(Settings(fd_max_evaluations=hessian_alone))  # the Hessian fits, with its gradient not
    err = refused(service, "hessian", SCALAR, "fd_max_evaluations", mode="finite")
    assert err.detail["value"] == hessian_alone + finite.plan_evaluations("gradient", X.size, opts)
    assert tape_runs["n"] == 0


def test_fd_hvps_share_one_budget(tape_runs):
    one = finite.plan_evaluations("hvp", X.size, options(None))
    service = Service(Settings(fd_max_evaluations=3 * one))
    vs = [{"x": np.eye(20)[i]} for i in range(4)]
    err = refused(service, "hvp", SCALAR, "fd_max_evaluations", mode="finite", vs=vs)
    assert err.detail["value"] == 4 * one and "4 hvp" in err.message
    assert tape_runs["n"] == 0


@pytest.mark.parametrize("endpoint,dsl,fields,settings", [
    ("gradient", SCALAR, {}, {"fd_max_evaluations": 20}),
    ("hessian", SCALAR, {}, {"fd_max_evaluations": 20}),
    ("jacobian", DIAGONAL, {"sparse": True}, {"max_jacobian_entries": 399}),  # its check is a dense FD Jacobian
])
def test_verify_is_refused_before_the_answer_it_would_check(tape_runs, endpoint, dsl, fields, settings):
    (limit, _), = settings.items()
    refused(Service(Settings(**settings)), endpoint, dsl, limit, verify=True, **fields)
    assert tape_runs["n"] == 0


@pytest.mark.parametrize("mode", ["auto", "forward", "reverse", "taylor", "finite"])
def test_a_dense_hessian_over_the_entries_limit_is_refused_in_every_mode(tape_runs, mode):
    """A diagonal Hessian at n = 40 (auto mode finds its pattern, then writes it out whole): 1600
    entries over a limit of 1599, refused before any pass; with ``sparse`` its 40 nonzeros fit where
    a mode colours the pattern (Taylor mode and finite differences build the whole matrix)."""
    x = np.linspace(0.1, 1.0, 40)
    service = Service(Settings(max_jacobian_entries=1599))
    with pytest.raises(LimitExceeded) as e:
        service.compute("hessian", Request(function={"dsl": "sum(x ** 3)"}, at={"x": x}, mode=mode))
    assert e.value.status == 413 and e.value.detail["limit"] == "max_jacobian_entries"
    assert e.value.detail["value"] == 1600 and "40 x 40" in e.value.message
    assert tape_runs["n"] == 0
    sparse = Request(function={"dsl": "sum(x ** 3)"}, at={"x": x}, mode=mode, sparse=True)
    if mode in ("taylor", "finite"):
        with pytest.raises(LimitExceeded):
            service.compute("hessian", sparse)
        assert tape_runs["n"] == 0
    else:
        out, _ = service.compute("hessian", sparse)
        rows, cols = np.asarray(out["hessian"]["rows"]), np.asarray(out["hessian"]["cols"])
        np.testing.assert_allclose(out["hessian"]["values"], 6 * x[rows], rtol=1e-13)
        assert (rows == cols).all() and sorted(rows) == list(range(40))
