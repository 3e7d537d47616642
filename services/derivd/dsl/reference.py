"""The language reference, generated from the primitive registry and the library: never written by hand.

Every function a program can call is either a name a primitive declares
(``Primitive.dsl``, ops/registry.py) or an ``f_<name>`` composite of
dsl/library.py. ``entries()`` reads both: each function's arguments (from its
call's signature), what its primitive's ``doc`` says (conventions at
non-smooth points among them), and which derivative rules it has, hence which
modes and orders answer for it. ``markdown()`` is docs/language.md in the
repository (scripts/gen_language_reference.py writes it; a test keeps the
committed file equal to it) and ``html()`` is ``GET /docs/language``. A new
primitive appears in both with no code here.
"""

from __future__ import annotations

import html as _html
import inspect
from dataclasses import dataclass

from derivd.dsl.library import Library
from derivd.ops import REGISTRY
from derivd.ops.registry import LANGUAGE as COMPOSITES


@dataclass(frozen=True)
class Entry:
    """One language function: ``name(arguments)``, its ``primitive`` (None for a composite),
    ``doc``, and the ``modes`` that differentiate it (a list of (mode, what it gives))."""

    name: str
    arguments: str
    primitive: str | None
    doc: str
    modes: tuple[tuple[str, str], ...]


_ARG_NAMES = {1: ("x",), 2: ("a", "b"), 3: ("a", "b", "c")}


def _arguments(call, skip: int) -> str:
    """The argument list of a language call: its signature after ``skip`` leading parameters
    (``lib``, ``self``), or, for a call taking ``*args`` and a fixed ``arity`` (ops.registry.floats),
    that many array names."""
    try:
        params = list(inspect.signature(call).parameters.values())[skip:]
    except (TypeError, ValueError):  # a callable without a signature Python can read
        return "..."
    closure, code = getattr(call, "__closure__", None), getattr(call, "__code__", None)
    if any(p.kind is p.VAR_POSITIONAL for p in params) and closure and code:
        cell = dict(zip(code.co_freevars, closure)).get("arity")
        arity = cell.cell_contents if cell is not None else None
        if isinstance(arity, int):
            return ", ".join(_ARG_NAMES.get(arity, [f"x{i}" for i in range(arity)]))
    out = []
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            out.append(f"*{p.name}")
        elif p.kind is p.VAR_KEYWORD:
            continue
        elif p.default is p.empty:
            out.append(p.name)
        else:
            out.append(f"{p.name}={p.default!r}")
    return ", ".join(out)


def _modes(prim) -> tuple[tuple[str, str], ...]:
    """What the primitive's rules make available (a missing rule is an error in that mode, never 0)."""
    if not prim.differentiable:
        return (("all", "derivative 0: its value is a mask or an integer, no tangent flows"),)
    modes = []
    if prim.jvp is not None:
        modes.append(("forward", "order 1: jvp, jacobian"))
    if prim.vjp is not None:
        modes.append(("reverse", "order 1: gradient, vjp"))
    if prim.jvp is not None and prim.vjp is not None:
        modes.append(("forward-over-reverse", "order 2: hvp, hessian"))
    if prim.taylor is not None:
        modes.append(("taylor", "any order up to max_taylor_order: taylor, derivatives"))
    return tuple(modes) or (("none", "no derivative rule: differentiating it is an error"),)


def _prose(doc: str | None) -> str:
    """A docstring's first paragraph on one line, in Markdown's single backticks."""
    return " ".join((inspect.cleandoc(doc or "").split("\n\n") or [""])[0].split()).replace("``", "`")


def entries() -> list[Entry]:
    """Every language function, sorted by name."""
    out = {}
    for prim in REGISTRY.values():
        for name, call in prim.dsl.items():
            out[name] = Entry(name, _arguments(call, 1), prim.name, _prose(prim.doc), _modes(prim))
    composite = (("composite", "built from primitives: it has the derivative rules of the primitives it uses"),)
    for name, call in COMPOSITES.items():
        if name not in out:
            out[name] = Entry(name, _arguments(call, 1), None, _prose(call.__doc__), composite)
    for attr in dir(Library):
        if attr.startswith("f_") and attr[2:] not in out:
            fn = getattr(Library, attr)
            out[attr[2:]] = Entry(attr[2:], _arguments(fn, 1), None, _prose(fn.__doc__), composite)
    return [out[k] for k in sorted(out)]


LANGUAGE = """\
A program is Python-flavoured array code: zero or more statements, then one output expression.
It is parsed, never run as Python.

```
# statements, a helper, several outputs
def sq(a): return a * a
r = sqrt(sq(x[0]) + sq(x[1]))
[r * cos(theta), r * sin(theta), log1p(r)]
```

- **Names.** A name that is neither assigned, nor a helper, nor a function below is an input,
  bound by a request's `at` (differentiated, float64) or `constants` (not differentiated; integer
  arrays allowed, e.g. index arrays). An unbound input is an error that names it.
- **Values.** float64 arrays of any rank (a scalar is rank 0), with numpy's broadcasting.
- **Constants.** `pi`, `e`, numeric literals (`1`, `2.5`, `1e-3`), `True`, `False`.
- **Operators.** `+ - * / ** @ % //` and unary `-`; comparisons `< <= > >= == !=` and `& | ~`
  give masks, used by `where(c, a, b)` and `a if c else b` (elementwise, both sides evaluated).
- **Indexing.** `x[i]`, `x[i, j]`, negative indices, slices `x[a:b:c]`, `x[:, 0]`, `x.T`,
  `None` for a new axis, gathers with an integer array (`x[idx]`, `x[idx, :]`). An index out of
  range is an error naming it, never clamped or wrapped.
- **Helpers.** `def name(args): return expr` (one expression body, no recursion).
- **Loops.** `for i in range(N):` or `range(a, b)` with static bounds; `i` is an integer usable
  in arithmetic and indexing.
- **Output.** The last line (or `return expr`). A list or tuple is flattened and concatenated
  into the output vector. `gradient`, `hvp` and `hessian` need an output of exactly one element.
- **Soundness.** An operation without a derivative rule is an error (`no_derivative_rule`),
  never a silent zero.
"""

KINKS = """\
| function | where | derivative used |
|---|---|---|
| `abs`, `relu` | x = 0 | 0 |
| `sign`, `floor`, `ceil`, `round`, `a // b` | everywhere | 0 |
| `a % b` | everywhere (jumps included) | 1 in a, −floor(a/b) in b |
| `sqrt`, `cbrt`, `x ** p` (0 < p < 1) | x = 0 | +inf, one-sided from the right (second derivative −inf) |
| `max(x)`, `min(x)` (reductions) | ties | split equally among the k tied entries (1/k each) |
| `maximum(a, b)`, `minimum(a, b)`, `max(a, b)` | a = b | ½ to each |
| `clip(x, lo, hi)` | x = lo or x = hi | 1 in x (the bounds are inside); below lo 1 in lo, above hi 1 in hi |
| `norm(x)` | x = 0 | 0 (the minimum-norm subgradient), not 0/0 |
| `hypot(a, b)` | (0, 0) | 0 |
| `pow(x, y)`, `x ** y` | x = 0 | 0 in y |
| `x ** 0`, `pow(x, 0.0)`, `x ** y` with y = 0 | x = 0 | 0 (the constant 1), in every order and in Taylor series |
| `sort`, `median`, `quantile` | ties | a stable sort: the k-th of equal entries in input order is the k-th sorted one |
| `fmax(a, b)`, `fmin(a, b)` | a = b; a NaN | ½ to each; the non-NaN argument gets 1 |
| `heaviside(x, h0)` | x = 0 | 0 in x, 1 in h0 |
| `prod(x)` | zeros in x | exact: the product of the others (a tree of products, no division) |
| `where(c, a, b)`, `a if c else b` | anywhere | the selected side's only: an inf or NaN on the other side never leaks, in any order |

So `x if x > 0 else 0` has derivative 0 at 0 and `x if x >= 0 else 0` has 1: the side the
condition selects. Forward, reverse and Taylor mode agree at every one of these points.
"""

def _mode_cell(e: Entry) -> str:
    return ", ".join(m for m, _ in e.modes)


def markdown() -> str:
    """docs/language.md."""
    rows = entries()
    lines = ["# The derivd language", "",
             "Generated from the primitive registry by `scripts/gen_language_reference.py`;"
             " served at `GET /docs/language`. Do not edit by hand.", "",
             LANGUAGE, "## Functions", "",
             "Modes: **forward** (jvp rule: `jvp`, `jacobian`), **reverse** (vjp rule: `gradient`, `vjp`),"
             " **forward-over-reverse** (both: `hvp`, `hessian`), **taylor** (Taylor rule: `taylor`,"
             " `derivatives`, any order up to the server's `max_taylor_order`). A *composite* is built"
             " from primitives and has their rules. A missing rule is an error in that mode.", "",
             "| function | primitive | modes | notes |", "|---|---|---|---|"]
    for e in rows:
        note = e.doc.replace("|", "\\|") or "—"
        lines.append(f"| `{e.name}({e.arguments})` | {e.primitive or '—'} | {_mode_cell(e)} | {note} |")
    lines += ["", "## Non-differentiable points", "", KINKS]
    return "\n".join(lines)


def html() -> str:
    """``GET /docs/language``: the same content as a self-contained page (no external assets)."""
    esc = _html.escape
    rows = "\n".join(
        f"<tr id='{esc(e.name)}'><td><code>{esc(e.name)}({esc(e.arguments)})</code></td>"
        f"<td>{esc(e.primitive or '—')}</td><td>{esc(_mode_cell(e))}</td><td>{esc(e.doc) or '—'}</td></tr>"
        for e in entries())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>derivd language reference</title>
<style>body{{font:15px/1.5 system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em;vertical-align:top}}
pre{{background:#f4f4f4;padding:.5em}}code{{background:#f4f4f4}}</style></head><body>
<p><a href="/docs">API</a> · <a href="/playground">playground</a></p>
<h1>The derivd language</h1>
<pre>{esc(LANGUAGE)}</pre>
<h2>Functions</h2>
<table><tr><th>function</th><th>primitive</th><th>modes</th><th>notes</th></tr>
{rows}
</table>
<h2 id="non-differentiable-points">Non-differentiable points</h2>
<pre>{esc(KINKS)}</pre></body></html>"""
