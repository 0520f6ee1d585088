"""Tools flagged `sandbox=` run in a sandbox, inside a real agent loop, with real Docker."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import agentflow.sandbox as sandboxes
from agentflow import (
    END,
    START,
    AgentGraph,
    ScriptedModel,
    ToolCall,
    ToolError,
    ToolResultMessage,
    UserMessage,
)
from agentflow.exceptions import SandboxUnavailable
from agentflow.sandbox.docker import DockerSandbox
from agentflow.sandbox.process import ProcessSandbox
from agentflow.tools import RunContext
from tests.helpers import three_tiers
from tests.sandbox import sandboxed_tools as tools


@pytest.fixture(autouse=True)
async def fresh_shared_sandboxes() -> AsyncIterator[None]:
    """Each test picks its sandbox anew, and leaves no container behind."""
    await sandboxes.close_shared()
    yield
    await sandboxes.close_shared()


async def run_agent(*calls: ToolCall, tool_list: list[Any]) -> dict[str, Any]:
    model = ScriptedModel([*calls, "done"])
    router = three_tiers(model, ScriptedModel([]), ScriptedModel([]))
    graph: AgentGraph[None] = AgentGraph("sandboxed", router=router)
    graph.agent("work", tools=tool_list, max_steps=len(calls) + 1)
    graph.edge(START, "work").edge("work", END)
    return await graph.compile().ainvoke({"messages": [UserMessage(content="go")]})


def results(state: dict[str, Any]) -> list[ToolResultMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolResultMessage)]


async def test_a_flagged_tool_runs_in_a_container_as_a_non_root_user() -> None:
    state = await run_agent(
        ToolCall(id="c1", name="where_am_i"),
        ToolCall(id="c2", name="add", arguments={"a": 2, "b": "3"}),
        tool_list=[tools.where_am_i, tools.add],
    )
    where, total = results(state)
    host, uid = where.content.split(":")
    assert host != socket.gethostname() and uid == "10001"
    assert total.content == "5", "arguments validated on the host, value validated on return"
    assert isinstance(sandboxes.sandbox_for("docker"), DockerSandbox)


async def test_a_wrongly_typed_return_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="not a"):
        await run_agent(ToolCall(id="c1", name="wrong_type"), tool_list=[tools.wrong_type])


async def test_tool_retry_in_the_sandbox_goes_back_to_the_model() -> None:
    state = await run_agent(
        ToolCall(id="c1", name="picky", arguments={"order_id": 7}), tool_list=[tools.picky]
    )
    [result] = results(state)
    assert result.is_error and "order 7 does not exist" in result.content


async def test_only_declared_secrets_reach_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_SECRET", "s3cret")
    monkeypatch.setenv("AGENTFLOW_TEST_OTHER", "leak")
    state = await run_agent(ToolCall(id="c1", name="read_env"), tool_list=[tools.read_env])
    [result] = results(state)
    assert result.content == '{"declared":"s3cret","undeclared":null}'


async def test_docker_without_a_daemon_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxUnavailable, match="no Docker daemon answers"):
        await run_agent(
            ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2}), tool_list=[tools.add]
        )


async def test_auto_falls_back_to_the_process_sandbox_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with caplog.at_level(logging.WARNING, logger="agentflow"):
        state = await run_agent(
            ToolCall(id="c1", name="add_anywhere", arguments={"a": 1, "b": 2}),
            tool_list=[tools.add_anywhere],
        )
    assert results(state)[0].content == "3"
    assert isinstance(sandboxes.sandbox_for("auto"), ProcessSandbox)
    assert "process sandbox" in caplog.text


async def test_auto_uses_docker_when_a_daemon_answers() -> None:
    state = await run_agent(
        ToolCall(id="c1", name="add_anywhere", arguments={"a": 4, "b": 5}),
        tool_list=[tools.add_anywhere],
    )
    assert results(state)[0].content == "9"
    assert isinstance(sandboxes.sandbox_for("auto"), DockerSandbox)


def test_a_tools_limits_apply_with_its_timeout_winning() -> None:
    from agentflow import tool
    from agentflow.sandbox import limits_for
    from agentflow.sandbox.base import Limits

    def fetch(url: str) -> str:
        """Fetch a page.

        Args:
            url: The page.
        """
        return url

    allowed = Limits(network=("api.example.com",), memory_mb=512, timeout_s=30)
    assert limits_for(tool(sandbox="docker", limits=allowed)(fetch)) == allowed
    assert limits_for(tool(sandbox="docker", limits=allowed, timeout_s=5)(fetch)).timeout_s == 5
    assert limits_for(tool(sandbox="docker")(fetch)) == Limits()


async def test_the_servers_shutdown_takes_the_warm_containers_with_it(tmp_path: Any) -> None:
    """`agentflow serve`'s app closes the shared sandboxes when its lifespan ends."""
    import docker

    from agentflow.server.app import create_app
    from agentflow.server.auth import TokenTable
    from agentflow.server.threads import ThreadService

    graph: AgentGraph[None] = AgentGraph("idle")

    @graph.node
    def noop(state: Any) -> dict[str, Any]:
        return {}

    graph.edge(START, "noop").edge("noop", END)
    router = three_tiers(ScriptedModel([]), ScriptedModel([]), ScriptedModel([]))
    service = ThreadService(graph, database_url=f"sqlite:///{tmp_path / 's.sqlite'}", router=router)
    app = create_app(service, TokenTable.parse("admin:ops:t"), expire_every_s=0)
    async with app.router.lifespan_context(app):
        assert await tools.add.call({"a": 1, "b": 2}, RunContext(deps=None, run_id="r")) == 3
        sandbox = sandboxes.sandbox_for("docker")
        assert isinstance(sandbox, DockerSandbox)
    assert sandboxes._shared == {}
    client = docker.from_env()
    try:
        mine: dict[str, Any] = {"label": f"agentflow.instance={sandbox.instance}"}
        assert client.containers.list(all=True, filters=mine) == []
    finally:
        client.close()
