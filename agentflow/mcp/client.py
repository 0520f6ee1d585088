"""A connection to one MCP server, whose tools become agentflow tools.

```python
async with McpServer.stdio("python", "-m", "weather_server") as weather:
    tools = await weather.tools(requires_approval={"delete_city"})
    graph.agent("resolve", tools=[*SUPPORT_TOOLS, *tools])
    await graph.compile().ainvoke(state, context=deps)
```

The session lives in a task of its own, started by `connect()` (or `async with`) and
ended by `aclose()`: the SDK's transports are structured (entered and left in one task),
while a graph calls tools from LangGraph's tasks. A call races the session's task, so a
server that dies, or whose HTTP endpoint goes away, fails the call at once with a
`ToolError` instead of leaving it waiting; a lost server is not reconnected (open a new
`McpServer`). A stdio server's stderr is kept in a temporary file so that an error can
quote its last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from agentflow.exceptions import AgentflowError, ConfigError, ToolError
from agentflow.mcp.tool import IDEMPOTENCY_META, McpTool
from agentflow.tools import ArgumentsPredicate

if TYPE_CHECKING:
    from mcp import ClientSession, types

    from agentflow.sandbox.base import Limits
    from agentflow.sandbox.docker import DockerSandbox

__all__ = ["McpServer", "ToolOption"]

INSTALL = 'MCP tools need their extra: pip install "agentflow[mcp]"'

ToolOption = bool | Collection[str] | Mapping[str, bool | ArgumentsPredicate]
"""A per-tool option of `McpServer.tools`: for every tool (a bool), for the tools named
(a set or list of server tool names), or per tool name (a mapping to a bool or an
arguments predicate, as `@tool` takes)."""

_STDERR_TAIL = 500
"""How much of a stdio server's stderr an error quotes (its last characters)."""


@dataclass(kw_only=True, frozen=True)
class _Stdio:
    command: str
    args: tuple[str, ...]
    env: dict[str, str] | None
    cwd: str | None
    sandbox: DockerSandbox | None
    mounts: dict[str, str]
    limits: Limits | None


@dataclass(kw_only=True, frozen=True)
class _Http:
    url: str
    headers: dict[str, str] = field(repr=False)


class McpServer:
    """One MCP server (stdio or streamable HTTP) and the session with it.

    Make one with `McpServer.stdio(...)` or `McpServer.http(...)`; use it as an async
    context manager (or `connect()` then `aclose()`), on the event loop that runs the
    graph.
    """

    name: str
    """How errors and spans name the server (default: its command line or URL)."""
    timeout_s: float
    """Default wall-clock limit of one tool call (`tools(timeout_s=...)` overrides it)."""
    startup_timeout_s: float
    """How long starting the server, the MCP handshake and listing its tools may take."""

    def __init__(
        self,
        transport: _Stdio | _Http,
        *,
        name: str,
        timeout_s: float = 60.0,
        startup_timeout_s: float = 30.0,
    ) -> None:
        for option, value in (("timeout_s", timeout_s), ("startup_timeout_s", startup_timeout_s)):
            if not value > 0:
                raise ConfigError(f"{option} must be positive, not {value!r}", key=name)
        self._transport = transport
        self.name = name
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._session: ClientSession | None = None
        self._listed: list[types.Tool] = []
        self._lost: BaseException | None = None
        self._stderr: IO[str] | None = None
        self._container: str | None = None

    @classmethod
    def stdio(
        cls,
        command: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        name: str | None = None,
        sandbox: DockerSandbox | None = None,
        mounts: Mapping[str | Path, str] | None = None,
        limits: Limits | None = None,
        timeout_s: float = 60.0,
        startup_timeout_s: float = 30.0,
    ) -> McpServer:
        """A server started as `command *args`, speaking MCP on its stdin and stdout.

        Args:
            env: Environment for the server, on top of the SDK's safe default (PATH,
                HOME, ...); nothing else of ours reaches it.
            cwd: Its working directory (in the container, when sandboxed).
            sandbox: Run it in a hardened container of this Docker sandbox's image (no
                network, read-only root, caps dropped, non-root, its limits), e.g.
                `McpServer.stdio("python3", "/opt/tool/server.py", sandbox=DockerSandbox(),
                mounts={"servers/": "/opt/tool"})`. Its containers carry the sandbox's
                labels, so `sandbox.aclose()` and `agentflow sandbox gc` remove leftovers.
            mounts: Host folders to mount read-only in the container, to its paths.
            limits: The container's memory, CPU, pids and /tmp limits (`timeout_s` and
                `output_bytes` do not apply to a long-lived server; `network` is refused).
        """
        if (mounts or limits) and sandbox is None:
            raise ConfigError(
                "mounts and limits are for a sandboxed server (sandbox=)", key=command
            )
        transport = _Stdio(
            command=command,
            args=tuple(args),
            env=None if env is None else dict(env),
            cwd=None if cwd is None else str(cwd),
            sandbox=sandbox,
            mounts={str(Path(host).resolve()): inside for host, inside in (mounts or {}).items()},
            limits=limits,
        )
        label = name or shlex.join([command, *args])
        return cls(transport, name=label, timeout_s=timeout_s, startup_timeout_s=startup_timeout_s)

    @classmethod
    def http(
        cls,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        timeout_s: float = 60.0,
        startup_timeout_s: float = 30.0,
    ) -> McpServer:
        """A server at a streamable HTTP endpoint (`http://host:port/mcp`); `headers` go
        with every request (an `Authorization` header, say)."""
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"an MCP endpoint is an http(s) URL, not {url!r}", key="url")
        transport = _Http(url=url, headers=dict(headers or {}))
        return cls(
            transport, name=name or url, timeout_s=timeout_s, startup_timeout_s=startup_timeout_s
        )

    def __repr__(self) -> str:
        return f"McpServer(name={self.name!r})"

    # -- lifecycle -----------------------------------------------------------------

    async def connect(self) -> None:
        """Start the server (stdio) or reach it (HTTP), shake hands and list its tools.

        Raises:
            ConfigError: It did not start, did not answer in `startup_timeout_s`, or
                refused the handshake (the message quotes its stderr, for stdio).
            SandboxUnavailable: Sandboxed, and Docker or the sandbox image is not there.
        """
        if self._task is not None:
            return
        _ensure_sdk()
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold(ready), name=f"MCP server {self.name}")
        try:
            async with asyncio.timeout(self.startup_timeout_s):
                await asyncio.shield(ready)
        except TimeoutError:
            said = self._stderr_said()
            await self.aclose()
            raise ConfigError(
                f"did not answer within {self.startup_timeout_s:g}s{said}",
                key=f"MCP server {self.name!r}",
            ) from None
        except AgentflowError:
            await self.aclose()
            raise
        except Exception as exc:
            said = self._stderr_said()
            await self.aclose()
            raise ConfigError(
                f"could not start or connect: {_reason(exc)}{said}", key=f"MCP server {self.name!r}"
            ) from exc

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        """The session's task: open, hand the session over, wait for `aclose`, close."""
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await self._open(stack)
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self._listed = await _list_tools(session)
                self._session = session
                ready.set_result(None)
                await self._closing.wait()
        except asyncio.CancelledError:
            ready.cancel()
            raise
        except Exception as exc:
            self._lost = exc
            if not ready.done():
                ready.set_exception(exc)
        finally:
            self._session = None

    async def _open(self, stack: contextlib.AsyncExitStack) -> tuple[Any, Any]:
        transport = self._transport
        if isinstance(transport, _Http):
            from mcp.client.streamable_http import streamable_http_client

            from agentflow.mcp._http import watched_client

            client = watched_client(transport.headers, self._broke)
            await stack.enter_async_context(client)
            streams = await stack.enter_async_context(
                streamable_http_client(transport.url, http_client=client)
            )
            return streams[0], streams[1]
        from mcp.client.stdio import StdioServerParameters, stdio_client

        # Kept until `aclose`, so that an error after the session ended can quote it.
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        params = StdioServerParameters(
            command=transport.command,
            args=list(transport.args),
            env=transport.env,
            cwd=transport.cwd,
        )
        if transport.sandbox is not None:
            from agentflow.sandbox.stdio import container_command

            started = await asyncio.to_thread(
                container_command,
                transport.sandbox,
                [transport.command, *transport.args],
                env=transport.env or {},
                cwd=transport.cwd,
                mounts=transport.mounts,
                limits=transport.limits,
            )
            self._container = started.name
            stack.push_async_callback(self._remove_container, transport.sandbox, started.name)
            params = StdioServerParameters(
                command=started.argv[0], args=started.argv[1:], env=started.env
            )
        return await stack.enter_async_context(stdio_client(params, errlog=self._stderr))

    def _broke(self, exc: Exception) -> None:
        """The HTTP connection broke: end the session, so calls in flight fail now."""
        if not self._closing.is_set():
            self._lost = self._lost or exc
            self._closing.set()

    async def _remove_container(self, sandbox: DockerSandbox, name: str) -> None:
        from agentflow.sandbox.stdio import remove_container

        await asyncio.to_thread(remove_container, sandbox, name)

    async def aclose(self) -> None:
        """End the session: a stdio server's stdin is closed and it is stopped if it
        does not exit (a sandboxed one's container is removed); an HTTP session is ended."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing.set()
        if self._session is None:
            task.cancel()  # still starting (or stuck in the handshake): stop it now
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task
        self._closing = asyncio.Event()
        if self._stderr is not None:
            self._stderr.close()

    async def __aenter__(self) -> McpServer:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- tools ---------------------------------------------------------------------

    async def tools(
        self,
        *,
        include: Collection[str] | None = None,
        prefix: str = "",
        requires_approval: ToolOption = False,
        high_stakes: ToolOption = False,
        side_effects: bool | Collection[str] | None = None,
        timeout_s: float | None = None,
        retries: int = 2,
    ) -> list[McpTool]:
        """The server's tools as agentflow tools (connecting first if need be).

        Args:
            include: Server tool names to take (default: all of them).
            prefix: Put before each name the model sees (`weather_`), to keep two
                servers' tools apart.
            requires_approval: Which calls a person approves first (see `ToolOption`).
            high_stakes: Which calls may route to the frontier tier (same forms).
            side_effects: Which tools change the world, and so are journaled for
                exactly-once (True, False or names). Default: those the server does not
                mark `readOnlyHint`.
            timeout_s: Wall-clock limit of one call (default: the server's `timeout_s`).
            retries: Invalid calls in a row the model may make before a `ToolError`.

        Raises:
            ConfigError: A name in the options is not one of the server's tools, or a
                tool's name or schema cannot make an agentflow tool (both named).
        """
        await self.connect()
        listed = {remote.name: remote for remote in self._listed}
        for option, value in (
            ("include", include),
            ("requires_approval", requires_approval),
            ("high_stakes", high_stakes),
            ("side_effects", side_effects),
        ):
            _check_names(self.name, option, value, listed)
        chosen = [listed[n] for n in listed if include is None or n in include]
        return [
            McpTool(
                self,
                remote,
                name=prefix + remote.name,
                requires_approval=_pick(requires_approval, remote.name),
                high_stakes=_pick(high_stakes, remote.name),
                side_effects=_side_effects(side_effects, remote),
                timeout_s=self.timeout_s if timeout_s is None else timeout_s,
                retries=retries,
            )
            for remote in chosen
        ]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, tool: str, key: str | None = None
    ) -> types.CallToolResult:
        """Send one `tools/call` and return the server's result (errors in it included).

        Raises:
            ToolError: Not connected, the connection was lost before the answer, or the
                server refused the request (a JSON-RPC error); `tool` names it.
        """
        import anyio
        from mcp.shared.exceptions import McpError
        from mcp.types import CONNECTION_CLOSED

        session, task = self._session, self._task
        if session is None or task is None or task.done():
            raise ToolError(self._gone(f"cannot call {name!r}"), tool=tool)
        meta = None if key is None else {IDEMPOTENCY_META: key}
        call = asyncio.ensure_future(session.call_tool(name, arguments, meta=meta))
        try:
            await asyncio.wait({call, task}, return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                raise ToolError(self._gone(f"lost during a call of {name!r}"), tool=tool)
            return call.result()
        except McpError as exc:
            if exc.error.code == CONNECTION_CLOSED:
                raise ToolError(self._gone(f"lost during a call of {name!r}"), tool=tool) from exc
            raise ToolError(
                f"MCP server {self.name!r} refused the call of {name!r}: {exc.error.message}",
                tool=tool,
            ) from exc
        except (AgentflowError, asyncio.CancelledError):
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._lost = self._lost or exc  # the server went away between calls
            raise ToolError(self._gone(f"lost before a call of {name!r}"), tool=tool) from exc
        except Exception as exc:
            raise ToolError(
                f"MCP server {self.name!r}: the call of {name!r} failed: {_reason(exc)}", tool=tool
            ) from exc
        finally:
            if not call.done():
                call.cancel()

    def _gone(self, what: str) -> str:
        why = f" ({_reason(self._lost)})" if self._lost is not None else ""
        return f"MCP server {self.name!r}: connection {what}{why}{self._stderr_said()}"

    def _stderr_said(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.flush()
            self._stderr.seek(0)
            tail = self._stderr.read().strip()[-_STDERR_TAIL:]
            self._stderr.seek(0, 2)
            if tail:
                return f"; its stderr ends: {tail!r}"
        return ""


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    from mcp import types

    listed: list[types.Tool] = []
    cursor: str | None = None
    while True:
        params = None if cursor is None else types.PaginatedRequestParams(cursor=cursor)
        page = await session.list_tools(params=params)
        listed.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            return listed


def _check_names(server: str, option: str, value: object, listed: Mapping[str, Any]) -> None:
    if value is None or isinstance(value, bool):
        return
    names = value if isinstance(value, Collection) else ()
    if isinstance(value, str):
        names = (value,)  # one name where a collection was meant: check it all the same
    unknown = sorted(str(n) for n in names if n not in listed)
    if unknown:
        raise ConfigError(
            f"{option} names {', '.join(map(repr, unknown))}, which the server does not "
            f"have (its tools: {', '.join(listed) or 'none'})",
            key=f"MCP server {server!r}",
        )


def _pick(option: ToolOption, name: str) -> bool | ArgumentsPredicate:
    if isinstance(option, bool):
        return option
    if isinstance(option, Mapping):
        return option.get(name, False)
    return name in option


def _side_effects(option: bool | Collection[str] | None, remote: types.Tool) -> bool:
    if option is None:
        hints = remote.annotations
        return not (hints is not None and hints.readOnlyHint is True)
    return option if isinstance(option, bool) else remote.name in option


def _reason(exc: BaseException) -> str:
    """One line for an exception, an exception group's first leaf included."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    error = getattr(exc, "error", None)  # McpError carries ErrorData
    message = getattr(error, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {message}"


def _ensure_sdk() -> None:
    try:
        import mcp  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ConfigError(INSTALL, key="mcp") from exc
