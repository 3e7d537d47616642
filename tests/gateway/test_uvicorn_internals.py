"""The uvicorn internals ``gateway/connection.py`` builds on are still there, checked on a live
connection: a uvicorn release that renames one fails here, naming it, instead of breaking header
limits, timeouts or pipelined answers at run time."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from derivd.config import Settings
from derivd.gateway import connection
from derivd.gateway.connection import ConnectionLimits, GuardedHttpTools


def missing(obj, names) -> list[str]:
    return [name for name in names if not hasattr(obj, name)]


def test_the_private_uvicorn_names_connection_py_uses_still_exist():
    async def app(scope, receive, send):
        await asyncio.Event().wait()  # holds the request open, its body half read, until the loop ends

    async def connect():
        ours, theirs = socket.socketpair()
        protocol = GuardedHttpTools(config=uvicorn.Config(app), server_state=ServerState(), app_state={},
                                    limits=ConnectionLimits.from_settings(Settings()))
        await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, ours)
        theirs.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345")
        for _ in range(100):
            if protocol.cycle is not None and protocol._running is not None:
                break
            await asyncio.sleep(0.01)
        found = {"module": missing(httptools_impl, ["STATUS_LINE"]),
                 "HttpToolsProtocol": missing(httptools_impl.HttpToolsProtocol, connection.OVERRIDDEN),
                 "protocol": missing(protocol, connection.PROTOCOL),
                 "server_state": missing(protocol.server_state, ["default_headers"]),
                 "cycle": missing(protocol.cycle, connection.CYCLE), "flow": missing(protocol.flow, connection.FLOW)}
        protocol.transport.close()
        theirs.close()
        return found

    found = {where: names for where, names in asyncio.run(connect()).items() if names}
    assert not found, (
        f"uvicorn {uvicorn.__version__} no longer has what derivd/gateway/connection.py relies on: {found}. "
        "Adapt connection.py to this release (and widen the uvicorn pin in pyproject.toml), or keep uvicorn "
        "within the pinned range.")
