"""The playground: ``GET /playground``, a page to try the language in (static files beside this module).

Type a program and a point; the page asks the service's own REST API (with
the ``X-API-Key`` the reader gives, if any) for the value, gradient, Hessian
and Jacobian with its sparsity pattern, and plots f along a direction beside
its Taylor polynomials. Its whole state lives in the URL's fragment, so a link
shares it. Plain JavaScript and a canvas: nothing is loaded from elsewhere.
``GET /`` is a page of links to it and to the documentation.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

_INDEX = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>derivd</title>
<style>body{font:16px/1.6 system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}</style></head>
<body><h1>derivd</h1><p>Exact derivatives of array programs and black boxes, as a service.</p><ul>
<li><a href="/playground">Playground</a>: type a program, see its derivatives and Taylor polynomials</li>
<li><a href="/docs">API documentation</a>: every route, with examples to run</li>
<li><a href="/docs/language">Language reference</a>: every function and its derivative rules</li>
</ul></body></html>"""


def install(app: FastAPI) -> None:
    """``GET /``, ``GET /playground`` and its files under ``/playground/static``."""

    @app.get("/", include_in_schema=False)
    async def index():
        return HTMLResponse(_INDEX)

    @app.get("/playground", include_in_schema=False)
    async def playground():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/playground/static", StaticFiles(directory=STATIC), name="playground")
