"""Where tools marked `sandbox="docker"` or `sandbox="auto"` run.

`sandbox_for(kind)` returns this process's shared sandbox of that kind (a warm pool is
per process by nature): `docker` is a `DockerSandbox` and fails with
`SandboxUnavailable` when no daemon answers; `auto` is the Docker sandbox when a daemon
and the image are there, else the (weaker) `ProcessSandbox`, with a logged warning.
`call_in_sandbox(tool, arguments)` is what `Tool.call` uses.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import TypeAdapter, ValidationError

from agentflow.exceptions import SandboxUnavailable, ToolError
from agentflow.sandbox.base import ExecResult, Limits, Sandbox, SandboxCall
from agentflow.tracing import record_sandbox

if TYPE_CHECKING:
    from agentflow.tools import Tool

__all__ = [
    "ExecResult",
    "Limits",
    "Sandbox",
    "SandboxCall",
    "call_in_sandbox",
    "close_shared",
    "closing_sandboxes",
    "sandbox_for",
]

_log = logging.getLogger("agentflow")
_shared: dict[str, Sandbox] = {}
_ARGUMENTS = TypeAdapter(dict[str, Any])


def sandbox_for(kind: Literal["docker", "auto"]) -> Sandbox:
    """Return this process's shared sandbox for a tool's `sandbox=` setting."""
    if kind not in _shared:
        _shared[kind] = _choose(kind)
    return _shared[kind]


def _choose(kind: str) -> Sandbox:
    from agentflow.sandbox.docker import DockerSandbox

    docker = DockerSandbox()
    if kind == "docker":
        return docker
    try:
        docker.client()
    except SandboxUnavailable as exc:
        from agentflow.sandbox.process import ProcessSandbox

        _log.warning(
            "sandbox='auto': %s; running tools in the process sandbox, which does not "
            "isolate the filesystem or the network",
            exc,
        )
        return ProcessSandbox()
    return docker


async def close_shared() -> None:
    """Close this process's shared sandboxes: their warm containers are removed and the
    Docker client closed. Await it on the event loop that ran the tools, before it ends
    (`closing_sandboxes()` does)."""
    while _shared:
        _, sandbox = _shared.popitem()
        await sandbox.aclose()


@contextlib.asynccontextmanager
async def closing_sandboxes() -> AsyncIterator[None]:
    """Close the shared sandboxes when the block ends, however it ends.

    ```python
    async with closing_sandboxes():
        await app.ainvoke(state, config, context=deps)
    ```
    """
    try:
        yield
    finally:
        await close_shared()


def limits_for(tool: Tool[Any]) -> Limits:
    """The tool's own limits, its `timeout_s` winning over theirs when it sets one."""
    limits = tool.limits or Limits()
    return limits if tool.timeout_s is None else replace(limits, timeout_s=tool.timeout_s)


async def call_in_sandbox(tool: Tool[Any], arguments: dict[str, Any]) -> Any:
    """Run a tool's function in its sandbox; return its value validated as annotated.

    Raises:
        ToolRetry: The tool asked to be called again.
        ToolError: The tool raised inside the sandbox, or returned the wrong type.
        SandboxError: The sandbox could not run the call, or killed it.
    """
    from agentflow.tools import ToolRetry

    source = inspect.getsourcefile(tool.function)
    if source is None:
        raise ToolError(f"tool {tool.name!r} has no source file to sandbox", tool=tool.name)
    secrets = {name: os.environ[name] for name in tool.secrets if name in os.environ}
    call = SandboxCall(
        source=Path(source),
        function=tool.function.__name__,
        arguments=_ARGUMENTS.dump_python(arguments, mode="json"),
        secrets=secrets,
    )
    sandbox = sandbox_for("docker" if tool.sandbox == "docker" else "auto")
    result = await sandbox.run(call, limits=limits_for(tool))
    record_sandbox(sandbox.name, result)
    if result.retry:
        raise ToolRetry(result.error or "")
    if not result.ok:
        raise ToolError(f"tool {tool.name!r} failed in its sandbox: {result.error}", tool=tool.name)
    annotation, adapter = _return_type(tool.function)
    if adapter is None:
        return result.value
    try:
        return adapter.validate_python(result.value)
    except ValidationError as exc:
        raise ToolError(
            f"tool {tool.name!r} returned {result.value!r}, not a {annotation!r}: {exc}",
            tool=tool.name,
        ) from exc


@functools.cache
def _return_type(function: Callable[..., Any]) -> tuple[Any, TypeAdapter[Any] | None]:
    """A function's return annotation and its validator, built once per function."""
    annotation = get_type_hints(function).get("return")
    return annotation, None if annotation is None else TypeAdapter(annotation)
