"""The HTTP client of a streamable HTTP MCP session, watched for a server that went away.

The SDK's transport answers a request whose response stream breaks (the server died
mid-call) with nothing at all unless the server can resume the stream, so the call
would wait for its timeout. This client's transport reports any broken connection, and
`McpServer` ends the session on it, failing the calls in flight at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx

__all__ = ["watched_client"]

Broken = Callable[[Exception], None]

_TIMEOUT = httpx.Timeout(30.0, read=300.0)
"""The SDK's defaults (`mcp.shared._httpx_utils`): 30 s, 5 minutes between SSE events."""


class _WatchedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, broken: Broken) -> None:
        self._inner = inner
        self._broken = broken

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except httpx.TransportError as exc:
            self._broken(exc)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


class _WatchedTransport(httpx.AsyncBaseTransport):
    def __init__(self, broken: Broken) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._broken = broken

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self._broken(exc)
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _WatchedStream(response.stream, self._broken)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def watched_client(headers: dict[str, str], broken: Broken) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for the SDK's transport that calls `broken` when a
    connection fails or a response stream breaks."""
    return httpx.AsyncClient(headers=headers, timeout=_TIMEOUT, transport=_WatchedTransport(broken))
