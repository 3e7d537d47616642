"""What one HTTP connection may cost the gateway, enforced in uvicorn's protocol, below the app.

uvicorn with httptools puts no bound on a request head (a 16 MiB header is read and kept whole),
never times out a client that is slow to send its head or body (slowloris), reads on after an
early answer (a chunked body goes on being read and dropped after its 413), and answers a
malformed request at once and closes, losing the answers still owed to requests pipelined before
it. :class:`GuardedHttpTools` closes each of these the way Envoy, the most trusted proxy of the
kind, does (its header limits are Envoy's defaults; its timeouts are Envoy's mechanisms, which
Envoy leaves off by default, with bounds chosen here):

- **head**: at most ``http_max_headers`` header lines (Envoy's ``max_headers_count``, 100) and
  ``http_max_header_bytes`` of request line and headers (Envoy's ``max_request_headers_kb``,
  60 KiB): 431. A head still incomplete after one socket read is counted read by read, so at
  most one read (256 KiB) past the cap is ever held.
- **time**: the head must arrive within ``http_header_timeout_s`` (10 s) of its first byte (or
  of the connection, for the first request; Envoy's ``request_headers_timeout``), the body within
  ``http_body_timeout_s`` (60 s) of the head (Envoy's ``request_timeout``, which it recommends
  wherever bodies are buffered whole, as here): 408, as Envoy answers. Time while
  the gateway itself stopped reading (a pipelined request waits its turn) does not count. A
  connection idle before its first byte is closed without an answer, as uvicorn's keep-alive
  timeout closes one idle between requests.
- **body**: counted as it streams in, chunked or not; past ``max_request_bytes``, 413 at once.
- **refusals** (these, and malformed requests: 400 with the error httptools found) are the
  contract's JSON error bodies, sent after every answer owed to requests before the refused one,
  with ``Connection: close``. Nothing more is parsed; what the client still sends is read and
  dropped for at most ``LINGER_S`` after our half-close (nginx's lingering close), so the client
  reads the refusal instead of a reset. A request answered before its body was read (a 415, a
  413 by ``Content-Length``) keeps its connection while the rest of its body is read and
  dropped, within the same cap and timeout; past either, the connection is closed the same way.

This reaches into uvicorn's httptools protocol, whose internals are not a public API: the names
below. pyproject.toml pins uvicorn to the releases tested with them, and
tests/gateway/test_uvicorn_internals.py checks each on a live connection, naming any that vanished.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from derivd.gateway import codecs
from derivd.gateway.http import NO_TIMING, too_large

LINGER_S = 2.0

# uvicorn internals this module relies on (besides the module's STATUS_LINE): methods of
# HttpToolsProtocol it overrides (httptools' parser callbacks, uvicorn's hooks), which must still
# be called; what it reads and calls on a protocol, on a request's cycle and on its flow control.
OVERRIDDEN = ("connection_made", "data_received", "connection_lost", "on_message_begin", "on_url", "on_header",
              "on_headers_complete", "on_body", "on_message_complete", "on_response_complete",
              "_start_asgi_task")
PROTOCOL = ("parser", "loop", "transport", "flow", "cycle", "pipeline", "server_state",
            "_unset_keepalive_if_required", "_should_upgrade", "handle_websocket_upgrade",
            "_unsupported_upgrade_warning")
CYCLE = ("more_body", "response_complete", "response_started", "disconnected", "message_event")
FLOW = ("read_paused", "resume_reading")


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings) -> "ConnectionLimits":
        return cls(settings.http_max_header_bytes, settings.http_max_headers, settings.http_header_timeout_s,
                   settings.http_body_timeout_s, settings.max_request_bytes)


class Refusal(Exception):
    """A request the connection answers itself, with the contract's error body, then closes."""

    def __init__(self, status: int, body: dict):
        super().__init__(status)
        self.status, self.body = status, body

    @classmethod
    def of(cls, status: int, code: str, message: str, **detail) -> "Refusal":
        return cls(status, {"error": {"code": code, "message": message, "detail": detail}})


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (``limits`` from :class:`ConnectionLimits`)."""

    def __init__(self, *args, limits: ConnectionLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_head = False  # a request head has begun and is not complete
        self._began_in_read = False  # ... and it began within the read being parsed
        self._head_bytes = 0  # of the current head, as parsed: request line and complete headers
        self._head_read = 0  # of the current head, as read: whole reads while it stayed incomplete
        self._headers = 0
        self._body_bytes = 0
        self._in_body = False  # a request's head is complete and its body is not
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # what the timer times: "header", "body", or nothing
        self._refusal: bytes | None = None  # the answer owed after those in flight; then we close
        self._running = None  # the cycle whose app runs (self.cycle is the latest parsed, maybe queued)
        self._lingering = False

    # ------------------------------------------------------------ reading

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm("header")

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None or self._lingering:
            return  # refused: nothing more is parsed
        self._unset_keepalive_if_required()
        continuing, self._began_in_read = self._in_head, False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as e:
            cause = e.__context__
            self._refuse(cause if isinstance(cause, Refusal) else Refusal.of(
                400, "bad_request", f"malformed HTTP request: {e}"))
            return
        if self._in_head and continuing and not self._began_in_read:  # a whole read of head
            self._head_read += len(data)
            if self._head_read > self.limits.max_header_bytes:
                self._refuse(self._head_too_large(self._head_read))
                return
        self._time_what_is_left()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._began_in_read = True
        self._head_bytes = self._head_read = self._headers = self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self.limits.max_headers:
            raise Refusal.of(431, "headers_too_large",
                             f"more than {self.limits.max_headers} header lines, over the limit http_max_headers",
                             limit="http_max_headers", max=self.limits.max_headers)
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            raise Refusal(413, too_large(self._body_bytes, self.limits.max_body_bytes).to_body())
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_header_bytes:
            raise self._head_too_large(self._head_bytes)

    def _head_too_large(self, size: int) -> Refusal:
        return Refusal.of(431, "headers_too_large",
                          f"request line and headers of more than {self.limits.max_header_bytes} bytes, over the "
                          f"limit http_max_header_bytes", limit="http_max_header_bytes", value=size,
                          max=self.limits.max_header_bytes)

    # ------------------------------------------------------------ time

    def _time_what_is_left(self) -> None:
        """After a read: time the head or the body it left incomplete, from the end of the read that
        began it (a head's timer runs from the connection for the first request). Armed once per
        read, not per parser event, so a request that arrives whole in one read arms no timer."""
        phase = "header" if self._in_head else "body" if self._in_body else None
        if phase != self._phase:
            if phase is None:
                self._disarm()
            else:
                self._arm(phase)

    def _arm(self, phase: str) -> None:
        self._disarm()
        delay = self.limits.header_timeout_s if phase == "header" else self.limits.body_timeout_s
        self._timer, self._phase = self.loop.call_later(delay, self._timed_out, phase), phase

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._phase = None

    def _timed_out(self, phase: str) -> None:
        self._timer = self._phase = None
        if self.transport.is_closing() or self._refusal is not None:
            return
        if self.flow.read_paused:  # we stopped reading (a pipelined request waits): not the client's delay
            self._arm(phase)
            return
        if phase == "header" and not self._in_head:
            self.transport.close()  # idle before its first byte: nothing to answer
            return
        limit = f"http_{phase}_timeout_s"
        seconds = self.limits.header_timeout_s if phase == "header" else self.limits.body_timeout_s
        self._refuse(Refusal.of(408, "request_timeout",
                                f"the request {phase} did not arrive within {seconds:g} s (limit {limit})",
                                limit=limit, max=seconds))

    # ------------------------------------------------------------ answering

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` once the answers owed to earlier requests are sent, then close."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and cycle.more_body:  # the refused request is the one being received
            if cycle.response_complete:  # answered before its body was read: nothing more to say
                self._linger()
                return
            if self.pipeline and self.pipeline[0][0] is cycle:
                self.pipeline.popleft()  # queued, never started
            elif cycle.response_started:  # half an answer is out: no room for another
                self.transport.close()
                return
            cycle.disconnected = True  # its app (if started) reads a disconnect; its answer goes nowhere
            cycle.message_event.set()
        body = codecs.dumps(refusal.body)
        head = [STATUS_LINE[refusal.status], *(b"%s: %s\r\n" % kv for kv in self.server_state.default_headers),
                b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                b"server-timing: %s\r\n" % NO_TIMING, b"connection: close\r\n\r\n"]
        self._refusal = b"".join(head) + body
        self._answer_refusal_when_idle()

    def _start_asgi_task(self, cycle, app) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def _answer_refusal_when_idle(self) -> None:
        if self._refusal is None:  # nothing to answer (after every response)
            return
        owed = [c for c in (self._running, self.cycle)
                if c is not None and not c.response_complete and not c.disconnected]
        if self._refusal is None or self.pipeline or owed or self.transport.is_closing():
            return
        self.transport.write(self._refusal)
        self._linger()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        self._answer_refusal_when_idle()

    def _linger(self) -> None:
        """Half-close, then read and drop what the client still sends, for at most ``LINGER_S``."""
        self._disarm()
        self._unset_keepalive_if_required()
        self._lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
