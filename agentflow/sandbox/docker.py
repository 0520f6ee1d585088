"""Docker sandboxes: each tool call runs in a locked-down container from a warm pool.

Every container is hardened the same way: no network interface but loopback
(`network_mode="none"`, always; a tool whose limits allowlist hosts reaches them through
its pool's egress proxy, whose Unix socket is mounted into the container: see
`egress.py`), a read-only root filesystem with a size-capped tmpfs at /tmp as the only
writable place, all capabilities dropped, `no-new-privileges`, a non-root user (uid 10001), a pids
limit, a memory limit with swap equal to memory, and a CPU quota. The tool's source
directory is mounted read-only.

Each container's pid 1 is the runner in serve mode (`runner.py --serve`), attached to
over the Docker API: a call is one JSON request line on its stdin and one envelope line
back on its stdout. The runner resets the container (kills what a previous call left
running, empties /tmp), then forks a child with only the call's environment to run the
function, so a warm call costs a fork, not an exec and a Python start-up.

Containers are kept warm in a pool per (source directory, limits), at most
`max_containers` busy at once (more calls wait for one to come back); a container goes
back after the call. It is discarded instead after `max_uses` calls,
after any failure or timeout, and when a health check fails; an empty pool starts one
on the spot (the cold path).

Deadlines hold whatever the call does: a call ends within a second of `timeout_s`
(`SandboxTimeout`; `SandboxResourceError` when it had filled its pids limit), or as soon
as its output passes the cap (`SandboxResourceError`, resource `output`). The container
of a failed call is abandoned at once (its stream shut, its removal left to a background
task that `aclose` waits for), never killed while the caller waits: a kill can block for
as long as the daemon's API timeout. Output is read in linear time: each frame is
appended once and only the new bytes are searched for the end of the envelope.

A call whose fork the pids limit refused, and which then failed, is a
`SandboxResourceError` (resource `processes`), not a tool failure or a timeout.

No leaks: every container carries the labels `agentflow.sandbox=1`,
`agentflow.owner=<host>:<pid>:<start>` and `agentflow.instance=<id>` (one per
`DockerSandbox`). `reap()` removes containers whose owner process is gone; a
`DockerSandbox` reaps at start-up and removes its own instance's at `aclose()`, and
`agentflow sandbox gc` does it by hand. Another process may be reaping or closing at the
same time: a container (or network) that is already gone, or being removed, counts as
removed, never as an error. A sandbox creates no Docker network (networks labelled by an
older version are removed by `reap(everything=True)`); `aclose()` stops its egress
proxies and removes their socket folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow._processes import owner_alive, owner_id
from agentflow.exceptions import (
    SandboxError,
    SandboxResourceError,
    SandboxTimeout,
    SandboxUnavailable,
)
from agentflow.sandbox import runner
from agentflow.sandbox.base import ExecResult, Limits, Sandbox, SandboxCall
from agentflow.sandbox.egress import SOCKET_NAME, EgressProxy
from agentflow.sandbox.stream import Collected, answer_line, close_socket, collect

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
EGRESS_DIR = "/run/agentflow-egress"
"""Where a pool's egress proxy socket folder is mounted in its containers."""
_ENVELOPE_SLACK = 64 * 1024
_JSON_BYTES_PER_CHAR = 12
"""The runner cuts captures in characters, and `json.dumps` writes one outside the BMP as
two `\\uXXXX` escapes: a capture of N characters can take 12N bytes of the envelope."""
_STATS_TIMEOUT_S = 0.5
"""How long a timed-out call waits to learn whether its pids limit was full."""


def image_tag() -> str:
    """The sandbox image for this version of the runner: rebuilt when the runner changes."""
    digest = hashlib.sha256(Path(runner.__file__).read_bytes()).hexdigest()[:12]
    return f"agentflow-sandbox:{digest}"


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

    Safe to run while other processes reap or start sandboxes: one listing, no per-container
    inspect, and a container someone else removed first counts as removed.

    Returns the removed containers' names.
    """
    removed = []
    for summary in client.api.containers(all=True, filters={"label": LABEL}):
        owner = (summary.get("Labels") or {}).get(OWNER_LABEL, "")
        if everything or not owner_alive(owner):
            _remove(client, summary["Id"])
            removed.append(summary["Names"][0].lstrip("/") if summary.get("Names") else "")
    if everything:  # networks labelled by older versions, where no container uses them
        for network in client.api.networks(filters={"label": LABEL}):
            with contextlib.suppress(Exception):  # in use by a live container: leave it
                client.api.remove_network(network["Id"])
    return removed


def _remove(client: docker.DockerClient, container_id: str) -> None:
    """Force-remove a container; one already gone or being removed is not an error."""
    from docker.errors import APIError, NotFound

    try:
        client.api.remove_container(container_id, force=True)
    except NotFound:
        pass
    except APIError as exc:  # 409: another process's removal of it is in progress
        if exc.status_code not in (404, 409):
            raise


@dataclass(kw_only=True)
class _Pool:
    """Warm containers for one (source directory, limits) pair."""

    source_dir: Path
    limits: Limits
    gate: asyncio.Semaphore
    """Bounds the calls running at once (`max_containers`); more wait for a container."""
    idle: list[Container] = field(default_factory=list)
    uses: dict[str | None, int] = field(default_factory=dict)
    """Calls served, by container id."""
    proxy: EgressProxy | None = None
    """The pool's egress proxy, when its limits allowlist hosts."""
    proxy_started: asyncio.Lock = field(default_factory=asyncio.Lock)


class DockerSandbox(Sandbox):
    """Run tool calls in hardened containers, kept warm in pools.

    Args:
        image: The sandbox image; `agentflow sandbox build` builds the default one.
        pool_size: Containers kept warm per (source directory, limits).
        max_containers: Calls running at once per pool; more wait for a container to come
            back, which is faster than starting one (a warm call takes milliseconds).
        max_uses: Calls a container serves before it is replaced.
        reap_orphans: Remove containers left by dead agentflow processes on first use.
    """

    name = "docker"

    def __init__(
        self,
        *,
        image: str | None = None,
        pool_size: int = 2,
        max_containers: int = 4,
        max_uses: int = 100,
        reap_orphans: bool = True,
    ) -> None:
        self.image = image or image_tag()
        self.pool_size = pool_size
        self.max_containers = max(max_containers, pool_size, 1)
        self.max_uses = max_uses
        self.owner = owner_id()
        self.instance = uuid.uuid4().hex[:12]
        """Labels this sandbox's containers, so `aclose` leaves other sandboxes' alone."""
        self._reap_orphans = reap_orphans
        self._client: docker.DockerClient | None = None
        self._pools: dict[tuple[Path, Limits], _Pool] = {}
        self._lock = threading.Lock()
        self._background: set[asyncio.Task[None]] = set()
        """Refills and removals of abandoned containers: `aclose` waits for them."""
        self._sockets: dict[str | None, Any] = {}
        """Each warm container's attached stdin/stdout: requests go in, envelopes come out."""

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
        volumes = {str(pool.source_dir): {"bind": TOOL_DIR, "mode": "ro"}}
        if pool.proxy is not None and pool.proxy.folder is not None:
            # The only way out: the pool's proxy socket (connecting to it needs no network).
            volumes[str(pool.proxy.folder)] = {"bind": EGRESS_DIR, "mode": "ro"}
        container = self.client().containers.run(
            self.image,
            ["python3", "-I", RUNNER, "--serve"],
            detach=True,
            stdin_open=True,
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
            volumes=volumes,
            init=False,
        )
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        api = self.client().api
        self._sockets[container.id] = api.attach_socket(container.id or "", params=params)
        pool.uses[container.id] = 0
        return container

    def _discard(self, pool: _Pool, container: Container) -> None:
        pool.uses.pop(container.id, None)
        close_socket(self._sockets.pop(container.id, None))
        with contextlib.suppress(Exception):  # the daemon is busy or gone: `reap` has it
            _remove(self.client(), container.id or "")

    def _take(self, pool: _Pool) -> tuple[Container, bool]:
        """A container for one call, and whether it came warm from the pool."""
        while True:
            with self._lock:
                if not pool.idle:
                    break
                container = pool.idle.pop()
            if self._healthy(container):
                return container, True
            self._discard(pool, container)  # died while idle (OOM, `docker kill`, gc)
        return self._start(pool), False  # the cold path

    def _healthy(self, container: Container) -> bool:
        """Whether an idle container still runs (one cheap inspect)."""
        try:
            return self.client().api.inspect_container(container.id or "")["State"]["Running"]
        except Exception:
            return False

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
                gate = asyncio.Semaphore(self.max_containers)
                pool = self._pools[key] = _Pool(source_dir=source_dir, limits=limits, gate=gate)
            return pool

    async def _ready(self, pool: _Pool) -> None:
        """Start the pool's egress proxy before its first container, if it has a network."""
        async with pool.proxy_started:
            if pool.limits.network and pool.proxy is None:
                proxy = EgressProxy(pool.limits.network)
                await proxy.start()
                pool.proxy = proxy

    async def warm(self, source_dir: Path, limits: Limits) -> None:
        """Start the pool for a source directory and limits ahead of the first call."""
        resolved = await asyncio.to_thread(source_dir.resolve)
        pool = self._pool(resolved, limits)
        await self._ready(pool)
        await asyncio.to_thread(self._fill, pool)

    # -- calls --------------------------------------------------------------------

    async def run(self, call: SandboxCall, *, limits: Limits) -> ExecResult:
        source = call.source.resolve()
        _check_readable(source)
        pool = self._pool(source.parent, limits)
        await self._ready(pool)
        async with pool.gate:
            return await self._run(pool, call, source, limits)

    async def _run(
        self, pool: _Pool, call: SandboxCall, source: Path, limits: Limits
    ) -> ExecResult:
        container, warm = await asyncio.to_thread(self._take, pool)
        healthy = False
        try:
            result = await self._exec(container, call, source, limits, pool.proxy)
            healthy = result.ok or result.retry
            return replace(result, container_id=container.short_id, pool_hit=warm)
        finally:
            if healthy:
                pool.uses[container.id] = pool.uses.get(container.id, 0) + 1
                await asyncio.to_thread(self._give_back, pool, container)
            else:
                # Shut its stream now (a reader stuck on it returns), remove it later: the
                # caller's deadline must not wait on a daemon busy killing it.
                pool.uses.pop(container.id, None)
                close_socket(self._sockets.pop(container.id, None))
                self._in_background(self._discard, pool, container)
            # Only a discarded container leaves a gap. A refill after every call would race
            # the next call for the idle container and then push it out of a full pool.
            if container.id not in pool.uses:
                self._in_background(self._fill, pool)

    def _in_background(self, work: Any, *args: Any) -> None:
        """Run `work(*args)` in a thread without waiting; `aclose` waits for it.

        A failure is dropped: a refill that could not start a container leaves the pool
        to start one on the next call's cold path, and a removal that failed leaves the
        container to `reap`.
        """
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(work, *args))
        self._background.add(task)
        task.add_done_callback(self._finished_in_background)

    def _finished_in_background(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as forgotten

    async def _exec(
        self,
        container: Container,
        call: SandboxCall,
        source: Path,
        limits: Limits,
        proxy: EgressProxy | None,
    ) -> ExecResult:
        import json

        sock = self._sockets.get(container.id)
        if sock is None:
            raise SandboxError(f"sandbox container {container.short_id} has no attached runner")
        cap = limits.output_bytes * 2 * _JSON_BYTES_PER_CHAR + _ENVELOPE_SLACK
        nonce = uuid.uuid4().hex
        request = {
            "nonce": nonce,
            "source": f"{TOOL_DIR}/{source.name}",
            "function": call.function,
            "arguments": call.arguments,
            "env": {**call.secrets, **_proxy_env(proxy)},
            "output_bytes": limits.output_bytes,
            "egress": f"{EGRESS_DIR}/{SOCKET_NAME}" if proxy is not None else None,
        }
        started = time.perf_counter()
        try:
            sock._sock.sendall(json.dumps(request).encode() + b"\n")
        except OSError as exc:  # the container died or was removed under us
            raise SandboxError(f"sandbox container {container.short_id} is gone: {exc}") from exc
        collected = Collected(head=(runner.MARKER + nonce).encode())
        if call.host is not None:
            loop, host = asyncio.get_running_loop(), call.host
            collected.asks = (runner.CALL + nonce).encode()
            collected.answer = lambda request: answer_line(host, request, loop)
        reader = asyncio.create_task(asyncio.to_thread(collect, sock, cap, collected))
        try:
            await asyncio.wait_for(asyncio.shield(reader), timeout=limits.timeout_s)
        except TimeoutError:
            # The container is abandoned by `_run` (stream shut, removed in the background).
            if await self._pids_full(container, limits):
                raise _pids_error(call, limits) from None
            raise SandboxTimeout(
                f"sandboxed call {call.function!r} ran past {limits.timeout_s:g}s and was killed"
            ) from None
        if collected.overflow:
            raise SandboxResourceError(
                f"sandboxed call {call.function!r} wrote more than {cap:,} bytes of output "
                "and result, and was killed",
                resource="output",
            )
        return _result(call, collected, limits, time.perf_counter() - started)

    async def _pids_full(self, container: Container, limits: Limits) -> bool:
        """Whether a timed-out container's processes fill its pids limit (a fork bomb).
        One stats call, given at most `_STATS_TIMEOUT_S`; unknown counts as no."""
        api = self.client().api
        stats = asyncio.to_thread(api.stats, container.id or "", stream=False, one_shot=True)
        try:
            current = (await asyncio.wait_for(stats, _STATS_TIMEOUT_S))["pids_stats"]["current"]
        except Exception:
            return False
        return current >= limits.pids - 1

    async def aclose(self) -> None:
        """Remove every container this sandbox started and stop its egress proxies."""
        while self._background:
            with contextlib.suppress(Exception):
                await self._background.pop()
        if self._client is not None:
            client = self._client
            await asyncio.to_thread(_remove_owned, client, self.owner, self.instance)
            while self._sockets:
                close_socket(self._sockets.popitem()[1])
            client.close()
            self._client = None
        for pool in self._pools.values():
            if pool.proxy is not None:
                await pool.proxy.aclose()
        self._pools.clear()


def _proxy_env(proxy: EgressProxy | None) -> dict[str, str]:
    if proxy is None:
        return {}
    names = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
    return dict.fromkeys(names, f"http://127.0.0.1:{runner.EGRESS_PORT}")


def _check_readable(source: Path) -> None:
    """The container's user (uid 10001) must be able to read the mounted tool file."""
    import stat

    folder, file = source.parent.stat().st_mode, source.stat().st_mode
    if not (folder & stat.S_IROTH and folder & stat.S_IXOTH and file & stat.S_IROTH):
        raise SandboxError(
            f"{source} must be readable by the sandbox's user (uid 10001), and its folder "
            f"listable: chmod o+rx {source.parent} && chmod o+r {source}"
        )


def _remove_owned(client: docker.DockerClient, owner: str, instance: str) -> None:
    labels = [f"{OWNER_LABEL}={owner}", f"{INSTANCE_LABEL}={instance}"]
    for summary in client.api.containers(all=True, filters={"label": labels}):
        with contextlib.suppress(Exception):  # the daemon is busy or gone: `reap` has it
            _remove(client, summary["Id"])


def _pids_error(call: SandboxCall, limits: Limits) -> SandboxResourceError:
    return SandboxResourceError(
        f"sandboxed call {call.function!r} ran into its pids limit ({limits.pids} processes "
        "and threads at once) and was stopped",
        resource="processes",
    )


def _result(call: SandboxCall, collected: Collected, limits: Limits, duration: float) -> ExecResult:
    import json

    if collected.end < 0:
        stderr = collected.stderr[-2000:].decode("utf-8", "replace")
        raise SandboxError(
            f"sandboxed call {call.function!r} ended without a result: {stderr[-500:]!r}"
        )
    envelope = json.loads(collected.stdout[collected.at + len(collected.head) : collected.end])
    if "died" in envelope:
        if envelope["died"] == 9:  # SIGKILL from the kernel: the cgroup's memory limit
            raise SandboxResourceError(
                f"sandboxed call {call.function!r} was killed for using more memory than allowed",
                resource="memory",
            )
        raise SandboxError(f"sandboxed call {call.function!r} died of signal {envelope['died']}")
    result = ExecResult.from_envelope(envelope, duration_s=duration)
    if not result.ok and envelope.get("pids_exhausted"):  # it failed for want of a process
        raise _pids_error(call, limits)
    return result
