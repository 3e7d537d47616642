"""/metrics after real requests on both skins, request ids in and out, JSON log lines."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from derivd.config import Settings
from derivd.grpc_api import derivd_pb2 as pb
from derivd.observability import LATENCY_BUCKETS, JsonFormatter, Metrics, request_id
from tests.grpc_api.conftest import Stack
from tests.grpc_api.wire import arr, fn
from tests.support import wait_for


@pytest.fixture(scope="module")
def fresh():
    """A service of its own, so counts are exact."""
    with Stack(Settings(host="127.0.0.1")) as s:
        yield s


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text, name, **labels):
    return samples(text).get((name, tuple(sorted(labels.items()))))


def test_metrics_count_requests_cache_and_timings(fresh):
    body = {"function": {"dsl": "sum(x**2)"}, "at": {"x": [1.0, 2.0, 3.0]}}
    assert fresh.http.post("/v1/gradient", json={"function": {"dsl": "sum(x**"}, "at": {"x": [1.0]}}).status_code == 400
    assert fresh.http.post("/v1/gradient", json=body).status_code == 200
    first = fresh.http.get("/metrics").text
    misses = value(first, "derivd_tape_cache_misses_total", level="local")
    hits = value(first, "derivd_tape_cache_hits_total", level="local")
    assert misses >= 1  # compiled: the program and its gradient tape
    for _ in range(2):
        assert fresh.http.post("/v1/gradient", json=body).status_code == 200
    for _ in range(2):
        fresh.stub.Gradient(pb.GradientRequest(function=fn("sum(x**2)"), at={"x": arr([1.0, 2.0, 3.0])}))

    r = fresh.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    rest = dict(transport="rest", route="/v1/gradient")
    assert value(text, "derivd_requests_total", **rest, engine="reverse", status="200") == 3
    assert value(text, "derivd_requests_total", **rest, engine="none", status="400") == 1
    assert value(text, "derivd_requests_total", transport="grpc", route="gradient", engine="reverse", status="200") == 2
    # the same program at the same signature 4 more times (REST 2, gRPC 2): found, never compiled again
    assert value(text, "derivd_tape_cache_misses_total", level="local") == misses
    assert value(text, "derivd_tape_cache_hits_total", level="local") >= hits + 4
    assert value(text, "derivd_request_compute_seconds_count", **rest, engine="reverse") == 3
    assert value(text, "derivd_request_queue_seconds_count", **rest) == 3
    assert value(text, "derivd_request_seconds_count", **rest) == 4
    assert value(text, "derivd_requests_in_flight", transport="rest") == 0
    assert value(text, "derivd_requests_in_flight", transport="grpc") == 0


def test_tallied_requests_render_as_prometheus_observations():
    """``Metrics.record`` tallies between scrapes; the text must be what observing each value with
    prometheus_client itself gives: every bucket edge, values on a bound, missing timings."""
    values = ([0.0, 1e-4, 1.5e-4, 2.5e-4, 0.003, 0.3, 59.0, 60.0, 61.0, 1e4] + list(LATENCY_BUCKETS)) * 50
    assert len(values) > 1024  # past one batch of pending observations, bucketed before the scrape
    tallied, observed = Metrics(), Metrics()
    for i, s in enumerate(values):
        queue, compute = (None, None) if i % 3 == 0 else (s / 7, s / 3)
        status = 200 if i % 4 else 422
        tallied.record("rest", "/v1/gradient", "reverse", status, s, queue, 0.0, compute)
        observed.requests.labels("rest", "/v1/gradient", "reverse", str(status)).inc()
        observed.latency.labels("rest", "/v1/gradient").observe(s)
        observed.compile.labels("rest", "/v1/gradient").observe(0.0)
        if queue is not None:
            observed.queue.labels("rest", "/v1/gradient").observe(queue)
            observed.compute.labels("rest", "/v1/gradient", "reverse").observe(compute)
    for _ in range(2):  # a second scrape adds nothing twice
        got, want = samples(tallied.render().decode()), samples(observed.render().decode())
        ours = {k: v for k, v in got.items() if k[0].startswith("derivd_request") and not k[0].endswith("_created")}
        theirs = {k: v for k, v in want.items() if k[0].startswith("derivd_request") and not k[0].endswith("_created")}
        assert ours == pytest.approx(theirs) and len(ours) > 80
    assert ours[("derivd_request_seconds_count", (("route", "/v1/gradient"), ("transport", "rest")))] == len(values)


def test_cache_levels_and_worker_restarts_hooks(fresh):
    fresh.service.metrics.add_cache_level("redis", lambda: (5, 7))
    fresh.service.metrics.worker_restarts.labels("forward").inc()
    text = fresh.http.get("/metrics").text
    assert value(text, "derivd_tape_cache_hits_total", level="redis") == 5
    assert value(text, "derivd_tape_cache_misses_total", level="redis") == 7
    assert value(text, "derivd_worker_restarts_total", pool="forward") == 1


def test_stream_directions_counted(fresh):
    before = value(fresh.http.get("/metrics").text, "derivd_hvp_stream_directions_total") or 0
    msgs = [pb.HvpStreamRequest(start=pb.HvpStreamStart(function=fn("sum(x**2)"), at={"x": arr([1.0])}))]
    msgs += [pb.HvpStreamRequest(direction=pb.Direction(v={"x": arr([1.0])}))] * 4
    answers = list(fresh.stub.HessianVectorProducts(iter(msgs)))
    assert [np.frombuffer(a.hvp.hvp["x"].data)[0] for a in answers[1:]] == [2.0] * 4  # d2/dx2 x^2 = 2
    assert value(fresh.http.get("/metrics").text, "derivd_hvp_stream_directions_total") == before + 4


def test_request_id_echoed_and_logged_as_json(fresh, caplog):
    caplog.set_level(logging.INFO, logger="derivd.access")
    r = fresh.http.post("/v1/evaluate", json={"function": {"dsl": "x * 2"}, "at": {"x": 1.5}},
                        headers={"X-Request-Id": "trace-42.a"})
    assert r.json()["value"] == 3.0
    assert r.headers["x-request-id"] == "trace-42.a"
    records = wait_for(lambda: [rec for rec in caplog.records  # written once the response has gone out
                                if getattr(rec, "fields", {}).get("request_id") == "trace-42.a"],
                       "an access log line with the request id", 5)
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["route"] == "/v1/evaluate" and line["status"] == 200 and line["engine"] == "tape"
    assert line["msg"] == "request" and line["level"] == "INFO" and line["compute_ms"] >= 0


def test_unsafe_request_id_is_replaced(fresh):
    r = fresh.http.get("/healthz", headers={"X-Request-Id": "evil\"id with spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert request_id("ok-id_1:2") == "ok-id_1:2" and request_id("x" * 129) != "x" * 129


def test_grpc_request_id_in_trailing_metadata(fresh):
    _, call = fresh.stub.Evaluate.with_call(pb.EvaluateRequest(function=fn("x"), at={"x": arr(1.0)}),
                                            metadata=[("x-request-id", "grpc-7")])
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-7"


def test_readyz_reports_pools(fresh):
    r = fresh.http.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready" and "pools" in r.json()


def test_a_rest_request_is_in_flight_while_it_is_served():
    """The REST in-flight gauge (a plain count read at each scrape in one process) says 1 while the app
    serves a request and 0 after it, whether it answered or raised."""
    import asyncio

    from derivd.observability import RequestTelemetry

    metrics = Metrics()
    seen = []

    async def app(scope, receive, send):
        seen.append(value(metrics.render().decode(), "derivd_requests_in_flight", transport="rest"))
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        pass

    telemetry = RequestTelemetry(app, metrics)
    for path in ("/ok", "/boom"):
        scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": ("127.0.0.1", 1)}
        try:
            asyncio.run(telemetry(scope, None, send))
        except RuntimeError:
            pass
    assert seen == [1.0, 1.0]
    assert value(metrics.render().decode(), "derivd_requests_in_flight", transport="rest") == 0
