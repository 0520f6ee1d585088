"""Run tool calls in a child Python process, for machines without Docker.

This is the weaker sandbox, and it does not pretend otherwise. The tool runs as the
same user as the orchestrator, sees the same filesystem and installed packages (only
its working directory is fresh and private), and shares the network; a process that
leaves its process group (`os.setsid()`) survives the call. What it does give:

- a fresh interpreter (`python -I -B`) per call, in a temporary working directory
  (also `TMPDIR`) that is removed afterwards;
- an environment of `PATH`, `LANG`, `TMPDIR`, `AGENTFLOW_OUTPUT_BYTES`,
  `PYTHONDONTWRITEBYTECODE` and the call's declared secrets, never the orchestrator's;
- rlimits, set in the child before the tool's code runs, per process (each process the
  tool starts gets its own allowance): address space (`memory_mb` plus
  `_INTERPRETER_HEADROOM_MB`), CPU time (a backstop behind the wall-clock deadline),
  the size of any one file written (`tmpfs_mb`; total disk use is not limited), no
  core dumps;
- a wall-clock deadline that SIGKILLs the whole process group, and a cap on the bytes
  read from its stdout and stderr.

Not enforced here: `Limits.pids` (`RLIMIT_NPROC` counts every process of the user,
the orchestrator's included, so it cannot be set per call), `Limits.cpus`, and
`Limits.network` (an allowlist is refused with `SandboxUnavailable`; an empty one
cannot block the network either). Use the Docker sandbox where these matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import agentflow.sandbox.runner as runner
from agentflow.exceptions import (
    SandboxError,
    SandboxResourceError,
    SandboxTimeout,
    SandboxUnavailable,
)
from agentflow.sandbox.base import ExecResult, Limits, Sandbox, SandboxCall

__all__ = ["ProcessSandbox"]

_RUNNER = Path(runner.__file__)
_MARKER = runner.MARKER.encode()
_MIB = 1024 * 1024
_INTERPRETER_HEADROOM_MB = 64
"""Address space added to `memory_mb` for the interpreter itself: bare Python 3 with the
runner maps about 26 MiB; the rest leaves room for a few 8 MiB thread stacks."""
_JSON_BYTES_PER_CHAR = 6
"""The runner cuts captures in characters and `json.dumps` escapes a non-ASCII or
control character as `\\uXXXX`, so a capture of N characters takes up to 6N bytes."""
_ENVELOPE_ROOM = 64 * 1024
"""Bytes beyond the two captures for the rest of the envelope, the return value included."""
_KILL_GRACE_S = 1.0
"""How long to wait for the pipes to close after SIGKILL before giving up on stragglers."""


class ProcessSandbox(Sandbox):
    """Run each call in a fresh, rlimited child interpreter; see the module docstring.

    Holds no state between calls, so one instance serves any number of concurrent calls.
    """

    name = "process"

    async def run(self, call: SandboxCall, *, limits: Limits) -> ExecResult:
        """Run one call; raise `SandboxTimeout` or `SandboxResourceError` when it is killed."""
        if limits.network:
            raise SandboxUnavailable(
                f"the process sandbox cannot restrict the network to {list(limits.network)!r}; "
                'use the Docker sandbox (pip install "agentflow[docker]")'
            )
        started = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="agentflow-process-"))
        try:
            collector, exit_code = await _execute(call, limits, workdir)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
        return _result(collector, exit_code, limits, time.monotonic() - started)


class _Collector(asyncio.SubprocessProtocol):
    """Keep what the process writes, up to `cap` bytes a stream; kill its group when done.

    Once the runner exits, anything it left behind in its group is killed, since such a
    process would hold the pipes open and stall the call until its deadline.
    """

    def __init__(self, cap: int, finished: asyncio.Future[None]) -> None:
        self.cap = cap
        self.finished = finished
        self.output = {1: bytearray(), 2: bytearray()}
        self.overflow = False
        self.pid = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self.pid = transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        buffer = self.output[fd]
        if self.overflow or len(buffer) + len(data) > self.cap:
            self.overflow = True
            self.kill_group()
            return
        buffer += data if isinstance(data, bytes) else data.encode()

    def process_exited(self) -> None:
        self.kill_group()

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once the process is reaped and both pipes are closed.
        if not self.finished.done():
            self.finished.set_result(None)

    def kill_group(self) -> None:
        # The child called setsid(), so its pid is its process group's id.
        with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
            os.killpg(self.pid, signal.SIGKILL)


async def _execute(call: SandboxCall, limits: Limits, workdir: Path) -> tuple[_Collector, int]:
    """Start the runner, wait for it within the deadline, and return what it wrote."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    cap = 2 * limits.output_bytes * _JSON_BYTES_PER_CHAR + _ENVELOPE_ROOM
    arguments = json.dumps(call.arguments)
    argv = [sys.executable, "-I", "-B", str(_RUNNER), str(call.source), call.function, arguments]
    try:
        transport, collector = await loop.subprocess_exec(
            lambda: _Collector(cap, finished),
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=_environment(call, limits, workdir),
            start_new_session=True,
            preexec_fn=_rlimits(limits),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"could not start the process sandbox's runner: {exc}") from exc
    try:
        async with asyncio.timeout(limits.timeout_s):
            await asyncio.shield(finished)
    except TimeoutError:
        raise SandboxTimeout(
            f"{call.function!r} ran past its {limits.timeout_s}s deadline and was killed"
        ) from None
    finally:
        if not finished.done():  # deadline, cancellation: kill, then reap within the grace
            collector.kill_group()
            # A process that left the group may hold a pipe for ever; stop waiting then.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_KILL_GRACE_S):
                    await asyncio.shield(finished)
        transport.close()
    if collector.overflow:
        raise SandboxResourceError(
            f"{call.function!r} wrote more than {cap} bytes to stdout or stderr and was killed",
            resource="output",
        )
    exit_code = transport.get_returncode()
    return collector, -signal.SIGKILL if exit_code is None else exit_code


def _environment(call: SandboxCall, limits: Limits, workdir: Path) -> dict[str, str]:
    """The child's whole environment; the sandbox's own variables win over a secret's name."""
    return {
        **call.secrets,
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "TMPDIR": str(workdir),  # so the tool's temporary files go with the directory
        "AGENTFLOW_OUTPUT_BYTES": str(limits.output_bytes),
        "PYTHONDONTWRITEBYTECODE": "1",  # for Pythons the tool starts; `-I` ignores it here
    }


def _rlimits(limits: Limits) -> Callable[[], None]:
    """The child's `preexec_fn`: limits in place before any of the tool's code runs."""
    cpu_s = math.ceil(limits.timeout_s) + 1
    wanted = [
        (resource.RLIMIT_AS, (limits.memory_mb + _INTERPRETER_HEADROOM_MB) * _MIB, 0),
        # SIGXCPU at the soft limit, before the kernel's SIGKILL at the hard one.
        (resource.RLIMIT_CPU, cpu_s, 1),
        (resource.RLIMIT_FSIZE, limits.tmpfs_mb * _MIB, 0),
        (resource.RLIMIT_CORE, 0, 0),
    ]

    def apply() -> None:
        for kind, soft, extra in wanted:
            _, hard = resource.getrlimit(kind)  # a process cannot raise its hard limit
            ceiling = soft + extra if hard == resource.RLIM_INFINITY else hard
            resource.setrlimit(kind, (min(soft, ceiling), min(soft + extra, ceiling)))

    return apply


def _result(collector: _Collector, exit_code: int, limits: Limits, duration_s: float) -> ExecResult:
    """Decode the envelope after the last marker, or explain why there is none."""
    out, err = bytes(collector.output[1]), bytes(collector.output[2])
    at = out.rfind(_MARKER)
    if at < 0:
        raise _missing_result(err, exit_code, limits)
    try:
        envelope: dict[str, Any] = json.JSONDecoder().raw_decode(
            out[at + len(_MARKER) :].decode(errors="replace")
        )[0]
        result = ExecResult.from_envelope(envelope, exit_code=exit_code, duration_s=duration_s)
        stdout, stdout_cut = _joined(result.stdout, out[:at], result.stdout_truncated, limits)
        stderr, stderr_cut = _joined(result.stderr, err, result.stderr_truncated, limits)
        return dataclasses.replace(
            result,
            stdout=stdout,
            stderr=stderr,
            stdout_truncated=stdout_cut,
            stderr_truncated=stderr_cut,
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise SandboxError(f"the runner's result could not be read: {exc}") from exc


def _joined(captured: str, raw: bytes, cut: bool, limits: Limits) -> tuple[str, bool]:
    """The runner's capture plus what reached the file descriptor directly, within the limit."""
    text = captured + raw.decode(errors="replace")
    if len(text) > limits.output_bytes:
        return text[: limits.output_bytes], True
    return text, cut


def _missing_result(err: bytes, exit_code: int, limits: Limits) -> SandboxError:
    """The error for a runner that died without writing its envelope."""
    tail = err.decode(errors="replace")[-500:]
    if exit_code == -signal.SIGXCPU:
        return SandboxTimeout(f"the call used up its CPU time and was killed: {tail!r}")
    if exit_code in (-signal.SIGKILL, -signal.SIGSEGV) or b"MemoryError" in err:
        return SandboxResourceError(
            f"the call died (exit {exit_code}), likely over its {limits.memory_mb} MiB "
            f"memory limit: {tail!r}",
            resource="memory",
        )
    return SandboxError(f"the runner exited with {exit_code} without a result: {tail!r}")
