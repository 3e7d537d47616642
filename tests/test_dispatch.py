"""The dispatcher and the endpoint table: one policy for every skin, one row per endpoint."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import ENDPOINTS, Request, Service
from derivd.dispatch import Dispatcher
from derivd.dispatch.pools import FAMILIES, family_of
from derivd.errors import DeadlineExceeded, DerivdError, NotFound
from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api.servicer import UNARY, DifferentiatorServicer
from tests.references import ROSENBROCK, rosenbrock_gradient, rosenbrock_hessian

X = np.array([0.5, -1.2, 2.0])


@pytest.fixture(scope="module")
def dispatcher():
    d = Dispatcher(Service(Settings()))
    yield d
    d.close()


def gradient_request():
    return Request(function={"dsl": ROSENBROCK}, at={"x": X.copy()})


def test_every_row_is_a_grpc_method_with_its_response_message_and_a_family():
    assert {method for method in UNARY} == {row.rpc for row in ENDPOINTS.values()}
    for row in ENDPOINTS.values():
        assert callable(getattr(DifferentiatorServicer, row.rpc))
        assert UNARY[row.rpc] == (row.name, getattr(pb, f"{row.rpc}Response"))
        assert row.family in FAMILIES and family_of(row, "auto") == row.family
        assert family_of(row, "finite") == "finite"


def test_an_endpoint_not_in_the_table_is_a_404_never_a_default(dispatcher):
    for call in (lambda: dispatcher.submit("gradients", gradient_request()),
                 lambda: dispatcher.service.compute("hvp_session", gradient_request())):
        with pytest.raises(NotFound) as e:
            call()
        assert (e.value.status, e.value.code) == (404, "unknown_endpoint")


def test_blocking_and_awaited_submits_answer_alike_and_learn_what_is_quick(dispatcher):
    """The first request of its kind goes to a compute thread; once seen to be quick, it runs inline
    (queue time exactly 0); both entry points give the gradient of the reference."""
    dispatcher.submit("gradient", gradient_request())  # compiled
    key = dispatcher.quick.key(ENDPOINTS["gradient"], gradient_request())
    dispatcher.quick.seconds.clear()  # forgotten: new again
    answer, timings = dispatcher.submit("gradient", gradient_request())
    assert timings.queue > 0 and dispatcher.quick.is_quick(key)
    np.testing.assert_allclose(answer["gradient"]["x"], rosenbrock_gradient(X), rtol=1e-13)
    answer, timings = asyncio.run(dispatcher.submit_async("gradient", gradient_request()))
    assert timings.queue == 0.0
    np.testing.assert_allclose(answer["gradient"]["x"], rosenbrock_gradient(X), rtol=1e-13)


def test_the_request_carries_the_nearer_of_its_budget_and_the_callers_deadline(dispatcher):
    req = gradient_request()
    before = time.monotonic()
    dispatcher.submit("gradient", req, remaining=2.0)
    assert before + 2.0 <= req.deadline <= time.monotonic() + 2.0
    req = gradient_request()
    dispatcher.submit("gradient", req, remaining=10 * dispatcher.settings.request_timeout_s)
    assert req.deadline <= time.monotonic() + dispatcher.settings.request_timeout_s


def test_work_past_its_budget_is_a_504_whether_the_caller_blocks_or_awaits(dispatcher):
    release = threading.Event()
    with pytest.raises(DeadlineExceeded) as e:
        dispatcher.call(0.05, release.wait, 30)
    assert e.value.status == 504 and e.value.detail["deadline_s"] == 0.05

    async def awaited():
        slow = Dispatcher(Service(Settings(request_timeout_s=0.05)))
        slow.quick.limit_s = 0.0  # never inline
        slow.router.in_process.compute = lambda endpoint, req, *plan: (release.wait(30), None)
        try:
            await slow.submit_async("gradient", gradient_request())
        finally:
            slow.close()

    with pytest.raises(DeadlineExceeded):
        asyncio.run(awaited())
    release.set()


def test_an_hvp_stream_answers_as_the_hessian_does_and_refuses_what_cannot_stream(dispatcher):
    stream, queue_s = dispatcher.hvp_stream(gradient_request())
    assert queue_s > 0 and stream.value == pytest.approx(float(np.sum(100 * (X[1:] - X[:-1] ** 2) ** 2
                                                                      + (1 - X[:-1]) ** 2)), rel=1e-14)
    np.testing.assert_allclose(stream.gradient["x"], rosenbrock_gradient(X), rtol=1e-13)
    for v in np.eye(3):
        np.testing.assert_allclose(dispatcher.hvp(stream, {"x": v}, "v")["x"], rosenbrock_hessian(X) @ v, rtol=1e-13)
    refused = [Request(function={"dsl": ROSENBROCK}, at={"x": X.copy()}, mode=mode) for mode in ("taylor", "finite")]
    refused.append(Request(function={"blackbox": "anything"}, at={"x": X.copy()}))
    for req in refused:
        with pytest.raises(DerivdError) as e:
            dispatcher.hvp_stream(req)
        assert (e.value.status, e.value.code) == (422, "unsupported_mode")


def test_a_sessions_asks_reuse_its_compiled_program_in_process_and_go_to_a_workers_pool_untouched(monkeypatch):
    """Asks run here skip resolving and compiling (``Service.compiled`` once, at the first ask), and
    answer as a fresh request does; a family served by a worker pool gets the request as any unary
    call, and the gateway compiles nothing for it."""
    from derivd.grpc_api import convert
    from derivd.grpc_api.session import FunctionSession

    d = Dispatcher(Service(Settings(xla_tier="off")))
    try:
        opening = Request(function={"dsl": ROSENBROCK}, at={"x": X.copy()}, wrt=["x"])
        session = FunctionSession(d, d.service.metrics, opening, None)
        compiles = []
        real_compile = d.service._compile
        monkeypatch.setattr(d.service, "_compile", lambda *args: compiles.append(args) or real_compile(*args))
        rng = np.random.default_rng(5)
        for x in rng.normal(size=(3, 3)):
            answer = session.answer(pb.SessionAsk(kind=pb.SESSION_GRADIENT, x=convert.to_array(x)), None)
            np.testing.assert_allclose(convert.to_numpy(answer.gradient, "g"), rosenbrock_gradient(x), rtol=1e-13)
        assert len(compiles) == 1 and session.compiled is not None  # Service.compiled, once

        class Workers:  # a worker pool for the reverse family: sees each gradient request whole
            seen = []

            def run(self, endpoint, req, family):
                self.seen.append((endpoint, family))
                return d.service.compute(endpoint, req)

            def close(self):
                pass

        remote = FunctionSession(d, d.service.metrics, opening, None)
        d.router.pools["reverse"] = Workers()
        x = rng.normal(size=3)
        answer = remote.answer(pb.SessionAsk(kind=pb.SESSION_GRADIENT, x=convert.to_array(x)), None)
        np.testing.assert_allclose(convert.to_numpy(answer.gradient, "g"), rosenbrock_gradient(x), rtol=1e-13)
        assert Workers.seen == [("gradient", "reverse")] and remote.compiled is None
    finally:
        d.close()


def test_a_kind_is_planned_once_and_each_request_still_checks_its_point(monkeypatch):
    """``Service.compute`` keeps a plan per kind of request: the inputs' specs and ``wrt`` are worked
    out at the first request only, later points answer as the reference does, and what a point
    brings (a misshapen direction) is refused warm exactly as cold."""
    d = Dispatcher(Service(Settings(xla_tier="off")))
    cold = Service(Settings(xla_tier="off"))
    try:
        signatures = []
        real = d.service._signature
        monkeypatch.setattr(d.service, "_signature", lambda *args: signatures.append(args) or real(*args))
        rng = np.random.default_rng(7)
        for x in rng.normal(size=(4, 3)):
            answer, _ = d.submit("gradient", Request(function={"dsl": ROSENBROCK}, at={"x": x}, wrt=["x"]))
            np.testing.assert_allclose(answer["gradient"]["x"], rosenbrock_gradient(x), rtol=1e-13)
        assert len(signatures) == 1
        v = np.array([1.0, -2.0, 0.5])
        answer, _ = d.submit("hvp", Request(function={"dsl": ROSENBROCK}, at={"x": X.copy()}, v={"x": v}))
        np.testing.assert_allclose(answer["hvp"]["x"], rosenbrock_hessian(X) @ v, rtol=1e-13)
        bad = Request(function={"dsl": ROSENBROCK}, at={"x": X.copy()}, v={"x": np.ones(4)})
        refusals = []
        for service in (d.service, cold):
            with pytest.raises(DerivdError) as e:
                service.compute("hvp", bad)
            refusals.append((e.value.status, e.value.code, str(e.value)))
        assert refusals[0] == refusals[1] and refusals[0][:2] == (400, "shape_mismatch")
    finally:
        d.close()


def test_a_kind_refused_by_its_checks_is_refused_every_time():
    """A kind's checks are remembered only once passed: a dense Jacobian over the entries limit, or a
    ``wrt`` naming a constant, is refused at its second request as at its first."""
    service = Service(Settings(xla_tier="off", max_jacobian_entries=4))
    wide = Request(function={"dsl": "x * 2"}, at={"x": np.ones(3)})
    named = Request(function={"dsl": "sum(x * c)"}, at={"x": np.ones(2)}, constants={"c": np.ones(2)}, wrt=["c"])
    for name, req, code in (("jacobian", wide, "limit_exceeded"), ("gradient", named, "invalid_request")):
        for _ in range(2):
            with pytest.raises(DerivdError) as e:
                service.compute(name, req)
            assert e.value.code == code


def test_a_warm_kind_runs_its_bound_answer_at_each_point_and_stops_at_its_deadline():
    """Once a kind of gradient is checked, its requests run the bound answer: each at its own point (the
    analytic gradient), the tape-cache hit still counted; a late one is refused before it runs; the same
    function asked with `verify` or in forward mode is another kind, answered by the whole path."""
    service = Service(Settings(xla_tier="off"))
    d = Dispatcher(service)
    try:
        d.submit("gradient", gradient_request())
        kind = service.kind(ENDPOINTS["gradient"], gradient_request())
        assert service._plans.get(kind).bind is ENDPOINTS["gradient"].bind
        rng = np.random.default_rng(3)
        for _ in range(5):
            x = rng.normal(size=3)
            hits = service.cache.hits
            answer, _ = d.submit("gradient", Request(function={"dsl": ROSENBROCK}, at={"x": x}))
            assert service.cache.hits == hits + 1 and answer["engine"] == "reverse" and "tier" not in answer
            np.testing.assert_allclose(answer["gradient"]["x"], rosenbrock_gradient(x), rtol=1e-13)
        with pytest.raises(DeadlineExceeded):
            d.submit("gradient", gradient_request(), remaining=-1.0)
        for extra in ({"verify": True}, {"mode": "forward"}):
            for _ in range(2):
                answer, _ = d.submit("gradient", Request(function={"dsl": ROSENBROCK}, at={"x": X.copy()}, **extra))
                np.testing.assert_allclose(answer["gradient"]["x"], rosenbrock_gradient(X), rtol=1e-13)
            assert ("verification" in answer) == ("verify" in extra)
            assert answer["engine"] == ("forward" if "mode" in extra else "reverse")
    finally:
        d.close()
