"""A request past its deadline stops between passes (in process, where no worker can be recycled):
the service checks before it starts and every multi-pass engine before each pass, so work stops
soon after the caller has had its 504 instead of running to the end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request, Service
from derivd import clock
from derivd.errors import DeadlineExceeded

SCALAR = "sum(sin(x) * x[::-1]) + sum(x[1:] * x[:-1]) ** 2"
VECTOR = "sin(x) * x[::-1] + x ** 2 / (1 + sum(x ** 2))"
X = np.linspace(-1.0, 1.0, 40)


@pytest.fixture
def service():
    return Service(Settings(forward_chunk_bytes=8 * 40 * 3 * 4))  # a few seeds per pass: many passes


@pytest.mark.parametrize("endpoint,dsl,fields", [
    ("jacobian", VECTOR, {"mode": "forward"}),
    ("jacobian", VECTOR, {"mode": "reverse"}),
    ("jacobian", VECTOR, {"mode": "taylor"}),
    ("hessian", SCALAR, {}),
    ("hessian", SCALAR, {"sparse": True}),
    ("derivatives", SCALAR, {"order": 2}),
    ("gradient", SCALAR, {"mode": "finite"}),
])
def test_the_deadline_stops_a_request_between_two_passes(service, tape_runs, monkeypatch, endpoint, dsl, fields):
    service.compute(endpoint, Request(function={"dsl": dsl}, at={"x": X}, **fields))  # compiled now
    passes = tape_runs["n"]
    assert passes > 2, "the request should take several passes"
    tape_runs["n"] = 0
    ticks = itertools.count()  # a clock that moves one second per look: the deadline passes at the 3rd
    monkeypatch.setattr(clock, "now", lambda: float(next(ticks)))
    late = Request(function={"dsl": dsl}, at={"x": X}, deadline=1.5, **fields)
    with pytest.raises(DeadlineExceeded) as e:
        service.compute(endpoint, late)
    assert e.value.status == 504 and e.value.detail["deadline_s"] == service.settings.request_timeout_s
    assert tape_runs["n"] == 1  # the check on entry, one pass, then the check before the second pass


def test_a_request_queued_past_its_deadline_never_starts(service, tape_runs):
    late = Request(function={"dsl": SCALAR}, at={"x": X}, v={"x": np.ones(40)}, deadline=clock.now() - 1.0)
    with pytest.raises(DeadlineExceeded):
        service.compute("hvp", late)
    assert tape_runs["n"] == 0


def test_a_request_within_its_deadline_is_answered(service):
    req = Request(function={"dsl": VECTOR}, at={"x": X}, mode="forward", deadline=clock.now() + 60)
    jac = np.asarray(service.compute("jacobian", req)[0]["jacobian"])
    assert jac.shape == (40, 40)
