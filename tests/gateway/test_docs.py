"""The documentation the service serves: offline API docs whose every example answers, and the
language reference generated from the registry (served, and committed as docs/language.md)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import jsonschema
import pytest

from derivd.config import Settings
from derivd.core import ENDPOINTS
from derivd.dsl.library import CALLS, Library
from derivd.dsl.reference import markdown
from derivd.ops import REGISTRY
from tests.conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_language_reference_is_the_generated_one():
    committed = (ROOT / "docs" / "language.md").read_text()
    assert committed == markdown(), "docs/language.md is stale: run python scripts/gen_language_reference.py"


def test_the_reference_names_every_language_function_with_its_modes(client):
    page = client.get("/docs/language")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    names = set(CALLS) | {a[2:] for a in dir(Library) if a.startswith("f_")}  # primitives' names and composites
    rows = {m.group(1): re.findall(r"<td>(.*?)</td>", m.group(2), re.S)
            for m in re.finditer(r"<tr id='([^']+)'>(.*?)</tr>", page.text, re.S)}
    assert set(rows) == names
    for prim in REGISTRY.values():
        for name in prim.dsl:
            modes = rows[name][2].split(", ")  # function, primitive, modes, notes
            assert ("taylor" in modes) == (prim.taylor is not None and prim.differentiable), name
            assert ("reverse" in modes) == (prim.vjp is not None and prim.differentiable), name
            assert ("forward" in modes) == (prim.jvp is not None and prim.differentiable), name
    assert client.get("/docs/language.md").text == markdown()


def test_docs_page_loads_only_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert any(r.endswith("swagger-ui-bundle.js") for r in refs)
    for ref in refs:
        assert ref.startswith("/"), f"{ref} is not served by the service"
        asset = client.get(ref)
        assert asset.status_code == 200, ref
    assert len(client.get("/docs/assets/swagger-ui-bundle.js").content) > 100_000


def _post_examples(doc):
    for path, methods in doc["paths"].items():
        body = methods.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {})
        if "example" in body:
            yield path, body["example"], methods["post"]["responses"]["200"]


def test_every_documented_example_answers_200_with_the_documented_response():
    settings = Settings(blackbox_deny=[])  # the black-box example's host is localhost
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        doc = http.get("/openapi.json").json()
        examples = list(_post_examples(doc))
        posted = {path for path, _, _ in examples}
        assert {"/v1/functions", "/v1/blackboxes"} <= posted
        missing = {f"/v1/{e}" for e in ENDPOINTS} - posted
        assert not missing, f"add an example for {missing} to gateway/docs.py EXAMPLES"
        for path, example, ok in examples:
            r = http.post(path, json=example)
            assert r.status_code == 200, (path, r.text)
            jsonschema.validate(r.json(), ok["content"]["application/json"]["schema"])
            if path == "/v1/functions":
                stored = http.get(f"/v1/functions/{r.json()['id']}")
                assert stored.status_code == 200 and stored.json()["dsl"] == example["dsl"]
                _check(doc, "get", "/v1/functions/{fid}", stored)
        for path in ("/v1/blackboxes", "/healthz", "/readyz"):
            _check(doc, "get", path, http.get(path))
        _check(doc, "delete", "/v1/blackboxes/{name}", http.delete("/v1/blackboxes/sim"))


def _check(doc, method, path, response):
    """``response`` has the documented status and fits the documented schema."""
    (status, documented), = [(s, d) for s, d in doc["paths"][path][method]["responses"].items() if s[0] == "2"]
    assert response.status_code == int(status), (path, response.text)
    if "application/json" in documented.get("content", {}):
        jsonschema.validate(response.json(), documented["content"]["application/json"]["schema"])


def test_every_route_documents_its_answer(client):
    doc = client.get("/openapi.json").json()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            ok = [s for s in op["responses"] if s[0] == "2"]
            assert len(ok) == 1, (method, path)
            content = op["responses"][ok[0]].get("content", {})
            assert ok[0] == "204" or any(c.get("schema") for c in content.values()), (method, path)
            if path.startswith("/v1/"):
                assert op["responses"]["4XX"]["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}, (method, path)


def test_the_derivative_examples_answers_are_right(client):
    """Two examples against their closed forms: the documentation shows correct numbers."""
    doc = client.get("/openapi.json").json()
    ex = {p: e for p, e, _ in _post_examples(doc)}
    g = client.post("/v1/gradient", json=ex["/v1/gradient"]).json()["gradient"]["x"]
    x = ex["/v1/gradient"]["at"]["x"]
    expect = [-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]),
              200 * (x[1] - x[0] ** 2) - 400 * x[1] * (x[2] - x[1] ** 2) - 2 * (1 - x[1]),
              200 * (x[2] - x[1] ** 2)]
    assert g == pytest.approx(expect, rel=1e-13)
    h = client.post("/v1/hvp", json=ex["/v1/hvp"]).json()["hvp"]["x"]
    assert h == pytest.approx([12 * 1.0 ** 2 * 1.0, 0.0])


def test_docs_are_public_on_a_service_with_keys_and_advertise_the_key():
    with LiveServer(Settings(api_keys=["k1"])) as server, httpx.Client(base_url=server.url) as http:
        for path in ("/", "/docs", "/docs/assets/swagger-ui.css", "/docs/language", "/openapi.json", "/playground",
                     "/playground/static/playground.js"):
            assert http.get(path).status_code == 200, path
        for path in ("/v1/gradient", "//v1/gradient", "/docsx", "/v1/blackboxes"):  # the API stays closed
            assert http.post(path, json={}).status_code == 401, path
        doc = http.get("/openapi.json").json()
        assert doc["components"]["securitySchemes"]["ApiKey"] == {"type": "apiKey", "in": "header",
                                                                  "name": "X-API-Key"}
