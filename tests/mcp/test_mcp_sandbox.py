"""A stdio MCP server in the Docker sandbox, on a real Docker engine: its tools run in a
hardened container (no network, read-only root, non-root, caps dropped), which is gone
after the server is closed.

The server is tests/mcp/servers/weather.py on the official SDK, which the container
gets by mounting this environment's site-packages read-only (the sandbox image's
python is the same minor version, 3.11).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mcp
import pytest

from agentflow import ToolCall
from agentflow.exceptions import ConfigError
from agentflow.mcp import McpServer
from agentflow.sandbox.base import Limits
from agentflow.sandbox.docker import INSTANCE_LABEL, LABEL, DockerSandbox, connect
from agentflow.tools import RunContext

if TYPE_CHECKING:
    import docker

SERVERS = Path(__file__).parent / "servers"
SITE_PACKAGES = Path(mcp.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = connect()
    yield client
    client.close()


def sandboxed(sandbox: DockerSandbox, **options: Any) -> McpServer:
    return McpServer.stdio(
        "python3",
        "/opt/tool/weather.py",
        name="boxed-weather",
        sandbox=sandbox,
        mounts={SERVERS: "/opt/tool", SITE_PACKAGES: "/opt/site-packages"},
        env={"PYTHONPATH": "/opt/site-packages"},
        **options,
    )


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11), reason="the mounted SDK must match the image's python"
)
async def test_a_sandboxed_servers_tools_run_in_a_hardened_container(
    docker_client: docker.DockerClient,
) -> None:
    async with DockerSandbox() as sandbox:
        async with sandboxed(sandbox, limits=Limits(memory_mb=256, pids=64)) as server:
            tools = {t.name: t for t in await server.tools()}
            ctx = RunContext(deps=None, run_id="r1")
            outcome = await tools["whoami"].run(ToolCall(id="c1", name="whoami"), ctx)
            inside = outcome.value
            assert inside["uid"] == 10001
            assert inside["hostname"] != socket.gethostname()
            assert inside["interfaces"] == ["lo"]
            assert inside["network"] in ("ENETUNREACH", "EHOSTUNREACH")
            assert inside["write_root"] == "EROFS"
            assert inside["write_tmp"] == "ok"

            name = server._container
            assert name is not None
            attrs = docker_client.api.inspect_container(name)
            host = attrs["HostConfig"]
            assert host["ReadonlyRootfs"] is True
            assert host["CapDrop"] == ["ALL"]
            assert host["NetworkMode"] == "none"
            assert "no-new-privileges" in host["SecurityOpt"]
            assert host["PidsLimit"] == 64
            assert host["Memory"] == host["MemorySwap"] == 256 * 2**20
            assert attrs["Config"]["User"] == "10001:10001"
            assert attrs["Config"]["Labels"][LABEL] == "1"
            assert attrs["Config"]["Labels"][INSTANCE_LABEL] == sandbox.instance
            assert attrs["Config"]["Image"] == sandbox.image
        left = docker_client.api.containers(all=True, filters={"name": name})
        assert left == [], "the server's container is gone once the server is closed"


async def test_a_sandboxed_server_gets_no_network_allowlist() -> None:
    async with DockerSandbox() as sandbox:
        server = sandboxed(sandbox, limits=Limits(network=("api.example.com",)))
        with pytest.raises(ConfigError, match="gets no network"):
            await server.connect()
