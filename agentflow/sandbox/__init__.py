"""Where tools marked `sandbox="docker"` or `sandbox="auto"` run.

A compiled graph's tools run in its `Sandboxes` (`graph.compile(sandbox=...)`, as its
`journal=`): `docker` is a `DockerSandbox` and fails with `SandboxUnavailable` when no
daemon answers; `auto` is the same Docker sandbox when a daemon and the image are there.
Without them, `auto` refuses too, unless the `Sandboxes` allow unisolated runs
(`allow_unisolated=True`; `[sandbox] allow_unisolated = true` in agentflow.toml for
the CLI, the server and a graph compiled without a router): then the (weaker)
`ProcessSandbox` runs the tool, with a logged warning. Whoever owns the `Sandboxes`
closes it, which removes its warm containers:

```python
async with Sandboxes() as sandboxes:
    app = graph.compile(sandbox=sandboxes)
    await app.ainvoke(state, config, context=deps)
```

This package knows nothing of tools: `Tool.call` builds the `SandboxCall` and reads the
`ExecResult`.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from agentflow.exceptions import SandboxUnavailable
from agentflow.sandbox.base import ExecResult, Limits, Sandbox, SandboxCall

if TYPE_CHECKING:
    from agentflow.sandbox.docker import DockerSandbox

__all__ = ["ExecResult", "Limits", "Sandbox", "SandboxCall", "Sandboxes"]

_log = logging.getLogger("agentflow")


class Sandboxes:
    """The sandboxes one compiled graph's tools run in, made on first use.

    Args:
        allow_unisolated: Let `sandbox="auto"` tools run in the process sandbox when
            Docker is not there (it does not isolate the filesystem or the network);
            without it they fail with `SandboxUnavailable`, as `docker` tools do.
        docker: The Docker sandbox to use (default: a `DockerSandbox()` made on first use);
            it is closed with the others.
    """

    def __init__(
        self, *, allow_unisolated: bool = False, docker: DockerSandbox | None = None
    ) -> None:
        self.allow_unisolated = allow_unisolated
        self._given = docker
        self._docker = docker
        self._auto: Sandbox | None = None

    def get(self, kind: Literal["docker", "auto"]) -> Sandbox:
        """The sandbox for a tool's `sandbox=` setting.

        Raises:
            SandboxUnavailable: `auto` without Docker, and unisolated runs not allowed.
        """
        if self._docker is None:
            from agentflow.sandbox.docker import DockerSandbox

            self._docker = DockerSandbox()
        if kind == "docker":
            return self._docker
        if self._auto is None:
            self._auto = self._choose_auto(self._docker)
        return self._auto

    def _choose_auto(self, docker: DockerSandbox) -> Sandbox:
        try:
            docker.client()
        except SandboxUnavailable as exc:
            if not self.allow_unisolated:
                raise SandboxUnavailable(
                    f"{exc}; sandbox='auto' does not run a tool unisolated unless allowed "
                    "(Sandboxes(allow_unisolated=True), or `[sandbox] allow_unisolated = "
                    "true` in agentflow.toml)"
                ) from exc
            from agentflow.sandbox.process import ProcessSandbox

            _log.warning(
                "sandbox='auto': %s; running tools in the process sandbox, which does not "
                "isolate the filesystem or the network (allow_unisolated is set)",
                exc,
            )
            return ProcessSandbox()
        return docker

    async def aclose(self) -> None:
        """Close the sandboxes made: their warm containers are removed and the Docker
        client closed. Await it on the event loop that ran the tools, before it ends."""
        made = {id(s): s for s in (self._docker, self._auto) if s is not None}
        self._docker, self._auto = self._given, None
        for sandbox in made.values():
            await sandbox.aclose()

    async def __aenter__(self) -> Sandboxes:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
