"""API keys (401), the per-key rate limit (429) and the limit on failed authentications, over REST
and gRPC, with a real Redis, without, and with one the test pauses (SIGSTOP)."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import grpc
import pytest
import redis

from derivd.auth import AccessControl, RateLimited, Unauthorized
from derivd.breaker import Breaker
from derivd.config import Settings
from derivd.grpc_api import derivd_pb2 as pb
from tests.support import free_port
from tests.grpc_api.conftest import Stack
from tests.grpc_api.wire import arr, fn

BODY = {"function": {"dsl": "x * 3"}, "at": {"x": 2.0}}


def settings(**kw) -> Settings:
    return Settings(host="127.0.0.1", **kw)


def test_keys_compared_against_all_configured():
    access = AccessControl(settings(api_keys=["alpha", "beta"]))
    access.check("beta", "c")
    access.check("alpha", "c")
    for wrong in (None, "", "alph", "alphaa", "BETA"):
        with pytest.raises(Unauthorized):
            access.check(wrong, "c")


def test_open_service_limits_per_client():
    access = AccessControl(settings(rate_limit_requests=2, rate_limit_window_s=60))
    access.check(None, "10.0.0.1")
    access.check(None, "10.0.0.1")
    with pytest.raises(RateLimited) as e:
        access.check(None, "10.0.0.1")
    assert e.value.detail["max"] == 2 and 0 < e.value.detail["retry_after_s"] <= 60
    access.check(None, "10.0.0.2")  # another client has its own count


def test_rest_api_key_401_and_open_paths():
    with Stack(settings(api_keys=["s3cret"])) as s:
        for headers in ({}, {"X-API-Key": "wrong"}):
            r = s.http.post("/v1/evaluate", json=BODY, headers=headers)
            assert r.status_code == 401
            err = r.json()["error"]
            assert err["code"] == "unauthorized" and "X-API-Key" in err["message"]
        r = s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 200 and r.json()["value"] == 6.0
        for path in ("/healthz", "/readyz", "/metrics"):
            assert s.http.get(path).status_code == 200
        assert 'derivd_access_denied_total{reason="unauthorized"} 2.0' in s.http.get("/metrics").text


def test_rest_rate_limit_429_in_memory():
    with Stack(settings(api_keys=["k1", "k2"], rate_limit_requests=3, rate_limit_window_s=300)) as s:
        codes = [s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": "k1"}).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": "k1"})
        err = r.json()["error"]
        assert err["code"] == "rate_limited" and err["detail"]["limit"] == "rate_limit_requests"
        assert err["detail"]["max"] == 3 and "3 requests per 300 s" in err["message"]
        wait = int(r.headers["retry-after"])  # whole seconds, never shorter than the body's
        assert 0 < wait <= 300 and wait >= err["detail"]["retry_after_s"]
        assert s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": "k2"}).status_code == 200


def test_grpc_api_key_and_rate_limit():
    with Stack(settings(api_keys=["g1"], rate_limit_requests=2, rate_limit_window_s=300)) as s:
        req = pb.EvaluateRequest(function=fn("x * 3"), at={"x": arr(2.0)})
        with pytest.raises(grpc.RpcError) as e:
            s.stub.Evaluate(req)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert dict(e.value.trailing_metadata())["derivd-code"] == "unauthorized"
        key = [("x-api-key", "g1")]
        assert s.stub.Evaluate(req, metadata=key).value.data == arr(6.0).data
        msgs = iter([pb.HvpStreamRequest(start=pb.HvpStreamStart(function=fn("x**2"), at={"x": arr(1.0)}))])
        assert len(list(s.stub.HessianVectorProducts(msgs, metadata=key))) == 1  # the stream counts too
        with pytest.raises(grpc.RpcError) as e:
            s.stub.Evaluate(req, metadata=key)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(e.value.trailing_metadata())["derivd-code"] == "rate_limited"
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        health = health_pb2_grpc.HealthStub(s.channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # open without a key


def test_rate_limit_shared_through_redis(shared_redis_url):
    """Two gateways (two AccessControl objects) count one key's requests together, in Redis."""
    key = "key-" + uuid.uuid4().hex
    cfg = settings(api_keys=[key], rate_limit_requests=3, rate_limit_window_s=300, redis_url=shared_redis_url)
    a, b = AccessControl(cfg), AccessControl(cfg)
    assert a.uses_redis and b.uses_redis
    a.check(key, "x")
    b.check(key, "y")
    a.check(key, "x")
    with pytest.raises(RateLimited):
        b.check(key, "y")
    stored = redis.Redis.from_url(shared_redis_url).keys("derivd:ratelimit:*")
    assert stored and not any(key.encode() in k for k in stored)  # the key itself never reaches Redis


def test_rest_rate_limit_with_redis(shared_redis_url):
    key = "rest-" + uuid.uuid4().hex
    with Stack(settings(api_keys=[key], rate_limit_requests=2, rate_limit_window_s=300,
                        redis_url=shared_redis_url)) as s:
        codes = [s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": key}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_redis_unreachable_falls_back_to_local_count():
    port = free_port()
    with socket.socket():
        pass
    access = AccessControl(settings(rate_limit_requests=1, rate_limit_window_s=60,
                                    redis_url=f"redis://127.0.0.1:{port}/0"))
    access.check(None, "c")  # Redis refuses the connection: counted here, the request goes on
    with pytest.raises(RateLimited):
        access.check(None, "c")



def test_paused_redis_fails_fast_to_the_local_count_which_continues_the_shared_one(own_redis):
    """Redis paused mid-window: requests do not wait a timeout each (one timeout opens the breaker),
    the local count starts where Redis left off (4 more of 10, not 10 more), and once Redis is back
    the requests counted locally are in the shared count every gateway reads."""
    key = "paused-" + uuid.uuid4().hex
    cfg = settings(api_keys=[key], rate_limit_requests=10, rate_limit_window_s=3600, redis_url=own_redis.url)
    access = AccessControl(cfg)
    for _ in range(6):
        access.check(key, "c")
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    admitted, slow, started = 0, 0, time.perf_counter()
    for _ in range(30):
        t0 = time.perf_counter()
        try:
            access.check(key, "c")
            admitted += 1
        except RateLimited as e:
            assert e.detail["limit"] == "rate_limit_requests" and e.detail["value"] > 10
        slow += time.perf_counter() - t0 > 0.05
    elapsed = time.perf_counter() - started
    assert admitted == 4, admitted
    assert slow <= 1 and elapsed < 0.5, (slow, elapsed)  # one timeout (0.1 s), not thirty
    os.kill(own_redis.proc.pid, signal.SIGCONT)
    time.sleep(cfg.redis_retry_backoff_s + 0.1)  # past the breaker's backoff: the next request probes
    with pytest.raises(RateLimited):
        access.check(key, "c")
    shared = [int(v) for v in (redis.Redis.from_url(own_redis.url).get(k)
                               for k in redis.Redis.from_url(own_redis.url).keys("derivd:ratelimit:*"))]
    assert len(shared) == 1 and shared[0] >= 6 + 30 + 1, shared
    with pytest.raises(RateLimited):
        AccessControl(cfg).check(key, "d")  # another gateway reads the whole count


def test_breaker_fails_fast_then_lets_one_probe_through_and_backs_off():
    breaker = Breaker("test", backoff_s=0.05, max_backoff_s=0.15)
    assert breaker.allow()
    breaker.failed(TimeoutError("paused"))
    assert not breaker.allow()
    time.sleep(0.06)
    assert breaker.allow() and not breaker.allow()  # one probe at a time
    breaker.failed(TimeoutError("still paused"))  # the probe failed: 0.1 s now
    time.sleep(0.06)
    assert not breaker.allow()
    time.sleep(0.05)
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.allow() and breaker.allow()  # closed: every call goes through


def test_failed_authentications_are_limited_per_client_before_any_key_is_checked():
    access = AccessControl(settings(api_keys=["right"], auth_failures_max=3, auth_failures_window_s=3600))
    for wrong in (None, "guess1", "guess2"):
        with pytest.raises(Unauthorized):
            access.check(wrong, "10.0.0.9")
    with pytest.raises(RateLimited) as e:
        access.check("guess3", "10.0.0.9")
    assert e.value.detail["limit"] == "auth_failures_max" and 0 < e.value.detail["retry_after_s"] <= 3600
    with pytest.raises(RateLimited):
        access.check("right", "10.0.0.9")  # even a right guess now: no oracle for the guesser
    access.check("right", "10.0.0.10")  # other clients are not affected
    with pytest.raises(Unauthorized):
        access.check("wrong", "10.0.0.10")


def test_rest_failed_authentications_get_429_with_retry_after(shared_redis_url):
    """Counted in Redis, so a second gateway refuses the client too."""
    cfg = settings(api_keys=["s3cret"], auth_failures_max=2, auth_failures_window_s=3600,
                   redis_url=shared_redis_url, redis_key_prefix="auth-" + uuid.uuid4().hex)
    with Stack(cfg) as s:
        codes = [s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": f"guess{i}"}).status_code
                 for i in range(3)]
        assert codes == [401, 401, 429]
        r = s.http.post("/v1/evaluate", json=BODY, headers={"X-API-Key": "s3cret"})
        assert r.status_code == 429 and r.json()["error"]["detail"]["limit"] == "auth_failures_max"
        assert 0 < int(r.headers["retry-after"]) <= 3600
        assert 'derivd_access_denied_total{reason="rate_limited"} 2.0' in s.http.get("/metrics").text
    other_gateway = AccessControl(cfg)
    with pytest.raises(RateLimited):
        other_gateway.check("guess-again", "127.0.0.1")
