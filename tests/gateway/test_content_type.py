"""Routes that read a JSON body take only ``Content-Type: application/json`` (415 otherwise), so a
cross-site "simple" POST (text/plain, a form, no type) cannot use an open service."""

from __future__ import annotations

import hashlib

import numpy as np
import orjson
import pytest

from tests.references import ROSENBROCK, rosenbrock_gradient

X = [0.5, -1.0, 2.0]
BODY = orjson.dumps({"function": {"dsl": ROSENBROCK}, "at": {"x": X}})
SIMPLE_TYPES = ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x", "application/xml", None]


@pytest.mark.parametrize("path", ["/v1/gradient", "/gradient", "/v1/hessian", "/v1/functions", "/v1/blackboxes"])
@pytest.mark.parametrize("content_type", SIMPLE_TYPES)
def test_a_body_not_declared_json_is_415_naming_what_was_sent(client, path, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.post(path, content=BODY, headers=headers)
    assert r.status_code == 415, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_media_type" and "application/json" in error["message"]
    expected = "no Content-Type was sent" if content_type is None else repr(content_type.split(";")[0].lower())
    assert expected in error["message"]
    assert "server-timing" in r.headers


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_with_or_without_parameters_is_served(client, content_type):
    r = client.post("/v1/gradient", content=BODY, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["gradient"]["x"], rosenbrock_gradient(np.array(X)), rtol=1e-13)


def test_a_cross_site_text_plain_post_stores_nothing(client):
    """What a web page could send from a visitor's browser without a preflight: refused, not stored."""
    dsl = f"sum(x * {int(hashlib.sha256(b'csrf').hexdigest()[:6], 16)})"
    r = client.post("/v1/functions", content=orjson.dumps({"dsl": dsl}), headers={"content-type": "text/plain"})
    assert r.status_code == 415
    stored = client.post("/v1/functions", json={"dsl": dsl})  # the same program, declared JSON
    assert stored.status_code == 200
    assert client.get(f"/v1/functions/{stored.json()['id']}").json()["dsl"] == dsl


def test_routes_without_a_body_need_no_content_type(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/blackboxes").status_code == 200
