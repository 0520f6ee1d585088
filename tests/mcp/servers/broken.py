"""An MCP server (the SDK's low-level Server, over stdio) whose tools agentflow must refuse.

python broken.py array-schema    # a tool whose inputSchema is not an object
python broken.py dotted-name     # a tool named `weather.today`
python broken.py same-name       # a tool named `forecast`, as weather.py's
"""

from __future__ import annotations

import sys

import anyio
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

SCHEMAS = {
    "array-schema": ("numbers", {"type": "array", "items": {"type": "number"}}),
    "dotted-name": ("weather.today", {"type": "object", "properties": {}}),
    "same-name": ("forecast", {"type": "object", "properties": {"city": {"type": "string"}}}),
}


async def main(mode: str) -> None:
    name, schema = SCHEMAS[mode]
    server: Server = Server("broken")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [types.Tool(name=name, description="A tool.", inputSchema=schema)]

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])
