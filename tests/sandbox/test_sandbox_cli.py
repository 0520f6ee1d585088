"""`agentflow sandbox build` and `agentflow sandbox gc`, against the real Docker engine."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from typer.testing import CliRunner

from agentflow.cli import app
from agentflow.sandbox.docker import LABEL, OWNER_LABEL, image_tag, owner_id
from agentflow.sandbox.image import build_image

runner = CliRunner()


@pytest.fixture
def client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def test_build_reports_the_image_that_is_there() -> None:
    result = runner.invoke(app, ["sandbox", "build"])
    assert result.exit_code == 0, result.output
    assert f"{image_tag()} (present)" in result.output


def test_debootstrap_build_makes_a_runnable_image(client: docker.DockerClient) -> None:
    tag = f"agentflow-sandbox:test-{uuid.uuid4().hex[:8]}"
    try:
        assert build_image(tag, method="debootstrap") == (tag, "debootstrap")
        output = client.containers.run(tag, ["sh", "-c", "id -u; ls /opt/agentflow"], remove=True)
        assert output.decode().split() == ["10001", "runner.py"]
    finally:
        client.images.remove(tag, force=True)


def test_gc_removes_containers_of_dead_owners_only(client: docker.DockerClient) -> None:
    dead_owner = f"{socket.gethostname()}:999999999:gone"
    labels = {LABEL: "1", OWNER_LABEL: dead_owner}
    orphan = client.containers.create(image_tag(), ["true"], labels=labels)
    result = runner.invoke(app, ["sandbox", "gc"])
    assert result.exit_code == 0, result.output
    # At least ours: another test may have left a dead owner's container for gc too.
    assert re.search(r"removed [1-9]\d* sandbox container\(s\)", result.output)
    with pytest.raises(docker.errors.NotFound):  # type: ignore[attr-defined]
        client.containers.get(orphan.id or "")


def test_gc_without_a_daemon_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    result = runner.invoke(app, ["sandbox", "gc"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "no Docker daemon answers" in result.output


SANDBOXED_TOOL = '''
from agentflow import tool


@tool(sandbox="docker")
def shout(text: str) -> str:
    """Shout it."""
    return text.upper()
'''
SANDBOXED_GRAPH = """
from agentflow import (
    END, START, AgentGraph, AgentState, FunctionModel, GpuPrice, Router, RoutingPolicy,
    Tier, ToolCall,
)
from loud_tools import shout


def answer(request):
    if request.messages[-1].role == "tool":
        return request.messages[-1].content
    return [ToolCall(id="c1", name="shout", arguments={"text": "hi"})]


router = Router(
    tiers=[Tier(name="t", model=FunctionModel(answer), price=GpuPrice(gpu_hour_usd=1,
                tokens_per_s=1), self_hosted=True)],
    policy=RoutingPolicy(kinds={"tool_call": "t"}),
)
graph = AgentGraph("loud", state=AgentState, router=router)
graph.agent("act", tools=[shout])
graph.edge(START, "act").edge("act", END)
"""


def test_run_leaves_no_warm_container_behind(client: docker.DockerClient, tmp_path: Path) -> None:
    """The run's warm sandbox containers go when `agentflow run` ends, not at the next
    start of some other process."""
    (tmp_path / "loud.py").write_text(SANDBOXED_GRAPH)
    (tmp_path / "loud_tools.py").write_text(SANDBOXED_TOOL)
    tmp_path.chmod(0o755)  # the sandbox's user reads the tool's folder
    (tmp_path / "loud_tools.py").chmod(0o644)
    exe = Path(sys.executable).parent / "agentflow"
    with subprocess.Popen(
        [str(exe), "run", "loud.py", "-m", "hi"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    ) as process:
        out, _ = process.communicate(timeout=120)
    assert process.returncode == 0 and "agent: HI" in out
    owner = owner_id(process.pid).rpartition(":")[0]  # host:pid (the process is gone)
    left = client.containers.list(all=True, filters={"label": LABEL})
    assert [c.id for c in left if (c.labels or {})[OWNER_LABEL].startswith(f"{owner}:")] == []
