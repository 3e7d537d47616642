"""A gradient check for a black box: finite differences on the server against exact AD.

A black box is a function derivd can only call (POST url {"x"} -> {"y"}). This
example serves one locally (a small numpy function behind Python's http.server),
registers it, asks derivd for its gradient (finite differences, since nothing
else is possible), and checks it against the exact gradient of the same function
written in the DSL. Agreement to the finite-difference error confirms both the
black box's wiring and the step choice; a mismatch points at one of them.

    python examples/blackbox_gradient_check.py [--url http://127.0.0.1:8000] [--box-host 127.0.0.1]

The server must be allowed to call the box's address: derivd refuses loopback
and private addresses by default, so run it with e.g.
DERIVD_BLACKBOX_DENY='[]' DERIVD_BLACKBOX_ALLOW='["127.0.0.0/8"]' for this demo.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import sys
import threading

import numpy as np

import derivd_client as dd

DSL = "sum(sin(x) * exp(-x**2 / 4)) + x[0] * x[1]"


def f(x: np.ndarray) -> np.ndarray:
    return np.array([np.sum(np.sin(x) * np.exp(-x ** 2 / 4)) + x[0] * x[1]])


class Box(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if "xs" in body:
            out = {"ys": [f(np.asarray(x)).tolist() for x in body["xs"]]}
        else:
            out = {"y": f(np.asarray(body["x"])).tolist()}
        data = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("DERIVD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--box-host", default="127.0.0.1", help="address the derivd server can reach")
    parser.add_argument("--n", type=int, default=6)
    args = parser.parse_args()

    httpd = http.server.ThreadingHTTPServer((args.box_host, 0), Box)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    box_url = f"http://{args.box_host}:{httpd.server_address[1]}/"
    x = np.linspace(-1.0, 1.5, args.n)
    try:
        with dd.Client(args.url) as client:
            box = client.register_blackbox("gradcheck-demo", box_url, input_size=args.n, output_size=1,
                                           batch=True, timeout_s=10)
            try:
                fd = client.gradient(box, x=x, fd={"method": "central", "order": 4})
                exact = client.gradient(DSL, x=x)
            finally:
                client.delete_blackbox(box.name)
    finally:
        httpd.shutdown()
    err = np.abs(fd.gradient["x"] - exact.gradient["x"])
    rel = err.max() / np.abs(exact.gradient["x"]).max()
    print(f"f(x) = {exact.value:.12f} (black box: {fd.value:.12f})")
    for i, (a, b) in enumerate(zip(fd.gradient["x"], exact.gradient["x"])):
        print(f"  d/dx[{i}]  finite differences {a: .10f}   exact {b: .10f}   |diff| {abs(a - b):.1e}")
    ok = rel < 1e-6
    print(f"max relative error {rel:.2e}: gradient check {'PASSED' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
