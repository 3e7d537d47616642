"""Redis paused, then killed, under two gateways sharing it: every answer is right or a clean
refusal (a 503 for a registration Redis could not take), none is wrong, none hangs."""

from __future__ import annotations

import signal
import threading
import uuid

import httpx
import numpy as np

from tests.cache.conftest import shared_settings
from tests.conftest import LiveServer
from tests.support import wait_for


def test_two_gateways_through_a_redis_pause_and_kill(own_redis):
    settings = shared_settings(own_redis.url, f"derivd-chaos-{uuid.uuid4().hex[:12]}")
    with LiveServer(settings) as a, LiveServer(settings) as b:
        fid = httpx.post(f"{a.url}/v1/functions", json={"dsl": "sum(w * x ** 2)", "constants": {"w": [2.0, 5.0]}}
                         ).json()["id"]
        tally = {"right": 0, "refused": 0, "wrong": 0, "hung": 0}
        lock, stop = threading.Lock(), threading.Event()

        def client(base: str, k: int):
            with httpx.Client(base_url=base, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    x = np.array([0.1 * k - 0.3, 0.01 * i])
                    try:
                        if i % 10 == 9:  # a registration now and then: stored everywhere, or refused
                            r = c.post("/v1/functions", json={"dsl": f"sum(x) * {i}"})
                            ok = r.status_code == 200 or (r.status_code == 503 and "retry-after" in r.headers)
                        else:
                            r = c.post("/v1/gradient", json={"function": {"id": fid}, "at": {"x": x.tolist()}})
                            ok = r.status_code == 200 and np.allclose(r.json()["gradient"]["x"],
                                                                      [4.0, 10.0] * x, rtol=1e-14, atol=0)
                        key = "right" if ok and r.status_code == 200 else "refused" if ok else "wrong"
                    except httpx.TimeoutException:
                        key = "hung"
                    with lock:
                        tally[key] += 1
                    i += 1

        threads = [threading.Thread(target=client, args=(base, k)) for k, base in enumerate([a.url, b.url] * 2)]
        for t in threads:
            t.start()
        wait_for(lambda: tally["right"] >= 100, "load through both gateways", 60)
        own_redis.proc.send_signal(signal.SIGSTOP)
        seen = tally["right"]
        wait_for(lambda: tally["right"] >= seen + 100, "answers while Redis is paused", 60)
        own_redis.proc.send_signal(signal.SIGCONT)
        own_redis.stop()
        seen = tally["right"]
        wait_for(lambda: tally["right"] >= seen + 100, "answers once Redis is gone", 60)
        stop.set()
        for t in threads:
            t.join(30)
    print(f"chaos redis pause+kill, two gateways: {sum(tally.values())} requests, {tally}")
    assert tally["wrong"] == 0 and tally["hung"] == 0, tally
