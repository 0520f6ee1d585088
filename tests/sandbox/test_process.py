"""ProcessSandbox: real child interpreters, real rlimits, real process groups."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from agentflow.exceptions import (
    SandboxError,
    SandboxResourceError,
    SandboxTimeout,
    SandboxUnavailable,
)
from agentflow.sandbox.base import ExecResult, Limits, SandboxCall
from agentflow.sandbox.process import ProcessSandbox

TOOLS = '''
import os
import subprocess
import sys
import time

from agentflow import ToolRetry, tool


@tool(requires_approval=False)
def greet(name):
    """Say hello."""
    print("greeting", name)
    return {"greeting": f"hello {name}", "cwd": os.getcwd()}


@tool
async def double(x):
    return 2 * x


def fail():
    raise ValueError("bad input 42")


def vanish():
    os.write(2, b"runner state corrupted")
    os._exit(3)


def ask_again():
    raise ToolRetry("use a positive id")


def spin(pid_file):
    _write_pids(pid_file)
    while True:
        pass


def doze(pid_file):
    _write_pids(pid_file)
    time.sleep(60)


def _write_pids(pid_file):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(pid_file, "w") as f:
        f.write(f"{os.getpid()} {child.pid}")


def leave_behind(escape, pid_file):
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    pid = subprocess.Popen(sleeper, start_new_session=escape).pid
    with open(pid_file, "w") as f:
        f.write(str(pid))
    return pid


def hog():
    kept = []
    while True:
        kept.append(bytearray(2**31))


def allocate(mib):
    return len(bytearray(mib * 2**20))


def chatter():
    line = "x" * 1_000_000
    for _ in range(100):
        print(line)
    return "done"


def flood():
    chunk = b"x" * 1_000_000
    for _ in range(100):
        os.write(1, chunk)


def environment(names):
    return [os.environ.get(name) for name in names]


def scribble():
    with open("scratch.txt", "w") as f:
        f.write("left behind?")
    return os.getcwd()
'''


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    source = tmp_path / "tools.py"
    source.write_text(textwrap.dedent(TOOLS))
    return source


def call(source: Path, function: str, **arguments: Any) -> SandboxCall:
    return SandboxCall(source=source, function=function, arguments=arguments)


def gone(pid: int) -> bool:
    """True when `pid` has exited: no such process, or a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def removed(path: str) -> bool:
    return not Path(path).exists()


async def wait_gone(pid: int) -> None:
    """Wait up to a second for a killed grandchild's exit (init reaps it, not us)."""
    deadline = time.monotonic() + 1.0
    while not gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} survived the sandbox"
        await asyncio.sleep(0.01)


async def test_a_call_returns_its_value_and_what_it_printed(tools: Path) -> None:
    result = await ProcessSandbox().run(call(tools, "greet", name="ada"), limits=Limits())
    assert result.ok and result.error is None and not result.retry
    assert result.value["greeting"] == "hello ada"
    assert result.stdout == "greeting ada\n" and not result.stdout_truncated
    assert result.exit_code == 0 and result.duration_s > 0


async def test_a_decorated_async_tool_imports_and_runs(tools: Path) -> None:
    result = await ProcessSandbox().run(call(tools, "double", x=21), limits=Limits())
    assert result.ok and result.value == 42


async def test_a_raising_tool_is_a_failed_result_not_a_sandbox_error(tools: Path) -> None:
    result = await ProcessSandbox().run(call(tools, "fail"), limits=Limits())
    assert not result.ok and not result.retry
    assert result.error == "ValueError: bad input 42"


async def test_a_runner_that_dies_without_a_result_is_a_sandbox_error(tools: Path) -> None:
    with pytest.raises(SandboxError, match=r"exited with 3.*runner state corrupted") as caught:
        await ProcessSandbox().run(call(tools, "vanish"), limits=Limits())
    assert type(caught.value) is SandboxError


async def test_tool_retry_asks_the_model_again(tools: Path) -> None:
    result = await ProcessSandbox().run(call(tools, "ask_again"), limits=Limits())
    assert not result.ok and result.retry and result.error == "use a positive id"


@pytest.mark.parametrize("function", ["spin", "doze"])
async def test_the_deadline_kills_the_whole_process_group(
    tools: Path, tmp_path: Path, function: str
) -> None:
    pid_file = tmp_path / "pids"
    limits = Limits(timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="deadline"):
        await ProcessSandbox().run(call(tools, function, pid_file=str(pid_file)), limits=limits)
    assert time.monotonic() - started < limits.timeout_s + 1.0
    runner_pid, child_pid = map(int, pid_file.read_text().split())
    with pytest.raises(ProcessLookupError):
        os.kill(runner_pid, 0)  # killed and reaped before the error was raised
    await wait_gone(child_pid)


async def test_processes_left_behind_are_killed_when_the_call_returns(
    tools: Path, tmp_path: Path
) -> None:
    limits = Limits(timeout_s=5)
    started = time.monotonic()
    left = call(tools, "leave_behind", escape=False, pid_file=str(tmp_path / "pid"))
    result = await ProcessSandbox().run(left, limits=limits)
    assert result.ok and time.monotonic() - started < 2.0  # not held up by its open pipes
    await wait_gone(result.value)


async def test_a_process_that_leaves_the_group_cannot_hold_the_call_open(
    tools: Path, tmp_path: Path
) -> None:
    # A known weakness: setsid() escapes the kill, so the call ends at its deadline.
    limits = Limits(timeout_s=0.5)
    started = time.monotonic()
    pid_file = tmp_path / "pid"
    escaping = call(tools, "leave_behind", escape=True, pid_file=str(pid_file))
    try:
        with pytest.raises(SandboxTimeout):
            await ProcessSandbox().run(escaping, limits=limits)
        assert time.monotonic() - started < limits.timeout_s + 2.0
    finally:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the sleeper that escaped


async def test_a_memory_bomb_stops_at_the_memory_limit(tools: Path) -> None:
    outcome: ExecResult | SandboxResourceError
    try:
        outcome = await ProcessSandbox().run(call(tools, "hog"), limits=Limits(memory_mb=128))
    except SandboxResourceError as exc:  # died outside Python's MemoryError handling
        outcome = exc
    if isinstance(outcome, SandboxResourceError):
        assert outcome.resource == "memory"
    else:
        assert not outcome.ok and outcome.error is not None
        assert outcome.error.startswith("MemoryError")


async def test_memory_is_limited_to_memory_mb(tools: Path) -> None:
    limits = Limits(memory_mb=128)
    within = await ProcessSandbox().run(call(tools, "allocate", mib=64), limits=limits)
    assert within.ok and within.value == 64 * 2**20
    beyond = await ProcessSandbox().run(call(tools, "allocate", mib=512), limits=limits)
    assert not beyond.ok and beyond.error is not None and beyond.error.startswith("MemoryError")


async def test_printed_output_is_cut_at_the_limit(tools: Path) -> None:
    limits = Limits(output_bytes=1000)
    result = await ProcessSandbox().run(call(tools, "chatter"), limits=limits)
    assert result.ok and result.value == "done"
    assert result.stdout_truncated and len(result.stdout) == limits.output_bytes


async def test_output_past_the_capture_is_killed_not_buffered(tools: Path) -> None:
    with pytest.raises(SandboxResourceError) as caught:
        await ProcessSandbox().run(call(tools, "flood"), limits=Limits(output_bytes=1000))
    assert caught.value.resource == "output"


async def test_only_declared_secrets_reach_the_tool(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_PARENT_SECRET", "leaked")
    names = ["API_TOKEN", "AGENTFLOW_TEST_PARENT_SECRET", "HOME"]
    sandboxed = SandboxCall(
        source=tools,
        function="environment",
        arguments={"names": names},
        secrets={"API_TOKEN": "s3cret"},
    )
    result = await ProcessSandbox().run(sandboxed, limits=Limits())
    assert result.ok and result.value == ["s3cret", None, None]


async def test_the_working_directory_is_removed_after_the_call(tools: Path) -> None:
    result = await ProcessSandbox().run(call(tools, "scribble"), limits=Limits())
    assert result.ok
    assert result.value != str(tools.parent) and removed(result.value)


async def test_concurrent_calls_do_not_interfere(tools: Path) -> None:
    sandbox = ProcessSandbox()
    results = await asyncio.gather(
        *(sandbox.run(call(tools, "double", x=x), limits=Limits()) for x in range(8))
    )
    assert [result.value for result in results] == [2 * x for x in range(8)]


async def test_a_network_allowlist_is_refused(tools: Path) -> None:
    limits = Limits(network=("api.example.com",))
    with pytest.raises(SandboxUnavailable, match="docker"):
        await ProcessSandbox().run(call(tools, "greet", name="ada"), limits=limits)
