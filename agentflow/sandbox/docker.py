"""Docker sandboxes: each tool call runs in a locked-down container from a warm pool.

Every container is hardened the same way: no network (`network_mode="none"`), a
read-only root filesystem with a size-capped tmpfs at /tmp as the only writable place,
all capabilities dropped, `no-new-privileges`, a non-root user (uid 10001), a pids
limit, a memory limit with swap equal to memory, and a CPU quota. The tool's source
directory is mounted read-only; arguments go in as JSON on the command line, and the
value comes back as JSON in the runner's envelope (`sandbox/runner.py`).

Containers are kept warm in a pool per (source directory, limits): each call takes one,
the runner first wipes /tmp and kills anything a previous call left running, and the
container goes back after the call. It is discarded instead after `max_uses` calls,
after any failure or timeout, and when a health check fails; an empty pool starts one
on the spot (the cold path).

No leaks: every container carries the labels `agentflow.sandbox=1`,
`agentflow.owner=<host>:<pid>:<start>` and `agentflow.instance=<id>` (one per
`DockerSandbox`). `reap()` removes containers whose owner process is gone; a
`DockerSandbox` reaps at start-up and removes its own instance's at `aclose()`, and
`agentflow sandbox gc` does it by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.exceptions import (
    SandboxError,
    SandboxResourceError,
    SandboxTimeout,
    SandboxUnavailable,
)
from agentflow.sandbox import runner
from agentflow.sandbox.base import ExecResult, Limits, Sandbox, SandboxCall

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

__all__ = [
    "INSTANCE_LABEL",
    "LABEL",
    "OWNER_LABEL",
    "DockerSandbox",
    "image_tag",
    "owner_id",
    "reap",
]

LABEL = "agentflow.sandbox"
OWNER_LABEL = "agentflow.owner"
INSTANCE_LABEL = "agentflow.instance"
TOOL_DIR = "/opt/tool"
RUNNER = "/opt/agentflow/runner.py"
_ENVELOPE_SLACK = 64 * 1024
_JSON_BYTES_PER_CHAR = 12
"""The runner cuts captures in characters, and `json.dumps` writes one outside the BMP as
two `\\uXXXX` escapes: a capture of N characters can take 12N bytes of the envelope."""
_KILL_GRACE_S = 1.0
_INIT = """\
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
while True:
    signal.sigwait({signal.SIGCHLD})
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
"""
"""The container's pid 1. What `--reset` kills was reparented to pid 1, and `sleep infinity`
would leave it a zombie, visible to the next call and holding a slot of the pids limit."""


def image_tag() -> str:
    """The sandbox image for this version of the runner: rebuilt when the runner changes."""
    digest = hashlib.sha256(Path(runner.__file__).read_bytes()).hexdigest()[:12]
    return f"agentflow-sandbox:{digest}"


def owner_id(pid: int | None = None) -> str:
    """`host:pid:start`: names this process, so a reused pid is not taken for it."""
    pid = os.getpid() if pid is None else pid
    try:
        # Field 22 of /proc/PID/stat, after the name in parentheses (which may hold spaces):
        # the start in clock ticks since boot. Not the ctime of /proc/PID, which is when its
        # inode was made: it changes when the kernel evicts it, and a live owner looks dead.
        start = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        start = "gone"
    return f"{socket.gethostname()}:{pid}:{start}"


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid, _, _start = rest.partition(":")
    if host != socket.gethostname():
        return True  # another machine's containers are not ours to judge
    if not pid.isdigit():
        return False
    now = owner_id(int(pid))
    return now == owner and not now.endswith(":gone")


def connect() -> docker.DockerClient:
    """Return a client for the local Docker daemon.

    Raises:
        SandboxUnavailable: The `docker` extra is missing or no daemon answers.
    """
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise SandboxUnavailable(
            'Docker sandboxes need their extra: pip install "agentflow[docker]"'
        ) from exc
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not os.path.exists(host.removeprefix("unix://")):
        # Checked first: docker-py leaks the socket of a connection that never opened.
        raise SandboxUnavailable(
            f"no Docker daemon answers (no socket at {host}); start one, or use "
            "sandbox='auto' to fall back to the (weaker) process sandbox"
        )
    client = None
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except docker.errors.DockerException as exc:  # type: ignore[attr-defined]
        if client is not None:
            client.close()
        raise SandboxUnavailable(
            f"no Docker daemon answers ({exc}); start one, or use sandbox='auto' to fall "
            "back to the (weaker) process sandbox"
        ) from exc
    return client


def reap(client: docker.DockerClient, *, everything: bool = False) -> list[str]:
    """Remove sandbox containers whose owning process is gone (all of them with `everything`).

    Returns the removed containers' names.
    """
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        owner = container.labels.get(OWNER_LABEL, "")
        if everything or not _owner_alive(owner):
            with contextlib.suppress(Exception):  # already gone: someone else reaped it
                container.remove(force=True)
                removed.append(container.name)
    return removed


@dataclass(kw_only=True)
class _Pool:
    """Warm containers for one (source directory, limits) pair."""

    source_dir: Path
    limits: Limits
    idle: list[Container] = field(default_factory=list)
    uses: dict[str | None, int] = field(default_factory=dict)
    """Calls served, by container id."""


class DockerSandbox(Sandbox):
    """Run tool calls in hardened containers, kept warm in pools.

    Args:
        image: The sandbox image; `agentflow sandbox build` builds the default one.
        pool_size: Containers kept warm per (source directory, limits).
        max_uses: Calls a container serves before it is replaced.
        reap_orphans: Remove containers left by dead agentflow processes on first use.
    """

    name = "docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        pool_size: int = 2,
        max_uses: int = 100,
        reap_orphans: bool = True,
    ) -> None:
        self.image = image or image_tag()
        self.pool_size = pool_size
        self.max_uses = max_uses
        self.owner = owner_id()
        self.instance = uuid.uuid4().hex[:12]
        """Labels this sandbox's containers, so `aclose` leaves other sandboxes' alone."""
        self._reap_orphans = reap_orphans
        self._client: docker.DockerClient | None = None
        self._pools: dict[tuple[Path, Limits], _Pool] = {}
        self._lock = threading.Lock()
        self._refills: set[asyncio.Task[None]] = set()

    # -- containers ---------------------------------------------------------------

    def client(self) -> docker.DockerClient:
        if self._client is None:
            client = connect()
            try:
                client.images.get(self.image)
            except Exception as exc:
                raise SandboxUnavailable(
                    f"sandbox image {self.image!r} is missing; build it with "
                    "`agentflow sandbox build`"
                ) from exc
            if self._reap_orphans:
                reap(client)
            self._client = client
        return self._client

    def _start(self, pool: _Pool) -> Container:
        limits = pool.limits
        if limits.network:
            raise SandboxUnavailable(
                "network allowlists are not supported by the Docker sandbox yet; "
                "sandboxed tools run with no network"
            )
        container = self.client().containers.run(
            self.image,
            ["python3", "-I", "-S", "-c", _INIT],
            detach=True,
            labels={LABEL: "1", OWNER_LABEL: self.owner, INSTANCE_LABEL: self.instance},
            network_mode="none",
            ipc_mode="none",  # no /dev/shm: /tmp stays the only writable place
            read_only=True,
            tmpfs={"/tmp": f"size={limits.tmpfs_mb}m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user="10001:10001",
            pids_limit=limits.pids,
            mem_limit=f"{limits.memory_mb}m",
            memswap_limit=f"{limits.memory_mb}m",
            nano_cpus=int(limits.cpus * 1e9),
            volumes={str(pool.source_dir): {"bind": TOOL_DIR, "mode": "ro"}},
            init=False,
        )
        pool.uses[container.id] = 0
        return container

    def _discard(self, pool: _Pool, container: Container) -> None:
        pool.uses.pop(container.id, None)
        with contextlib.suppress(Exception):
            container.remove(force=True)

    def _take(self, pool: _Pool) -> Container:
        with self._lock:
            if pool.idle:
                return pool.idle.pop()
        return self._start(pool)  # the cold path

    def _give_back(self, pool: _Pool, container: Container) -> None:
        if pool.uses.get(container.id, self.max_uses) >= self.max_uses:
            self._discard(pool, container)
            return
        with self._lock:
            if len(pool.idle) < self.pool_size:
                pool.idle.append(container)
                return
        self._discard(pool, container)

    def _fill(self, pool: _Pool) -> None:
        while True:
            with self._lock:
                if len(pool.idle) >= self.pool_size:
                    return
            container = self._start(pool)
            with self._lock:
                pool.idle.append(container)

    def _pool(self, source_dir: Path, limits: Limits) -> _Pool:
        key = (source_dir, limits)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _Pool(source_dir=source_dir, limits=limits)
            return pool

    async def warm(self, source_dir: Path, limits: Limits) -> None:
        """Start the pool for a source directory and limits ahead of the first call."""
        resolved = await asyncio.to_thread(source_dir.resolve)
        await asyncio.to_thread(self._fill, self._pool(resolved, limits))

    # -- calls --------------------------------------------------------------------

    async def run(self, call: SandboxCall, *, limits: Limits) -> ExecResult:
        source = call.source.resolve()
        pool = self._pool(source.parent, limits)
        container = await asyncio.to_thread(self._take, pool)
        healthy = False
        try:
            result = await self._exec(container, call, source, limits)
            healthy = result.ok or result.retry
            return result
        finally:
            if healthy:
                pool.uses[container.id] = pool.uses.get(container.id, 0) + 1
                await asyncio.to_thread(self._give_back, pool, container)
            else:
                await asyncio.to_thread(self._discard, pool, container)
            # Only a discarded container leaves a gap. A refill after every call would race
            # the next call for the idle container and then push it out of a full pool.
            if container.id not in pool.uses:
                self._refill_later(pool)

    def _refill_later(self, pool: _Pool) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._fill, pool))
        self._refills.add(task)
        task.add_done_callback(self._refills.discard)

    async def _exec(
        self, container: Container, call: SandboxCall, source: Path, limits: Limits
    ) -> ExecResult:
        import json

        from docker.errors import APIError

        api = self.client().api
        cap = limits.output_bytes * 2 * _JSON_BYTES_PER_CHAR + _ENVELOPE_SLACK
        command = [
            "python3",
            "-I",
            RUNNER,
            "--reset",
            f"{TOOL_DIR}/{source.name}",
            call.function,
            json.dumps(call.arguments),
        ]
        environment = {"AGENTFLOW_OUTPUT_BYTES": str(limits.output_bytes), **call.secrets}
        started = time.perf_counter()
        try:
            created = await asyncio.to_thread(
                api.exec_create, container.id, command, environment=environment
            )
        except APIError as exc:  # removed or stopped under us (`sandbox gc`, a daemon restart)
            raise SandboxError(f"sandbox container {container.short_id} is gone: {exc}") from exc
        exec_id = created["Id"]
        collected = _Collected()
        reader = asyncio.create_task(asyncio.to_thread(_collect, api, exec_id, cap, collected))
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout=limits.timeout_s)
        except TimeoutError:
            await asyncio.to_thread(_kill, container)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, timeout=_KILL_GRACE_S)
            raise SandboxTimeout(
                f"sandboxed call {call.function!r} ran past {limits.timeout_s:g}s and was killed"
            ) from None
        if collected.overflow:
            await asyncio.to_thread(_kill, container)
            raise SandboxResourceError(
                f"sandboxed call {call.function!r} wrote more than {cap:,} bytes of output",
                resource="output",
            )
        info = await asyncio.to_thread(api.exec_inspect, exec_id)
        return _result(call, collected, info.get("ExitCode") or 0, time.perf_counter() - started)

    async def aclose(self) -> None:
        """Remove every container this sandbox started."""
        for task in list(self._refills):
            with contextlib.suppress(Exception):
                await task
        if self._client is not None:
            client = self._client
            await asyncio.to_thread(_remove_owned, client, self.owner, self.instance)
            self._pools.clear()
            client.close()
            self._client = None


@dataclass
class _Collected:
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    overflow: bool = False


def _collect(api: Any, exec_id: str, cap: int, into: _Collected) -> None:
    """Read an exec's output until it ends or passes `cap` bytes (then stop reading)."""
    from docker.utils.socket import STDOUT, frames_iter

    # The raw socket, so it is closed here: docker-py's own stream leaves it open.
    sock = api.exec_start(exec_id, socket=True)
    try:
        for kind, data in frames_iter(sock, tty=False):
            (into.stdout if kind == STDOUT else into.stderr).extend(data)
            if len(into.stdout) + len(into.stderr) > cap:
                into.overflow = True
                return
    finally:
        raw = getattr(sock, "_sock", None)  # SocketIO.close() drops it without closing it
        sock.close()
        if raw is not None:
            raw.close()


def _kill(container: Container) -> None:
    with contextlib.suppress(Exception):
        container.kill()


def _remove_owned(client: docker.DockerClient, owner: str, instance: str) -> None:
    labels = [f"{OWNER_LABEL}={owner}", f"{INSTANCE_LABEL}={instance}"]
    for container in client.containers.list(all=True, filters={"label": labels}):
        with contextlib.suppress(Exception):
            container.remove(force=True)


def _result(
    call: SandboxCall, collected: _Collected, exit_code: int, duration: float
) -> ExecResult:
    import json

    stdout = collected.stdout.decode("utf-8", "replace")
    _head, marker, tail = stdout.rpartition(runner.MARKER)
    if not marker:
        stderr = collected.stderr.decode("utf-8", "replace")
        if exit_code == 137 or "MemoryError" in stderr:
            raise SandboxResourceError(
                f"sandboxed call {call.function!r} was killed for using more memory than allowed",
                resource="memory",
            )
        raise SandboxError(
            f"sandboxed call {call.function!r} died (exit status {exit_code}): {stderr[-500:]!r}"
        )
    envelope = json.loads(tail)
    return ExecResult(
        ok=envelope["ok"],
        value=envelope["value"],
        error=envelope["error"],
        retry=envelope["retry"],
        stdout=envelope["stdout"],
        stderr=envelope["stderr"],
        stdout_truncated=envelope["stdout_truncated"],
        stderr_truncated=envelope["stderr_truncated"],
        exit_code=exit_code,
        duration_s=duration,
    )
