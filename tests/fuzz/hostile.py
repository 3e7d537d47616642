"""Hostile input for the gateway: what to send, and what every answer must be.

Shared by the bounded fuzz in CI (tests/fuzz) and the longer run (bench/fuzz.py).
Sources: random programs from a grammar of the language (mostly ill-typed, some
valid), random text and bytes, deep nesting, huge literals and sizes, and Python
escape attempts. The verdict on each answer: never a 5xx, never past the time
bound, and every refusal a 4xx carrying the contract's error body
``{"error": {"code", "message", "detail"}}`` without a stack trace.
"""

from __future__ import annotations

import time
from collections import Counter

from hypothesis import strategies as st

AT = {"x": [0.5, -1.5, 2.0], "s": 0.7, "A": [[1.0, 2.0], [-0.5, 3.0]]}
CONSTANTS = {"idx": [0, 2, -1], "k": 2}
ENDPOINTS = ["evaluate", "gradient", "jacobian", "jvp", "vjp", "hvp", "hessian", "taylor"]
SENTINEL = "/tmp/derivd-fuzz-escaped"  # an escape that ran would leave this file behind

FUNCTIONS = (
    "abs sign sqrt cbrt exp exp2 expm1 log log2 log10 log1p sin cos tan asin acos atan sinh cosh tanh asinh acosh "
    "atanh erf erfc sigmoid softplus relu square reciprocal floor ceil round atan2 hypot maximum minimum pow clip "
    "sum prod mean max min logsumexp norm softmax dot matmul outer transpose trace diag reshape concat stack zeros "
    "ones eye arange len solve inv det slogdet cholesky where range print eval open getattr"
).split()
NAMES = ["x", "s", "A", "idx", "k", "i", "t", "h", "zz", "pi", "e", "True", "False", "__import__", "np"]
OPERATORS = ["+", "-", "*", "/", "**", "@", "%", "//", "&", "|", "<", "<=", ">", ">=", "==", "!=", "^", "<<", "and",
             "or", "is", "in"]

numbers = st.one_of(
    st.integers(-3, 5).map(str),
    st.sampled_from(["0.5", "1e-3", "2.5e10", "1e308", "1e999", "-0.0", "10**10**10", "9**99999", "2**63", "2**64",
                     "-2**63 - 1", "1" * 400, "0x10", "1_000", "1j", "0.1e-400", "float('nan')"]),
)
leaves = st.one_of(numbers, st.sampled_from(NAMES))


def _extend(expr):
    return st.one_of(
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), expr).map(lambda t: f"{t[0]}{t[1]}"),
        st.tuples(expr, st.sampled_from(OPERATORS), expr).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(FUNCTIONS), st.lists(expr, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(st.sampled_from(["sum", "max", "softmax", "logsumexp", "norm", "concat", "stack"]), expr,
                  st.sampled_from(["0", "-1", "1", "(0, 1)", "(0, 0)", "5", "x", "None"])).map(
            lambda t: f"{t[0]}({t[1]}, axis={t[2]})"),
        st.tuples(expr, st.sampled_from(["0", "-1", "5", "1:", "::-1", "::0", ":, 0", "0, 1", "idx", "k", "i",
                                         "x", "1.5", "idx, idx", "...", "None"])).map(lambda t: f"{t[0]}[{t[1]}]"),
        st.tuples(expr, st.sampled_from(["T", "shape", "ndim", "size", "__class__", "real", "sum"])).map(
            lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(expr, expr, expr).map(lambda t: f"({t[0]} if {t[1]} else {t[2]})"),
        st.lists(expr, min_size=1, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
        st.lists(expr, min_size=2, max_size=3).map(lambda xs: f"({', '.join(xs)})"),
    )


expressions = st.recursive(leaves, _extend, max_leaves=12)


def _statement(indent=""):
    target = st.sampled_from(["t", "h", "x", "s", "pi", "t, h", "i"])
    return st.one_of(
        st.tuples(target, expressions).map(lambda t: f"{indent}{t[0]} = {t[1]}"),
        st.tuples(st.sampled_from(["t", "h", "x"]), st.sampled_from(["+", "-", "*", "@"]), expressions).map(
            lambda t: f"{indent}{t[0]} {t[1]}= {t[2]}"),
        st.tuples(st.sampled_from(["range(3)", "range(1, 4)", "range(5, 0, -2)", "range(k)", "range(0)",
                                   "range(x)", "x", "range(100000)"]),
                  st.sampled_from(["t", "h", "x"]), expressions).map(
            lambda t: f"{indent}for i in {t[0]}:\n{indent}    {t[1]} = {t[2]}"),
        st.tuples(st.sampled_from(["f", "g", "sin"]), expressions).map(lambda t: f"{indent}def {t[0]}(a): return {t[1]}"),
    )


programs = st.tuples(st.lists(_statement(), max_size=3), expressions, st.booleans()).map(
    lambda t: "\n".join(t[0] + [("return " if t[2] else "") + t[1]]))

DEEP = [
    "(" * 5000 + "x" + ")" * 5000,
    "-" * 100000 + "x",
    "not " * 3000 + "x",
    "x" + " ** x" * 3000,
    "x" + " + x" * 50000,
    "[" * 300 + "x" + "]" * 300,
    "sin(" * 3000 + "x" + ")" * 3000,
    "x if x else " * 2000 + "x",
    "x[" * 500 + "0" + "]" * 500,
    "def f(a): return a\n" + "x = f(x)\n" * 20000 + "x",
    "".join(f"def f{i}(a): return f{i - 1}(a) * 2\n" if i else "def f0(a): return a\n" for i in range(300))
    + "f299(x)",
    "x" + ".T" * 100000,
    "\n" * 100000 + "x",
    "# " + "c" * 300000 + "\nx",
    "x" * 2_000_000,
]

HUGE = ["10**10**10", "9**99999", "2**64", "2**63", "-(2**63) - 1", "1e999", "10.0**400", "1" * 5000,
        "zeros(10**9)", "ones((100000, 100000))", "eye(10**6)", "arange(2**40)", "reshape(x, (10**12, -1))",
        "x * 1e308 * 1e308", "exp(1e308)", "for i in range(10**9):\n    x = x + 1\nx",
        "for i in range(40000):\n    for j in range(40000):\n        x = x + 1\nx",
        "t = x\nfor i in range(15):\n    t = concat([t, t])\nsum(t)", "sum(zeros((50000, 50000)))",
        "x[10**20]", "x[-10**20]", "x[2**63:]", "reshape(x, (3, 2**62))",
        # arithmetic edges of literals: numpy's answers (nan, inf), or a 4xx for integers
        "(0 / 0)", "1.0 / 0.0", "0.0 ** -1", "(-8.0) ** 0.5", "1 // 0", "1 % 0", "0.0 % 0.0", "x / 0",
        "log(0) + log(-1)", "exp(1000) * 0"]

ESCAPES = [
    "__import__('os').system('touch %s')" % SENTINEL,
    "open('%s', 'w')" % SENTINEL, "eval('1')", "exec('x = 1')", "compile('1', '', 'eval')", "getattr(x, 'T')",
    "globals()", "locals()", "vars()", "dir()", "breakpoint()", "input()", "print(x)", "help()",
    "x.__class__", "x.__class__.__bases__[0].__subclasses__()", "().__class__.__base__.__subclasses__()",
    "[].__class__", "''.join", "sum.__code__", "len.__self__", "x.T.__dict__", "x.shape.__class__",
    "__builtins__", "__name__", "__file__", "__loader__", "_ = 1\n_", "__t_x = 1\n__t_x",
    "import os\nx", "from os import system\nx", "import numpy as np\nnp.sum(x)",
    "lambda a: a", "(lambda: 1)()", "[a for a in x]", "{a for a in x}", "{a: a for a in x}", "(a for a in x)",
    "sum(*x)", "f(**x)", "max(*[x, x])", "f'{x}'", "f'{__import__(\"os\")}'", "(y := 1)", "[y := x]",
    "x.sum()", "x.T.sum()", "np.sum(x)", "x.real", "x.astype(int)", "sin.__call__(x)",
    "'string'", "b'bytes'", "None", "...", "{1: 2}", "{1, 2}", "x[...]", "x @= A",
    "while True:\n    x = x\nx", "def f():\n    yield 1\nf()", "async def f(a): return a\nx",
    "with open('x') as f:\n    x = 1\nx", "try:\n    x = 1\nexcept Exception:\n    x = 2\nx",
    "class A:\n    pass\nx", "del x\nx", "global x\nx", "nonlocal x\nx", "assert x\nx", "raise Exception\nx",
    "if x:\n    x = 1\nx", "for i in range(3):\n    break\nx", "x if x is None else x", "x in x",
    "def f(a, *b): return a\nf(x)", "def f(a=1): return a\nf(x)", "@sin\ndef f(a): return a\nf(x)",
    "def f(a):\n    return a\n    return a\nf(x)", "def f(a): return a\nf.__globals__", "range(3).__class__",
    "x\\\n.T", "x; import os", "x\x00", "\ufeffx", "x\r\n", "\u0131mport os", "ｘ", "sin(x) # \u202e",
    "exec", "eval", "open", "__import__", "range", "sin", "def open(a): return a\nopen(x)",
    "def range(a): return a\nrange(x)", "for x in range(3):\n    x = x\nx", "pi = 3\npi", "e = 1\ne",
    "True = 1\nTrue", "x.T.T.shape[0]", "len(x.shape)", "x.shape[5]", "x.shape + 1",
]


def text_sources():
    """Random text: printable, unicode, and bytes decoded leniently."""
    return st.one_of(
        st.text(max_size=200),
        st.text(alphabet=st.sampled_from(list("x()[]{}+-*/@%<>=!&|~.,:;'\"#\\\n\t 0123456789eij_")), max_size=200),
        st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
    )


def request_for(endpoint: str, program: str, draw_extra=None) -> dict:
    body = {"function": {"dsl": program}, "at": dict(AT), "constants": dict(CONSTANTS)}
    if endpoint in ("jvp", "hvp", "taylor"):
        body["v"] = {"x": [1.0, 0.0, -1.0], "s": 1.0, "A": [[0.0, 1.0], [1.0, 0.0]]}
    if endpoint == "vjp":
        body["u"] = [1.0]
    if endpoint == "taylor":
        body["order"] = 3
    return body


# ---------------------------------------------------------------- the verdict


class Verdict:
    """Counts of answers by outcome; ``check`` raises on anything the contract forbids."""

    def __init__(self, time_bound: float):
        self.time_bound = time_bound
        self.counts: Counter = Counter()
        self.slowest = 0.0

    def send(self, client, path: str, body=None, content: bytes | None = None):
        start = time.monotonic()
        if content is not None:
            r = client.post(path, content=content, headers={"content-type": "application/json"})
        else:
            r = client.post(path, json=body)
        elapsed = time.monotonic() - start
        self.slowest = max(self.slowest, elapsed)
        self.check(r, elapsed, body)
        return r

    def check(self, r, elapsed: float, body) -> None:
        what = repr(body)[:500]
        assert elapsed < self.time_bound, f"{elapsed:.1f} s (bound {self.time_bound} s) for {what}"
        assert r.status_code < 500, f"{r.status_code} {r.text[:500]} for {what}"
        data = r.json()
        if r.status_code >= 400:
            assert set(data) == {"error"}, f"not the contract's error body: {r.text[:300]}"
            err = data["error"]
            assert isinstance(err.get("code"), str) and err["code"], r.text[:300]
            assert isinstance(err.get("message"), str) and err["message"], r.text[:300]
            assert isinstance(err.get("detail"), dict), r.text[:300]
            assert "Traceback" not in r.text and 'File "' not in r.text, r.text[:300]
            self.counts[f"{r.status_code} {err['code']}"] += 1
        else:
            assert r.status_code == 200, r.status_code
            self.counts["200"] += 1

    def summary(self) -> str:
        total = sum(self.counts.values())
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return f"{total} requests, 0 5xx, slowest {self.slowest:.2f} s; {parts}"
