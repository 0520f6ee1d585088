"""A cap on request bodies, enforced before the app (and its token check) sees them.

Without it a body is read whole before anything looks at the caller: four anonymous
100 MB posts once took the server from 98 to 796 MB. `BodyLimit` answers 413 with the
JSON error body as soon as a request is known to be too large: at once when its
`Content-Length` says so (nothing of the body is read), else when the bytes that have
arrived (chunked, or a body longer than declared) pass the limit. It then closes the
connection, so the rest is never read. A request within the limit is read here and
handed on unchanged.
"""

from __future__ import annotations

from typing import Any

from agentflow.server.schemas import ErrorBody, ErrorDetail

__all__ = ["DEFAULT_MAX_BODY_BYTES", "BodyLimit"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""1 MiB: far above any body the API takes (a message is at most 20,000 characters)."""


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with a 413."""

    def __init__(self, app: Any, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"Content-Length {declared}")
            return
        messages: list[Any] = []
        size = 0
        while True:  # read the body here, counting its bytes as they arrive
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send, f"more than {self.max_bytes} bytes")
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def receive_read() -> Any:
            for message in replay:
                return message
            return await receive()  # after the body: disconnects, for streamed answers

        await self.app(scope, receive_read, send)

    async def _refuse(self, send: Any, what: str) -> None:
        message = f"the request body ({what}) is over the limit of {self.max_bytes} bytes"
        error = ErrorBody(error=ErrorDetail(type="payload_too_large", message=message))
        body = error.model_dump_json().encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),  # the rest of the body is not read
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Any) -> int | None:
    """The declared body size, or None when there is none (chunked, or no body).

    The HTTP parser has already refused malformed or conflicting values.
    """
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
