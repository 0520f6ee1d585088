"""The egress proxy: the only way out of a sandbox whose tool declares a network allowlist.

Such a container has no network interface but loopback (`network_mode="none"`, like
every sandbox container), so it can reach no host service, no Docker gateway and no
other container, whatever they listen on. Its one way out is this proxy's Unix socket,
in a folder of its own that is mounted (read-only) into the pool's containers; the
runner relays `127.0.0.1:3128` inside the container to it, and the call gets
`HTTPS_PROXY`/`HTTP_PROXY` pointing there. Tools using urllib, requests or httpx follow
the proxy variables for HTTPS by themselves.

The proxy accepts `CONNECT host:port` only for the allowlisted hosts and tunnels the
bytes; anything else gets `403`. An entry `host` allows port 443 alone; `host:port`
allows that port (`"example.com:8443"`). Each pool gets its own proxy and socket, so a
container cannot use the proxy of a pool that allows more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["SOCKET_NAME", "EgressProxy"]

_MAX_HEADER = 8192
_CONNECT_TIMEOUT_S = 10.0
SOCKET_NAME = "egress.sock"


class EgressProxy:
    """A CONNECT-only proxy on a Unix socket that lets through the allowlisted hosts."""

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = frozenset(entry.lower() for entry in allowed)
        self.folder: Path | None = None
        """The folder holding the socket (`SOCKET_NAME`), once started: mount this one."""
        self._server: asyncio.Server | None = None

    def allows(self, host: str, port: int) -> bool:
        """Whether `CONNECT host:port` may pass: `host` means port 443 only."""
        host = host.lower().strip("[]")
        return f"{host}:{port}" in self.allowed or (port == 443 and host in self.allowed)

    async def start(self) -> Path:
        """Listen on a fresh socket that the sandbox's user (uid 10001) may connect to;
        return its folder."""
        folder = Path(await asyncio.to_thread(_private_folder))
        path = folder / SOCKET_NAME
        self._server = await asyncio.start_unix_server(self._handle, path)
        os.chmod(path, 0o666)  # connecting needs write permission on the socket
        self.folder = folder
        return folder

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            await _close(writer)
            return
        method, _, rest = head[:_MAX_HEADER].decode("latin-1").partition(" ")
        target = rest.partition(" ")[0]
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or not port.isdigit() or not self.allows(host, int(port)):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            await _close(writer)
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), _CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await _close(writer)
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    async def aclose(self) -> None:
        """Stop listening and remove the socket's folder."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.folder is not None:
            await asyncio.to_thread(shutil.rmtree, self.folder, True)
            self.folder = None


def _private_folder() -> str:
    """A new folder only we may write in, that uid 10001 may enter."""
    folder = tempfile.mkdtemp(prefix="agentflow-egress-")
    os.chmod(folder, 0o755)
    return folder


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
