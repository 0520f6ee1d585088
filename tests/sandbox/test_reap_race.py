"""Reaping races other processes: two processes reap, start and close sandboxes at once.

Each process makes orphans (containers labelled with a dead owner) that both then race
to remove, through `reap()` and through `DockerSandbox.client()` (which reaps at start-up),
and runs a call on a fresh pool. A container the other process removed first must count
as removed: no process may see an error.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import agentflow
from agentflow.sandbox.docker import OWNER_LABEL, connect, reap

if TYPE_CHECKING:
    import docker

DEAD_OWNER = f"{socket.gethostname()}:999999999:gone"
"""An owner no live process has: its containers are every reaper's to remove."""

RACER = """
import asyncio, json, sys
from pathlib import Path

from agentflow.sandbox.base import Limits, SandboxCall
from agentflow.sandbox.docker import LABEL, OWNER_LABEL, DockerSandbox, connect, reap

ORPHANS = {LABEL: "1", OWNER_LABEL: sys.argv[2]}


async def main(source, rounds):
    client = connect()
    image = DockerSandbox().image
    call = SandboxCall(source=source, function="echo", arguments={"x": 1})
    errors, calls = [], 0
    sys.stdin.readline()  # the start line: both processes begin together
    for _ in range(rounds):
        for _ in range(4):
            client.containers.create(image, ["true"], labels=ORPHANS)
        try:
            reap(client)
        except Exception as exc:
            errors.append(f"reap: {exc!r}")
        sandbox = DockerSandbox(pool_size=1)
        try:
            calls += (await sandbox.run(call, limits=Limits())).value == 1
        except Exception as exc:
            errors.append(f"run: {exc!r}")
        finally:
            await sandbox.aclose()
    client.close()
    print(json.dumps({"errors": errors, "calls": calls}), flush=True)


asyncio.run(main(Path(sys.argv[1]), int(sys.argv[3])))
"""

ROUNDS = 12
CODE = str(Path(agentflow.__file__).parents[1])
"""The racers import this checkout's agentflow, not whichever one is installed."""


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    client = connect()
    yield client
    dead = client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={DEAD_OWNER}"})
    for summary in dead:  # only the orphans this test made
        client.api.remove_container(summary["Id"], force=True)
    client.close()


async def test_two_processes_reaping_and_starting_at_once_see_no_errors(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    tools = tmp_path / "tools"
    tools.mkdir(mode=0o755)
    (tools / "echo.py").write_text("def echo(x):\n    return x\n")
    script = tmp_path / "racer.py"
    script.write_text(textwrap.dedent(RACER))
    source = str(tools / "echo.py")
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            source,
            DEAD_OWNER,
            str(ROUNDS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": CODE},
        )
        for _ in range(2)
    ]
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write(b"go\n")
        await racer.stdin.drain()
    outputs = [await asyncio.wait_for(racer.communicate(), timeout=300) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    reports = [json.loads(stdout) for stdout, _ in outputs]
    assert [report["errors"] for report in reports] == [[], []]
    assert [report["calls"] for report in reports] == [ROUNDS, ROUNDS]
    reap(docker_client)
    orphans = docker_client.api.containers(
        all=True, filters={"label": f"{OWNER_LABEL}={DEAD_OWNER}"}
    )
    assert orphans == []
