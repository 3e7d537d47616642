"""A plain body (the shared fields only, in the form the schema takes unchanged) is read without pydantic:
the request must be exactly the one the schema's path builds, and anything else must go to the schema."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from derivd.core import ENDPOINTS
from derivd.gateway.derivatives import plain_request, plainly_read, to_request
from derivd.gateway.http import validate

F = {"dsl": "sum(x**2) + a"}
PLAIN = [
    {"function": F, "at": {"x": [1.0, 2.0]}},
    {"function": {"id": "abc"}, "at": {"x": 3}},
    {"function": F, "at": {"x": [[1, 2], [3, 4]]}, "constants": {"a": 2, "m": [True, False]}},
    {"function": F, "at": {"x": ["NaN", 1.0]}, "wrt": ["x"], "mode": "forward", "verify": True},
    {"function": F, "at": {"x": {"dtype": "float32", "shape": [1], "data": "AACAPw=="}}, "encoding": "base64"},
    {"function": F, "at": {}, "constants": {}, "wrt": [], "mode": "finite", "verify": False, "encoding": "list"},
    {"function": {"blackbox": "sim", "extra": 1}, "at": {"x": 1.5}},
]
NOT_PLAIN = [  # valid for the schema in another form, or refused by it: the schema decides
    {"function": F, "at": {"x": 1.0}, "verify": 1},
    {"function": F, "at": {"x": 1.0}, "verify": "true"},
    {"function": F, "at": {"x": 1.0}, "wrt": "x"},
    {"function": F, "at": {"x": 1.0}, "wrt": ["x", 1]},
    {"function": F, "at": {"x": 1.0}, "mode": "sideways"},
    {"function": F, "at": {"x": 1.0}, "encoding": "hex"},
    {"function": F, "at": {"x": 1.0}, "fd": {"order": 4}},
    {"function": F, "at": {"x": 1.0}, "sparse": True},
    {"function": F, "at": [1.0]},
    {"function": "sum(x)", "at": {"x": 1.0}},
    {"at": {"x": 1.0}},
    {"function": F, "at": {"x": 1.0}, "unknown": 0},
    [{"function": F}],
]


def same(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
                and np.array_equal(a, b, equal_nan=True))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("name", [n for n, row in ENDPOINTS.items() if plainly_read(row.schema)])
@pytest.mark.parametrize("body", PLAIN)
def test_a_plain_body_reads_as_the_schema_reads_it(name, body):
    model = validate(ENDPOINTS[name].schema, body)
    req, base64 = plain_request(body)
    want = to_request(model)
    for field in dataclasses.fields(want):
        assert same(getattr(req, field.name), getattr(want, field.name)), field.name
    assert base64 == (model.encoding == "base64")


@pytest.mark.parametrize("body", NOT_PLAIN)
def test_any_other_body_goes_to_the_schema(body):
    assert plain_request(body) is None


def test_endpoints_that_need_more_than_the_shared_fields_always_go_to_the_schema():
    needs = {n for n, row in ENDPOINTS.items() if not plainly_read(row.schema)}
    assert needs == {"jvp", "vjp", "taylor", "derivatives"}  # v, u, order: required by their schemas
