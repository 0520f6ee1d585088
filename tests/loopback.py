"""A real HTTP server on 127.0.0.1 that answers with scripted replies.

Hosted APIs cannot be reached from CI, so their backends are tested against this
server replaying request/response pairs from the providers' documentation. It can
also misbehave on purpose: answer slowly, stall until released, drop the connection,
or go away entirely (`stop`) and come back on the same port (`start`).
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    """Load `tests/fixtures/NAME.json`: a documented request/response pair and its source."""
    return json.loads((FIXTURES / f"{name}.json").read_text())


@dataclass(kw_only=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    body: Any = None
    """A JSON-able value, or a str sent as is."""
    headers: dict[str, str] = field(default_factory=dict)
    sse: Sequence[Any] | None = None
    """Send these as server-sent events (dicts as JSON, strs as is) instead of `body`."""
    sse_fail_after: int | None = None
    """Drop the connection after sending this many events."""
    stall: bool = False
    """Hold the request until `LoopbackServer.release()` (or the server stops)."""
    drop: bool = False
    """Close the connection without answering."""


@dataclass(kw_only=True, frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class LoopbackServer:
    """Serve scripted replies on 127.0.0.1; record every request.

    Replies come from the queue (`reply(...)`), else from `handler(recorded)` when set,
    else a 500 saying the script ran out.
    """

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.handler: Callable[[Recorded], Reply] | None = None
        self._released = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reply(self, body: Any = None, **kwargs: Any) -> None:
        self.replies.append(Reply(body=body, **kwargs))

    def release(self) -> None:
        """Let every stalled request go (they answer 503)."""
        self._released.set()

    def _next(self, recorded: Recorded) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.handler is not None:
            return self.handler(recorded)
        return Reply(status=500, body={"error": {"message": "loopback script ran out"}})

    def start(self) -> None:
        """Start serving (again, on the same port after `stop`)."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                try:
                    self._handle()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (a timeout test)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                recorded = Recorded(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    json=json.loads(raw) if raw else None,
                )
                server.requests.append(recorded)
                reply = server._next(recorded)
                if reply.stall:
                    server._released.wait()
                    reply = Reply(status=503, body={"error": {"message": "released"}})
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if reply.sse is not None:
                    self._send_sse(reply)
                    return
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _send_sse(self, reply: Reply) -> None:
                assert reply.sse is not None
                self.send_response(reply.status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                for index, event in enumerate(reply.sse):
                    if reply.sse_fail_after is not None and index >= reply.sse_fail_after:
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    text = event if isinstance(event, str) else f"data: {json.dumps(event)}"
                    self.wfile.write(f"{text}\n\n".encode())
                    self.wfile.flush()

        self._released.clear()
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()

    def stop(self) -> None:
        """Stop accepting connections; the port is refused until `start`."""
        if self._httpd is not None:
            self.release()
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


@contextmanager
def loopback() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
