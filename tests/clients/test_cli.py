"""The ``derivd`` command line against the live server: every verb runs, its JSON parses, and its
numbers match analytic references; inputs from flags, JSON and .npy files; .npy/.npz output; ``spy``
in the terminal and as PNG; the ``derivd`` dispatcher runs the verbs registered under the
``derivd.commands`` entry points, and the server's and the SDK's command lines never import each other.

Process boundaries (``python -m``, exit codes, environment, the two packages' own parsers) are tested in
subprocesses; the many verb checks call ``cli.main(argv)`` in this process, which is the same code
without paying an interpreter start per call on a shared two-core machine."""

from __future__ import annotations

import ast
import json
import math
import re
import shlex
import struct
import subprocess
import sys
import zlib
from importlib.metadata import EntryPoint

import numpy as np
import pytest

from derivd_client import cli, commands, spy

from tests.clients.conftest import ROOT, SDK
from tests.clients.test_client import ROSENBROCK, VECTOR, vector_jac
from tests.references import rosenbrock_gradient, rosenbrock_hessian
from tests.support import python_ast

SERVICES = ROOT / "services"


def derivd(env, *args, module="derivd_client.cli", check=True):
    proc = subprocess.run([sys.executable, "-m", module, *args], env=env, capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def as_json(env, *args, **kw):
    return json.loads(derivd(env, *args, "--json", **kw).stdout)


@pytest.fixture
def run(server, capsys):
    """``derivd ARGS`` in this process against the live server: (exit code, stdout, stderr)."""
    def call(*args, url=server.url):
        code = cli.main(["--url", url, *args])
        out, err = capsys.readouterr()
        return code, out, err
    return call


@pytest.fixture
def run_json(run):
    def call(*args, **kw):
        code, out, err = run(*args, "--json", **kw)
        assert code == 0, err + out
        return json.loads(out)
    return call


def test_gradient_one_liner(cli_env, run):
    out = as_json(cli_env, "gradient", "sum(x**2)", "--at", "x=1,2,3")  # the URL from $DERIVD_URL
    assert out["value"] == 14.0 and out["gradient"]["x"] == [2.0, 4.0, 6.0]
    code, table, _ = run("gradient", "sum(x**2)", "--at", "x=1,2,3")
    assert code == 0 and "gradient[x]" in table and "value = 14" in table


def test_every_derivative_verb(run_json, run, tmp_path):
    x = np.array([0.7, -1.1, 2.0])
    at = ["--at", "x=" + ",".join(repr(float(v)) for v in x)]
    r = run_json("evaluate", VECTOR, *at)
    np.testing.assert_allclose(r["value"], [x[0] * np.sin(x[1]), np.exp(x[0]) + x[1] ** 2, x[2] * x[0]], rtol=1e-14)
    r = run_json("jacobian", VECTOR, *at)
    np.testing.assert_allclose(r["jacobian"], vector_jac(x), rtol=1e-14, atol=1e-15)
    r = run_json("jacobian", VECTOR, *at, "--sparse")
    coo = np.zeros((3, 3))
    coo[r["jacobian"]["rows"], r["jacobian"]["cols"]] = r["jacobian"]["values"]
    np.testing.assert_allclose(coo, vector_jac(x), rtol=1e-14, atol=1e-15)
    r = run_json("jvp", VECTOR, *at, "--v", "x=1,0,-1")
    np.testing.assert_allclose(r["jvp"], vector_jac(x) @ [1, 0, -1], rtol=1e-14)
    r = run_json("vjp", VECTOR, *at, "--u", "1,2,3")
    np.testing.assert_allclose(r["vjp"]["x"], np.array([1, 2, 3]) @ vector_jac(x), rtol=1e-14)

    p = np.array([1.2, 0.5, -0.3, 0.8])
    at = ["--at", "x=" + ",".join(repr(float(v)) for v in p)]
    r = run_json("gradient", ROSENBROCK, *at, "--mode", "forward")
    np.testing.assert_allclose(r["gradient"]["x"], rosenbrock_gradient(p), rtol=1e-13)
    r = second_order(run, "hessian", ROSENBROCK, *at)
    np.testing.assert_allclose(r["hessian"], rosenbrock_hessian(p), rtol=1e-12, atol=1e-12)
    dirs = np.eye(4)[:3] * np.array([1.0, -2.0, 0.5])[:, None]
    (tmp_path / "dirs.json").write_text(json.dumps([{"x": d.tolist()} for d in dirs]))
    r = second_order(run, "hvp", ROSENBROCK, *at, "--v", f"@{tmp_path / 'dirs.json'}")
    np.testing.assert_allclose([h["hvp"]["x"] for h in r], dirs @ rosenbrock_hessian(p), rtol=1e-12)
    r = second_order(run, "taylor", "exp(2*x)", "--at", "x=0.5", "--v", "x=1", "--order", "3")
    expected = [np.exp(1.0) * 2 ** k / math.factorial(k) for k in range(4)]
    np.testing.assert_allclose(np.ravel(r["coefficients"]), expected, rtol=1e-12)


def test_derivative_tensors_verb(run_json, run, tmp_path):
    """``derivd derivatives``: order 1 and 2 of Rosenbrock are its gradient and Hessian, shown as
    tables, saved one array per order."""
    p = np.array([1.2, 0.5, -0.3, 0.8])
    at = ["--at", "x=" + ",".join(repr(float(v)) for v in p)]
    r = run_json("derivatives", ROSENBROCK, *at, "--order", "2")
    np.testing.assert_allclose(r["tensors"][0], rosenbrock_gradient(p), rtol=1e-12)
    np.testing.assert_allclose(r["tensors"][1], rosenbrock_hessian(p), rtol=1e-10, atol=1e-10)
    code, table, _ = run("derivatives", ROSENBROCK, *at, "--order", "2")
    assert code == 0 and "order 1 [4]" in table and "order 2 [4, 4]" in table
    assert run("derivatives", ROSENBROCK, *at, "--order", "2", "--out", str(tmp_path / "t.npz"))[0] == 0
    with np.load(tmp_path / "t.npz") as z:
        np.testing.assert_allclose(z["order_2"], rosenbrock_hessian(p), rtol=1e-10, atol=1e-10)
    code, _, err = run("derivatives", ROSENBROCK, *at, "--order", "2", "--out", str(tmp_path / "t.npy"))
    assert code != 0 and ".npz" in err


def second_order(run, *args):
    code, out, err = run(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_inputs_from_files_and_output_to_npy(run, tmp_path):
    A = np.array([[1.0, 2.0], [3.0, -1.0]])
    np.save(tmp_path / "A.npy", A)
    (tmp_path / "point.json").write_text(json.dumps({"y": [0.5, -0.25], "s": 2.0}))
    (tmp_path / "f.dsl").write_text("# a comment\nr = A @ y\ns * sum(r**2)\n")
    args = ["gradient", f"@{tmp_path / 'f.dsl'}", "--at", f"A=@{tmp_path / 'A.npy'}", "--at",
            f"@{tmp_path / 'point.json'}", "--wrt", "y,A"]
    assert run(*args, "--out", str(tmp_path / "g.npz"))[0] == 0
    y, r = np.array([0.5, -0.25]), A @ np.array([0.5, -0.25])
    with np.load(tmp_path / "g.npz") as z:
        np.testing.assert_allclose(z["y"], 2 * 2 * A.T @ r, rtol=1e-14)
        np.testing.assert_allclose(z["A"], 2 * 2 * np.outer(r, y), rtol=1e-14)
    assert run(*args, "--out", str(tmp_path / "g.npy"))[0] == 0
    flat = np.load(tmp_path / "g.npy")  # wrt order, flattened: the Jacobian's column convention
    np.testing.assert_allclose(flat, np.concatenate([2 * 2 * A.T @ r, (2 * 2 * np.outer(r, y)).ravel()]), rtol=1e-14)


def test_url_flag_wins_over_environment(cli_env, server, run):
    env = {**cli_env, "DERIVD_URL": "http://127.0.0.1:9"}  # nothing there
    assert as_json(env, "evaluate", "x*3", "--at", "x=2", "--url", server.url)["value"] == 6.0
    code, _, err = run("evaluate", "x", "--at", "x=1", "--timeout", "5", url="http://127.0.0.1:9")
    assert code == 1 and "connection" in err.lower()


def test_errors_exit_nonzero_with_the_contract_body(cli_env, run):
    proc = derivd(cli_env, "evaluate", "x +* 1", "--at", "x=1", "--json", check=False)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["code"] == "parse_error"
    code, _, err = run("evaluate", "x", "--at", "x=one")
    assert code == 2 and "--at x" in err


def test_register_show_and_use_by_id(run_json):
    out = run_json("register", "sum(w * x)", "--const", "w=1,2,3")
    shown = run_json("show", out["id"])
    assert shown["dsl"] == "sum(w * x)"
    r = run_json("gradient", f"id:{out['id']}", "--at", "x=5,5,5")
    assert r["gradient"]["x"] == [1.0, 2.0, 3.0]


def test_blackbox_verbs(run_json, run, loopback_server):
    url = loopback_server.url
    reg = run_json("blackbox", "register", "clibox", "http://127.0.0.1:9/", "--input-size", "2",
                   "--output-size", "1", url=url)
    assert reg["name"] == "clibox" and reg["input_size"] == 2 and reg["url"] == "http://127.0.0.1:9/"
    assert "clibox" in [b["name"] for b in run_json("blackbox", "list", url=url)["blackboxes"]]
    assert run("blackbox", "delete", "clibox", url=url)[0] == 0
    assert "clibox" not in [b["name"] for b in run_json("blackbox", "list", url=url)["blackboxes"]]


def read_png(path):
    """Decode the 8-bit greyscale PNGs spy writes without matplotlib (filter 0 rows)."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    rows = [raw[i * (width + 1) + 1:(i + 1) * (width + 1)] for i in range(height)]
    return np.array([list(r) for r in rows], dtype=np.uint8)


def test_spy_terminal_and_png(run_json, run, tmp_path):
    program = "concat([x[1:] * x[:-1], x[::2] ** 2])"
    x = "x=" + ",".join(str(v) for v in np.linspace(0.5, 1.5, 7))
    pattern = run_json("spy", program, "--at", x)
    jac = np.array(run_json("jacobian", program, "--at", x)["jacobian"])
    dense = np.zeros(pattern["shape"], dtype=bool)
    dense[pattern["rows"], pattern["cols"]] = True
    np.testing.assert_array_equal(dense, jac != 0)

    code, out, err = run("spy", program, "--at", x, "--png", str(tmp_path / "p.png"), "--width", "40")
    picture = out.splitlines()
    cells = picture[1:-2]  # inside the frame: two matrix rows per text line
    for i, line in enumerate(cells):
        for j, ch in enumerate(line[1:-1]):
            top = dense[2 * i, j] if 2 * i < dense.shape[0] else False
            bottom = dense[2 * i + 1, j] if 2 * i + 1 < dense.shape[0] else False
            assert ch == spy.HALF_BLOCKS[top, bottom]
    assert f"{np.count_nonzero(dense)} nonzero" in picture[-1]
    if "bitmap" in err:
        image = read_png(tmp_path / "p.png")
        scale = image.shape[0] // dense.shape[0]
        np.testing.assert_array_equal(image[::scale, ::scale] == 0, dense)
    else:
        assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_trace_verb(run_json, tmp_path):
    (tmp_path / "model.py").write_text(
        "import derivd_client as dd\n\ndef f(x, A):\n    y = A @ x\n    return dd.sum(dd.tanh(y) ** 2)\n")
    out = run_json("trace", f"{tmp_path / 'model.py'}:f", "--shape", "x=3", "--shape", "A=2,3")
    assert out["dsl"] == "y = A @ x\nsum(tanh(y) ** 2)\n" and out["inputs"] == ["x", "A"]


def test_each_package_runs_only_its_own_verbs(cli_env):
    """``derivd-server`` and ``derivd-client`` (here their modules) never hand a verb to the other."""
    for module, foreign in (("derivd.cli", "gradient"), ("derivd_client.cli", "serve")):
        proc = derivd(cli_env, foreign, "--help", module=module, check=False)
        assert proc.returncode == 2 and "invalid choice" in proc.stderr, proc.stderr


def test_neither_package_imports_the_other():
    for tree, other in ((SERVICES / "derivd", "derivd_client"), (SDK / "derivd_client", "derivd")):
        for path in tree.rglob("*.py"):
            for node in ast.walk(python_ast(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                assert not [n for n in names if n.split(".")[0] == other], f"{path} imports {other}"


def test_the_two_dispatchers_are_one_file():
    """Either package's ``derivd`` script may be the installed one: they must behave the same."""
    assert (SERVICES / "derivd" / "commands.py").read_bytes() == (SDK / "derivd_client" / "commands.py").read_bytes()


@pytest.fixture
def dispatch(monkeypatch, capsys):
    """The dispatcher with the SDK's verbs and a stand-in ``serve`` registered: (exit code, stdout, stderr)."""
    calls = []
    registered = [EntryPoint(verb, "derivd_client.cli:main", commands.GROUP) for verb in cli.VERBS]
    registered.append(EntryPoint("serve", "tests.clients.test_cli:_fake_serve", commands.GROUP))
    monkeypatch.setattr(commands, "entry_points", lambda group: [ep for ep in registered if ep.group == group])
    monkeypatch.setattr(sys.modules[__name__], "_fake_serve", lambda argv: calls.append(argv) or 7)

    def call(*argv):
        code = commands.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    call.calls = calls
    return call


def _fake_serve(argv):  # replaced by the fixture
    raise AssertionError


def test_dispatcher_runs_the_first_registered_verb_with_the_whole_line(dispatch, server):
    assert dispatch("serve", "--port", "1") == (7, "", "")
    assert dispatch.calls == [["serve", "--port", "1"]]
    code, out, _ = dispatch("--url", server.url, "gradient", "sum(x**3)", "--at", "x=1,2", "--json")
    assert code == 0 and json.loads(out)["gradient"]["x"] == [3.0, 12.0]  # 3x^2


def test_dispatcher_lists_exactly_the_registered_verbs(dispatch):
    code, out, err = dispatch("--help")
    assert code == 0 and err == ""
    listed = dict(re.findall(r"^  (\S+) +(.*)$", out, re.M))
    assert set(listed) == set(cli.VERBS) | {"serve"}
    assert listed["gradient"] == cli.VERBS["gradient"]
    assert listed["serve"].startswith("(cannot load tests.clients.test_cli: AttributeError")  # no VERBS there
    code, out, err = dispatch()
    assert code == 2 and out == "" and "derivd VERB" in err


def test_dispatcher_reports_a_verb_that_fails_to_load(dispatch, monkeypatch):
    monkeypatch.delattr(sys.modules[__name__], "_fake_serve")
    code, out, err = dispatch("serve")
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith("derivd: `serve` is registered by tests.clients.test_cli:_fake_serve, which fails to load: "
                          "AttributeError")


def test_dispatcher_refuses_a_verb_nobody_registered(dispatch):
    code, out, err = dispatch("worker", "--listen", "x")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("derivd: `worker` is not a verb of the installed packages (evaluate, gradient,")


# ---------------------------------------------------------------- no tracebacks, clear usage errors

def test_a_black_box_answer_in_table_mode_and_an_empty_list(run):
    """Table mode prints a black box's metadata (its name, a string) in a footer: here the count of
    evaluations, which must be the calls the box saw."""
    from derivd.config import Settings

    from tests.conftest import LiveServer
    from tests.support import BlackBoxServer

    with LiveServer(Settings(blackbox_allow=["127.0.0.0/8"], blackbox_deny=[])) as live, \
            BlackBoxServer({"/sq": lambda x: np.sum(x ** 2)}) as box:
        code, out, err = run("blackbox", "list", url=live.url)
        assert (code, err) == (0, "") and out.startswith("no black boxes registered")
        assert run("blackbox", "register", "sq", box.url("/sq"), "--input-size", "3", "--output-size", "1",
                   url=live.url)[0] == 0
        code, out, err = run("gradient", "blackbox:sq", "--at", "x=0.5,2,3", url=live.url)
        assert code == 0 and err == "", err
        footer = re.search(r"^blackbox: name=sq, evaluations=(\d+)$", out, re.M)
        points = sum(len(body["xs"]) if "xs" in body else 1 for path, body, _ in box.requests if path == "/sq")
        assert footer and int(footer[1]) == points > 3, out
        assert re.search(r"^fd: evaluations=\d+, max_error_estimate=\S+$", out, re.M), out
        assert out.index("gradient[x]") < out.index("fd: ")  # the value first, metadata after


def test_hvp_directions_as_a_list_of_vectors_or_repeated_flags(run_json, run, tmp_path):
    x = np.array([1.0, 2.0])
    hessian = np.diag(12 * x ** 2)  # of sum(x**4)
    (tmp_path / "dirs.json").write_text(json.dumps([[1, 0], [0.5, -3]]))  # bare vectors: the one input's
    r = run_json("hvp", "sum(x**4)", "--at", "x=1,2", "--v", f"@{tmp_path / 'dirs.json'}")
    np.testing.assert_allclose([h["hvp"]["x"] for h in r], [hessian @ [1, 0], hessian @ [0.5, -3]], rtol=1e-14)
    r = run_json("hvp", "sum(x**4)", "--at", "x=1,2", "--v", "x=1,0", "--v", "x=0.5,-3")  # two directions
    np.testing.assert_allclose([h["hvp"]["x"] for h in r], [hessian @ [1, 0], hessian @ [0.5, -3]], rtol=1e-14)
    r = run_json("jvp", "x*y", "--at", "x=2", "--at", "y=3", "--v", "x=1", "--v", "y=0", "--v", "x=0", "--v", "y=1")
    assert [d["jvp"] for d in r] == [[3.0], [2.0]]  # d(xy) along x, then along y
    code, _, err = run("jvp", "x*y", "--at", "x=2", "--at", "y=3", "--v", "x=1", "--v", "x=0", "--v", "y=1")
    assert code == 2 and err.count("\n") == 1 and "--v" in err and "x: 2, y: 1" in err
    code, _, err = run("hvp", "sum(x*y)", "--at", "x=1", "--at", "y=2", "--v", f"@{tmp_path / 'dirs.json'}")
    assert code == 2 and err.count("\n") == 1 and "one input" in err


@pytest.mark.parametrize("bad, message", [("x=1,,2", "empty entry"), ("x=1,2,", "empty entry"),
                                          ("x=,", "empty entry")])
def test_a_malformed_vector_is_a_usage_error(run, bad, message):
    code, out, err = run("gradient", "sum(x**2)", "--at", bad)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err and "--at x" in err


def test_an_input_given_twice_is_a_usage_error(run):
    code, _, err = run("gradient", "sum(x**2)", "--at", "x=1,2", "--at", "x=3,4")
    assert code == 2 and err.count("\n") == 1 and "--at x" in err and "twice" in err


def test_trace_imports_a_module_from_the_current_directory(run_json, run, tmp_path, monkeypatch):
    """As ``python -m`` would: the installed ``derivd`` script does not put the cwd on sys.path."""
    (tmp_path / "cli_trace_model.py").write_text(
        "import derivd_client as dd\n\ndef rosen(x):\n    return dd.sum(100 * (x[1:] - x[:-1] ** 2) ** 2)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, "cli_trace_model", raising=False)
    out = run_json("trace", "cli_trace_model:rosen", "--shape", "x=3")
    assert out["dsl"] == "sum(100 * (x[1:] - x[:-1] ** 2) ** 2)\n" and str(tmp_path) not in sys.path
    for spec, message in (("no_such_module_here:f", "cannot import no_such_module_here"),
                          ("cli_trace_model:nope", "has no function 'nope'")):
        code, _, err = run("trace", spec, "--shape", "x=3")
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_output_into_a_closed_pipe_is_quiet(cli_env):
    """``derivd ... --json | head -c 10``: the reader leaves early, and no traceback follows."""
    proc = subprocess.Popen([sys.executable, "-m", "derivd_client.cli", "jacobian", "2*x", "--json",
                             "--at", "x=" + ",".join(["1"] * 300)], env=cli_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert len(proc.stdout.read(10)) == 10  # 90,000 entries: far more than a pipe holds, so it blocks
    proc.stdout.close()
    assert proc.wait(60) == 1 and proc.stderr.read() == b""


EXAMPLE_FILES = {"model.dsl": "sum(x**2) * y", "point.json": json.dumps({"x": [1, 2], "y": 3}),
                 "directions.json": "[[1, 0], [0, 1]]",
                 "model.py": "import derivd_client as dd\n\ndef f(x, W):\n    return dd.sum(dd.tanh(W @ x))\n"}


def test_every_readme_command_runs(run, tmp_path, monkeypatch, capsys):
    """The README's command-line block, line by line (``;`` separates two commands), in a directory
    holding the files it names; commands naming a stored function's <id> or the black box ``sim``
    (which need a server of their own) are parsed only."""
    block = (ROOT / "README.md").read_text().split("## Command line", 1)[1].split("```sh\n", 1)[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "model", raising=False)
    files = {**EXAMPLE_FILES, "model.dsl": "x[idx] ** 2 * y"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    np.save(tmp_path / "idx.npy", np.array([1, 0]))
    np.save(tmp_path / "x.npy", np.arange(1.0, 6.0))
    parser = cli.build_parser()
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        while ";" in words:
            commands.append(words[:words.index(";")])
            words = words[words.index(";") + 1:]
        commands.append(words)
    assert len(commands) >= 14
    for argv in commands:
        command = shlex.join(argv)
        assert argv[0] == "derivd", command
        if "--help" in argv:
            with pytest.raises(SystemExit) as exited:
                run(*argv[1:])
            assert exited.value.code == 0 and "examples:" in capsys.readouterr().out
        elif "id:<id>" in argv or "sim" in argv:
            parser.parse_args(argv[1:])
        else:
            code, out, err = run(*argv[1:])
            assert code == 0 and (out or err), f"{command}: {err}"
    monkeypatch.delitem(sys.modules, "model", raising=False)


def test_every_help_has_examples_that_parse_and_run(run, tmp_path, monkeypatch, capsys):
    """Each verb's ``--help`` shows examples; each parses, and all but those naming a black box or a
    stored function's ID run against the live server (in a directory holding the files they name)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "model", raising=False)
    for name, text in EXAMPLE_FILES.items():
        (tmp_path / name).write_text(text)
    np.save(tmp_path / "x.npy", np.arange(1.0, 6.0))
    parser = cli.build_parser()
    for verb in cli.VERBS:
        assert cli.EXAMPLES[verb]
        with pytest.raises(SystemExit) as exited:
            parser.parse_args([verb, "--help"])
        helped = capsys.readouterr().out
        assert exited.value.code == 0 and "examples:" in helped
        for line in cli.EXAMPLES[verb]:
            assert f"  {line}\n" in helped
            argv = shlex.split(line, comments=True)
            assert argv[:2] == ["derivd", verb]
            parser.parse_args(argv[1:])
            if "ID" not in argv and not any("sim" in a for a in argv):
                code, out, err = run(*argv[1:])
                assert code == 0 and (out or err), f"{line}: {err}"
    monkeypatch.delitem(sys.modules, "model", raising=False)


@pytest.mark.parametrize("args, message", [
    (["gradient", "sum(x)", "--at", 'x=[1,"a"]'], "--at x: not numbers ('a' is not a number)"),
    (["gradient", "sum(x)", "--at", "x=@garbage.npy"], "--at x: cannot read garbage.npy"),
    (["gradient", "sum(x)", "--at", "x=1", "--url", "localhost:8000"], "--url 'localhost:8000': expected http://"),
    (["blackbox", "register", "b", "http://127.0.0.1:9/", "--input-size", "1", "--output-size", "1",
      "--header", "no-colon"], "--header: expected NAME:VALUE"),
])
def test_usage_errors_are_one_line(run, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.npy").write_text("not an array")
    code, out, err = run(*args)
    assert (code, out) == (2, "") and err.count("\n") == 1 and message in err, err


def test_an_unwritable_output_is_one_line(run, tmp_path):
    code, out, err = run("gradient", "sum(x**2)", "--at", "x=1,2", "--out", str(tmp_path / "missing" / "g.npy"))
    assert (code, out) == (1, "") and err.count("\n") == 1 and "No such file or directory" in err, err


# ---------------------------------------------------------------- table output

def test_a_vector_is_one_row_and_a_scalar_inline(run):
    code, out, _ = run("gradient", "sum(x**2) + y**3", "--at", "x=1,2,3", "--at", "y=0.5")
    assert code == 0 and re.search(r"^│ +2 │ +4 │ +6 │$", out, re.M), out  # 2x in one row
    assert re.search(r"^gradient\[y\] = 0\.75$", out, re.M), out  # 3y^2, inline
    code, out, _ = run("jvp", "[x*y]", "--at", "x=2", "--at", "y=3", "--v", "x=1", "--v", "y=0")
    assert code == 0 and re.search(r"^jvp \[1\] = 3$", out, re.M), out  # a one-element vector: y


def test_a_wide_matrix_never_cuts_a_digit(run):
    """Columns summarised from both edges, as numpy prints, instead of numbers cut to fit."""
    n, c = 40, 1.2345678901
    code, out, _ = run("jacobian", f"x * {c}", "--at", "x=" + ",".join(["1"] * n))
    assert code == 0
    numbers = [cell for line in out.splitlines() if line.startswith("│")
               for cell in re.findall(r"[^│ ]+", line)[1:]]
    assert numbers and set(numbers) <= {f"{c:.10g}", "0", "…"}, out  # nothing cut mid-digit
    header = re.findall(r"[^┃ ]+", next(line for line in out.splitlines() if line.startswith("┃")))
    assert header[0] == "0" and header[-1] == str(n - 1) and "…" in header, out
    assert re.search(r"^│ +… │ +… │", out, re.M) and re.search(rf"^│ +{n - 1} │", out, re.M)  # rows too


def test_many_directions_one_table(run, tmp_path):
    x = np.array([1.0, 2.0])
    dirs = np.random.default_rng(0).normal(size=(300, 2))
    (tmp_path / "dirs.json").write_text(json.dumps(dirs.tolist()))
    code, out, _ = run("hvp", "sum(x**4)", "--at", "x=1,2", "--v", f"@{tmp_path / 'dirs.json'}")
    assert code == 0 and out.count("value =") == 1 and len(out.splitlines()) < 60, out
    assert "hvp[x] [300, 2]" in out and "300 directions" in out
    hv = dirs * 12 * x ** 2  # the Hessian of sum(x**4) is diag(12 x^2)
    for i in (0, 299):
        assert re.search(rf"^│ +{i} │ +{re.escape(f'{hv[i, 0]:.10g}')} │ +{re.escape(f'{hv[i, 1]:.10g}')} │$",
                         out, re.M), out


def test_blackbox_list_shows_whole_urls(run_json, run, loopback_server):
    url = "http://127.0.0.1:9/" + "a-rather-long-path/" * 6
    run_json("blackbox", "register", "longurl", url, "--input-size", "2", "--output-size", "1",
             url=loopback_server.url)
    try:
        code, out, _ = run("blackbox", "list", url=loopback_server.url)
        assert code == 0 and re.search(rf"^longurl +{re.escape(url)} +input_size=2 output_size=1 ", out, re.M), out
    finally:
        run("blackbox", "delete", "longurl", url=loopback_server.url)


def test_an_unexpected_failure_is_one_line_unless_debug(run, monkeypatch):
    def broken(result, note=""):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(cli, "show_result", broken)
    code, out, err = run("evaluate", "x", "--at", "x=1")
    assert (code, out) == (1, "") and err == "derivd: unexpected ZeroDivisionError: a bug (--debug shows where)\n"
    for debug in (["--debug", "evaluate", "x"], ["evaluate", "x", "--debug"]):
        with pytest.raises(ZeroDivisionError):
            run(*debug, "--at", "x=1")
