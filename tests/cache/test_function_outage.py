"""A registration Redis could not take is refused with 503 and Retry-After, never answered with an
id the other gateways would not know; once Redis is back, the same registration is stored."""

from __future__ import annotations

import httpx
import numpy as np

from derivd.core import Service
from tests.cache.conftest import shared_settings
from tests.conftest import LiveServer
from tests.support import wait_for


def test_a_registration_during_an_outage_is_a_503_with_retry_after(own_redis, prefix):
    settings = shared_settings(own_redis.url, prefix)
    other = Service(settings)  # a second gateway's view of the same Redis
    body = {"dsl": "sum(w * x ** 2)", "constants": {"w": [1.0, 3.0]}}
    with LiveServer(settings) as gateway:
        own_redis.stop()
        r = httpx.post(f"{gateway.url}/v1/functions", json=body)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable", r.text
        assert int(r.headers["retry-after"]) >= 1
        own_redis.start()
        retried = []  # as a client honouring Retry-After would, once the breaker's short backoff is over
        wait_for(lambda: retried.append(httpx.post(f"{gateway.url}/v1/functions", json=body))
                 or retried[-1].status_code == 200, "the registration to be stored once Redis is back", 30)
        r = retried[-1]
    stored = other.get_function(r.json()["id"])  # every gateway finds it
    assert stored.dsl == body["dsl"] and np.array_equal(stored.constants["w"], [1.0, 3.0])
