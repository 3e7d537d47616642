"""Deep programs parsed by several threads at once: each answer is right or a 4xx naming the depth
limit, never a 500 (CPython 3.11's AST constructor shares its recursion counter between threads)."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest

from derivd.config import Settings
from tests.conftest import LiveServer

X = [0.25, -1.5, 2.0]
THREADS, PER_THREAD = 4, 60


def nested(c: float, depth: int) -> str:
    """c * sum((x + (x + ... x))): value c*(depth+1)*sum(x), gradient c*(depth+1) everywhere."""
    return f"{c} * sum(" + "(x + " * depth + "x" + ")" * depth + ")"


def helpers(c: float, count: int) -> str:
    """h_i(a) = h_{i-1}(a) + a with h_0(a) = c*a: h_{count-1}(x) = (c + count - 1) x."""
    lines = [f"def h0(a): return a * {c}"] + [f"def h{i}(a): return h{i - 1}(a) + a" for i in range(1, count)]
    return "\n".join(lines) + f"\nsum(h{count - 1}(x))"


def expected(kind: str, c: float) -> float | None:
    """The gradient's common entry, or None where the default depth limit (100) must refuse."""
    return {"nested": c * 91, "helpers": c + 59, "too_deep": None}[kind]


def program(kind: str, c: float) -> str:
    return {"nested": nested(c, 90), "helpers": helpers(c, 60), "too_deep": helpers(c, 200)}[kind]


@pytest.fixture(scope="module")
def live():
    with LiveServer(Settings()) as s:
        yield s


def test_concurrent_deep_programs_are_answered_or_refused_never_500(live):
    answers: list[tuple[str, float, int, dict]] = []

    def run(thread: int):
        with httpx.Client(base_url=live.url, timeout=60) as client:
            for j in range(PER_THREAD):
                kind = ("nested", "helpers", "too_deep")[(thread + j) % 3]
                c = 1.0 + thread + j / 64  # a new text each time: the tape cache never skips the parse
                r = client.post("/v1/gradient", json={"function": {"dsl": program(kind, c)}, "at": {"x": X}})
                answers.append((kind, c, r.status_code, r.json()))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == THREADS * PER_THREAD
    server_errors = [(kind, status, body) for kind, _, status, body in answers if status >= 500]
    assert not server_errors, server_errors[:3]
    for kind, c, status, body in answers:
        slope = expected(kind, c)
        if slope is None:
            assert status == 413 and body["error"]["detail"]["limit"] == "max_nesting_depth", body
        else:
            assert status == 200, body
            np.testing.assert_allclose(body["value"], slope * sum(X), rtol=1e-12)
            np.testing.assert_allclose(body["gradient"]["x"], [slope] * len(X), rtol=1e-12)


def test_an_expression_too_long_for_the_parser_is_a_413_naming_the_depth_limit(live):
    """A chain `x + x + ... + x` of 5,000 terms is shallow by the language's measure but too deep
    for CPython's AST constructor: a 4xx naming the limit, not an opaque parse failure."""
    r = httpx.post(f"{live.url}/v1/gradient", json={"function": {"dsl": "sum(x" + " + x" * 5000 + ")"},
                                                      "at": {"x": X}}, timeout=60)
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["detail"]["limit"] == "max_nesting_depth" and "max_nesting_depth" in error["message"]
