"""The derivative routes are served outside the framework (``gateway.derivatives``): what the
framework used to give them for free is checked here, over real HTTP."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from derivd.core import ENDPOINTS
from tests.references import ROSENBROCK, rosenbrock_gradient

X = [0.5, -1.2, 2.0]
BODY = {"function": {"dsl": ROSENBROCK}, "at": {"x": X}}


def test_openapi_documents_every_derivative_route_with_its_request_schema(client):
    doc = client.get("/openapi.json").json()
    for endpoint in ENDPOINTS:
        post = doc["paths"][f"/v1/{endpoint}"]["post"]
        ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        assert "at" in doc["components"]["schemas"][name]["properties"], endpoint
    assert "/gradient" not in doc["paths"]  # the unversioned aliases are served, not advertised


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405_with_the_contract_error_body(client, method):
    r = client.request(method, "/v1/gradient")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert "server-timing" in r.headers and "x-request-id" in r.headers


def test_a_body_sent_in_chunks_is_read_whole(client):
    raw = orjson.dumps(BODY)

    def pieces():
        for i in range(0, len(raw), 7):
            yield raw[i:i + 7]

    r = client.post("/v1/gradient", content=pieces(), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["gradient"]["x"], rosenbrock_gradient(np.array(X)), rtol=1e-13)


def test_a_chunked_body_over_the_cap_is_413_without_a_length_header():
    from derivd.config import Settings
    from tests.conftest import LiveServer

    raw = orjson.dumps({**BODY, "at": {"x": [1.0] * 500}})
    with LiveServer(Settings(max_request_bytes=1000)) as s:
        r = httpx.post(s.url + "/v1/gradient", content=iter([raw[:600], raw[600:]]),
                       headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["detail"]["limit"] == "max_request_bytes"


def test_unknown_paths_still_reach_the_framework(client):
    r = client.post("/v1/gradients", json=BODY)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_derivative_requests_are_counted_by_route_engine_and_status(client):
    before = client.get("/metrics").text
    assert client.post("/gradient", json=BODY).status_code == 200
    assert client.post("/v1/gradient", json={"function": {"dsl": "x +"}, "at": {"x": X}}).status_code == 400
    after = client.get("/metrics").text

    def count(text, route, engine, status):
        line = f'derivd_requests_total{{engine="{engine}",route="{route}",status="{status}",transport="rest"}}'
        return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))

    assert count(after, "/gradient", "reverse", 200) == count(before, "/gradient", "reverse", 200) + 1
    assert count(after, "/v1/gradient", "none", 400) == count(before, "/v1/gradient", "none", 400) + 1
