"""Registrations: in memory, in the data directory and in a real Redis, with the SSRF check on register; entries in Redis
are signed and their headers encrypted, and a tampered entry is refused, never served."""

import logging
import uuid

import numpy as np

import pytest
import redis
from pydantic import SecretStr, ValidationError

from derivd.blackbox import (BlackBoxRefused, BlackBoxSpec, LocalRegistry, MemoryRegistry, RedisRegistry,
                             make_registry)
from derivd.cache import LocalStore
from derivd.config import Settings, get_settings
from derivd.core import Request, Service
from derivd.errors import DerivdError, NotFound

KEY = "registry-test-hmac-key-0123456789abcdef"


def spec(name="sim", url="http://127.0.0.1:9/f", **extra) -> BlackBoxSpec:
    return BlackBoxSpec(name=name, url=url, input_size=3, output_size=2, **extra)


@pytest.fixture
def redis_key(redis_url):
    """A key of our own, so tests never touch anyone else's registrations."""
    key = f"derivd:test:{uuid.uuid4().hex}:blackboxes"
    yield key
    redis.Redis.from_url(redis_url).delete(key)


@pytest.fixture
def signed_settings(local_settings) -> Settings:
    """The local black box admitted, and an HMAC key to sign registrations in Redis with."""
    return local_settings.model_copy(update={"tape_cache_hmac_key": SecretStr(KEY)})


@pytest.fixture(params=["memory", "local", "redis"])
def registry(request, signed_settings, tmp_path):
    if request.param == "memory":
        return MemoryRegistry(signed_settings)
    if request.param == "local":  # the data directory's SQLite store (cache/local_store.py)
        return LocalRegistry(LocalStore(str(tmp_path), 2**20), signed_settings)
    return RedisRegistry(
        request.getfixturevalue("redis_url"), signed_settings, key=request.getfixturevalue("redis_key")
    )


def test_register_get_list_delete(registry):
    a = registry.register(spec("a", headers={"Authorization": "Bearer s3cret"}))
    registry.register(spec("b", batch=True, timeout_s=2.5, max_concurrency=4))
    assert registry.get("a") == a and registry.get("a").headers == {"Authorization": "Bearer s3cret"}
    assert [s.name for s in registry.list()] == ["a", "b"]
    assert registry.get("b").batch and registry.get("b").max_concurrency == 4
    registry.delete("a")
    assert [s.name for s in registry.list()] == ["b"]
    with pytest.raises(NotFound) as info:
        registry.get("a")
    assert info.value.status == 404 and "'a'" in info.value.message
    with pytest.raises(NotFound, match="'a'"):
        registry.delete("a")


def test_register_replaces(registry):
    registry.register(spec("a", timeout_s=1))
    registry.register(spec("a", timeout_s=2))
    assert registry.get("a").timeout_s == 2 and len(registry.list()) == 1


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/f", "file:///etc/passwd"]
)
def test_refused_urls_are_never_stored(registry, url):
    with pytest.raises(BlackBoxRefused) as info:
        registry.register(spec(url=url))
    assert info.value.status == 403 and info.value.code == "blackbox_refused"
    assert registry.list() == []


def test_default_settings_refuse_loopback():
    with pytest.raises(BlackBoxRefused, match="127.0.0.1"):
        MemoryRegistry(Settings()).register(spec())


def test_redis_registrations_survive_a_restart(redis_url, redis_key, signed_settings):
    first = RedisRegistry(redis_url, signed_settings, key=redis_key)
    first.register(spec("kept", headers={"X-Api-Key": "k"}))
    again = RedisRegistry(redis_url, signed_settings, key=redis_key)  # a new gateway process
    assert again.get("kept") == spec("kept", headers={"X-Api-Key": "k"})
    again.delete("kept")
    assert first.list() == []


def test_unreachable_redis_is_a_clear_503(local_settings, closed_port):
    registry = RedisRegistry(f"redis://127.0.0.1:{closed_port}/0", local_settings, socket_timeout_s=0.5)
    with pytest.raises(DerivdError) as info:
        registry.list()
    assert info.value.status == 503 and info.value.code == "registry_unavailable"


def test_make_registry_picks_redis_when_configured(redis_url, tmp_path):
    store = LocalStore(str(tmp_path), 2**20)
    assert isinstance(make_registry(Settings(redis_url=redis_url), store), RedisRegistry)
    assert isinstance(make_registry(Settings(redis_url=None), store), LocalRegistry)
    assert isinstance(make_registry(Settings(redis_url=None)), MemoryRegistry)


def test_headers_are_never_echoed():
    s = spec(headers={"Authorization": "Bearer s3cret"})
    assert "headers" not in s.public() and "s3cret" not in repr(s) and "s3cret" not in str(s)
    assert s.public() == {
        "name": "sim", "url": "http://127.0.0.1:9/f", "input_size": 3, "output_size": 2,
        "batch": False, "timeout_s": 10.0, "max_concurrency": get_settings().blackbox_default_max_concurrency,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "has space"},
        {"name": "../etc"},
        {"input_size": 0},
        {"timeout_s": 0},
        {"timeout_s": 10_000},
        {"max_concurrency": 0},
        {"headers": {"Host": "evil"}},
        {"headers": {"X-A": "a\r\nInjected: 1"}},
        {"extra": 1},
    ],
)
def test_spec_bounds(fields):
    with pytest.raises(ValidationError):
        BlackBoxSpec(**{"name": "ok", "url": "http://x/", "input_size": 1, "output_size": 1, **fields})


def raw_entry(redis_url: str, key: str, name: str) -> bytes:
    return redis.Redis.from_url(redis_url).hget(key, name)


def test_redis_entries_are_signed_and_hold_no_credential_in_clear(redis_url, redis_key, signed_settings):
    registry = RedisRegistry(redis_url, signed_settings, key=redis_key)
    registry.register(spec("a", headers={"Authorization": "Bearer s3cret-token"}))
    entry = raw_entry(redis_url, redis_key, "a")
    assert b"s3cret" not in entry and b"Bearer" not in entry and b"Authorization" not in entry
    assert registry.get("a").headers == {"Authorization": "Bearer s3cret-token"}
    registry.register(spec("a", headers={"Authorization": "Bearer s3cret-token"}))
    assert raw_entry(redis_url, redis_key, "a") != entry  # a fresh nonce: equal secrets look different


@pytest.fixture
def redis_writer(redis_url, redis_key):
    """Someone who can write to Redis but does not hold the HMAC key."""
    return redis.Redis.from_url(redis_url)


def tampered_with(entry: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and entry.count(old) == 1
    return entry.replace(old, new)


def test_a_url_rewritten_in_redis_is_refused_and_logged_never_served(
        server, redis_url, redis_key, signed_settings, redis_writer, caplog):
    """The attack of the hostile run: the URL of a registered name rewritten in Redis. The entry
    is refused (a clear error, logged) and nothing reaches either URL."""
    prefix = redis_key.removesuffix(":blackboxes")
    service = Service(signed_settings.model_copy(update={"redis_url": redis_url, "redis_key_prefix": prefix}))
    service.register_blackbox({"name": "sim", "url": server.url("/f"), "input_size": 2, "output_size": 2})
    x = np.array([0.3, 0.7])
    value = service.compute("evaluate", Request(function={"blackbox": "sim"}, at={"x": x}))[0]["value"]
    np.testing.assert_allclose(value, [x @ x, np.sin(x).prod()], rtol=1e-12)
    entry = raw_entry(redis_url, redis_key, "sim")
    redis_writer.hset(redis_key, "sim", tampered_with(entry, b"/f", b"/g"))
    server.reset()
    with caplog.at_level(logging.ERROR, logger="derivd.blackbox"):
        with pytest.raises(DerivdError) as info:
            service.compute("evaluate", Request(function={"blackbox": "sim"}, at={"x": x}))
        assert service.list_blackboxes() == []
    assert info.value.code == "registry_tampered" and "'sim'" in info.value.message
    assert "signature" in info.value.message and "register it again" in info.value.message
    assert any("'sim'" in r.getMessage() and "refused" in r.getMessage() for r in caplog.records)
    assert server.requests == [] and server.connections == 0
    service.register_blackbox({"name": "sim", "url": server.url("/f"), "input_size": 2, "output_size": 2})
    assert service.blackboxes.get("sim").url == server.url("/f")


@pytest.mark.parametrize("forge", ["copied under another name", "written with another key", "unsigned JSON",
                                   "headers swapped in", "truncated"])
def test_every_forged_entry_is_refused(forge, redis_url, redis_key, signed_settings, redis_writer):
    registry = RedisRegistry(redis_url, signed_settings, key=redis_key)
    registry.register(spec("good", headers={"X-Api-Key": "a"}))
    registry.register(spec("other", headers={"X-Api-Key": "b"}))
    good, other = raw_entry(redis_url, redis_key, "good"), raw_entry(redis_url, redis_key, "other")
    if forge == "copied under another name":
        forged = other  # a valid entry, but signed for the name "other"
    elif forge == "written with another key":
        foreign = signed_settings.model_copy(update={"tape_cache_hmac_key": SecretStr("not-our-key")})
        RedisRegistry(redis_url, foreign, key=redis_key).register(spec("good", url="http://127.0.0.1:9/evil"))
        forged = raw_entry(redis_url, redis_key, "good")
    elif forge == "unsigned JSON":
        forged = spec("good", url="http://127.0.0.1:9/evil").model_dump_json().encode()
    elif forge == "headers swapped in":
        forged = good[:40] + other[40:]
    else:
        forged = good[:20]
    redis_writer.hset(redis_key, "good", forged)
    with pytest.raises(DerivdError) as info:
        registry.get("good")
    assert info.value.code == "registry_tampered" and info.value.detail["blackbox"] == "good"
    assert [s.name for s in registry.list()] == ["other"]
    assert registry.get("other").headers == {"X-Api-Key": "b"}


def test_without_an_hmac_key_redis_registrations_are_refused_not_stored_unsigned(
        redis_url, redis_key, local_settings, redis_writer):
    registry = RedisRegistry(redis_url, local_settings, key=redis_key)
    for attempt in (lambda: registry.register(spec()), lambda: registry.get("sim"), registry.list):
        with pytest.raises(DerivdError) as info:
            attempt()
        assert info.value.status == 503 and "DERIVD_TAPE_CACHE_HMAC_KEY" in info.value.message
    assert redis_writer.hlen(redis_key) == 0
