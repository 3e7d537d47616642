"""The long hostile-input fuzz: the sources of tests/fuzz, many more examples, through real HTTP.

    python bench/fuzz.py [--programs 5000] [--texts 2000] [--bodies 2000] [--bound 20]

Starts a gateway on a free port (default settings), sends random programs of the
language's grammar to every endpoint, random text and bytes, random request
bodies, and the fixed deep/huge/escape lists, and checks every answer: no 5xx,
none slower than --bound seconds, every refusal the contract's error body. Prints
the counts by status and error code; exits 1 on the first violation (with it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from derivd.config import Settings  # noqa: E402
from tests.conftest import LiveServer  # noqa: E402
from tests.fuzz.hostile import (DEEP, ENDPOINTS, ESCAPES, HUGE, SENTINEL, Verdict, programs,  # noqa: E402
                                request_for, text_sources)

BODIES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
              st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(
        st.sampled_from(["function", "at", "constants", "wrt", "mode", "fd", "v", "u", "order", "dsl", "x",
                         "encoding", "sparse", "verify"]), inner, max_size=5)),
    max_leaves=15)


def run(client, verdict: Verdict, args) -> None:
    def many(n):
        return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    @many(args.programs)
    @given(program=programs, endpoint=st.sampled_from(ENDPOINTS))
    def grammar(program, endpoint):
        r = verdict.send(client, f"/v1/{endpoint}", request_for(endpoint, program))
        if endpoint == "jacobian" and r is not None and r.status_code == 200:
            cross_check(client, program)

    def cross_check(client, program):
        """An answered Jacobian again with ``verify``: the service's own finite differences of the
        program, independent of its AD; a disagreement is counted and printed."""
        body = dict(request_for("jacobian", program), verify=True)
        v = client.post("/v1/jacobian", json=body)
        if v.status_code != 200:
            verdict.counts["verify refused"] += 1
            return
        passed = v.json().get("verification", {}).get("passed")
        verdict.counts["verified" if passed else "verify disagrees"] += 1
        if not passed:
            print(f"  disagreement: {program!r}: {v.json().get('verification')}", flush=True)

    @many(args.texts)
    @given(text=text_sources(), endpoint=st.sampled_from(["evaluate", "gradient", "jacobian"]))
    def texts(text, endpoint):
        verdict.send(client, f"/v1/{endpoint}", request_for(endpoint, text))

    @many(args.bodies)
    @given(body=BODIES, endpoint=st.sampled_from(ENDPOINTS + ["functions"]))
    def bodies(body, endpoint):
        verdict.send(client, f"/v1/{endpoint}", body)

    @many(args.bodies // 4)
    @given(raw=st.binary(max_size=500))
    def raw_bytes(raw):
        verdict.send(client, "/v1/gradient", content=raw)

    for name, source in (("grammar", grammar), ("texts", texts), ("bodies", bodies), ("raw", raw_bytes)):
        t = time.monotonic()
        before = sum(verdict.counts.values())
        source()
        print(f"  {name}: {sum(verdict.counts.values()) - before} requests in {time.monotonic() - t:.0f} s",
              flush=True)
    for program in DEEP + HUGE + ESCAPES:
        for endpoint in ENDPOINTS:
            verdict.send(client, f"/v1/{endpoint}", request_for(endpoint, program))
    print(f"  fixed lists: {len(DEEP)} deep, {len(HUGE)} huge, {len(ESCAPES)} escapes, on {len(ENDPOINTS)} "
          f"endpoints each")
    assert not os.path.exists(SENTINEL), "an escape attempt ran code"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=5000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--bodies", type=int, default=2000)
    parser.add_argument("--bound", type=float, default=20.0, help="seconds one request may take")
    args = parser.parse_args()
    verdict = Verdict(args.bound)
    start = time.monotonic()
    with LiveServer(Settings()) as server, httpx.Client(base_url=server.url, timeout=args.bound * 3) as client:
        try:
            run(client, verdict, args)
        except AssertionError as e:
            print(f"VIOLATION after {sum(verdict.counts.values())} requests: {e}")
            return 1
    print(f"fuzz: {verdict.summary()} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
