"""The sandbox protocol: run one tool call somewhere the agent's privileges do not reach.

A sandbox gets a `SandboxCall` (which function of which source file, with which JSON
arguments and which declared secrets) and `Limits`, and returns an `ExecResult`. The
function runs in a fresh interpreter (a container, or a subprocess) through the
runner in `sandbox/runner.py`, which imports the tool's module with a minimal
`agentflow` stand-in (`tool`, `ToolRetry`), so sandboxed tools need only the standard
library and their own module.

Failures of the sandbox itself are `SandboxError`s: `SandboxTimeout` (the call was
killed at its deadline), `SandboxResourceError` (memory, processes or output over the
limit), `SandboxUnavailable` (no Docker daemon, no image). A tool that raises inside
the sandbox is not a sandbox failure: the result carries its error.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["ExecResult", "HostHandler", "Limits", "Sandbox", "SandboxCall"]

HostHandler = Callable[[str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]
"""Answers a sandboxed call's request for a host capability (name, arguments)."""


@dataclass(kw_only=True, frozen=True)
class Limits:
    """What one call may use. The defaults suit a lookup or a small computation."""

    timeout_s: float = 10.0
    """Wall-clock limit; the call is killed within a second of it."""
    memory_mb: int = 256
    """Memory limit (swap included: no swap beyond it)."""
    cpus: float = 1.0
    """CPU quota, in cores."""
    pids: int = 64
    """Processes and threads at once (stops fork bombs)."""
    output_bytes: int = 1_000_000
    """stdout and stderr are each cut at this size; the result says it was cut."""
    tmpfs_mb: int = 64
    """Size of the writable /tmp (the only writable place)."""
    network: tuple[str, ...] = ()
    """Hosts the tool may reach through the Docker sandbox's egress proxy: `host` allows
    its port 443 only, `host:port` that port. Nothing else is reachable, the host and
    other containers included; empty means no network at all."""


@dataclass(kw_only=True, frozen=True)
class SandboxCall:
    """One function call to run in a sandbox."""

    source: Path
    """The tool's source file, mounted (read-only) or copied into the sandbox."""
    function: str
    """The function's name in that file."""
    arguments: dict[str, Any]
    """Validated arguments, as JSON-able values."""
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    """Environment for this call only: the secrets the tool declared, nothing else."""
    host: HostHandler | None = field(default=None, repr=False, compare=False)
    """Answers the call's requests for host capabilities (`agentflow.host.NAME(...)` in
    the tool): given the name and arguments, returns `{"value": ...}`, `{"error": ...}`
    or `{"retry": ...}`. None: the call may ask for none."""


@dataclass(kw_only=True, frozen=True)
class ExecResult:
    """What a sandboxed call produced."""

    ok: bool
    """True when the function returned; False when it raised (see `error`)."""
    value: Any = None
    """The returned value, decoded from JSON."""
    error: str | None = None
    """`ExceptionType: message` when the function raised."""
    retry: bool = False
    """The function raised `ToolRetry`: its message goes back to the model."""
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    exit_code: int = 0
    duration_s: float = 0.0
    container_id: str | None = None
    """The container that ran the call (Docker sandbox), short form."""
    pool_hit: bool | None = None
    """True when a warm container took the call, False when one was started for it;
    None where there is no pool."""

    @classmethod
    def from_envelope(
        cls, envelope: Mapping[str, Any], *, exit_code: int = 0, duration_s: float = 0.0
    ) -> ExecResult:
        """Read the runner's envelope (`sandbox/runner.py`).

        Raises:
            KeyError: A field is missing.
        """
        return cls(
            ok=bool(envelope["ok"]),
            value=envelope["value"],
            error=envelope["error"],
            retry=bool(envelope["retry"]),
            stdout=envelope["stdout"],
            stderr=envelope["stderr"],
            stdout_truncated=envelope["stdout_truncated"],
            stderr_truncated=envelope["stderr_truncated"],
            exit_code=exit_code,
            duration_s=duration_s,
        )


class Sandbox(ABC):
    """Somewhere to run tool calls. Implement `run`; use as `async with sandbox:`."""

    name: str

    @abstractmethod
    async def run(self, call: SandboxCall, *, limits: Limits) -> ExecResult:
        """Run one call within `limits`.

        Raises:
            SandboxError: The sandbox could not run the call or had to kill it.
        """

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release containers, processes and files; the default holds none."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
