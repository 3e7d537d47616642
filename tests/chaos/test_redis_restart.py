"""Registrations survive a Redis restart: a Redis run with the persistence settings docker-compose.yml
deploys (its own command line, with a data directory of its own) is stopped with SIGTERM and started
again on the same port and directory, and a stored function and a black box registered before it
still answer the same numbers through a gateway that never saw them; while it is down, registering
either is a 503 with Retry-After."""

from __future__ import annotations

import uuid

import httpx
import numpy as np

from tests.cache.conftest import shared_settings
from tests.conftest import LiveServer, start_redis
from tests.deploy.test_manifests import compose
from tests.support import BlackBoxServer

X = [0.3, -0.7, 1.1]


def deployed_redis(data_dir) -> tuple[str, ...]:
    """docker-compose.yml's redis-server arguments, writing under ``data_dir`` instead of its volume."""
    command = compose()["services"]["redis"]["command"]
    assert command[0] == "redis-server", command
    args = dict(zip(command[1::2], command[2::2]))
    return tuple(a for name, value in {**args, "--dir": str(data_dir)}.items() for a in (name, value))


def answers(base: str, fid: str) -> tuple[list, list]:
    """The stored function's gradient and the black box's value at X, through the gateway at ``base``."""
    f = httpx.post(f"{base}/v1/gradient", json={"function": {"id": fid}, "at": {"x": X}})
    b = httpx.post(f"{base}/v1/evaluate", json={"function": {"blackbox": "sim"}, "at": {"x": X}})
    assert f.status_code == 200 and b.status_code == 200, (f.text, b.text)
    return f.json()["gradient"]["x"], b.json()["value"]


def test_registrations_survive_a_redis_restart(tmp_path):
    redis = start_redis(deployed_redis(tmp_path))
    settings = shared_settings(redis.url, f"derivd-restart-{uuid.uuid4().hex[:12]}",
                               blackbox_allow=["127.0.0.1/32"], blackbox_deny=[])
    x = np.array(X)
    try:
        with BlackBoxServer() as blackbox:
            with LiveServer(settings) as gateway:
                before = gateway.url
                fid = httpx.post(f"{before}/v1/functions", json={"dsl": "sum(w * x ** 2)",
                                                                 "constants": {"w": [2.0, 5.0, 0.5]}}).json()["id"]
                r = httpx.post(f"{before}/v1/blackboxes", json={"name": "sim", "url": blackbox.url("/f"),
                                                                "input_size": 3, "output_size": 2})
                assert r.status_code == 200, r.text
                grad, value = answers(before, fid)

                redis.stop()  # SIGTERM, as docker and the kubelet stop a container
                for path, body in [("/v1/functions", {"dsl": "sum(x) * 7"}),
                                   ("/v1/blackboxes", {"name": "other", "url": blackbox.url("/f"),
                                                       "input_size": 3, "output_size": 2})]:
                    r = httpx.post(f"{before}{path}", json=body)
                    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, (path, r.text)
                redis.start()  # the same port and directory

            # A gateway started after the restart has nothing in memory: what it answers came from Redis.
            with LiveServer(settings) as fresh:
                assert answers(fresh.url, fid) == (grad, value)
        np.testing.assert_allclose(grad, [4.0, 10.0, 1.0] * x, rtol=1e-15)  # w * 2x
        np.testing.assert_allclose(value, [np.sum(x ** 2), np.prod(np.sin(x))], rtol=1e-15)
    finally:
        redis.stop()

