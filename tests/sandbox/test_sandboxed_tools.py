"""Tools flagged `sandbox=` run in a sandbox, inside a real agent loop, with real Docker."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

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
from agentflow.sandbox import Sandboxes
from agentflow.sandbox.docker import DockerSandbox
from agentflow.sandbox.process import ProcessSandbox
from agentflow.tools import RunContext
from tests.helpers import three_tiers
from tests.sandbox import sandboxed_tools as tools


@pytest.fixture(autouse=True)
async def sandboxes() -> AsyncIterator[Sandboxes]:
    """Each test's graphs run in sandboxes of its own, closed after it: no container is
    left behind."""
    async with Sandboxes() as made:
        yield made


async def run_agent(*calls: ToolCall, tool_list: list[Any], sandboxes: Sandboxes) -> dict[str, Any]:
    model = ScriptedModel([*calls, "done"])
    router = three_tiers(model, ScriptedModel([]), ScriptedModel([]))
    graph: AgentGraph[None] = AgentGraph("sandboxed", router=router)
    graph.agent("work", tools=tool_list, max_steps=len(calls) + 1)
    graph.edge(START, "work").edge("work", END)
    compiled = graph.compile(sandbox=sandboxes)
    return await compiled.ainvoke({"messages": [UserMessage(content="go")]})


def results(state: dict[str, Any]) -> list[ToolResultMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolResultMessage)]


async def test_a_flagged_tool_runs_in_a_container_as_a_non_root_user(
    sandboxes: Sandboxes,
) -> None:
    state = await run_agent(
        ToolCall(id="c1", name="where_am_i"),
        ToolCall(id="c2", name="add", arguments={"a": 2, "b": "3"}),
        tool_list=[tools.where_am_i, tools.add],
        sandboxes=sandboxes,
    )
    where, total = results(state)
    host, uid = where.content.split(":")
    assert host != socket.gethostname() and uid == "10001"
    assert total.content == "5", "arguments validated on the host, value validated on return"
    assert isinstance(sandboxes.get("docker"), DockerSandbox)


async def test_a_wrongly_typed_return_is_a_tool_error(sandboxes: Sandboxes) -> None:
    call = ToolCall(id="c1", name="wrong_type")
    with pytest.raises(ToolError, match="not a"):
        await run_agent(call, tool_list=[tools.wrong_type], sandboxes=sandboxes)


async def test_tool_retry_in_the_sandbox_goes_back_to_the_model(sandboxes: Sandboxes) -> None:
    call = ToolCall(id="c1", name="picky", arguments={"order_id": 7})
    state = await run_agent(call, tool_list=[tools.picky], sandboxes=sandboxes)
    [result] = results(state)
    assert result.is_error and "order 7 does not exist" in result.content


async def test_only_declared_secrets_reach_the_sandbox(
    monkeypatch: pytest.MonkeyPatch, sandboxes: Sandboxes
) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_SECRET", "s3cret")
    monkeypatch.setenv("AGENTFLOW_TEST_OTHER", "leak")
    call = ToolCall(id="c1", name="read_env")
    state = await run_agent(call, tool_list=[tools.read_env], sandboxes=sandboxes)
    [result] = results(state)
    assert result.content == '{"declared":"s3cret","undeclared":null}'


async def test_docker_without_a_daemon_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, sandboxes: Sandboxes
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    with pytest.raises(SandboxUnavailable, match="no Docker daemon answers"):
        await run_agent(call, tool_list=[tools.add], sandboxes=sandboxes)


async def test_auto_without_docker_refuses_to_run_unisolated(
    monkeypatch: pytest.MonkeyPatch, sandboxes: Sandboxes
) -> None:
    """A tool asked for isolation where there is some: no Docker is no silent host run."""
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    call = ToolCall(id="c1", name="add_anywhere", arguments={"a": 1, "b": 2})
    with pytest.raises(SandboxUnavailable, match="allow_unisolated"):
        await run_agent(call, tool_list=[tools.add_anywhere], sandboxes=sandboxes)


async def test_auto_falls_back_to_the_process_sandbox_only_when_allowed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    call = ToolCall(id="c1", name="add_anywhere", arguments={"a": 1, "b": 2})
    async with Sandboxes(allow_unisolated=True) as allowed:
        with caplog.at_level(logging.WARNING, logger="agentflow"):
            state = await run_agent(call, tool_list=[tools.add_anywhere], sandboxes=allowed)
        assert isinstance(allowed.get("auto"), ProcessSandbox)
    assert results(state)[0].content == "3"
    assert "process sandbox" in caplog.text and "allow_unisolated" in caplog.text


async def test_auto_uses_docker_when_a_daemon_answers(sandboxes: Sandboxes) -> None:
    call = ToolCall(id="c1", name="add_anywhere", arguments={"a": 4, "b": 5})
    state = await run_agent(call, tool_list=[tools.add_anywhere], sandboxes=sandboxes)
    assert results(state)[0].content == "9"
    assert isinstance(sandboxes.get("auto"), DockerSandbox)


async def test_a_sandboxed_tool_run_outside_a_graph_needs_sandboxes() -> None:
    call = ToolCall(id="c1", name="add", arguments={"a": 1, "b": 2})
    with pytest.raises(ToolError, match="sandboxes=Sandboxes"):
        await tools.add.run(call, RunContext(deps=None, run_id="r"))


def test_a_tools_limits_apply_with_its_timeout_winning() -> None:
    from agentflow import tool
    from agentflow.sandbox.base import Limits

    def fetch(url: str) -> str:
        """Fetch a page.

        Args:
            url: The page.
        """
        return url

    allowed = Limits(network=("api.example.com",), memory_mb=512, timeout_s=30)
    assert tool(sandbox="docker", limits=allowed)(fetch).sandbox_limits == allowed
    assert tool(sandbox="docker", limits=allowed, timeout_s=5)(fetch).sandbox_limits.timeout_s == 5
    assert tool(sandbox="docker")(fetch).sandbox_limits == Limits()


async def test_the_servers_shutdown_takes_the_warm_containers_with_it(tmp_path: Any) -> None:
    """`agentflow serve`'s app closes its service's sandboxes when its lifespan ends."""
    import docker

    from agentflow.server.app import create_app
    from agentflow.server.auth import TokenTable
    from agentflow.threads import ThreadService

    graph: AgentGraph[None] = AgentGraph("idle")

    @graph.node
    def noop(state: Any) -> dict[str, Any]:
        return {}

    graph.edge(START, "noop").edge("noop", END)
    router = three_tiers(ScriptedModel([]), ScriptedModel([]), ScriptedModel([]))
    service = ThreadService(graph, database_url=f"sqlite:///{tmp_path / 's.sqlite'}", router=router)
    app = create_app(service, TokenTable.parse("admin:ops:t"), expire_every_s=0)
    async with app.router.lifespan_context(app):
        ctx = RunContext(deps=None, run_id="r")
        assert await tools.add.call({"a": 1, "b": 2}, ctx, sandboxes=service.sandboxes) == 3
        sandbox = service.sandboxes.get("docker")
        assert isinstance(sandbox, DockerSandbox)
    client = docker.from_env()
    try:
        mine: dict[str, Any] = {"label": f"agentflow.instance={sandbox.instance}"}
        assert client.containers.list(all=True, filters=mine) == []
    finally:
        client.close()


def test_the_sandbox_package_knows_nothing_of_tools_or_tracing() -> None:
    """No import circle: tools use sandboxes, the agent loop opens spans; the sandbox
    package imports neither (not even lazily, inside a function)."""
    import ast
    from pathlib import Path

    import agentflow.sandbox

    package = Path(agentflow.sandbox.__file__).parent
    imported = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert not imported & {"agentflow.tools", "agentflow.tracing", "agentflow"}
