"""Hostile tools against one warm container: no call can observe or influence another
call's process, input, output or secrets, and the pool keeps answering right.

Every test runs its calls in one pool of one container (`pool_size=1`,
`max_containers=1`), so each attack lands where the innocent calls after it run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.sandbox import Limits, SandboxCall, Sandboxes
from agentflow.sandbox.docker import DockerSandbox
from agentflow.tools import RunContext, Tool
from tests.sandbox import hostile_tools as hostile

CTX = RunContext(deps=None, run_id="hostile")
SOURCE = Path(hostile.__file__)
DENIED = {"EACCES", "EPERM"}


@pytest.fixture
async def one_container() -> AsyncIterator[Sandboxes]:
    async with Sandboxes(docker=DockerSandbox(pool_size=1, max_containers=1)) as sandboxes:
        yield sandboxes


async def call(sandboxes: Sandboxes, tool: Tool[Any], **arguments: Any) -> Any:
    return await tool.call(arguments, CTX, sandboxes=sandboxes)


async def assert_still_answering(sandboxes: Sandboxes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Later calls get their own results and their own secret, nothing forged or stolen,
    and find nothing an earlier call left behind."""
    for a in range(5):
        assert await call(sandboxes, hostile.add, a=a, b=1000) == a + 1000
    monkeypatch.setenv("AGENTFLOW_HOSTILE_SECRET", "s3cret-of-a-later-call")
    assert await call(sandboxes, hostile.secret) == "s3cret-of-a-later-call"
    leftovers = await call(sandboxes, hostile.find_leftovers)
    assert leftovers == {"files": [], "ipc": [], "processes": []}


async def test_a_call_cannot_open_the_runners_stdin_stdout_environment_or_memory(
    one_container: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = await call(one_container, hostile.probe_runner)
    assert set(opened.values()) <= DENIED, opened
    await assert_still_answering(one_container, monkeypatch)


async def test_a_call_cannot_ptrace_the_runner(
    one_container: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    traced = await call(one_container, hostile.ptrace_runner)
    assert set(traced.values()) <= DENIED, traced
    await assert_still_answering(one_container, monkeypatch)


async def test_signals_to_the_runner_neither_stop_nor_kill_it(
    one_container: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    await call(one_container, hostile.signal_runner)
    await assert_still_answering(one_container, monkeypatch)


async def test_an_implant_left_behind_reads_no_request_and_forges_no_result(
    one_container: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await call(one_container, hostile.plant_implant) == "planted"
    await assert_still_answering(one_container, monkeypatch)


async def test_files_left_in_writable_places_are_gone_for_the_next_call(
    one_container: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    written = await call(one_container, hostile.leave_files)
    assert "/tmp" in written, "the tool could write its scratch space"
    await assert_still_answering(one_container, monkeypatch)


async def test_ipc_objects_left_behind_are_gone_for_the_next_call(
    one_container: Sandboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = await call(one_container, hostile.leave_ipc)
    assert made, "the tool could make System V IPC objects"
    await assert_still_answering(one_container, monkeypatch)


async def test_output_a_call_leaves_behind_never_reaches_a_later_call(
    one_container: Sandboxes,
) -> None:
    """Bytes written after a call's result would precede the next call's: with a small
    output cap, a flood of them would make the next call fail as too large."""
    docker = one_container.get("docker")
    small = Limits(timeout_s=10, output_bytes=1000)

    def raw(function: str, **arguments: Any) -> SandboxCall:
        return SandboxCall(source=SOURCE, function=function, arguments=arguments)

    flooding = await docker.run(raw("flood_after_result"), limits=small)
    assert flooding.ok and flooding.value == "flooding"
    for a in range(5):
        added = await docker.run(raw("add", a=a, b=1000), limits=small)
        assert added.ok and added.value == a + 1000, added
