"""The tape cache against a real Redis: shared between services, signed, and never in the way.

Two ``Service`` objects are two gateways here: each has its own in-process
level and its own Redis client, and they share only what Redis holds.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pytest
import redis

from derivd import __version__, clock
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.errors import NotFound
from tests.cache.conftest import PROGRAM, analytic_gradient, check_gradient, gradient, shared_settings

X = [0.3, -1.2, 2.0]


def redis_counts(service) -> tuple[int, int, int]:
    t = service.cache.stats.totals
    return t["redis", "hit"], t["redis", "miss"], t["redis", "rejected"]


def keys(url: str, prefix: str) -> dict[str, bytes]:
    r = redis.Redis.from_url(url)
    return {k.decode(): r.get(k) for k in r.scan_iter(f"{prefix}:*")}


def test_a_second_gateway_reuses_the_tapes_the_first_compiled(settings, prefix):
    first, second = Service(settings), Service(settings)
    check_gradient(gradient(first, PROGRAM, X), X)
    assert redis_counts(first) == (0, 2, 0)  # the lowered program and its gradient tape: both missing

    check_gradient(gradient(second, PROGRAM, X), X)
    assert redis_counts(second) == (2, 0, 0)  # both come from Redis: nothing lowered or transformed here
    assert second.metrics.render().count(b'derivd_tape_cache_hits_total{level="redis"} 2.0') == 1

    check_gradient(gradient(second, PROGRAM, [1.0, 0.5, -0.25]), [1.0, 0.5, -0.25])
    assert redis_counts(second) == (2, 0, 0)  # the local level answers from now on
    assert second.cache.hits == 1


def test_entries_are_readable_keys_with_a_ttl(settings, prefix):
    gradient(Service(settings), PROGRAM, X)
    stored = keys(settings.redis_url, prefix)
    prog = hashlib.sha256(PROGRAM.encode()).hexdigest()[:32]
    base = f"{prefix}:tape:v{__version__}:prog={prog}:sig=x:f8[3]"
    assert sorted(stored) == [f"{base}:xf=lower", f"{base}:xf=vjp([x];-)"]
    r = redis.Redis.from_url(settings.redis_url)
    for key in stored:
        assert 0 < r.ttl(key) <= settings.tape_ttl_s
    assert all(b"derivd-graph/1" in value for value in stored.values())


@pytest.mark.parametrize("which,where", [("vjp", 0), ("vjp", -5), ("lower", 40), ("lower", -2)])
def test_a_tampered_entry_is_refused_counted_and_compiled_again(settings, prefix, which, where, caplog):
    gradient(Service(settings), PROGRAM, X)
    r = redis.Redis.from_url(settings.redis_url)
    (key,) = [k for k in keys(settings.redis_url, prefix) if k.endswith(f"xf={which}" if which == "lower"
                                                                            else ":xf=vjp([x];-)")]
    entry = bytearray(r.get(key))
    entry[where] ^= 0x20  # one flipped bit, in the MAC (0) or in the graph
    r.set(key, bytes(entry), keepttl=True)

    victim = Service(settings)
    with caplog.at_level(logging.WARNING, logger="derivd.cache"):
        check_gradient(gradient(victim, PROGRAM, X), X)
    assert redis_counts(victim) == (1, 0, 1)
    assert any("refused" in rec.getMessage() and key in rec.getMessage() for rec in caplog.records)
    assert r.get(key) != bytes(entry)  # compiled again and written back whole

    check_gradient(gradient(Service(settings), PROGRAM, X), X)


def test_a_valid_entry_moved_under_another_key_is_refused(settings, prefix):
    gradient(Service(settings), PROGRAM, X)
    gradient(Service(settings), "sum(x ** 3)", X)
    stored = keys(settings.redis_url, prefix)

    def vjp_key(source):
        prog = hashlib.sha256(source.encode()).hexdigest()[:32]
        return next(k for k in stored if f"prog={prog}" in k and k.endswith(":xf=vjp([x];-)"))

    r = redis.Redis.from_url(settings.redis_url)
    r.set(vjp_key(PROGRAM), stored[vjp_key("sum(x ** 3)")], keepttl=True)  # the cube's gradient as ours

    victim = Service(settings)
    check_gradient(gradient(victim, PROGRAM, X), X)
    assert redis_counts(victim) == (1, 0, 1)


def test_without_an_hmac_key_nothing_is_shared(shared_redis_url, prefix, caplog):
    with caplog.at_level(logging.WARNING, logger="derivd.cache"):
        service = Service(Settings(redis_url=shared_redis_url, redis_key_prefix=prefix))
    assert any("tape_cache_hmac_key" in rec.getMessage() for rec in caplog.records)
    check_gradient(gradient(service, PROGRAM, X), X)
    assert keys(shared_redis_url, prefix) == {}


def test_stored_functions_resolve_on_any_gateway(settings, prefix):
    first, second = Service(settings), Service(settings)
    stored = first.register_function("sum(a * x ** 2)", {"a": np.array([1.0, 2.0, 3.0])})
    response, _ = second.compute("gradient", Request(function={"id": stored.id}, at={"x": np.array(X)}))
    np.testing.assert_allclose(response["gradient"]["x"], 2 * np.array([1.0, 2.0, 3.0]) * X, rtol=1e-14)
    assert second.get_function(stored.id).inputs == ["a", "x"]
    r = redis.Redis.from_url(settings.redis_url)
    assert 0 < r.ttl(f"{prefix}:function:{stored.id}") <= settings.function_ttl_s

    with pytest.raises(NotFound):
        second.get_function("0" * 32)
    key = f"{prefix}:function:{stored.id}"
    r.set(key, r.get(key).replace(b"sum(a", b"prod(a"), keepttl=True)
    with pytest.raises(NotFound):  # a tampered program is no program
        Service(settings).get_function(stored.id)


def test_redis_down_then_back_requests_go_on_and_hits_resume(own_redis, prefix, monkeypatch):
    settings = shared_settings(own_redis.url, prefix)
    first, second = Service(settings), Service(settings)

    def both(k: int, x):
        """f + k * sum(x) on each gateway, checked against the analytic gradient."""
        for service in (first, second):
            response = gradient(service, f"{PROGRAM} + {k}.0 * sum(x)", x)
            value, grad = analytic_gradient(np.asarray(x))
            np.testing.assert_allclose(response["value"], value + k * np.sum(x), rtol=1e-13)
            np.testing.assert_allclose(response["gradient"]["x"], grad + k, rtol=1e-12, atol=1e-14)

    both(0, X)
    assert redis_counts(second) == (2, 0, 0)

    own_redis.stop()
    both(1, X)  # a new program: each gateway compiles it; Redis is refused, then skipped
    assert not first.cache.redis.available and not second.cache.redis.available
    assert redis_counts(second)[0] == 2
    both(0, [0.1, 0.2, 0.3])  # known programs: the local level, as always

    own_redis.start()
    later = clock.now() + 10.0  # past the longest backoff (0.4 s): the clock moves, nobody sleeps
    monkeypatch.setattr(clock, "now", lambda: later)
    both(2, X)
    assert redis_counts(second)[0] == 4  # hits resume: the second gateway reused what the first stored
    assert first.cache.redis.available


def test_a_slow_redis_costs_a_short_timeout_not_the_request(own_redis, prefix):
    settings = shared_settings(own_redis.url, prefix, redis_retry_backoff_s=2.0, redis_retry_backoff_max_s=2.0)
    service = Service(settings)
    check_gradient(gradient(service, PROGRAM, X), X)  # connected, warm
    redis.Redis.from_url(own_redis.url).execute_command("CLIENT", "PAUSE", 600_000, "ALL")
    response = gradient(service, "sum(x ** 2)", X)
    np.testing.assert_allclose(response["gradient"]["x"], 2 * np.array(X), rtol=1e-15)
    with pytest.raises(redis.TimeoutError):  # answered while Redis still holds every command
        redis.Redis.from_url(own_redis.url, socket_timeout=0.2).ping()
    assert not service.cache.redis.available


def test_a_graph_with_no_json_form_stays_local(settings, prefix, monkeypatch):
    from derivd.ir import serialize

    def no_json_form(*args, **kwargs):
        raise TypeError("param value <object> of type object has no JSON form")

    monkeypatch.setattr(serialize, "dumps", no_json_form)
    service = Service(settings)
    check_gradient(gradient(service, PROGRAM, X), X)
    assert keys(settings.redis_url, prefix) == {}
    assert redis_counts(service) == (0, 2, 0)
