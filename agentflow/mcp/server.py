"""Serve agentflow tools to MCP clients (`agentflow mcp serve`), over stdio or streamable HTTP.

Each tool is listed with its name, description and JSON schema (`readOnlyHint` when it
has no side effects). A call runs as an agent loop would run it: arguments validated by
the tool (invalid ones come back as an error result the client's model can fix), the
tool in its sandbox when it is sandboxed, inside an `execute_tool` span, side-effecting
calls journaled when a journal is given and the client sent an idempotency key in the
request's `_meta` (`io.agentflow/idempotency-key`, which agentflow's own MCP client
sends): a repeated key gets the recorded result instead of a second effect.

Approval: agentflow cannot ask a person from inside an MCP call, so a call that needs
approval (`requires_approval`, as its predicate decides for these arguments) is refused
with an error result saying so, unless the server was started with
`allow_approval_tools=True` (`--allow-approval-tools`): then the MCP client's own
confirmation of tool calls (which the MCP spec asks hosts to offer) stands in for it.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pydantic_core
from pydantic import ValidationError

from agentflow.exceptions import AgentflowError, ConfigError
from agentflow.hitl import arguments_digest
from agentflow.mcp.tool import IDEMPOTENCY_META
from agentflow.messages import ToolCall
from agentflow.tools import RunContext, Tool, ToolOutcome
from agentflow.tracing import run_traced

if TYPE_CHECKING:
    from mcp import types
    from mcp.server.lowlevel import Server

    from agentflow.journal import ToolJournal
    from agentflow.sandbox import Sandboxes

__all__ = ["ToolServer", "serve_http", "serve_stdio"]


@dataclass(kw_only=True)
class ToolServer:
    """What an MCP server of agentflow tools runs calls with."""

    tools: Sequence[Tool[Any]]
    deps: Any = None
    """What the tools get as `ctx.deps` (the graph file's `make_context()`)."""
    sandboxes: Sandboxes | None = None
    """Where sandboxed tools run."""
    journal: ToolJournal | None = None
    """Where side-effecting calls with an idempotency key are journaled."""
    allow_approval_tools: bool = False
    """Run calls that need approval (the client confirms them) instead of refusing them."""
    name: str = "agentflow"

    def __post_init__(self) -> None:
        self._by_name = {t.name: t for t in self.tools}
        if len(self._by_name) != len(self.tools):
            raise ConfigError("two tools share a name", key="mcp serve")
        self._run_id = uuid.uuid4().hex

    def listing(self) -> list[types.Tool]:
        """The tools as MCP lists them."""
        from mcp import types

        return [
            types.Tool(
                name=t.name,
                description=t.description,
                inputSchema=t.parameters,
                annotations=types.ToolAnnotations(readOnlyHint=not t.side_effects),
            )
            for t in self.tools
        ]

    async def call(
        self, name: str, arguments: dict[str, Any], key: str | None
    ) -> types.CallToolResult:
        """Run one call as described in the module's docstring; never raises for the
        call's own failures (they are error results the client sees)."""
        tool = self._by_name.get(name)
        if tool is None:
            return _error(f"There is no tool {name!r}. Available: {', '.join(self._by_name)}.")
        call = ToolCall(id=key or uuid.uuid4().hex, name=name, arguments=arguments)
        ctx = RunContext(
            deps=self.deps,
            run_id=self._run_id,
            thread_id="mcp" if key else None,
            node="mcp",
            tool_call_id=call.id,
        )
        try:
            refused = self._refusal(tool, arguments, ctx)
            if refused is not None:
                return _error(refused)
            if tool.side_effects and self.journal is not None and key is not None:
                outcome = await self._run_once(tool, call, ctx)
            else:
                outcome = await run_traced(tool, call, ctx, self.sandboxes)
        except AgentflowError as exc:
            return _error(f"{type(exc).__name__}: {exc}")
        return _result(outcome)

    def _refusal(
        self, tool: Tool[Any], arguments: dict[str, Any], ctx: RunContext[Any]
    ) -> str | None:
        if tool.requires_approval is False or self.allow_approval_tools:
            return None
        try:
            validated = tool.validate(arguments)
        except ValidationError:
            return None  # invalid: running it returns the explanation
        if not tool.needs_approval(validated, ctx):
            return None
        return (
            f"This call of {tool.name!r} needs a person's approval, which this MCP server "
            "cannot ask for; it was not run. (Its operator can start `agentflow mcp serve` "
            "with --allow-approval-tools to let the client's confirmation stand in.)"
        )

    async def _run_once(self, tool: Tool[Any], call: ToolCall, ctx: RunContext[Any]) -> ToolOutcome:
        """Run a side-effecting call once per idempotency key (see `AgentLoop._run_once`)."""
        journal, key = self.journal, ctx.idempotency_key
        assert journal is not None and key is not None
        entry = await journal.begin(key, tool.name, arguments_digest(call.name, call.arguments))
        if entry.state == "done":
            return ToolOutcome.replayed(call, entry)
        outcome = await run_traced(tool, call, ctx, self.sandboxes)
        await journal.finish(key, outcome.message.content, outcome.message.is_error)
        return outcome

    def mcp_server(self) -> Server:
        """The SDK's low-level server answering `tools/list` and `tools/call` with these tools."""
        from mcp.server.lowlevel import Server

        server: Server = Server(self.name)

        @server.list_tools()
        async def list_tools() -> list[types.Tool]:
            return self.listing()

        @server.call_tool(validate_input=False)  # the tools validate: same messages as in a graph
        async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            meta = server.request_context.meta
            extra = (meta.model_extra or {}) if meta is not None else {}
            key = extra.get(IDEMPOTENCY_META)
            return await self.call(name, arguments, key if isinstance(key, str) and key else None)

        return server


def _error(text: str) -> types.CallToolResult:
    from mcp import types

    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], isError=True)


def _result(outcome: ToolOutcome) -> types.CallToolResult:
    from mcp import types

    message = outcome.message
    content: list[Any] = [types.TextContent(type="text", text=message.content)]
    structured = None
    if not message.is_error and not isinstance(outcome.value, str):
        value = pydantic_core.to_jsonable_python(outcome.value)
        structured = value if isinstance(value, dict) else None
    return types.CallToolResult(
        content=content, structuredContent=structured, isError=message.is_error
    )


async def serve_stdio(tools: ToolServer) -> None:
    """Serve on this process's stdin and stdout until the client closes stdin.

    What the tools print goes to stderr, so it cannot corrupt the protocol's stream.
    """
    import io

    import anyio
    from mcp.server.stdio import stdio_server

    server = tools.mcp_server()
    stdout = anyio.wrap_file(io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8"))
    with contextlib.redirect_stdout(sys.stderr):
        async with stdio_server(stdout=stdout) as (read, write):
            await server.run(read, write, server.create_initialization_options())


async def serve_http(
    tools: ToolServer, *, host: str, port: int, ready: Callable[[str], None] = lambda url: None
) -> None:
    """Serve streamable HTTP at `http://host:port/mcp`; `ready(url)` once it listens
    (`port=0` picks a free port, which the URL tells)."""
    import uvicorn
    from mcp.server.fastmcp.server import StreamableHTTPASGIApp
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Route

    manager = StreamableHTTPSessionManager(app=tools.mcp_server())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    endpoint = StreamableHTTPASGIApp(manager)  # an ASGI app, not a request handler
    app = Starlette(routes=[Route("/mcp", endpoint=endpoint)], lifespan=lifespan)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}", key="--port") from exc
    sock.listen()
    ready(f"http://{host}:{sock.getsockname()[1]}/mcp")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    await server.serve(sockets=[sock])
