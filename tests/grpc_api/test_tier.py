"""gRPC answers say which compile tier answered, as REST does (``tier`` and Server-Timing): in the
``Timing`` message, over a real socket, for unary calls and session answers, and in the SDK's results."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("jax")

from derivd.config import Settings  # noqa: E402
from derivd.grpc_api import derivd_pb2 as pb  # noqa: E402
from derivd_client.client import Client  # noqa: E402
from derivd_client.grpc_client import GrpcClient  # noqa: E402
from tests.grpc_api.conftest import Stack  # noqa: E402
from tests.grpc_api.wire import arr, fn, unarr  # noqa: E402

DSL = "sum(cos(x) * x)"
X = np.array([0.3, -1.1, 2.0])


def gradient(x):
    return np.cos(x) - x * np.sin(x)


def test_a_new_program_is_answered_by_tier_1_and_says_so():
    """With the default settings (auto, pinned: DERIVD_XLA_TIER=always runs the suite too) tier 1
    answers a never-seen program."""
    with Stack(Settings(host="127.0.0.1", xla_tier="auto")) as s:
        r = s.stub.Gradient(pb.GradientRequest(function=fn(DSL + " + 0.25"), at={"x": arr(X)}))
        np.testing.assert_allclose(unarr(r.gradient["x"]), gradient(X), rtol=1e-14)
        assert r.timing.tier == 1
        body = s.http.post("/v1/gradient", json={"function": {"dsl": DSL + " + 0.25"}, "at": {"x": X.tolist()}}).json()
        assert body["tier"] == r.timing.tier


def test_tier_2_forced_on_is_reported_by_unary_calls_sessions_and_the_sdk():
    with Stack(Settings(host="127.0.0.1", xla_tier="always", xla_cache_dir="")) as s:
        r = s.stub.Gradient(pb.GradientRequest(function=fn(DSL), at={"x": arr(X)}))
        np.testing.assert_allclose(unarr(r.gradient["x"]), gradient(X), rtol=1e-13)
        assert r.timing.tier == 2

        ask = pb.SessionAsk(id=1, kind=pb.SESSION_GRADIENT, x=arr(X + 0.5))
        answers = list(s.stub.Session(iter([pb.SessionRequest(open=pb.SessionOpen(function=fn(DSL), at={"x": arr(X)})),
                                            pb.SessionRequest(ask=ask)])))
        assert answers[0].opened.timing.tier == 2
        np.testing.assert_allclose(unarr(answers[1].answer.gradient), gradient(X + 0.5), rtol=1e-13)
        assert answers[1].answer.timing.tier == 2

        start = pb.HvpStreamStart(function=fn(DSL), at={"x": arr(X)})
        started = next(s.stub.HessianVectorProducts(iter([pb.HvpStreamRequest(start=start)]))).started
        assert started.timing.tier == 2
        np.testing.assert_allclose(unarr(started.gradient["x"]), gradient(X), rtol=1e-13)

        with GrpcClient(s.target) as rpc, Client(s.rest.url) as sdk:
            got, want = rpc.gradient(DSL, x=X), sdk.gradient(DSL, x=X)
        assert got.tier == want.tier == 2
        assert isinstance(got.tier, int) and isinstance(want.tier, int)
        np.testing.assert_allclose(got.gradient["x"], want.gradient["x"], rtol=1e-13)


def test_with_tier_2_off_no_tier_is_reported():
    with Stack(Settings(host="127.0.0.1", xla_tier="off")) as s:
        r = s.stub.Gradient(pb.GradientRequest(function=fn(DSL), at={"x": arr(X)}))
        assert r.timing.tier == 0 and r.timing.compute_ms > 0
        start = pb.HvpStreamStart(function=fn(DSL), at={"x": arr(X)})
        assert next(s.stub.HessianVectorProducts(iter([pb.HvpStreamRequest(start=start)]))).started.timing.tier == 0
        with GrpcClient(s.target) as rpc:
            assert "tier" not in rpc.gradient(DSL, x=X)
