"""The docker-compose stack without Docker: its very commands run as local processes.

Each worker service's command and the gateway's command are taken from
docker-compose.yml; only addresses change (free loopback ports instead of
container ports, ``dns:///localhost:<port>`` instead of the service names) and
Redis is the tests' own, the secrets the tests' (compose takes them from the environment). Then the gateway must be live, ready once its pools
are reachable, answer over REST and gRPC through the workers, and turn
unready when a pool's only worker goes away.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest

from derivd.grpc_api import derivd_pb2 as pb
from derivd.grpc_api import derivd_pb2_grpc as pb_grpc
from tests.support import free_port, wait_for
from tests.deploy.test_manifests import compose, worker_command
from tests.grpc_api.wire import arr, fn, unarr


def with_option(cmd: list[str], flag: str, value: str) -> list[str]:
    out = list(cmd)
    out[out.index(flag) + 1] = value
    return out


def spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    assert cmd[0] == "derivd"
    return subprocess.Popen([sys.executable, "-m", "derivd.cli", *cmd[1:]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def stop(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


STARTING = (httpx.HTTPError, grpc.RpcError)  # while the stack starts, a refused connection is "not yet"


@pytest.fixture(scope="module")
def stack(shared_redis_url):
    services = compose()["services"]
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DERIVD_")}
    secrets = {"DERIVD_TAPE_CACHE_HMAC_KEY": "deploy-test-key", "DERIVD_WORKER_TOKEN": "deploy-test-token"}
    base_env.update(OMP_NUM_THREADS="1", **secrets)
    procs, workers = [], {}
    try:
        for name, svc in services.items():
            if svc.get("command", [None])[:2] != ["derivd", "worker"]:
                continue
            port = free_port()
            env = {**base_env, **svc["environment"], "DERIVD_REDIS_URL": shared_redis_url, **secrets}
            proc = spawn(with_option(svc["command"], "--listen", f"127.0.0.1:{port}"), env)
            procs.append(proc)
            workers[name] = (proc, port, worker_command(svc["command"])[0])

        gateway = services["gateway"]
        env = {**base_env, **gateway["environment"], "DERIVD_REDIS_URL": shared_redis_url, **secrets}
        for name, (_, port, engines) in workers.items():
            for family in engines:
                key = f"DERIVD_POOL_{family.upper()}"
                assert env[key] == f"dns:///{name}:50052"
                env[key] = f"dns:///localhost:{port}"
        http_port, grpc_port = free_port(), free_port()
        cmd = with_option(with_option(with_option(gateway["command"], "--host", "127.0.0.1"),
                                      "--port", str(http_port)), "--grpc-port", str(grpc_port))
        gw = spawn(cmd, env)
        procs.append(gw)
        client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
        wait_for(lambda: client.get("/healthz").status_code == 200, "the gateway's /healthz", ignoring=STARTING)
        yield client, grpc_port, workers, gw
        client.close()
    finally:
        for p in procs:
            stop(p)


def test_live_ready_and_answering_through_workers(stack):
    client, grpc_port, workers, gw = stack
    wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz with every pool reachable", ignoring=STARTING)
    pools = client.get("/readyz").json()["pools"]
    assert all(state.startswith("ready") for state in pools.values()), pools

    x = np.array([1.2, 0.5, -0.3])
    r = client.post("/v1/gradient", json={"function": {"dsl": "sum(x**3)"}, "at": {"x": x.tolist()}})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["gradient"]["x"], 3 * x**2, rtol=1e-15)
    r = client.post("/v1/jacobian", json={"function": {"dsl": "[x[0]*x[1], sin(x[2])]"}, "at": {"x": x.tolist()}})
    np.testing.assert_allclose(r.json()["jacobian"], [[x[1], x[0], 0], [0, 0, np.cos(x[2])]], rtol=1e-15)

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        reply = pb_grpc.DifferentiatorStub(channel).Gradient(
            pb.GradientRequest(function=fn("sum(x**3)"), at={"x": arr(x)}), timeout=30)
    np.testing.assert_allclose(unarr(reply.gradient["x"]), 3 * x**2, rtol=1e-15)


def test_readyz_turns_unready_when_a_pool_is_gone(stack):
    client, _, workers, gw = stack
    wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz", ignoring=STARTING)
    name, (proc, _, engines) = next((n, w) for n, w in workers.items() if "taylor" in w[2])
    stop(proc)
    wait_for(lambda: client.get("/readyz").status_code == 503, "/readyz to report the lost pool", ignoring=STARTING)
    body = client.get("/readyz").json()
    assert body["status"] == "not ready" and not body["pools"]["taylor"].startswith("ready")
    assert client.get("/healthz").status_code == 200  # alive all the same: only readiness changes
    assert gw.poll() is None
