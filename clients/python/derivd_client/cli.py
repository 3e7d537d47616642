"""``derivd``: the SDK's verbs from a shell.

    derivd gradient 'sum(x**2)' --at x=1,2,3
    derivd jacobian @model.dsl --at @point.json --json
    derivd hvp 'sum(x**4)' --at x=1,2 --v @directions.json --out hv.npy
    derivd spy '[x[0]*x[1], x[2]]' --at x=1,2,3 --png pattern.png

A PROGRAM is DSL text, ``@file`` (its text), ``id:<id>`` (a stored function)
or ``blackbox:<name>``. Inputs (``--at``, ``--const``, ``--v``): ``name=1,2,3``
(a vector), ``name=2.5`` (a scalar), ``name=[[1,2],[3,4]]`` (JSON),
``name=@a.npy`` / ``name=@a.json``, or ``@point.json`` / ``@point.npz`` for
several names at once; an empty entry (``1,,2``) or a name given twice is a
usage error. Directions accumulate: ``--v @dirs.json`` holding a list (of
``{name: values}``, or of bare vectors when one input is differentiated) adds
one per entry, and ``--v x=1,0 --v x=0,1`` is two; one product runs per
direction, with a progress bar. ``trace module:function`` imports from the
current directory, as ``python -m`` would. Output: scalars inline, vectors as
one row, matrices as rows, each summarised from its edges like numpy's print
when it does not fit the terminal (a number is never cut), several directions
as one table with a row each; the answer's metadata (``fd``, ``blackbox``,
``sparsity``, ``verification``) a line each after the arrays. Or ``--json``, or
``--out file.npy`` (``.npz`` keeps each input's array by name). Every verb's
``--help`` ends with examples (``EXAMPLES``). ``export PROGRAM --at x=... --out f.py`` writes the
derivative program as a standalone numpy module (``Client.export``).

Failures never print a traceback: a usage error is one line and exit 2, an
error answer one line (or the contract's body with ``--json``) and exit 1, and
a reader that leaves early (``| head``) ends the output quietly, Ctrl+C exits
130 silently, and anything unexpected is one line too unless ``--debug``.

These verbs reach ``derivd`` through the ``derivd.commands`` entry points this
package registers (pyproject.toml); whichever package's ``derivd`` script is
installed dispatches them (``derivd_client.commands``), beside the server's
``serve`` and ``worker`` when it is installed too. ``derivd-client`` (and
``python -m derivd_client``) runs this parser directly. This module never
imports the server.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from . import arrays, errors, spy
from .client import DEFAULT_URL, Blackbox, Client, FunctionRef, SparseJacobian
from .trace import trace

DERIVATIVES = ("evaluate", "gradient", "jacobian", "jvp", "vjp", "hvp", "hessian", "taylor", "derivatives")
HVP_BATCH = 32  # directions per request when the CLI is given many
MAX_ROWS = 30  # a table's rows beyond this are summarised (the first and last 15)
# An answer's metadata (about the computation, not derivatives): a line each after the arrays.
METADATA = ("sparsity", "fd", "blackbox", "verification")
# The array each verb is about: what --out saves.
MAIN_FIELD = {"evaluate": "value", "gradient": "gradient", "jacobian": "jacobian", "jvp": "jvp", "vjp": "vjp",
              "hvp": "hvp", "hessian": "hessian", "taylor": "coefficients", "derivatives": "tensors"}


# One line per verb: this parser's help and the dispatcher's listing (``derivd --help``).
VERBS = {"evaluate": "the function's value", "gradient": "value and gradient (one-element output)",
         "jacobian": "value and Jacobian (dense or --sparse)", "jvp": "Jacobian-vector product J v",
         "vjp": "vector-Jacobian product u^T J", "hvp": "Hessian-vector product H v (one per --v direction)",
         "hessian": "value, gradient and Hessian", "taylor": "Taylor coefficients along --v up to --order",
         "derivatives": "every derivative tensor up to --order (at most 4)",
         "spy": "draw a Jacobian's sparsity pattern", "register": "store a program; prints its id",
         "show": "a stored program and its inputs", "blackbox": "register, list or delete black boxes",
         "trace": "print the DSL of a Python function written with derivd_client ops",
         "export": "write a derivative program as a standalone numpy module"}


# Shown by each verb's --help; tests/clients/test_cli.py parses every one and runs those it can.
EXAMPLES = {
    "evaluate": ["derivd evaluate 'A @ x' --at A='[[1,2],[3,4]]' --at x=1,1",
                 "derivd evaluate @model.dsl --at @point.json"],
    "gradient": ["derivd gradient 'sum(x**2)' --at x=1,2,3",
                 "derivd gradient 'sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)' --at x=1.2,0.5,-0.3 --verify",
                 "derivd gradient 'sum(w*x)' --at x=1,2 --const w=3,4 --json",
                 "derivd gradient @model.dsl --at @point.json --wrt x --out g.npy",
                 "derivd gradient blackbox:sim --at x=0.5,2,3 --fd-method central"],
    "jacobian": ["derivd jacobian '[x[0]*sin(x[1]), exp(x[0]) + x[1]**2]' --at x=1,2",
                 "derivd jacobian 'x[1:] * x[:-1]' --at x=1,2,3,4 --sparse --json",
                 "derivd jacobian @model.dsl --at @point.json --out J.npz"],
    "jvp": ["derivd jvp '[x[0]*x[1], sin(x[0])]' --at x=1,2 --v x=1,0",
            "derivd jvp 'x*y' --at x=2 --at y=3 --v x=1 --v y=0 --v x=0 --v y=1   # two directions"],
    "vjp": ["derivd vjp '[x[0]*x[1], sin(x[0])]' --at x=1,2 --u 1,0"],
    "hvp": ["derivd hvp 'sum(x**4)' --at x=1,2 --v x=1,0",
            "derivd hvp 'sum(x**4)' --at x=1,2 --v x=1,0 --v x=0,1   # two directions",
            "derivd hvp 'sum(x**4)' --at x=1,2 --v @directions.json   # [[1,0],[0,1]] or [{\"x\": [1,0]}, ...]"],
    "hessian": ["derivd hessian 'x[0]**2 * x[1]' --at x=0.3,0.5",
                "derivd hessian @model.dsl --at @point.json --wrt x --out H.npy"],
    "taylor": ["derivd taylor 'exp(x)' --at x=0 --v x=1 --order 4"],
    "derivatives": ["derivd derivatives 'x[0]**2 * x[1]' --at x=0.3,0.5 --order 3",
                    "derivd derivatives 'x[0]**2 * x[1]' --at x=0.3,0.5 --order 3 --out tensors.npz"],
    "spy": ["derivd spy 'concat([x[1:]*x[:-1], x**2])' --at x=1,2,3,4,5",
            "derivd spy 'concat([x[1:]*x[:-1], x**2])' --at x=@x.npy --png pattern.png"],
    "register": ["derivd register 'sum(a*x)' --const a=1,2   # prints an id; then: derivd gradient id:ID --at x=3,4"],
    "show": ["derivd show ID"],
    "blackbox": ["derivd blackbox register sim http://sim:8080/ --input-size 3 --output-size 1",
                 "derivd blackbox list",
                 "derivd blackbox delete sim"],
    "trace": ["derivd trace model.py:f --shape x=3 --shape W=2,3",
              "derivd trace model:f --shape x=3 --shape W=2,3 --json   # model.py in the current directory"],
    "export": ["derivd export 'sum(100*(x[1:]-x[:-1]**2)**2 + (1-x[:-1])**2)' --at x=0,0,0,0 --out rosen_grad.py",
               "derivd export 'sum(w*x**2)' --at x=1,2 --const w=3,4 --derivative hvp"],
}


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:  # `derivd ... | head`: the reader has gone; say nothing, and nothing at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except UsageError as e:
        print(f"derivd: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # --out or --png into a missing directory, say
        print(f"derivd: {e}", file=sys.stderr)
        return 1
    except errors.DerivdError as e:
        if getattr(args, "json", False):
            print(json.dumps({"error": {"code": e.code, "message": e.message, "detail": e.detail}}))
        else:
            print(f"derivd: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # a bug of ours: still one line, unless --debug asks for the traceback
        if args.debug:
            raise
        print(f"derivd: unexpected {type(e).__name__}: {e} (--debug shows where)", file=sys.stderr)
        return 1


# ---------------------------------------------------------------- arguments

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="derivd", description="derivd: exact derivatives as a service")
    parser.add_argument("--url", default=os.environ.get("DERIVD_URL", DEFAULT_URL),
                        help="server URL (default: $DERIVD_URL, else %(default)s)")
    parser.add_argument("--api-key", default=os.environ.get("DERIVD_API_KEY"), help="default: $DERIVD_API_KEY")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    parser.add_argument("--debug", action="store_true", help="on an unexpected failure, print its traceback")
    # The same options after the verb; SUPPRESS so a verb's parser never overwrites what came before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--url")
    common.add_argument("--api-key")
    common.add_argument("--timeout", type=float)
    common.add_argument("--debug", action="store_true")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    point = argparse.ArgumentParser(add_help=False)
    point.add_argument("program", help="DSL text, @file, id:<id> or blackbox:<name>")
    point.add_argument("--at", action="append", default=[], metavar="NAME=VALUES|@FILE",
                       help="an input (repeatable)")
    point.add_argument("--const", action="append", default=[], metavar="NAME=VALUES|@FILE",
                       help="a constant input, not differentiated (repeatable)")
    point.add_argument("--wrt", help="comma-separated names to differentiate (default: all of --at)")
    point.add_argument("--mode", choices=("auto", "forward", "reverse", "taylor", "finite"), default=None)
    point.add_argument("--verify", action="store_true", help="also check against finite differences")
    point.add_argument("--fd-method", choices=("central", "forward", "backward"))
    point.add_argument("--fd-order", type=int)
    point.add_argument("--fd-step", type=float)
    point.add_argument("--fd-extrapolation", action="store_true")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print the answer as JSON")
    out.add_argument("--out", metavar="FILE", help="save the main array: .npy, or .npz by input name")

    for verb in DERIVATIVES:
        p = add_verb(sub, verb, [common, point, out])
        if verb in ("jvp", "hvp", "taylor"):
            p.add_argument("--v", action="append", default=[], required=True, metavar="NAME=VALUES|@FILE",
                           help="a direction's input (repeat a name for more directions); @FILE with a JSON list: "
                                "one direction per entry")
        if verb == "vjp":
            p.add_argument("--u", required=True, metavar="VALUES|@FILE", help="cotangent, flat, as long as the output")
        if verb in ("taylor", "derivatives"):
            p.add_argument("--order", type=int, required=True)
        if verb == "jacobian":
            p.add_argument("--sparse", action="store_true", help="ask for COO (rows, cols, values)")
        p.set_defaults(run=run_derivative)

    p = add_verb(sub, "spy", [common, point])
    p.add_argument("--png", metavar="FILE", help="also write a PNG (matplotlib if installed, else a bitmap)")
    p.add_argument("--width", type=int, default=None, help="terminal columns for the picture")
    p.add_argument("--json", action="store_true", help="print rows, cols and shape as JSON instead")
    p.set_defaults(run=run_spy)

    p = add_verb(sub, "register", [common])
    p.add_argument("program", help="DSL text or @file")
    p.add_argument("--const", action="append", default=[], metavar="NAME=VALUES|@FILE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_register)

    p = add_verb(sub, "show", [common])
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_show)

    bb = add_verb(sub, "blackbox", [common])
    bsub = bb.add_subparsers(dest="action", required=True)
    p = bsub.add_parser("register", parents=[common])
    p.add_argument("name")
    p.add_argument("box_url", metavar="URL", help="the black box's endpoint: POST {\"x\"} -> {\"y\"}")
    p.add_argument("--input-size", type=int, required=True)
    p.add_argument("--output-size", type=int, required=True)
    p.add_argument("--batch", action="store_true")
    p.add_argument("--timeout-s", type=float, default=10.0)
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run_blackbox)
    for action in ("list", "delete"):
        p = bsub.add_parser(action, parents=[common])
        if action == "delete":
            p.add_argument("name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(run=run_blackbox)

    p = add_verb(sub, "export", [common])
    p.add_argument("program", help="DSL text or @file")
    p.add_argument("--at", action="append", default=[], metavar="NAME=VALUES|@FILE",
                   help="an input at its shape (repeatable): the module is written for these shapes")
    p.add_argument("--const", action="append", default=[], metavar="NAME=VALUES|@FILE",
                   help="a constant, embedded in the module (repeatable)")
    p.add_argument("--wrt", help="comma-separated names to differentiate (default: all of --at)")
    p.add_argument("--derivative", default="value_and_gradient",
                   choices=("value_and_gradient", "jacobian", "hvp", "hessian"))
    p.add_argument("--out", metavar="FILE.py", help="write the module here (default: print it)")
    p.set_defaults(run=run_export)

    p = add_verb(sub, "trace", [])
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
    p.add_argument("function", help="module:function or path/to/file.py:function")
    p.add_argument("--shape", action="append", default=[], metavar="NAME=N|N,M,...",
                   help="an input's shape (repeatable); NAME= for a scalar")
    p.add_argument("--json", action="store_true", help="print {dsl, constants} as JSON")
    p.set_defaults(run=run_trace)

    return parser


def add_verb(sub, verb: str, parents: list) -> argparse.ArgumentParser:
    """A verb's parser: its one line, and its examples under the options in ``--help``."""
    return sub.add_parser(verb, parents=parents, help=VERBS[verb], formatter_class=argparse.RawDescriptionHelpFormatter,
                          epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[verb]))


def parse_values(text: str, where: str) -> np.ndarray:
    """``1,2,3`` -> vector; ``2.5`` -> scalar; ``[[1,2],[3,4]]`` -> JSON; ``@a.npy`` / ``@a.json`` -> file."""
    text = text.strip()
    if text.startswith("@"):
        return array_of(_load_file(text[1:], where), where)
    try:
        if text.startswith("["):
            return array_of(json.loads(text), where)
        if "," in text:
            entries = text.split(",")
            if not all(v.strip() for v in entries):
                raise UsageError(f"{where}: empty entry in {text!r} (a vector is 1,2,3; one element is [1])")
            return np.array([float(v) for v in entries], dtype=np.float64)
        return np.array(float(text))
    except ValueError as e:
        raise UsageError(f"{where}: cannot read {text!r} as numbers ({e})") from None


def array_of(value, where: str) -> np.ndarray:
    """A value from JSON or a file as an array: numbers, or the wire's forms (``"NaN"``, base64 dicts)."""
    try:
        return arrays.decode(value) if isinstance(value, dict) or _has_text(value) else arrays.as_array(value)
    except (KeyError, TypeError, ValueError) as e:
        raise UsageError(f"{where}: not numbers ({f'{e} is not a number' if isinstance(e, KeyError) else e})") from None


def _has_text(value) -> bool:
    return isinstance(value, str) or isinstance(value, list) and any(map(_has_text, value))


def _load_file(path: str, where: str):
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{where}: no file {path!r}")
    try:
        if p.suffix == ".npy":
            return np.load(p)
        if p.suffix == ".npz":
            with np.load(p) as z:
                return {k: z[k] for k in z.files}
        return json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{where}: cannot read {path} ({e})") from None


def parse_inputs(items: list[str], flag: str) -> dict[str, np.ndarray]:
    """``--at``/``--const``/``--v`` items into {name: array}; a name given twice is a usage error."""
    out: dict[str, np.ndarray] = {}
    for name, value in _named(items, flag):
        if name in out:
            raise UsageError(f"{flag} {name}: given twice")
        out[name] = value
    return out


def _named(items: list[str], flag: str):
    """(name, array) for each NAME=VALUES item and each entry of an @file holding {name: values}."""
    for item in items:
        if item.startswith("@"):
            loaded = _load_file(item[1:], flag)
            if not isinstance(loaded, dict):
                raise UsageError(f"{flag} {item}: the file must hold {{name: values}}; use name=@file for one input")
            for name, value in loaded.items():
                yield name, array_of(value, f"{flag} {name}")
            continue
        name, eq, text = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise UsageError(f"{flag} {item!r}: expected NAME=VALUES or @FILE")
        yield name.strip(), parse_values(text, f"{flag} {name.strip()}")


def parse_directions(items: list[str], inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """The directions of ``--v``, accumulated: each @file holding a JSON list adds one direction per
    entry ({name: values}, or a bare vector when there is one input to differentiate, ``inputs``);
    NAME=VALUES items add directions too, the k-th value given for each name making the k-th one."""
    directions, by_name = [], {}
    for item in items:
        loaded = _load_file(item[1:], "--v") if item.startswith("@") else None
        if not isinstance(loaded, list):
            for name, value in _named([item], "--v"):
                by_name.setdefault(name, []).append(value)
            continue
        for entry in loaded:
            if not isinstance(entry, dict):
                if len(inputs) != 1:
                    raise UsageError(f"--v {item}: a bare vector needs one input to differentiate, not "
                                     f"{len(inputs)} ({', '.join(inputs)}); give {{name: values}} entries")
                entry = {inputs[0]: entry}
            directions.append({k: array_of(v, f"--v {k}") for k, v in entry.items()})
    counts = {name: len(values) for name, values in by_name.items()}
    if len(set(counts.values())) > 1:
        raise UsageError("--v: give every input the same number of directions ("
                         + ", ".join(f"{name}: {n}" for name, n in counts.items()) + ")")
    directions += [{name: values[k] for name, values in by_name.items()}
                   for k in range(max(counts.values(), default=0))]
    if not directions:
        raise UsageError("--v: no direction given (the file's list is empty)")
    return directions


def program_of(text: str):
    if text.startswith("id:"):
        return FunctionRef(text[3:])
    if text.startswith("blackbox:"):
        return Blackbox(text[len("blackbox:"):])
    if text.startswith("@"):
        p = Path(text[1:])
        if not p.exists():
            raise UsageError(f"no program file {text[1:]!r}")
        return p.read_text()
    return text


def client_of(args) -> Client:
    if not args.url.startswith(("http://", "https://")):
        raise UsageError(f"--url {args.url!r}: expected http://HOST:PORT (or https://)")
    return Client(args.url, api_key=args.api_key, timeout=args.timeout, retries=2)


def options_of(args) -> dict:
    opts: dict = {"constants": parse_inputs(args.const, "--const")}
    if args.wrt:
        opts["wrt"] = [w.strip() for w in args.wrt.split(",") if w.strip()]
    if args.mode:
        opts["mode"] = args.mode
    if args.verify:
        opts["verify"] = True
    fd = {k: v for k, v in (("method", args.fd_method), ("order", args.fd_order), ("step", args.fd_step),
                            ("extrapolation", args.fd_extrapolation or None)) if v is not None}
    if fd:
        opts["fd"] = fd
    return opts


# ---------------------------------------------------------------- verbs

def run_derivative(args) -> int:
    verb = args.verb
    function, at, opts = program_of(args.program), parse_inputs(args.at, "--at"), options_of(args)
    if verb == "vjp":
        opts["u"] = parse_values(args.u, "--u").reshape(-1)
    if verb in ("taylor", "derivatives"):
        opts["order"] = args.order
    if verb == "jacobian" and args.sparse:
        opts["sparse"] = True
    directions = parse_directions(args.v, opts.get("wrt") or list(at)) if verb in ("jvp", "hvp", "taylor") else [None]
    results = []
    with client_of(args) as client, progress(len(directions), verb, quiet=args.json) as step:
        call = getattr(client, verb)
        if verb == "hvp" and len(directions) > 1:  # batched: HVP_BATCH directions per request
            for i in range(0, len(directions), HVP_BATCH):
                chunk = directions[i:i + HVP_BATCH]
                r = call(function, at, vs=chunk, **opts)
                results += [_one_hvp(r, h) for h in r["hvps"]]
                step(len(chunk))
        for v in directions if not results else ():
            results.append(call(function, at, **opts) if v is None else call(function, at, v=v, **opts))
            step()
    many = len(results) > 1
    if args.out:
        save(args.out, [r[MAIN_FIELD[verb]] for r in results] if many else results[0][MAIN_FIELD[verb]],
             opts.get("wrt") or list(at))
        print(f"saved {MAIN_FIELD[verb]} to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps([jsonable(r) for r in results] if many else jsonable(results[0])))
    elif not args.out:
        show_results(results, MAIN_FIELD[verb])
    return 0


def _one_hvp(batch, hvp):
    """One direction's answer out of a batched (``vs``) one, shaped like a single ``hvp`` answer."""
    one = type(batch)(value=batch["value"], hvp=hvp, engine=batch.get("engine"))
    one.timing = batch.timing
    return one


def run_spy(args) -> int:
    with client_of(args) as client, progress(1, "jacobian", quiet=args.json) as step:
        r = client.jacobian(program_of(args.program), parse_inputs(args.at, "--at"), sparse=True, **options_of(args))
        step()
    jac = r["jacobian"]
    if args.json:
        print(json.dumps({"rows": jac.rows.tolist(), "cols": jac.cols.tolist(), "shape": list(jac.shape)}))
    else:
        width = args.width or max(20, shutil.get_terminal_size((80, 24)).columns - 2)
        print(spy.text(jac.rows, jac.cols, jac.shape, width=width))
    if args.png:
        how = spy.png(jac.rows, jac.cols, jac.shape, args.png)
        print(f"wrote {args.png} ({how})", file=sys.stderr)
    return 0


def run_register(args) -> int:
    with client_of(args) as client:
        ref = client.register_function(program_of(args.program), parse_inputs(args.const, "--const"))
    print(json.dumps({"id": ref.id, "inputs": ref.inputs}) if args.json else ref.id)
    return 0


def run_export(args) -> int:
    options = {"constants": parse_inputs(args.const, "--const")}
    if args.wrt:
        options["wrt"] = args.wrt.split(",")
    with client_of(args) as client:
        text = client.export(program_of(args.program), parse_inputs(args.at, "--at"),
                             derivative=args.derivative, **options)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.out}: {args.derivative}, {text.count(chr(10))} lines", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def run_show(args) -> int:
    with client_of(args) as client:
        stored = client.get_function(args.id)
    if args.json:
        print(json.dumps(stored))
    else:
        print(f"# inputs: {', '.join(stored.get('inputs', []))}\n{stored.get('dsl', '')}")
    return 0


def run_blackbox(args) -> int:
    with client_of(args) as client:
        if args.action == "register":
            if not all(":" in h for h in args.header):
                raise UsageError("--header: expected NAME:VALUE")
            headers = dict(h.split(":", 1) for h in args.header)
            extra = {"headers": {k.strip(): v.strip() for k, v in headers.items()}} if headers else {}
            bb = client.register_blackbox(args.name, args.box_url, args.input_size, args.output_size, batch=args.batch,
                                          timeout_s=args.timeout_s, **extra)
            shown = [bb]
        elif args.action == "list":
            shown = client.list_blackboxes()
        else:
            client.delete_blackbox(args.name)
            shown = []
    rows = [{"name": b.name, "url": b.url, "input_size": b.input_size, "output_size": b.output_size,
             "batch": b.batch, "timeout_s": b.timeout_s, **b.extra} for b in shown]
    if args.json:
        print(json.dumps({"blackboxes": rows} if args.action == "list" else rows[0] if rows else {}))
    elif args.action == "list" and not rows:
        print("no black boxes registered (derivd blackbox register NAME URL --input-size N --output-size M)")
    else:  # a line each, names aligned, URLs whole however long
        width = max((len(row["name"]) for row in rows), default=0)
        for row in rows:
            rest = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("name", "url"))
            print(f"{row['name'].ljust(width)}  {row['url']}  {rest}")
    return 0


def run_trace(args) -> int:
    fn = load_function(args.function)
    shapes = {}
    for item in args.shape:
        name, eq, dims = item.partition("=")
        if not eq:
            raise UsageError(f"--shape {item!r}: expected NAME=N,M,...")
        try:
            shapes[name.strip()] = tuple(int(d) for d in dims.split(",") if d.strip())
        except ValueError:
            raise UsageError(f"--shape {item!r}: dimensions must be integers") from None
    try:
        program = trace(fn, **shapes)
    except (TypeError, ValueError, IndexError) as e:
        raise UsageError(f"cannot trace {args.function}: {e}") from None
    if args.json:
        print(json.dumps({"dsl": program.dsl, "constants": arrays.to_jsonable(program.constants),
                          "inputs": list(program.inputs)}))
    else:
        sys.stdout.write(program.dsl)
        if program.constants:
            print(f"# constants: {', '.join(program.constants)} (sent with each request)", file=sys.stderr)
    return 0


def load_function(spec: str):
    target, colon, name = spec.rpartition(":")
    if not colon or not target:
        raise UsageError(f"{spec!r}: expected module:function or file.py:function")
    if target.endswith(".py") and not Path(target).exists():
        raise UsageError(f"no file {target!r}")
    try:
        module = _import(target)
    except Exception as e:  # noqa: BLE001 - the user's module failed to load: one line, not a traceback
        raise UsageError(f"cannot import {target}: {type(e).__name__}: {e}") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise UsageError(f"{target} has no function {name!r}") from None


def _import(target: str):
    """A file.py, or a module found as ``python -m`` would find it: the current directory first
    (an installed script does not put it on sys.path), for this import only."""
    if target.endswith(".py"):
        path = Path(target)
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(loaded)
        loaded.loader.exec_module(module)
        return module
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(target)
    finally:
        sys.path.remove(cwd)


# ---------------------------------------------------------------- output

def jsonable(result) -> dict:
    out = {}
    for key, value in result.items():
        if isinstance(value, SparseJacobian):
            value = {"rows": value.rows, "cols": value.cols, "values": value.values, "shape": list(value.shape)}
        out[key] = arrays.to_jsonable(value)
    return out


def save(path: str, value, names: list[str]) -> None:
    """--out: .npz keeps a {name: array} answer by name (derivative tensors as order_1, order_2, ...);
    .npy gets one array (dict values concatenated flat in wrt order, the Jacobian's column order;
    several directions stacked)."""
    def flat(v):
        if isinstance(v, SparseJacobian):
            return v.toarray()
        if isinstance(v, dict):
            return np.concatenate([np.asarray(v[n]).reshape(-1) for n in names if n in v])
        return np.asarray(v)

    if isinstance(value, list) and value and np.ndim(value[0]) < np.ndim(value[-1]):  # tensors of rising order
        if not path.endswith(".npz"):
            raise UsageError("derivative tensors have one rank each: save them to a .npz")
        np.savez(path, **{f"order_{e}": np.asarray(t) for e, t in enumerate(value, 1)})
        return
    if path.endswith(".npz"):
        if isinstance(value, dict):
            np.savez(path, **{k: np.asarray(v) for k, v in value.items()})
        else:
            np.savez(path, result=np.stack([flat(v) for v in value]) if isinstance(value, list) else flat(value))
    else:
        np.save(path, np.stack([flat(v) for v in value]) if isinstance(value, list) else flat(value))


def show_results(results: list, field: str) -> None:
    """One answer as it is; several (one per direction) as one: ``field`` stacked, a row per direction,
    the rest (the value, the same for each) from the first."""
    if len(results) == 1:
        show_result(results[0])
        return
    first = results[0][field]
    stacked = {name: np.stack([np.asarray(r[field][name]) for r in results]) for name in first} \
        if isinstance(first, dict) else np.stack([np.asarray(r[field]) for r in results])
    show_result({**results[0], field: stacked}, note=f"{len(results)} directions, one row each")


def show_result(result, note: str = "") -> None:
    """Scalars inline, arrays as tables, then the answer's metadata a line each, then engine and timings."""
    from rich.console import Console

    console = Console()
    for key, value in result.items():
        if key in ("engine", "shape") or key in METADATA:
            continue
        if isinstance(value, SparseJacobian):
            value = value.toarray()
        if isinstance(value, dict):
            for name, arr in value.items():
                show_array(console, f"{key}[{name}]", np.asarray(arr))
        elif key == "tensors":
            for order, tensor in enumerate(value, 1):
                show_array(console, f"order {order}", np.asarray(tensor))
        else:
            show_array(console, key, np.asarray(value))
    for key in METADATA:
        if key in result:
            line = ", ".join(f"{k}={_fmt_meta(v)}" for k, v in result[key].items())
            console.print(f"{key}: {line}", markup=False, highlight=False, soft_wrap=True)
    timing = getattr(result, "timing", {})
    caption = f"engine: {result.get('engine', '?')}"
    if timing:
        caption += "   " + ", ".join(f"{k} {v:.1f} ms" for k, v in timing.items())
    console.print(f"[dim]{caption}{'   ' + note if note else ''}[/dim]")


def show_array(console, title: str, arr: np.ndarray) -> None:
    from rich.text import Text

    if arr.size == 1:  # a scalar inline; a one-element array too, with its shape
        console.print(Text.assemble((title, "bold"), f" {list(arr.shape)}" if arr.ndim else "",
                                    f" = {_fmt(arr.reshape(()))}"))
    else:
        console.print(array_table(title, arr, console.width))


def array_table(title: str, arr: np.ndarray, width: int = 80, max_rows: int = MAX_ROWS):
    """A vector as one row, a matrix (higher ranks: its first axis by the rest, flattened) as rows;
    columns indexed. What does not fit in ``width`` columns or ``max_rows`` rows is summarised from
    both edges with a ``…`` between, as numpy prints: a number is never cut to fit."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    vector = arr.ndim == 1
    grid = arr.reshape(1, -1) if vector else arr.reshape(arr.shape[0], -1)
    n_rows, n_cols = grid.shape
    rows = _edges(n_rows, max_rows)
    reach = min(n_cols, max(1, width // 4))  # a column takes at least 4 characters: no more fit from an edge
    text = {j: ["…" if i is None else _fmt(grid[i, j]) for i in rows]
            for j in sorted({*range(reach), *range(n_cols - reach, n_cols)})}
    cost = {j: max(len(str(j)), *map(len, cells)) + 3 for j, cells in text.items()}  # padding and border
    index = 0 if vector else max(len(str(n_rows - 1)), 1) + 3
    cols = _fit(n_cols, cost, width - 1 - index)
    table = Table()
    if not vector:
        table.add_column("", style="dim", justify="right", no_wrap=True)
    for j in cols:
        table.add_column("…" if j is None else str(j), justify="right", no_wrap=True)
    for r, i in enumerate(rows):
        cells = ["…" if j is None else text[j][r] for j in cols]
        table.add_row(*cells) if vector else table.add_row("…" if i is None else str(i), *cells)
    return Group(Text(f"{title} {list(arr.shape)}", style="bold"), table)


def _edges(n: int, most: int) -> list:
    """0..n-1, or the first and last ``most // 2`` of them with ``None`` (the gap) between."""
    if n <= most:
        return list(range(n))
    return [*range(most // 2), None, *range(n - most // 2, n)]


def _fit(n: int, cost: dict, budget: int) -> list:
    """Every column index if all fit in ``budget`` characters, else as many as fit taken alternately
    from both edges, ``None`` (a gap column) between; always at least the first."""
    if len(cost) == n and sum(cost.values()) <= budget:
        return list(range(n))
    left, right, used, lo, hi = [0], [], 4 + cost[0], 1, n - 1
    while lo <= hi:
        j = hi if len(right) < len(left) else lo
        if used + cost[j] > budget:
            break
        used += cost[j]
        if j == hi:
            right.insert(0, hi)
            hi -= 1
        else:
            left.append(lo)
            lo += 1
    return left + right if lo > hi else left + [None] + right


def _fmt(v) -> str:
    return f"{float(v):.10g}"


def _fmt_meta(v) -> str:
    """A metadata value: counts as integers (JSON may carry them as 10.0), other numbers short, text as is."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


@contextlib.contextmanager
def progress(total: int, label: str, quiet: bool = False):
    """A progress bar on stderr for work of several steps (a spinner for one), only on a terminal."""
    if quiet or not sys.stderr.isatty():
        yield lambda steps=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn(label)]
    if total > 1:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda steps=1: bar.advance(task, steps)


if __name__ == "__main__":
    sys.exit(main())
