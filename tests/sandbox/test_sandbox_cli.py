"""`agentflow sandbox build` and `agentflow sandbox gc`, against the real Docker engine."""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator

import docker
import pytest
from typer.testing import CliRunner

from agentflow.cli import app
from agentflow.sandbox.docker import LABEL, OWNER_LABEL, image_tag
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
