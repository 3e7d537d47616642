"""The embedded default's data directory (cache/local_store.py): what callers register survives a
restart of ``derivd serve``, is shared by the gateway processes on one directory, is refused when
altered on disk (never served), and stays within its byte bound. Real files in tmp_path, real
``derivd serve`` processes where processes matter."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from derivd.cache import LocalStore
from derivd.config import Settings
from derivd.core import Request, Service
from derivd.errors import DerivdError, LimitExceeded, NotFound
from tests.support import BlackBoxServer, free_port, wait_for

LOOPBACK = {"DERIVD_BLACKBOX_ALLOW": '["127.0.0.1/32"]', "DERIVD_BLACKBOX_DENY": "[]"}
PROGRAM = "sum(w * sin(x))"  # its gradient in x is w * cos(x)
X = [0.3, -1.2, 2.5]


def serve(data, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``derivd serve --data DATA`` in its own process, once it answers /healthz."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "derivd.cli", "serve", "--data", str(data), "--port", str(port),
                             "--grpc-port", "0", *args],
                            env={**os.environ, **LOOPBACK, "DERIVD_LOG_LEVEL": "WARNING", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: proc.poll() is None and httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200,
                 "derivd serve to start", 60, ignoring=(httpx.HTTPError,))
    except AssertionError:
        proc.kill()
        raise AssertionError(f"derivd serve did not start: {proc.communicate()[1][-2000:]}") from None
    return proc, base


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(20)


def register(base: str, w: np.ndarray) -> str:
    r = httpx.post(f"{base}/v1/functions", json={"dsl": PROGRAM, "constants": {"w": w.tolist()}}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["id"]


def gradient_by_id(base: str, fid: str) -> np.ndarray:
    r = httpx.post(f"{base}/v1/gradient", json={"function": {"id": fid}, "at": {"x": X}}, timeout=30)
    assert r.status_code == 200, r.text
    return np.array(r.json()["gradient"]["x"])


def evaluate_blackbox(base: str, name: str, x: list[float]) -> httpx.Response:
    return httpx.post(f"{base}/v1/evaluate", json={"function": {"blackbox": name}, "at": {"x": x}}, timeout=30)


def test_registrations_survive_a_restart(tmp_path):
    """Twelve functions registered at once through two gateway processes (concurrent writers on one
    file) and a black box with a secret header; `derivd serve` stopped and started again on the
    same directory: every id answers w * cos(x), the black box is called with its header."""
    data = tmp_path / "data"
    weights = [np.arange(1.0, 4.0) * (k + 1) for k in range(12)]
    with BlackBoxServer() as box:
        proc, base = serve(data, "--gateways", "2")
        try:
            with ThreadPoolExecutor(6) as pool:
                ids = list(pool.map(lambda w: register(base, w), weights))
            r = httpx.post(f"{base}/v1/blackboxes", json={"name": "sim", "url": box.url("/f"), "input_size": 2,
                                                          "output_size": 2, "headers": {"Authorization": "Bearer k1"}})
            assert r.status_code in (200, 201), r.text
        finally:
            stop(proc)
        assert len(set(ids)) == 12
        proc, base = serve(data)  # a fresh process: nothing in memory
        try:
            for fid, w in zip(ids, weights):
                np.testing.assert_allclose(gradient_by_id(base, fid), w * np.cos(X), rtol=1e-15)
            r = evaluate_blackbox(base, "sim", [0.3, 0.7])
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["value"], [0.3**2 + 0.7**2, np.sin(0.3) * np.sin(0.7)], rtol=1e-12)
            assert [h["authorization"] for _, _, h in box.requests] == ["Bearer k1"]
        finally:
            stop(proc)
    key = (data / "secret.key").read_bytes()
    assert (data / "secret.key").stat().st_mode & 0o077 == 0 and len(key) == 64
    raw = (data / "store.sqlite3").read_bytes() + (data / "store.sqlite3-wal").read_bytes()
    assert b"Bearer k1" not in raw  # encrypted at rest


def test_two_gateways_on_one_directory_see_each_others_registrations(tmp_path):
    """Two `derivd serve` started together on a new directory (both make its key: one wins, both use
    it): a function stored through one and a black box registered through the other answer on both."""
    data = tmp_path / "data"
    with BlackBoxServer() as box, ThreadPoolExecutor(2) as pool:
        (a, base_a), (b, base_b) = pool.map(lambda _: serve(data), range(2))
        try:
            fid = register(base_a, np.array([1.0, 2.0, 3.0]))
            r = httpx.post(f"{base_b}/v1/blackboxes", json={"name": "sim", "url": box.url("/f"), "input_size": 2,
                                                            "output_size": 2})
            assert r.status_code in (200, 201), r.text
            np.testing.assert_allclose(gradient_by_id(base_b, fid), [1, 2, 3] * np.cos(X), rtol=1e-15)
            assert [bb["name"] for bb in httpx.get(f"{base_a}/v1/blackboxes").json()["blackboxes"]] == ["sim"]
            r = evaluate_blackbox(base_a, "sim", [1.0, 2.0])
            np.testing.assert_allclose(r.json()["value"], [5.0, np.sin(1.0) * np.sin(2.0)], rtol=1e-12)
            assert httpx.delete(f"{base_a}/v1/blackboxes/sim").status_code in (200, 204)
            assert evaluate_blackbox(base_b, "sim", [1.0, 2.0]).status_code == 404
        finally:
            stop(a)
            stop(b)


def rewrite(data, key: str, old: bytes, new: bytes) -> None:
    """What someone who can write the data directory but holds no key can do: change a row."""
    with sqlite3.connect(data / "store.sqlite3") as db:
        (value,) = db.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
        assert value.count(old) == 1
        db.execute("UPDATE entries SET value = ? WHERE key = ?", (value.replace(old, new), key))


@pytest.mark.parametrize("forge", ["row altered", "key changed"])
def test_a_forged_row_is_refused_and_logged_never_served(forge, tmp_path, caplog):
    """A stored program rewritten on disk (same length, so only the MAC can tell) answers 404, a black
    box pointed elsewhere answers registry_tampered and nothing reaches either URL; so do rows the
    current key did not sign. Registering again replaces them."""
    settings = Settings(data_dir=str(tmp_path), blackbox_allow=["127.0.0.1/32"], blackbox_deny=[])
    with BlackBoxServer() as box:
        first = Service(settings)
        fid = first.register_function("sum(w * x)", {"w": np.array([2.0, 3.0])}).id
        first.register_blackbox({"name": "sim", "url": box.url("/f"), "input_size": 2, "output_size": 2})
        if forge == "row altered":
            rewrite(tmp_path, f"derivd:function:{fid}", b"sum(w * x)", b"sum(w / x)")
            rewrite(tmp_path, "blackbox:sim", b"/f", b"/g")
        else:
            settings = settings.model_copy(update={"tape_cache_hmac_key": SecretStr("another key")})
        second = Service(settings)  # a restart: nothing in memory
        x = np.array([0.5, 4.0])
        with caplog.at_level(logging.WARNING):
            with pytest.raises(NotFound):
                second.compute("gradient", Request(function={"id": fid}, at={"x": x}))
            with pytest.raises(DerivdError) as info:
                second.compute("evaluate", Request(function={"blackbox": "sim"}, at={"x": x}))
            assert second.list_blackboxes() == []
        assert info.value.code == "registry_tampered" and "data directory" in info.value.message
        logged = [r.getMessage() for r in caplog.records]
        assert any(fid in m and "refused" in m for m in logged) and any("'sim'" in m and "refused" in m
                                                                        for m in logged)
        assert box.requests == []
        second.register_function("sum(w * x)", {"w": np.array([2.0, 3.0])})
        second.register_blackbox({"name": "sim", "url": box.url("/f"), "input_size": 2, "output_size": 2})
        third = Service(settings)
        out, _ = third.compute("gradient", Request(function={"id": fid}, at={"x": x}))
        np.testing.assert_allclose(out["gradient"]["x"], [2.0, 3.0], rtol=1e-15)
        out, _ = third.compute("evaluate", Request(function={"blackbox": "sim"}, at={"x": x}))
        np.testing.assert_allclose(out["value"], [x @ x, np.sin(x).prod()], rtol=1e-12)


def test_the_byte_bound_evicts_the_least_recently_used(tmp_path):
    """Rows of 100 kB in a 1 MiB store: each write past the bound deletes the least recently used
    (a read counts as a use); the file stays near the bound however much is written through it."""
    store = LocalStore(str(tmp_path), 2**20)
    row = 100_000
    for k in range(10):
        store.put(f"r{k}", bytes([k]) * row)
    assert store.get("r0") == bytes([0]) * row  # r0 is now the most recently used
    for k in range(10, 15):
        store.put(f"r{k}", bytes([k]) * row)
    kept = [key for key, _ in store.scan("r")]
    assert sorted(kept, key=lambda k: int(k[1:])) == ["r0", *(f"r{k}" for k in range(6, 15))]
    assert store.nbytes == sum(len(key) + row for key in kept) <= 2**20
    for k in range(15, 300):
        store.put(f"r{k}", os.urandom(row))
    size = os.path.getsize(tmp_path / "store.sqlite3")
    print(f"local store: 30 MB written through a 1 MiB bound: file {size / 2**20:.2f} MiB")
    assert store.nbytes <= 2**20 and size <= 2 * 2**20
    with pytest.raises(LimitExceeded) as info:  # one row over the whole bound: refused, not stored
        store.put("big", bytes(2**20))
    assert info.value.detail["limit"] == "data_max_bytes" and store.get("big") is None


def test_a_function_over_the_store_bound_is_a_413_naming_it(tmp_path):
    service = Service(Settings(data_dir=str(tmp_path), data_max_bytes=2**20))
    with pytest.raises(LimitExceeded) as info:
        service.register_function("sum(w * x)", {"w": np.zeros(2**17)})  # 1 MiB, ~1.4 MB in the store
    assert info.value.status == 413 and info.value.detail["limit"] == "data_max_bytes"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "derivd.cli", "serve", "--port", str(free_port()), "--grpc-port",
                           "0", *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=60)


def test_an_unusable_data_directory_is_a_clear_startup_error(tmp_path):
    (tmp_path / "a-file").write_text("")
    done = run_cli("--data", str(tmp_path / "a-file" / "data"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"derivd: data directory {tmp_path / 'a-file' / 'data'} cannot hold the store")
    assert "--data none" in done.stderr


@pytest.mark.parametrize("args, env, said", [
    (["--data", "none"], {}, "needs REDIS_URL or a data directory"),
    ([], {"DERIVD_RATE_LIMIT_REQUESTS": "10"}, "each process would count alone"),
])
def test_gateways_without_redis_need_a_data_directory_and_no_rate_limit(tmp_path, args, env, said):
    done = run_cli("--gateways", "2", *args, env={"DERIVD_DATA_DIR": str(tmp_path), **env})
    assert done.returncode == 2 and said in done.stderr and "Traceback" not in done.stderr
