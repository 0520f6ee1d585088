"""`agentflow mcp serve`: a graph's tools as an MCP server (stdio, or streamable HTTP).

Every user error is one line on stderr and exit status 1; never a traceback.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentflow._console import user_errors
from agentflow.exceptions import ConfigError
from agentflow.graph import AgentGraph
from agentflow.graph_files import LoadedGraph, import_file
from agentflow.tools import Tool

__all__ = ["mcp_app"]

mcp_app = typer.Typer(help="Serve a graph's tools to MCP clients (Claude, IDEs, other agents).")


@mcp_app.callback()
def _mcp() -> None:
    """Serve a graph's tools to MCP clients."""


def load_tools(ref: str) -> tuple[list[Tool[Any]], Any]:
    """The tools `FILE.py[:attr]` names (an AgentGraph's agents' tools, or a list of
    tools) and what they get as `ctx.deps` (the file's `make_context()`, if any).

    Raises:
        ConfigError: The file cannot be imported, or the name is neither.
    """
    path_text, sep, attr = ref.rpartition(":")
    if not sep or not attr.isidentifier():
        path_text, attr = ref, "graph"
    module = import_file(Path(path_text))
    found = getattr(module, attr, None)
    if isinstance(found, AgentGraph):
        loaded = LoadedGraph(ref=ref, graph=found, module=module)
        return found.tools, loaded.context()
    if isinstance(found, list | tuple) and found and all(isinstance(t, Tool) for t in found):
        make_context = getattr(module, "make_context", None)
        return list(found), make_context() if callable(make_context) else None
    raise ConfigError(
        f"{attr!r} is neither an AgentGraph nor a list of tools", file=path_text, key=attr
    )


async def _serve(
    ref: str,
    *,
    http: bool,
    host: str,
    port: int,
    allow_approval_tools: bool,
    journal_url: str | None,
    allow_unisolated: bool,
) -> None:
    from agentflow.journal import open_journal
    from agentflow.mcp.client import _ensure_sdk
    from agentflow.mcp.server import ToolServer, serve_http, serve_stdio
    from agentflow.sandbox import Sandboxes

    _ensure_sdk()
    tools, deps = load_tools(ref)
    journal = None if journal_url is None else open_journal(journal_url)
    try:
        async with Sandboxes(allow_unisolated=allow_unisolated) as sandboxes:
            served = ToolServer(
                tools=tools,
                deps=deps,
                sandboxes=sandboxes,
                journal=journal,
                allow_approval_tools=allow_approval_tools,
            )
            if not http:
                await serve_stdio(served)
                return

            def ready(url: str) -> None:
                names = ", ".join(t.name for t in tools)
                print(f"serving MCP at {url} ({names})", file=sys.stderr, flush=True)

            await serve_http(served, host=host, port=port, ready=ready)
    finally:
        if journal is not None:
            await journal.aclose()


@mcp_app.command()
@user_errors
def serve(
    ref: Annotated[
        str,
        typer.Argument(
            help="GRAPH_FILE[:attr] (its agents' tools) or FILE:LIST (a list of tools)."
        ),
    ] = "graphs/support.py:graph",
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP at /mcp instead of stdio.")
    ] = False,
    host: Annotated[str, typer.Option(help="Address to listen on, with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port, with --http (0: a free one).")] = 8765,
    allow_approval_tools: Annotated[
        bool,
        typer.Option(
            "--allow-approval-tools",
            help="Run calls that need a person's approval, trusting the MCP client to "
            "confirm them; without it they are refused with an error result.",
        ),
    ] = False,
    journal: Annotated[
        str | None,
        typer.Option(
            help="Journal side-effecting calls that carry an idempotency key "
            "(sqlite:///PATH or postgresql://...): a repeated key is not run again."
        ),
    ] = None,
    allow_unisolated: Annotated[
        bool,
        typer.Option(
            "--allow-unisolated",
            help="Let sandbox='auto' tools run in the process sandbox when Docker is absent.",
        ),
    ] = False,
) -> None:
    """Serve the tools as an MCP server: on stdin/stdout, or over HTTP with --http."""
    asyncio.run(
        _serve(
            ref,
            http=http,
            host=host,
            port=port,
            allow_approval_tools=allow_approval_tools,
            journal_url=journal,
            allow_unisolated=allow_unisolated,
        )
    )
