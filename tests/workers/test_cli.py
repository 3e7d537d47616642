"""The commands themselves: ``derivd serve --workers N`` supervises its workers, ``derivd worker``
serves a gateway's remote pool through a ``dns:///`` target, and each one's ``--help`` examples parse."""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import signal
import subprocess
import sys

import grpc
import httpx
import numpy as np
import psutil
import pytest

from derivd.dispatch import codec, worker_pb2 as pb, worker_pb2_grpc as pb_grpc
from derivd.dispatch.pools import TOKEN_METADATA
from derivd.workers.server import parse_engines
from tests.cache.conftest import HMAC_KEY, shared_settings
from tests.conftest import LiveServer
from tests.support import free_port, wait_for

X = [0.3, 0.6, -0.9]
TOKEN = "tests-cli-worker-token"


def gradient_of_cubes(base: str) -> np.ndarray:
    r = httpx.post(f"{base}/v1/gradient", json={"function": {"dsl": "sum(x ** 3)"}, "at": {"x": X}}, timeout=30)
    assert r.status_code == 200, r.text
    return np.array(r.json()["gradient"]["x"])


def children(pid: int) -> list[int]:
    """Every child of ``pid``, whichever of its threads started it (the supervisor's thread, say)."""
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return out


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "derivd.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_with_workers_replaces_a_killed_worker(shared_redis_url):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gateway = start(["serve", "--workers", "2", "--port", str(port), "--grpc-port", "0"],
                    {"DERIVD_REDIS_URL": shared_redis_url, "DERIVD_TAPE_CACHE_HMAC_KEY": HMAC_KEY,
                     "DERIVD_LOG_LEVEL": "WARNING"})
    try:
        wait_for(lambda: _up(base), "derivd serve --workers 2", 60)
        np.testing.assert_allclose(gradient_of_cubes(base), 3 * np.array(X) ** 2, rtol=1e-15)
        ready = httpx.get(f"{base}/readyz")
        assert ready.json()["pools"]["reverse"] == "ready" and "127.0.0.1" not in ready.text
        wait_for(lambda: len(children_of(gateway.pid)) == 3, "two workers and their spare", 60)
        workers = [p for p in children_of(gateway.pid) if _listening(p)]
        assert len(workers) == 2
        for pid in workers:  # on loopback only, and closed to a caller without this run's token
            (listening,) = _listening(pid)
            address = ipaddress.ip_address(listening.laddr.ip)
            assert (getattr(address, "ipv4_mapped", None) or address).is_loopback, address
            assert worker_call(f"127.0.0.1:{listening.laddr.port}", None) == grpc.StatusCode.UNAUTHENTICATED

        os.kill(workers[0], signal.SIGKILL)
        np.testing.assert_allclose(gradient_of_cubes(base), 3 * np.array(X) ** 2, rtol=1e-15)
        wait_for(lambda: re.search(r'^derivd_worker_restarts_total\{pool="local"\} 1\.0$',
                                   httpx.get(f"{base}/metrics").text, re.M), "the restart in /metrics", 30)
        wait_for(lambda: sum(1 for p in children_of(gateway.pid) if _listening(p)) == 2, "a replacement worker", 30)
        workers = children_of(gateway.pid)
    finally:
        stop(gateway)
    assert gateway.returncode == 0  # SIGTERM: a graceful stop, workers included
    assert not any(map(_alive, workers)), "workers outlived their gateway"


def test_a_remote_worker_serves_a_gateway_through_dns(shared_redis_url):
    port = free_port()
    worker = start(["worker", "--engines", "forward,reverse", "--listen", f"127.0.0.1:{port}"],
                   {"DERIVD_LOG_LEVEL": "WARNING", "DERIVD_WORKER_TOKEN": TOKEN})
    settings = shared_settings(shared_redis_url, "derivd-test-cli", pool_forward=f"dns:///localhost:{port}",
                               pool_reverse=f"dns:///localhost:{port}", pool_wait_s=0.5, worker_token=TOKEN)
    try:
        with LiveServer(settings) as gateway:
            wait_for(lambda: gateway.app.dispatcher.router.pools["reverse"].ready(), "the remote worker", 60)
            np.testing.assert_allclose(gradient_of_cubes(gateway.url), 3 * np.array(X) ** 2, rtol=1e-15)
            ready = httpx.get(f"{gateway.url}/readyz")
            assert ready.json()["pools"]["reverse"] == "ready" and ready.json()["pools"]["taylor"] == "ready"
            assert str(port) not in ready.text and "localhost" not in ready.text
            for token in (None, "not-" + TOKEN):
                assert worker_call(f"127.0.0.1:{port}", token) == grpc.StatusCode.UNAUTHENTICATED
            assert worker_call(f"127.0.0.1:{port}", TOKEN) == grpc.StatusCode.OK

            stop(worker)  # SIGTERM: the worker drains and exits; the pool has nobody left
            r = httpx.post(f"{gateway.url}/v1/gradient", json={"function": {"dsl": "sum(x ** 3)"}, "at": {"x": X}})
            assert r.status_code == 503 and r.json()["error"]["code"] == "pool_unavailable", r.text
            wait_for(lambda: httpx.get(f"{gateway.url}/readyz").status_code == 503, "/readyz to say not ready", 10)
    finally:
        stop(worker)


def test_a_worker_without_a_token_refuses_to_start():
    env = {k: v for k, v in os.environ.items() if k != "DERIVD_WORKER_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "derivd.cli", "worker", "--listen", f"127.0.0.1:{free_port()}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "DERIVD_WORKER_TOKEN" in done.stderr


def worker_call(target: str, token: str | None) -> grpc.StatusCode:
    """A direct Worker.Run of a gradient, as an attacker past the gateway would send it: its status."""
    request = pb.WorkRequest(endpoint="gradient", family="reverse", request=codec.encode_struct(
        {"function": {"dsl": "sum(x ** 3)"}, "at": {"x": np.array(X)}}))
    metadata = () if token is None else ((TOKEN_METADATA, token),)
    with grpc.insecure_channel(target) as channel:
        try:
            reply = pb_grpc.WorkerStub(channel).Run(request, timeout=30, metadata=metadata, wait_for_ready=True)
        except grpc.RpcError as e:
            return e.code()
    np.testing.assert_allclose(codec.decode_struct(reply.response)["gradient"]["x"], 3 * np.array(X) ** 2,
                               rtol=1e-15)
    return grpc.StatusCode.OK


def test_every_help_shows_examples_that_parse(capsys):
    from derivd.cli import EXAMPLES, build_parser
    from derivd.config import Settings

    parser = build_parser(Settings())
    for verb, lines in EXAMPLES.items():
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([verb, "--help"])
        helped = capsys.readouterr().out
        assert exited.value.code == 0 and "examples:" in helped
        for line in lines:
            assert f"  {line}\n" in helped
            argv = shlex.split(line[line.index("derivd "):])  # after any VAR=value
            assert argv[:2] == ["derivd", verb]
            assert parser.parse_args(argv[1:]).command == verb


def test_worker_engines_are_a_subset_of_the_families():
    assert parse_engines("reverse, forward") == {"forward", "reverse"}
    for bad in ("forward,quantum", "", " , "):
        with pytest.raises(ValueError, match="--engines"):
            parse_engines(bad)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def children_of(pid: int) -> list[int]:
    """The gateway's worker processes, the spare included."""
    return [p for p in children(pid) if _is_worker(p)]


def _listening(pid: int) -> list:
    try:
        return [c for c in psutil.Process(pid).net_connections() if c.status == psutil.CONN_LISTEN]
    except psutil.NoSuchProcess:
        return []


def _is_worker(pid: int) -> bool:
    """A spawned worker (not multiprocessing's resource tracker), alive."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"multiprocessing.spawn" in f.read() and _alive(pid)
    except FileNotFoundError:
        return False


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
