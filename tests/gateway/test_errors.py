"""Malformed requests: each a 4xx with the contract's error body, never a 500."""

from __future__ import annotations

import pytest

OK = {"function": {"dsl": "sum(x**2)"}, "at": {"x": [1.0, 2.0]}}

CASES = [
    ("malformed json", "/v1/gradient", b"{not json", 400, "invalid_json"),
    ("not an object", "/v1/gradient", b"[1, 2]", 422, "invalid_request"),
    ("missing function", "/v1/gradient", {"at": {"x": 1.0}}, 422, "invalid_request"),
    ("unknown field", "/v1/gradient", {**OK, "bogus": 1}, 422, "invalid_request"),
    ("ragged array", "/v1/gradient", {**OK, "at": {"x": [1.0, [2.0]]}}, 422, "invalid_request"),
    ("string in array", "/v1/gradient", {**OK, "at": {"x": [1.0, "a"]}}, 422, "invalid_request"),
    ("bad base64", "/v1/gradient", {**OK, "at": {"x": {"dtype": "float64", "shape": [2], "data": "!!"}}}, 422,
     "invalid_request"),
    ("base64 size mismatch", "/v1/gradient",
     {**OK, "at": {"x": {"dtype": "float64", "shape": [3], "data": "AAAAAAAAAAA="}}}, 422, "invalid_request"),
    ("syntax error", "/v1/gradient", {**OK, "function": {"dsl": "sum(x**2"}}, 400, "parse_error"),
    ("unbound name", "/v1/gradient", {**OK, "function": {"dsl": "sum(y)"}}, 400, "unknown_name"),
    ("unknown function", "/v1/gradient", {**OK, "function": {"dsl": "frobnicate(x)"}}, 400, "unknown_name"),
    ("shape mismatch", "/v1/evaluate", {**OK, "function": {"dsl": "x + ones(3)"}}, 400, "shape_mismatch"),
    ("not scalar", "/v1/gradient", {**OK, "function": {"dsl": "x * 2"}}, 400, "not_scalar"),
    ("wrt constant", "/v1/gradient", {**OK, "constants": {"c": 1.0}, "wrt": ["c"]}, 422, "invalid_request"),
    ("wrt unknown", "/v1/gradient", {**OK, "wrt": ["z"]}, 400, "unknown_name"),
    ("bad mode", "/v1/gradient", {**OK, "mode": "magic"}, 422, "invalid_request"),
    ("unknown id", "/v1/gradient", {**OK, "function": {"id": "nope"}}, 404, "unknown_function"),
    ("index out of range", "/v1/evaluate", {**OK, "function": {"dsl": "x[5]"}}, 400, "index_out_of_range"),
    ("gather out of range", "/v1/evaluate",
     {**OK, "function": {"dsl": "x[idx]"}, "constants": {"idx": [0, 7]}}, 400, "index_out_of_range"),
    ("import", "/v1/evaluate", {**OK, "function": {"dsl": "import os\nx"}}, 400, "unsupported_syntax"),
    ("dunder", "/v1/evaluate", {**OK, "function": {"dsl": "x.__class__"}}, 400, "unsupported_syntax"),
    ("huge literal", "/v1/evaluate", {**OK, "function": {"dsl": "x * 10**10**10"}}, 413, "limit_exceeded"),
    ("deep nesting", "/v1/evaluate", {**OK, "function": {"dsl": "(" * 500 + "x" + ")" * 500}}, 413,
     "limit_exceeded"),
    ("loop limit", "/v1/evaluate", {**OK, "function": {"dsl": "s = 0\nfor i in range(10**6):\n    s = s + x\ns"}},
     413, "limit_exceeded"),
    ("vjp without u", "/v1/vjp", OK, 422, "invalid_request"),
    ("jvp wrong shape", "/v1/jvp", {**OK, "v": {"x": [1.0, 2.0, 3.0]}}, 400, "shape_mismatch"),
    ("unknown route", "/v1/nothing", OK, 404, "not_found"),
]


@pytest.mark.parametrize("name,path,body,status,code", CASES, ids=[c[0] for c in CASES])
def test_malformed_request(client, name, path, body, status, code):
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["detail"], dict)
    assert "Traceback" not in r.text
    assert "server-timing" in r.headers


def test_parse_error_has_line_and_column(client):
    r = client.post("/v1/evaluate", json={**OK, "function": {"dsl": "a = x\nb = a +* 2\nb"}})
    d = r.json()["error"]["detail"]
    assert d["line"] == 2 and d["column"] >= 1


@pytest.mark.parametrize("dsl,code", [
    ("y = x\nsum((x > 0) & y)", "type_error"),  # a mask combined with a number
    ("y = x\nsum(sin(x, y))", "bad_arguments"),
    ("y = x\nsum(y * (1 // 0))", "zero_division"),
    ("y = x\nsum(y(2))", "type_error"),  # an input called like a function
])
def test_meaningless_programs_are_400_with_line_and_column(client, dsl, code):
    """Like a parse error, a program that parses but cannot mean anything is the program's fault:
    400 whatever the code, with the position of the offending expression."""
    r = client.post("/v1/gradient", json={**OK, "function": {"dsl": dsl}})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == code
    assert err["detail"]["line"] == 2 and err["detail"]["column"] >= 1


def test_shape_error_names_both_shapes(client):
    r = client.post("/v1/evaluate", json={**OK, "function": {"dsl": "y = x\ny + ones(3)"}})
    err = r.json()["error"]
    assert "[2]" in err["message"] and "[3]" in err["message"]
    assert err["detail"]["line"] == 2


def test_body_over_the_cap_is_413():
    import httpx

    from derivd.config import Settings
    from tests.conftest import LiveServer

    with LiveServer(Settings(max_request_bytes=1000)) as s:
        r = httpx.post(s.url + "/v1/gradient", json={**OK, "at": {"x": [1.0] * 500}})
        assert r.status_code == 413
        assert r.json()["error"]["detail"]["limit"] == "max_request_bytes"
