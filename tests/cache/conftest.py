"""Settings that share tapes through a real Redis, each test under its own key prefix."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from derivd.config import Settings
from derivd.core import Request

HMAC_KEY = "tests-only hmac key"


def shared_settings(url: str, prefix: str, **overrides) -> Settings:
    fields = dict(redis_url=url, tape_cache_hmac_key=HMAC_KEY, redis_key_prefix=prefix,
                  redis_retry_backoff_s=0.1, redis_retry_backoff_max_s=0.4)
    return Settings(**{**fields, **overrides})


@pytest.fixture
def prefix() -> str:
    return f"derivd-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings(shared_redis_url, prefix) -> Settings:
    return shared_settings(shared_redis_url, prefix)



# f(x) = exp(x0) * sum(sin(x)) and its gradient, by hand.
PROGRAM = "exp(x[0]) * sum(sin(x))"


def analytic_gradient(x: np.ndarray) -> tuple[float, np.ndarray]:
    g = np.exp(x[0]) * np.cos(x)
    g[0] += np.exp(x[0]) * np.sum(np.sin(x))
    return float(np.exp(x[0]) * np.sum(np.sin(x))), g


def gradient(service, source: str, x, **fields) -> dict:
    response, _ = service.compute("gradient", Request(function={"dsl": source}, at={"x": np.asarray(x, float)},
                                                     **fields))
    return response


def check_gradient(response: dict, x) -> None:
    value, grad = analytic_gradient(np.asarray(x, float))
    np.testing.assert_allclose(response["value"], value, rtol=1e-13)
    np.testing.assert_allclose(response["gradient"]["x"], grad, rtol=1e-12, atol=1e-14)
