"""The egress proxy: the only way out of a sandbox whose tool declares a network allowlist.

Such a container sits on an internal Docker network (no route anywhere but the host's
side of its bridge), and its calls get `HTTPS_PROXY`/`HTTP_PROXY` pointing here. The
proxy accepts `CONNECT host:port` only for the allowlisted hosts (`host` or
`host:port`) and tunnels the bytes; anything else gets `403`. Tools using urllib,
requests or httpx follow the proxy variables for HTTPS by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["EgressProxy"]

_MAX_HEADER = 8192


class EgressProxy:
    """A CONNECT-only proxy that lets through the allowlisted hosts and nothing else."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = tuple(entry.lower() for entry in allowed)
        self.url = ""
        """`http://HOST:PORT`, once started."""
        self._server: asyncio.Server | None = None

    def allows(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]")
        return host in self.allowed or f"{host}:{port}" in self.allowed

    async def start(self, bind: str) -> str:
        """Listen on `bind` (the internal network's gateway address); return the URL."""
        self._server = await asyncio.start_server(self._handle, bind, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{bind}:{port}"
        return self.url

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            return
        method, _, rest = head[:_MAX_HEADER].decode("latin-1").partition(" ")
        target = rest.partition(" ")[0]
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not port.isdigit() or not self.allows(host, int(port)):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await _close(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await _close(writer)
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        await _close(writer)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
