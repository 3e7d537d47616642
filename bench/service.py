"""derivd as a service under load, beside a hand-written FastAPI + JAX service.

    OMP_NUM_THREADS=1 python bench/service.py [--seconds 5] [--json out.json] [--rest-floor [--baseline TREE]]

Every server runs as its own process on this machine (one thread of BLAS
each), driven by the same client: 8 concurrent HTTP/1.1 keep-alive
connections sending pre-serialised requests. The client is ``wrk`` (one
thread) when it is on PATH (Debian: apt install wrk), else raw asyncio
streams in Python, which cost several times more CPU on the 2 cores the
servers share with it; the results say which. Measured:

* requests/s and p50/p99 latency, warm, for a small ``/v1/gradient`` (n = 10,
  Rosenbrock) and a medium ``/v1/jacobian`` (n = m = 50, dense), served by
  ``derivd serve`` with one gateway process and with ``--gateways 2`` (on a
  Redis: $REDIS_URL, else a redis-server started here), and the JAX
  service's ``/gradient`` and ``/jacobian`` of the same functions (jit of
  grad / jacfwd, compiled at its first request);
* the gRPC ``HessianVectorProducts`` stream's directions/s against unary
  ``Hvp`` calls (gRPC and REST) at the same point;
* a new function's first request (text never seen, so lowered and compiled
  cold), against JAX's first call of a freshly jitted function;
* the ceiling: uvicorn answering every request with a fixed body, in one and in
  two processes, through the same client (no service on this stack passes it).

``--rest-floor`` runs only the gradient with one gateway and the one-process
ceiling (issue 12's measure of the REST path's own cost), three times each
(``--rounds``), alternating, so that both see the same machine; with
``--baseline TREE`` (another checkout of this repository, e.g. ``git worktree
add --detach ../base COMMIT``) a gateway of that tree takes its turn too, and the
ratio of requests/s is reported round by round.

Targets (issue 6): >= 5x the JAX service's requests/s warm, p50 <= 2 ms, first
request of a new function <= 20 ms. Numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

CLIENTS = 8
ROSENBROCK = "sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)"
DENSE = "sin(x) * x[::-1] + x**2 / (1 + sum(x**2))"

JAX_SERVICE = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np, orjson
    from fastapi import FastAPI, Request
    from fastapi.responses import Response
    jax.config.update("jax_enable_x64", True)

    def rosenbrock(x):
        return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

    def dense(x):
        return jnp.sin(x) * x[::-1] + x ** 2 / (1 + jnp.sum(x ** 2))

    grad = jax.jit(jax.value_and_grad(rosenbrock))
    jac = jax.jit(jax.jacfwd(dense))
    app = FastAPI()

    @app.post("/gradient")
    async def gradient(request: Request):
        x = jnp.asarray(orjson.loads(await request.body())["x"], dtype=jnp.float64)
        v, g = grad(x)
        return Response(orjson.dumps({"value": float(v), "gradient": np.asarray(g).tolist()}),
                        media_type="application/json")

    @app.post("/jacobian")
    async def jacobian(request: Request):
        x = jnp.asarray(orjson.loads(await request.body())["x"], dtype=jnp.float64)
        return Response(orjson.dumps({"jacobian": np.asarray(jac(x)).tolist()}), media_type="application/json")
''')


# The HTTP stack alone: uvicorn answering every POST with a fixed JSON body, nothing parsed or computed.
CEILING_SERVICE = textwrap.dedent('''
    BODY = b'{"value": 1.0, "gradient": {"x": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}}'

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
        await send({"type": "http.response.body", "body": BODY})
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


def http_request(port: int, path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def exchange(reader, writer, raw: bytes) -> tuple[int, bytes]:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return status, await reader.readexactly(length)


async def python_load(port: int, raw: bytes, seconds: float, clients: int = CLIENTS) -> dict:
    latencies: list[float] = []
    errors = 0

    async def client(stop_at: float):
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status, _ = await exchange(reader, writer, raw)
            latencies.append(time.perf_counter() - t0)
            errors += status != 200
        writer.close()

    await asyncio.gather(*[client(time.perf_counter() + 1.0) for _ in range(clients)])  # warm-up
    warm_up = len(latencies)
    latencies.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*[client(t0 + seconds) for _ in range(clients)])
    elapsed = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3
    return {"requests_per_s": round(len(latencies) / elapsed, 1), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "requests": len(latencies), "errors": errors,
            "with_warm_up": warm_up + len(latencies)}


WRK_SCRIPT = """wrk.method = "POST"
wrk.path = %s
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "errors": %%d, "seconds": %%.6f, "p50_ms": %%.3f, "p99_ms": %%.3f}\\n',
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


def wrk_load(port: int, path: str, body: dict, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (json.dumps(path), json.dumps(json.dumps(body))))
    try:
        url = f"http://127.0.0.1:{port}"
        runs = []
        for duration in (1, max(1, round(seconds))):  # warm-up, then the measured run (whole seconds)
            out = subprocess.run(["wrk", "-t1", f"-c{CLIENTS}", f"-d{duration}s", "-s", f.name, url],
                                 capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        os.unlink(f.name)
    r = runs[-1]
    return {"requests_per_s": round(r["requests"] / r["seconds"], 1), "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"],
            "requests": r["requests"], "errors": r["errors"], "with_warm_up": sum(run["requests"] for run in runs)}


def load(port: int, path: str, body: dict, seconds: float) -> dict:
    """Warm requests/s and latency of ``POST path`` with 8 connections: by wrk when on PATH."""
    if shutil.which("wrk"):
        return wrk_load(port, path, body, seconds)
    return asyncio.run(python_load(port, http_request(port, path, body), seconds))


async def one(port: int, path: str, body: dict) -> tuple[float, int, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.perf_counter()
    status, data = await exchange(reader, writer, http_request(port, path, body))
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed, status, json.loads(data)


@contextlib.contextmanager
def shared_redis(env: dict):
    """``env`` with a Redis for several gateway processes: $REDIS_URL, else a redis-server started here."""
    extra = {"DERIVD_TAPE_CACHE_HMAC_KEY": "bench-only", "DERIVD_REDIS_KEY_PREFIX": f"derivd-bench-{os.getpid()}"}
    url = env.get("REDIS_URL") or env.get("DERIVD_REDIS_URL")
    if url:
        yield {**env, **extra, "DERIVD_REDIS_URL": url}
        return
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's tests/
    from tests.conftest import RedisProcess, redis_server_binary

    redis = RedisProcess(redis_server_binary()).start()
    try:
        yield {**env, **extra, "DERIVD_REDIS_URL": redis.url}
    finally:
        redis.stop()


def start(cmd: list[str], port: int, env: dict, cwd: str | None = None):
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def bench_hvp(grpc_port: int, rest_port: int, n: int = 50, directions: int = 2000, unary: int = 300) -> dict:
    import grpc

    from derivd.grpc_api import derivd_pb2 as pb
    from derivd.grpc_api import derivd_pb2_grpc as pb_grpc

    def arr(a):
        a = np.asarray(a, dtype="<f8")
        return pb.Array(shape=list(a.shape), data=a.tobytes(), dtype="float64")

    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    vs = rng.normal(size=(directions, n))
    function = pb.Function(dsl=ROSENBROCK)
    out = {"n": n}
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.DifferentiatorStub(channel)
        messages = [pb.HvpStreamRequest(start=pb.HvpStreamStart(function=function, at={"x": arr(x)}))]
        messages += [pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr(v)})) for v in vs]
        list(stub.HessianVectorProducts(iter(messages[:50])))  # warm: compiled once
        t0 = time.perf_counter()
        answers = list(stub.HessianVectorProducts(iter(messages)))
        out["stream_directions_per_s"] = round(directions / (time.perf_counter() - t0), 1)
        assert len(answers) == directions + 1

        req = pb.HvpRequest(function=function, at={"x": arr(x)}, v={"x": arr(vs[0])})
        try:
            stub.Hvp(req)
            t0 = time.perf_counter()
            for v in vs[:unary]:
                stub.Hvp(pb.HvpRequest(function=function, at={"x": arr(x)}, v={"x": arr(v)}))
            out["grpc_unary_hvp_per_s"] = round(unary / (time.perf_counter() - t0), 1)
        except grpc.RpcError as e:
            out["grpc_unary_hvp_per_s"] = f"unavailable: {e.code().name}"

    body = {"function": {"dsl": ROSENBROCK}, "at": {"x": x.tolist()}, "v": {"x": vs[0].tolist()}}
    raw = http_request(rest_port, "/v1/hvp", body)

    async def sequential():
        reader, writer = await asyncio.open_connection("127.0.0.1", rest_port)
        status, _ = await exchange(reader, writer, raw)
        if status != 200:
            return f"unavailable: HTTP {status}"
        t0 = time.perf_counter()
        for _ in range(unary):
            await exchange(reader, writer, raw)
        writer.close()
        return round(unary / (time.perf_counter() - t0), 1)

    out["rest_unary_hvp_per_s"] = asyncio.run(sequential())
    return out


def first_request(rest_port: int, trials: int = 15) -> dict:
    x = np.linspace(-1, 1, 10).tolist()
    times = []
    for i in range(trials):
        dsl = f"sum(100 * (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2) + {i + 1}.{time.time_ns() % 10**6}"
        elapsed, status, body = asyncio.run(one(rest_port, "/v1/gradient", {"function": {"dsl": dsl}, "at": {"x": x}}))
        assert status == 200, body
        times.append(elapsed * 1e3)
    return {"p50_ms": round(statistics.median(times), 3), "max_ms": round(max(times), 3)}


def jax_first_call(trials: int = 5) -> dict | None:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    x = jnp.linspace(-1, 1, 10)
    times = []
    for i in range(trials):
        c = float(i + 1)

        def f(x, c=c):
            return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2) + c

        t0 = time.perf_counter()
        jax.block_until_ready(jax.jit(jax.value_and_grad(f))(x))
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": round(statistics.median(times), 3), "max_ms": round(max(times), 3)}


@contextlib.contextmanager
def serving(cmd: list[str], port: int, env: dict, cwd: str | None = None):
    """The server's process while it serves on ``port``."""
    proc = start(cmd, port, env, cwd)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its children so far."""
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def measured(proc, port: int, path: str, body: dict, seconds: float) -> dict:
    """``load``, and the server's own CPU per request (its process's time over the requests it
    answered, warm-up included): what the machine's other work changes least."""
    before = cpu_seconds(proc.pid)
    out = load(port, path, body, seconds)
    out["server_cpu_us_per_request"] = round((cpu_seconds(proc.pid) - before) / out["with_warm_up"] * 1e6, 1)
    return out


@contextlib.contextmanager
def ceiling(env: dict, processes: int):
    """The port of uvicorn answering every request with a fixed body (``CEILING_SERVICE``)."""
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "ceiling.py"), "w") as f:
            f.write(CEILING_SERVICE)
        port = free_port()
        with serving([sys.executable, "-m", "uvicorn", "ceiling:app", "--port", str(port), "--workers",
                      str(processes), "--log-level", "warning", "--no-access-log"], port, env, tmp) as proc:
            yield proc, port


def rest_floor(env: dict, gradient: tuple, seconds: float, rounds: int = 3, baseline: str | None = None) -> dict:
    """The gradient with one gateway and the one-process ceiling, alternating ``rounds`` times (the
    machine's other work moves both alike): derivd's share of the ceiling's requests/s, and each
    server's CPU per request (derivd's minus the ceiling's: what the gateway spends of its own).
    With ``baseline`` (another checkout of this repository), its server takes its turn in each round
    too: issue 12's measure is the ratio of the two in one run."""
    servers = {"derivd_gradient_n10": (env, None)}
    if baseline:
        tree = os.path.abspath(baseline)
        servers["baseline_gradient_n10"] = ({**env, "PYTHONPATH": os.path.join(tree, "services")}, tree)
    out: dict = {name: [] for name in (*servers, "http_ceiling_1_process")}
    out.update(share_of_ceiling=[], derivd_own_cpu_us_per_request=[])
    with contextlib.ExitStack() as stack:
        running = {}
        for name, (server_env, cwd) in servers.items():
            port = free_port()
            running[name] = stack.enter_context(serving(
                [sys.executable, "-m", "derivd.cli", "serve", "--port", str(port), "--grpc-port", "0",
                 "--workers", "0"], port, server_env, cwd)), port
            load(port, *gradient, seconds)  # unmeasured: tapes compiled, tier 2 tried, in-line policy learnt
        running["http_ceiling_1_process"] = stack.enter_context(ceiling(env, 1))
        for i in range(rounds):
            turns = list(running.items())
            turns = turns[i % len(turns):] + turns[:i % len(turns)]  # each server first in some round
            this = {name: measured(proc, port, *gradient, seconds) for name, (proc, port) in turns}
            for name, r in this.items():
                out[name].append(r)
            ours, bare = this["derivd_gradient_n10"], this["http_ceiling_1_process"]
            out["share_of_ceiling"].append(round(ours["requests_per_s"] / bare["requests_per_s"], 3))
            out["derivd_own_cpu_us_per_request"].append(
                round(ours["server_cpu_us_per_request"] - bare["server_cpu_us_per_request"], 1))
            if baseline:
                out.setdefault("ratio_to_baseline", []).append(
                    round(ours["requests_per_s"] / this["baseline_gradient_n10"]["requests_per_s"], 3))
    for name in running:
        out[f"{name}_median_requests_per_s"] = statistics.median(r["requests_per_s"] for r in out[name])
        out[f"{name}_median_cpu_us_per_request"] = statistics.median(r["server_cpu_us_per_request"]
                                                                     for r in out[name])
    if baseline:
        out["ratio_to_baseline_median"] = statistics.median(out["ratio_to_baseline"])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--rest-floor", action="store_true",
                        help="only the gradient (n = 10) with one gateway beside the one-process ceiling")
    parser.add_argument("--baseline", metavar="TREE",
                        help="with --rest-floor: also serve this checkout of derivd, in turn with ours")
    parser.add_argument("--rounds", type=int, default=3, help="with --rest-floor: rounds of turns")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
           "DERIVD_LOG_LEVEL": "WARNING"}
    env = {k: v for k, v in env.items() if k not in ("DERIVD_API_KEYS", "DERIVD_RATE_LIMIT_REQUESTS")}
    results: dict = {"clients": CLIENTS, "seconds": args.seconds, "cpus": os.cpu_count(),
                     "load_average_before": os.getloadavg()}  # other work on the machine skews every number

    small_x = np.linspace(-1.2, 1.2, 10).tolist()
    medium_x = np.linspace(-2.0, 2.0, 50).tolist()
    gradient = ("/v1/gradient", {"function": {"dsl": ROSENBROCK}, "at": {"x": small_x}})
    jacobian = ("/v1/jacobian", {"function": {"dsl": DENSE}, "at": {"x": medium_x}})
    results["client"] = "wrk -t1" if shutil.which("wrk") else "python asyncio"
    if args.rest_floor:
        results.update(rest_floor(env, gradient, args.seconds, args.rounds, args.baseline))
        return report(results, args.json)

    rest_port, grpc_port = free_port(), free_port()
    derivd = start([sys.executable, "-m", "derivd.cli", "serve", "--port", str(rest_port),
                    "--grpc-port", str(grpc_port), "--workers", "0"], rest_port, env)
    try:
        results["derivd_first_request_new_function"] = first_request(rest_port)
        results["derivd_gradient_n10"] = load(rest_port, *gradient, args.seconds)
        results["derivd_jacobian_50x50"] = load(rest_port, *jacobian, args.seconds)
        results["hvp"] = bench_hvp(grpc_port, rest_port)
    finally:
        derivd.terminate()
        derivd.wait()

    with shared_redis(env) as redis_env:  # --gateways 2: the processes share what they must through Redis
        rest_port = free_port()
        derivd = start([sys.executable, "-m", "derivd.cli", "serve", "--port", str(rest_port), "--gateways", "2",
                        "--grpc-port", "0", "--workers", "0"], rest_port, redis_env)
        try:
            results["derivd_2_gateways_gradient_n10"] = load(rest_port, *gradient, args.seconds)
            results["derivd_2_gateways_jacobian_50x50"] = load(rest_port, *jacobian, args.seconds)
        finally:
            derivd.terminate()
            derivd.wait()

    for processes in (1, 2):  # what no service on this HTTP stack can pass
        with ceiling(env, processes) as (_, port):
            results[f"http_ceiling_{processes}_process"] = load(port, *gradient, args.seconds)

    try:
        import jax  # noqa: F401
    except ImportError:
        results["jax"] = "jax does not import here: no comparison"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "jax_service.py"), "w") as f:
                f.write(JAX_SERVICE)
            port = free_port()
            jax_proc = start([sys.executable, "-m", "uvicorn", "jax_service:app", "--port", str(port),
                              "--log-level", "warning", "--no-access-log"], port, env, cwd=tmp)
            try:
                first, _, _ = asyncio.run(one(port, "/jacobian", {"x": medium_x}))
                results["jax_first_request_ms"] = round(first * 1e3, 3)
                results["jax_gradient_n10"] = load(port, "/gradient", {"x": small_x}, args.seconds)
                results["jax_jacobian_50x50"] = load(port, "/jacobian", {"x": medium_x}, args.seconds)
            finally:
                jax_proc.terminate()
                jax_proc.wait()
        results["jax_first_call_new_function_in_process"] = jax_first_call()
        for name in ("gradient_n10", "jacobian_50x50"):
            jax_rate = results[f"jax_{name}"]["requests_per_s"]
            results[f"ratio_{name}_requests_per_s"] = round(results[f"derivd_{name}"]["requests_per_s"] / jax_rate, 2)
            results[f"ratio_2_gateways_{name}_requests_per_s"] = round(
                results[f"derivd_2_gateways_{name}"]["requests_per_s"] / jax_rate, 2)

    return report(results, args.json)


def report(results: dict, path: str | None) -> int:
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
