"""A small MCP server for the tests, on the official SDK's FastMCP.

    python weather.py            # stdio
    python weather.py http       # streamable HTTP on 127.0.0.1, a free port: prints `PORT n`

It is also run inside the Docker sandbox (the SDK mounted read-only), hence no imports
from the repository.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, TypedDict

from mcp.server.fastmcp import Context, FastMCP
from mcp.types import ToolAnnotations
from pydantic import Field

server = FastMCP("weather", log_level="WARNING")

PAYOUTS: list[int] = []


class Reading(TypedDict):
    city: str
    celsius: float


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def forecast(city: str, days: Annotated[int, Field(ge=1, le=7)] = 1) -> str:
    """Tell the weather of the coming days in a city."""
    return f"{city}: sunny for {days} day(s)"


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def temperature(city: str) -> Reading:
    """The temperature in a city now, as structured data."""
    return {"city": city, "celsius": 21.5}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def fail(reason: str) -> str:
    """Always fail, with the reason given."""
    raise ValueError(f"cannot do that: {reason}")


@server.tool()
def pay_out(amount: int, ctx: Context) -> dict[str, Any]:  # type: ignore[type-arg]
    """Pay money out (a side effect that repeats if called twice)."""
    PAYOUTS.append(amount)
    meta = ctx.request_context.meta
    key = None if meta is None else (meta.model_extra or {}).get("io.agentflow/idempotency-key")
    return {"payouts": len(PAYOUTS), "key": key}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def whoami() -> dict[str, Any]:
    """Where the server runs: host, user, network and filesystem."""
    return {
        "hostname": socket.gethostname(),
        "uid": os.getuid(),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "network": _try_connect(),
        "write_root": _try_write("/opt/tool/x"),
        "write_tmp": _try_write("/tmp/x"),
    }


@server.tool()
async def hang(signal_path: str) -> str:
    """Write this process's pid to a FIFO, then never answer."""
    await asyncio.to_thread(Path(signal_path).write_text, str(os.getpid()))  # until read
    await asyncio.Event().wait()
    return "unreachable"


@server.tool()
def die() -> str:
    """Exit the server in the middle of the call."""
    os._exit(3)


def _try_connect() -> str:
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    return "connected"


def _try_write(path: str) -> str:
    try:
        with open(path, "w") as file:
            file.write("x")
    except OSError as exc:
        return errno.errorcode[exc.errno or 0]
    return "ok"


def _serve_http() -> None:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections wait in the backlog until uvicorn accepts them
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    app = server.streamable_http_app()
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        _serve_http()
    else:
        server.run("stdio")
