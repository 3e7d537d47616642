"""Bounded fuzz of parser and compiler through the real HTTP gateway: zero 5xx, zero hangs, and
every refusal the contract's error body (tests/fuzz/hostile.py says what is sent). bench/fuzz.py
runs the same sources for longer."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.hostile import (DEEP, ENDPOINTS, ESCAPES, HUGE, SENTINEL, Verdict, programs, request_for,
                                text_sources)

TIME_BOUND = 20.0  # seconds per request; the server's own deadline is request_timeout_s
def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def verdict():
    v = Verdict(TIME_BOUND)
    yield v
    print(f"\nfuzz: {v.summary()}")  # shown with -s


@fuzz(150)
@given(program=programs, endpoint=st.sampled_from(ENDPOINTS))
def test_random_programs_from_the_grammar(client, verdict, program, endpoint):
    verdict.send(client, f"/v1/{endpoint}", request_for(endpoint, program))


@fuzz(60)
@given(text=text_sources(), endpoint=st.sampled_from(["evaluate", "gradient"]))
def test_random_text_and_bytes(client, verdict, text, endpoint):
    verdict.send(client, f"/v1/{endpoint}", request_for(endpoint, text))


@pytest.mark.parametrize("program", DEEP, ids=[f"deep{i}" for i in range(len(DEEP))])
def test_deep_nesting_and_long_programs(client, verdict, program):
    verdict.send(client, "/v1/gradient", request_for("gradient", program))


@pytest.mark.parametrize("program", HUGE, ids=[f"huge{i}" for i in range(len(HUGE))])
def test_huge_literals_sizes_and_loops(client, verdict, program):
    r = verdict.send(client, "/v1/evaluate", request_for("evaluate", program))
    if "10**" in program or "2**6" in program or "9**" in program or "1e999" in program:
        assert r.status_code >= 400 or "1e999" in program  # refused, never computed (1e999 is just inf)


@pytest.mark.parametrize("program", ESCAPES, ids=[f"escape{i}" for i in range(len(ESCAPES))])
def test_python_escape_attempts_are_refused(client, verdict, program):
    for endpoint in ("evaluate", "gradient"):
        r = verdict.send(client, f"/v1/{endpoint}", request_for(endpoint, program))
        if "__" in program or "import" in program or "lambda" in program:
            assert r.status_code >= 400, f"{program!r} was accepted"
    assert not os.path.exists(SENTINEL), "an escape attempt ran code"


@fuzz(40)
@given(body=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(["function", "at", "constants", "wrt", "mode", "fd", "v", "u", "order", "dsl", "x",
                         "encoding", "sparse", "verify", "id", "blackbox"]), inner, max_size=5)),
    max_leaves=15), endpoint=st.sampled_from(ENDPOINTS + ["functions"]))
def test_random_request_bodies(client, verdict, body, endpoint):
    verdict.send(client, f"/v1/{endpoint}", body)


@fuzz(30)
@given(raw=st.binary(max_size=300))
def test_bodies_that_are_not_json(client, verdict, raw):
    verdict.send(client, "/v1/gradient", content=raw)
