"""A long-lived stdio process (an MCP server) in a container hardened like a tool call's.

`docker run -i` with the server's command: its stdin and stdout, relayed by the
docker CLI, are the process's, so any stdio protocol runs over them unchanged. The
container gets what a `DockerSandbox` call container gets (`docker.py`): no network
interface but loopback, a read-only root filesystem with a size-capped tmpfs at /tmp,
all capabilities dropped, `no-new-privileges`, uid 10001, pids, memory (swap included)
and CPU limits; folders are mounted read-only. It carries the sandbox's labels, so the
sandbox's `aclose()`, `reap()` and `agentflow sandbox gc` remove it if it outlives its
owner. Egress allowlists are not offered here: a server that needs the network is not
one to run in this sandbox.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agentflow.exceptions import ConfigError, SandboxUnavailable
from agentflow.sandbox.base import Limits
from agentflow.sandbox.docker import INSTANCE_LABEL, LABEL, OWNER_LABEL, DockerSandbox

__all__ = ["ContainerCommand", "container_command", "remove_container"]

_CLI_ENV = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY")
"""What the docker CLI itself needs of our environment."""


@dataclass(kw_only=True, frozen=True)
class ContainerCommand:
    """How to start the process in its container."""

    argv: list[str]
    """The `docker run -i ...` command line."""
    env: dict[str, str] = field(repr=False)
    """The CLI's environment: what it needs, and the values of the `-e NAME` variables
    (so they never appear on a command line)."""
    name: str
    """The container's name, to remove it by."""


def container_command(
    sandbox: DockerSandbox,
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    mounts: Mapping[str, str],
    limits: Limits | None,
) -> ContainerCommand:
    """The command line that runs `command` in a hardened container of `sandbox`'s image.

    Raises:
        SandboxUnavailable: No docker CLI, no daemon, or the image is missing.
        ConfigError: The limits ask for a network, or a mount is not an absolute folder.
    """
    docker = shutil.which("docker")
    if docker is None:
        raise SandboxUnavailable("a sandboxed stdio server needs the docker command line")
    sandbox.client()  # the daemon answers and the image is there, or SandboxUnavailable
    limits = limits or Limits()
    if limits.network:
        raise ConfigError(
            "a sandboxed stdio server gets no network; network allowlists are for tool calls",
            key="limits.network",
        )
    name = f"agentflow-mcp-{uuid.uuid4().hex[:12]}"
    argv = [docker, "run", "-i", "--rm", "--name", name, "--log-driver", "none"]
    for label in (
        f"{LABEL}=1",
        f"{OWNER_LABEL}={sandbox.owner}",
        f"{INSTANCE_LABEL}={sandbox.instance}",
    ):
        argv += ["--label", label]
    argv += [
        "--network=none",
        "--ipc=none",
        "--read-only",
        f"--tmpfs=/tmp:size={limits.tmpfs_mb}m,mode=1777",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--user=10001:10001",
        f"--pids-limit={limits.pids}",
        f"--memory={limits.memory_mb}m",
        f"--memory-swap={limits.memory_mb}m",
        f"--cpus={limits.cpus:g}",
    ]
    for host, inside in mounts.items():
        if not (os.path.isabs(host) and os.path.isdir(host) and inside.startswith("/")):
            raise ConfigError(
                f"mount {host!r} -> {inside!r}: both must be absolute, the host's an existing "
                "folder",
                key="mounts",
            )
        argv += ["--mount", f"type=bind,source={host},target={inside},readonly"]
    for variable in env:
        argv += ["-e", variable]
    if cwd is not None:
        argv += ["--workdir", cwd]
    argv += [sandbox.image, *command]
    cli_env = {k: os.environ[k] for k in _CLI_ENV if k in os.environ}
    return ContainerCommand(argv=argv, env={**cli_env, **env}, name=name)


def remove_container(sandbox: DockerSandbox, name: str) -> None:
    """Remove the container if it is still there (it removes itself when it exits)."""
    from docker.errors import DockerException

    try:
        client = sandbox.client()
        client.api.remove_container(name, force=True)
    except DockerException:
        pass  # gone already (`--rm`), or being removed; `reap` has anything left
    except SandboxUnavailable:
        pass
