"""MCP (Model Context Protocol) tools in and out of agentflow.

In: an MCP server's tools become agentflow tools (`McpServer`, `tools_from_mcp`), run
like any `@tool`: validated against their input schema, approval-gated, journaled for
exactly-once, traced as `execute_tool` spans. Out: a graph's tools are served to MCP
clients by `agentflow mcp serve` (`agentflow.mcp.server`).

```python
async with McpServer.stdio("python", "weather.py") as weather, McpServer.http(URL) as docs:
    tools = await tools_from_mcp(
        await weather.tools(requires_approval={"set_alert"}), docs, alongside=SUPPORT_TOOLS
    )
    graph.agent("resolve", tools=[*SUPPORT_TOOLS, *tools])
```

Importing this package does not import the `mcp` SDK; connecting does, and fails with
the install line (`pip install "agentflow[mcp]"`) when it is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agentflow.exceptions import ConfigError
from agentflow.mcp.client import McpServer, ToolOption
from agentflow.mcp.tool import IDEMPOTENCY_META, McpTool
from agentflow.tools import Tool

__all__ = ["IDEMPOTENCY_META", "McpServer", "McpTool", "ToolOption", "tools_from_mcp"]


async def tools_from_mcp(
    *sources: McpServer | Sequence[McpTool], alongside: Sequence[Tool[Any]] = ()
) -> list[McpTool]:
    """The tools of MCP servers, checked to be usable together.

    Args:
        sources: A server (all its tools, default options: it is connected if need be),
            or the tools one gave with options (`await server.tools(...)`).
        alongside: Tools the MCP tools will sit next to (the graph's own), whose names
            they must not take.

    Raises:
        ConfigError: Two tools share a name (both origins named; `tools(prefix=...)`
            tells them apart), or a server did not start.
    """
    seen: dict[str, str] = {t.name: f"tool {t.name!r} given alongside" for t in alongside}
    tools: list[McpTool] = []
    for source in sources:
        batch = await source.tools() if isinstance(source, McpServer) else list(source)
        for tool in batch:
            origin = f"MCP server {tool.server.name!r}'s tool {tool.remote_name!r}"
            if tool.name in seen:
                raise ConfigError(
                    f"{origin} and {seen[tool.name]} are both named {tool.name!r}; give one "
                    "server's tools a prefix (server.tools(prefix=...))",
                    key=f"tool {tool.name}",
                )
            seen[tool.name] = origin
            tools.append(tool)
    return tools
