"""The documentation the service serves itself, with no network: API docs, the language reference.

``GET /docs`` is Swagger UI from the ``swagger-ui-bundle-v2`` wheel's files,
served under ``/docs/assets`` (no CDN, so it renders offline);
``GET /docs/language`` is the language reference generated from the primitive
registry (``dsl.reference``). ``describe_routes`` completes the OpenAPI
document: every route gets its response schema (the error body for 4xx), and
every request body a working example (``EXAMPLES``, each one answered 200 and
checked against its response schema in tests/gateway/test_docs.py),
and the ``X-API-Key`` scheme so "Authorize" works on a service with keys.
Pages are public (``PUBLIC_PATHS``, ``PUBLIC_PREFIXES``): a browser cannot send a key with a
page load, and they hold nothing but documentation; every request they make
to the API carries the key the reader gives.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

PUBLIC_PATHS = frozenset({"/", "/openapi.json"})
PUBLIC_PREFIXES = ("/docs", "/playground")  # each, and everything under it

_ROSENBROCK = {"dsl": "sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)"}
_TWO_OUTPUTS = {"dsl": "[x[0]*sin(x[1]), exp(x[0]) + x[1]**2]"}

# One request per derivative endpoint (a row of core.endpoints without one fails tests/gateway/test_docs.py).
EXAMPLES: dict[str, dict] = {
    "evaluate": {"function": {"dsl": "A @ x"}, "at": {"x": [1.0, 1.0]}, "constants": {"A": [[1, 2], [3, 4]]}},
    "gradient": {"function": _ROSENBROCK, "at": {"x": [1.2, 0.5, -0.3]}},
    "jacobian": {"function": _TWO_OUTPUTS, "at": {"x": [1.0, 2.0]}},
    "jvp": {"function": _TWO_OUTPUTS, "at": {"x": [1.0, 2.0]}, "v": {"x": [1.0, 0.0]}},
    "vjp": {"function": _TWO_OUTPUTS, "at": {"x": [1.0, 2.0]}, "u": [1.0, 0.0]},
    "hvp": {"function": {"dsl": "sum(x**4)"}, "at": {"x": [1.0, 2.0]}, "v": {"x": [1.0, 0.0]}},
    "hessian": {"function": _ROSENBROCK, "at": {"x": [1.2, 0.5, -0.3]}},
    "taylor": {"function": {"dsl": "exp(x)"}, "at": {"x": 0.0}, "v": {"x": 1.0}, "order": 4},
    "derivatives": {"function": {"dsl": "x[0]**2 * x[1] + sin(x[1])"}, "at": {"x": [0.3, 0.5]}, "order": 3},
}
SUMMARIES = {
    "evaluate": "The function's value",
    "gradient": "Gradient of a one-element output: {name: array shaped like the input}",
    "jacobian": "Jacobian, m×n over the flat outputs and the flat wrt inputs (COO with sparse)",
    "jvp": "Jacobian-vector product J v",
    "vjp": "Vector-Jacobian product uᵀ J",
    "hvp": "Hessian-vector product(s) H v of a one-element output (vs: many directions, one pass)",
    "hessian": "Gradient and Hessian of a one-element output (COO with sparse)",
    "taylor": "Taylor coefficients c_k = (1/k!) d^k/dt^k f(x + t v) at t = 0, k = 0..order",
    "derivatives": "Every derivative tensor of order 1..order (≤ 4) at once",
}
TAGS = [{"name": "derivatives", "description": "POST a function and a point, get derivatives. The function is "
                                               "{\"dsl\": program} (see /docs/language), {\"id\": stored id} "
                                               "or {\"blackbox\": name}."},
        {"name": "functions", "description": "Programs stored once and named by id"},
        {"name": "black boxes", "description": "Functions derivd can only call: derivatives by finite differences"},
        {"name": "operations", "description": "Liveness, readiness, Prometheus metrics"}]
FUNCTION_EXAMPLE = {"dsl": "sum(a * x)", "constants": {"a": [1, 2]}}
BLACKBOX_EXAMPLE = {"name": "sim", "url": "http://localhost:9000/simulate", "input_size": 2, "output_size": 1,
                    "batch": False, "timeout_s": 10}

# ------------------------------------------------------------------ response schemas

_NUMBER = {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["Infinity", "-Infinity", "NaN"]}]}
_ARRAY = {"description": "a number, a nested list, or with encoding base64 {dtype, shape, data}",
          "oneOf": [_NUMBER, {"type": "array"}, {"type": "object", "required": ["dtype", "shape", "data"]}]}
_BY_INPUT = {"type": "object", "additionalProperties": _ARRAY, "description": "one array per wrt input, its shape"}
_COO = {"type": "object", "required": ["rows", "cols", "values", "shape"],
        "description": "COO: entry k is values[k] at (rows[k], cols[k])",
        "properties": {"rows": {"type": "array", "items": {"type": "integer"}},
                       "cols": {"type": "array", "items": {"type": "integer"}},
                       "values": _ARRAY, "shape": {"type": "array", "items": {"type": "integer"}}}}
_COMMON = {
    "value": {**_ARRAY, "description": "f at the point"},
    "engine": {"type": "string", "description": "which engine answered: tape, forward, reverse, "
                                                "forward-over-reverse, taylor, finite"},
    "verification": {"type": "object", "description": "with verify: the answer checked by finite differences",
                     "properties": {"max_abs_err": _NUMBER, "max_rel_err": _NUMBER, "passed": {"type": "boolean"},
                                    "fd_error_estimate": _NUMBER, "fd_evaluations": {"type": "integer"}}},
    "fd": {"type": "object", "description": "mode finite or a black box: the finite differences' cost and error",
           "properties": {"evaluations": {"type": "integer"}, "max_error_estimate": _NUMBER}},
    "sparsity": {"type": "object", "description": "with sparse: the detected pattern and its colouring",
                 "properties": {"nnz": {"type": "integer"}, "colors": {"type": "integer"},
                                "pattern_seconds": {"type": "number"}}},
}
_FIELDS: dict[str, dict] = {
    "evaluate": {},
    "gradient": {"gradient": _BY_INPUT},
    "jacobian": {"jacobian": {"description": "m×n, rows the flat outputs, columns the flat wrt inputs; "
                                             "COO with sparse", "oneOf": [_ARRAY, _COO]},
                 "shape": {"type": "array", "items": {"type": "integer"}}},
    "jvp": {"jvp": {**_ARRAY, "description": "J v, flat, length m"}},
    "vjp": {"vjp": _BY_INPUT},
    "hvp": {"hvp": {**_BY_INPUT, "description": "H v (with v)"},
            "hvps": {"type": "array", "items": _BY_INPUT, "description": "H v for each of vs (with vs)"}},
    "hessian": {"gradient": _BY_INPUT, "hessian": {"description": "n×n, COO with sparse", "oneOf": [_ARRAY, _COO]}},
    "taylor": {"coefficients": {"type": "array", "description": "K+1 flat lists c_k = (1/k!) d^k/dt^k f(x + t v)"},
               "derivatives": {"type": "array", "description": "K+1 flat lists k! c_k"}},
    "derivatives": {"tensors": {"type": "array", "description": "order e: shape [n]*e for one output, else "
                                                                "[m] + [n]*e"},
                    "directions": {"type": "integer", "description": "univariate series propagated"}},
}
_REQUIRED = {"evaluate": [], "gradient": ["gradient"], "jacobian": ["jacobian", "shape"], "jvp": ["jvp"],
             "vjp": ["vjp"], "hvp": [], "hessian": ["gradient", "hessian"], "taylor": ["coefficients"],
             "derivatives": ["tensors", "directions"]}


def response_schema(endpoint: str) -> dict:
    """The JSON schema of ``endpoint``'s 200 answer."""
    return {"type": "object", "required": ["value", "engine", *_REQUIRED[endpoint]],
            "properties": {**_COMMON, **_FIELDS[endpoint]}}


_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message", "detail"],
    "properties": {"code": {"type": "string", "example": "parse_error"}, "message": {"type": "string"},
                   "detail": {"type": "object", "description": "e.g. line and column of a parse error"}}}}}


_STRINGS = {"type": "array", "items": {"type": "string"}}
_BLACKBOX = {"type": "object", "required": ["name", "url", "input_size", "output_size"],
             "description": "the registration (credentials in headers are never echoed)",
             "properties": {"name": {"type": "string"}, "url": {"type": "string"},
                            "input_size": {"type": "integer"}, "output_size": {"type": "integer"},
                            "batch": {"type": "boolean"}, "timeout_s": {"type": "number"}}}
# The framework's routes: (method, path) -> (status, description, JSON schema; None: not JSON).
_OTHER_RESPONSES = {
    ("post", "/v1/functions"): ("200", "stored", {"type": "object", "required": ["id", "inputs"], "properties": {
        "id": {"type": "string", "description": "a stable hash of the program and constants"},
        "inputs": {**_STRINGS, "description": "its inputs, in the order the source reads them"}}}),
    ("get", "/v1/functions/{fid}"): ("200", "the stored program", {
        "type": "object", "required": ["id", "dsl", "inputs", "constants"],
        "properties": {"id": {"type": "string"}, "dsl": {"type": "string"}, "inputs": _STRINGS,
                       "constants": {**_STRINGS, "description": "the names bound at registration"}}}),
    ("get", "/v1/functions/{fid}/program"): ("200", "the derivative program: a standalone Python module "
                                                     "(text/x-python) that needs only numpy", None),
    ("post", "/v1/blackboxes"): ("200", "registered", _BLACKBOX),
    ("get", "/v1/blackboxes"): ("200", "every registered black box", {
        "type": "object", "required": ["blackboxes"], "properties": {"blackboxes": {"type": "array",
                                                                                    "items": _BLACKBOX}}}),
    ("delete", "/v1/blackboxes/{name}"): ("204", "deleted", None),
    ("get", "/healthz"): ("200", "alive", {"type": "object", "required": ["status"],
                                           "properties": {"status": {"const": "ok"}}}),
    ("get", "/readyz"): ("200", "ready (503 with the same body when not)", {
        "type": "object", "required": ["status"], "properties": {"status": {"enum": ["ready", "not ready"]}}}),
    ("get", "/metrics"): ("200", "Prometheus text exposition", None),
}


def describe_routes(schema: dict) -> dict:
    """Complete the OpenAPI ``schema`` in place: responses and examples of the derivative routes,
    the function and black-box examples, the error body, the API-key scheme."""
    comps = schema.setdefault("components", {})
    comps.setdefault("schemas", {})["Error"] = _ERROR
    comps["securitySchemes"] = {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
    schema["security"] = [{}, {"ApiKey": []}]  # optional: only a service with keys asks for one
    error = {"description": "refused: code, message and detail (a parse error's line and column)",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    schema["tags"] = TAGS
    derivative_paths = [p for p in schema["paths"] if p.removeprefix("/v1/") in SUMMARIES]
    schema["paths"] = {p: schema["paths"][p] for p in derivative_paths + [p for p in schema["paths"]
                                                                         if p not in derivative_paths]}
    for endpoint, summary in SUMMARIES.items():
        if f"/v1/{endpoint}" in schema["paths"]:
            schema["paths"][f"/v1/{endpoint}"]["post"]["summary"] = summary
    for endpoint, example in EXAMPLES.items():
        post = schema["paths"][f"/v1/{endpoint}"]["post"]
        post["requestBody"]["content"]["application/json"]["example"] = example
        post["responses"] = {"200": {"description": "the answer; arrays as nested lists, or base64 with "
                                                    "encoding: base64",
                                     "content": {"application/json": {"schema": response_schema(endpoint)}}},
                             "4XX": error}
    for (method, path), (status, description, body) in _OTHER_RESPONSES.items():
        op = schema["paths"][path][method]
        content = ({"application/json": {"schema": body}} if body is not None else
                   {} if status == "204" else {"text/plain": {"schema": {"type": "string"}}})
        op["responses"] = {status: {"description": description, **({"content": content} if content else {})},
                           **({"4XX": error} if path.startswith("/v1/") else {})}
    post = schema["paths"]["/v1/functions"]["post"]
    post["requestBody"]["content"]["application/json"]["example"] = FUNCTION_EXAMPLE
    post["summary"] = "Store a program; its id (a stable hash) names it in any request"
    post = schema["paths"]["/v1/blackboxes"]["post"]
    post["requestBody"]["content"]["application/json"]["example"] = BLACKBOX_EXAMPLE
    post["summary"] = ("Register a black box (POST url {x} -> {y}); loopback and private addresses are refused "
                       "unless DERIVD_BLACKBOX_DENY admits them")
    return schema


# ------------------------------------------------------------------ pages

_SWAGGER_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>derivd API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head><body>
<p style="font:14px system-ui,sans-serif;margin:.5em 1em">
<a href="/docs/language">language reference</a> · <a href="/playground">playground</a></p>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script></body></html>"""

# a file, not an inline script: a Content-Security-Policy without 'unsafe-inline' still shows the page
_SWAGGER_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui",
  deepLinking: true, tryItOutEnabled: true, persistAuthorization: true});"""


def swagger_assets() -> Path:
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


@functools.cache
def _language(form: str) -> str:
    """The language reference as ``html`` or ``markdown``, made on first use (the registry is complete
    once imported)."""
    from derivd.dsl import reference

    return reference.html() if form == "html" else reference.markdown()


def install(app: FastAPI) -> None:
    """``GET /docs``, its assets and ``GET /docs/language`` (and ``/docs/language.md``) on ``app``."""
    @app.get("/docs", include_in_schema=False)
    async def docs():
        return HTMLResponse(_SWAGGER_PAGE)

    @app.get("/docs/assets/init.js", include_in_schema=False)
    async def swagger_init():
        return PlainTextResponse(_SWAGGER_INIT, media_type="text/javascript")

    @app.get("/docs/language", include_in_schema=False)
    async def language():
        return HTMLResponse(_language("html"))

    @app.get("/docs/language.md", include_in_schema=False)
    async def language_markdown():
        return PlainTextResponse(_language("markdown"), media_type="text/markdown")

    app.mount("/docs/assets", StaticFiles(directory=swagger_assets()), name="docs-assets")
