"""Registrations: in memory and in a real Redis, with the SSRF check on register."""

import uuid

import pytest
import redis
from pydantic import ValidationError

from derivd.blackbox import BlackBoxRefused, BlackBoxSpec, MemoryRegistry, RedisRegistry, make_registry
from derivd.config import Settings, get_settings
from derivd.errors import DerivdError, NotFound


def spec(name="sim", url="http://127.0.0.1:9/f", **extra) -> BlackBoxSpec:
    return BlackBoxSpec(name=name, url=url, input_size=3, output_size=2, **extra)


@pytest.fixture
def redis_key(redis_url):
    """A key of our own, so tests never touch anyone else's registrations."""
    key = f"derivd:test:{uuid.uuid4().hex}:blackboxes"
    yield key
    redis.Redis.from_url(redis_url).delete(key)


@pytest.fixture(params=["memory", "redis"])
def registry(request, local_settings):
    if request.param == "memory":
        return MemoryRegistry(local_settings)
    return RedisRegistry(
        request.getfixturevalue("redis_url"), local_settings, key=request.getfixturevalue("redis_key")
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


def test_redis_registrations_survive_a_restart(redis_url, redis_key, local_settings):
    first = RedisRegistry(redis_url, local_settings, key=redis_key)
    first.register(spec("kept", headers={"X-Api-Key": "k"}))
    again = RedisRegistry(redis_url, local_settings, key=redis_key)  # a new gateway process
    assert again.get("kept") == spec("kept", headers={"X-Api-Key": "k"})
    again.delete("kept")
    assert first.list() == []


def test_unreachable_redis_is_a_clear_503(local_settings, closed_port):
    registry = RedisRegistry(f"redis://127.0.0.1:{closed_port}/0", local_settings, socket_timeout_s=0.5)
    with pytest.raises(DerivdError) as info:
        registry.list()
    assert info.value.status == 503 and info.value.code == "registry_unavailable"


def test_make_registry_picks_redis_when_configured(redis_url):
    assert isinstance(make_registry(Settings(redis_url=redis_url)), RedisRegistry)
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
