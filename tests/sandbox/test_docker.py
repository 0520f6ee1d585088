"""DockerSandbox on a real Docker engine: hardening, hostile tools, the warm pool, no leaks.

Every hostile call must end contained (a typed `SandboxError`, or a tool failure the
runner reports) and leave the sandbox able to serve the next call. Deadlines are checked
with `time.monotonic()` against the limit, never by sleeping.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

import agentflow
from agentflow.exceptions import (
    SandboxError,
    SandboxResourceError,
    SandboxTimeout,
    SandboxUnavailable,
)
from agentflow.sandbox.base import ExecResult, Limits, SandboxCall
from agentflow.sandbox.docker import (
    INSTANCE_LABEL,
    LABEL,
    OWNER_LABEL,
    DockerSandbox,
    connect,
    owner_id,
    reap,
)

if TYPE_CHECKING:
    import docker

# One event loop for the module, so the module-scoped sandbox's pool serves every test.
pytestmark = pytest.mark.asyncio(loop_scope="module")

TOOLS = """
import errno
import os
import socket
import subprocess
import threading
import time


def greet(name):
    print("greeting", name)
    return {"greeting": f"hello {name}", "host": socket.gethostname()}


WRITES = ("/etc/x", "/opt/tool/x", "/x", "/dev/shm/x", "/tmp/x")


def identity():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return {
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cap_eff": int(fields["CapEff"], 16),
        "no_new_privs": int(fields["NoNewPrivs"]),
        "interfaces": sorted(os.listdir("/sys/class/net")),
        "writes": {path: try_write(path) for path in WRITES},
    }


def try_write(path):
    try:
        with open(path, "w") as file:
            file.write("x")
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"


def connect_out():
    socket.create_connection(("1.1.1.1", 53), timeout=2)


def resolve():
    return socket.getaddrinfo("example.com", 443)


def write(path):
    with open(path, "w") as file:
        file.write("pwned")


def read(path):
    with open(path) as file:
        return file.read()


def listing(path):
    return sorted(os.listdir(path))


def fork_bomb():
    while True:
        os.fork()


def stubborn_fork_bomb():
    while True:  # every process keeps the pids limit full until the deadline
        try:
            os.fork()
        except OSError:
            pass


def count_threads():
    release = threading.Event()
    started = 0
    try:
        while True:
            threading.Thread(target=release.wait).start()
            started += 1
    except RuntimeError:  # "can't start new thread": the pids limit counts threads
        return started
    finally:
        release.set()


def eat_memory():
    chunks = []
    while True:
        chunks.append(b"x" * (16 * 2**20))


def spin():
    while True:
        pass


def nap():
    time.sleep(60)


def chatter(line):
    for _ in range(100_000_000 // len(line.encode())):
        print(line)
    return "done"


def flood():
    chunk = b"x" * 1_000_000
    for _ in range(100):
        os.write(1, chunk)


def flood_then_hang(mb):
    chunk = b"x" * 1_000_000
    for _ in range(mb):
        os.write(2, chunk)
    time.sleep(60)


def big_result(mb):
    return "x" * (mb * 1_000_000)


def environment():
    return dict(os.environ)


def litter():
    with open("/tmp/leftover", "w") as file:
        file.write("state")
    quiet = subprocess.DEVNULL  # a child holding the exec's stdout would delay its end
    child = subprocess.Popen(["sleep", "1000"], stdout=quiet, stderr=quiet)
    return {"host": socket.gethostname(), "child": child.pid}


def survey():
    me = os.getpid()
    pids = (int(pid) for pid in os.listdir("/proc") if pid.isdigit())
    others = sorted(pid for pid in pids if pid not in (1, me))
    return {"host": socket.gethostname(), "tmp": sorted(os.listdir("/tmp")), "others": others}
"""

CHILD = """
import asyncio
import sys
from pathlib import Path

from agentflow.sandbox.base import Limits, SandboxCall
from agentflow.sandbox.docker import DockerSandbox


async def main():
    source = Path(sys.argv[1])
    sandbox = DockerSandbox(pool_size=1)
    await sandbox.warm(source.parent, Limits())
    call = SandboxCall(source=source, function="greet", arguments={"name": "child"})
    assert (await sandbox.run(call, limits=Limits())).ok
    print("ready", sandbox.owner, flush=True)
    await asyncio.Event().wait()  # until SIGKILL: no aclose, no atexit


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = connect()
    yield client
    client.close()


@pytest.fixture(scope="module", autouse=True)
def no_container_left(docker_client: docker.DockerClient) -> Iterator[None]:
    """At the end of the module, no container this test process started remains."""

    def owned() -> set[str]:
        labels = [LABEL, f"{OWNER_LABEL}={owner_id()}"]
        return {
            str(c.id) for c in docker_client.containers.list(all=True, filters={"label": labels})
        }

    before = owned()  # another module's sandboxes, still open, are that module's to close
    yield
    left = owned() - before
    assert not left, f"sandbox containers left behind: {sorted(left)}"


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tools")
    directory.chmod(0o755)  # pytest makes it 0700; the tool runs as uid 10001
    (directory / "tools.py").write_text(textwrap.dedent(TOOLS))
    return directory


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(no_container_left: None) -> AsyncIterator[DockerSandbox]:
    """One sandbox for the module (set up after, so closed before, the leak check)."""
    async with DockerSandbox() as sandbox:
        yield sandbox


def call(tools_dir: Path, function: str, **arguments: Any) -> SandboxCall:
    return SandboxCall(source=tools_dir / "tools.py", function=function, arguments=arguments)


async def greet(sandbox: DockerSandbox, tools_dir: Path, limits: Limits | None = None) -> str:
    """Make a normal call, check it worked, and return the container's hostname."""
    result = await sandbox.run(call(tools_dir, "greet", name="again"), limits=limits or Limits())
    assert result.ok and result.value["greeting"] == "hello again", result
    assert result.stdout == "greeting again\n"
    return result.value["host"]


async def outcome(
    sandbox: DockerSandbox, request: SandboxCall, limits: Limits
) -> ExecResult | SandboxError:
    """The call's result, or the sandbox error it ended with."""
    try:
        return await sandbox.run(request, limits=limits)
    except SandboxError as exc:
        return exc


def tool_failure(result: ExecResult) -> str:
    assert not result.ok and result.error is not None, result
    return result.error


def containers(client: docker.DockerClient, *labels: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": list(labels)})


# -- a normal call, and the hardening it runs under -------------------------------------


async def test_a_call_returns_its_value_and_what_it_printed(
    sandbox: DockerSandbox, tools_dir: Path
) -> None:
    result = await sandbox.run(call(tools_dir, "greet", name="ada"), limits=Limits())
    assert result.ok and result.value["greeting"] == "hello ada"
    assert result.stdout == "greeting ada\n" and not result.stdout_truncated
    assert result.value["host"] != socket.gethostname()


async def test_the_container_is_hardened(sandbox: DockerSandbox, tools_dir: Path) -> None:
    result = await sandbox.run(call(tools_dir, "identity"), limits=Limits())
    assert result.ok, result.error
    facts = result.value
    assert (facts["uid"], facts["gid"]) == (10001, 10001)
    assert facts["cap_eff"] == 0 and facts["no_new_privs"] == 1
    assert facts["interfaces"] == ["lo"]
    writes = facts["writes"]
    assert writes["/tmp/x"] == "ok", "/tmp is the one writable place"
    assert writes["/etc/x"] == writes["/opt/tool/x"] == writes["/x"] == "EROFS"
    assert writes["/dev/shm/x"] != "ok"


# -- hostile tools: each contained, then the sandbox still serves -----------------------


@pytest.mark.parametrize(
    ("function", "error"),
    [("connect_out", "OSError: [Errno 101]"), ("resolve", "gaierror")],
)
async def test_the_network_is_out_of_reach(
    sandbox: DockerSandbox, tools_dir: Path, function: str, error: str
) -> None:
    started = time.monotonic()
    result = await sandbox.run(call(tools_dir, function), limits=Limits())
    assert tool_failure(result).startswith(error)
    assert time.monotonic() - started < 2.0, "refused at once, not left to time out"
    await greet(sandbox, tools_dir)


@pytest.mark.parametrize("path", ["/etc/passwd", "/opt/tool/tools.py", "/usr/lib/evil.py"])
async def test_writing_outside_tmp_fails(
    sandbox: DockerSandbox, tools_dir: Path, path: str
) -> None:
    source = (tools_dir / "tools.py").read_text()
    result = await sandbox.run(call(tools_dir, "write", path=path), limits=Limits())
    assert "Read-only file system" in tool_failure(result)
    assert (tools_dir / "tools.py").read_text() == source, "the host's tool file is untouched"
    await greet(sandbox, tools_dir)


async def test_host_files_are_out_of_reach(
    sandbox: DockerSandbox, tools_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret.txt"  # outside the mounted tool directory
    secret.write_text("host only")
    result = await sandbox.run(call(tools_dir, "read", path=str(secret)), limits=Limits())
    assert tool_failure(result).startswith("FileNotFoundError")
    hostname = await sandbox.run(call(tools_dir, "read", path="/etc/hostname"), limits=Limits())
    assert hostname.ok and hostname.value.strip() != socket.gethostname()
    mounted = await sandbox.run(call(tools_dir, "listing", path="/opt/tool"), limits=Limits())
    assert mounted.value == sorted(os.listdir(tools_dir)), "only the tool's directory is shared"
    await greet(sandbox, tools_dir)


@pytest.mark.parametrize("function", ["fork_bomb", "stubborn_fork_bomb"])
async def test_a_fork_bomb_is_a_pids_limit_error(
    sandbox: DockerSandbox, tools_dir: Path, function: str
) -> None:
    limits = Limits(timeout_s=2)
    await sandbox.warm(tools_dir, limits)
    started = time.monotonic()
    with pytest.raises(SandboxResourceError, match="pids limit") as caught:
        await sandbox.run(call(tools_dir, function), limits=limits)
    assert time.monotonic() - started < limits.timeout_s + 1.0
    assert caught.value.resource == "processes", "named as the pids limit, not a timeout"
    host = await asyncio.create_subprocess_exec("true")
    assert await host.wait() == 0, "the host can still fork"
    await greet(sandbox, tools_dir, limits)


async def test_the_pids_limit_holds(sandbox: DockerSandbox, tools_dir: Path) -> None:
    limits = Limits(pids=32)
    result = await sandbox.run(call(tools_dir, "count_threads"), limits=limits)
    assert result.ok, result.error
    # pid 1 and the runner's main thread hold two of the 32.
    assert limits.pids - 4 <= result.value < limits.pids
    await greet(sandbox, tools_dir, limits)


async def test_a_memory_bomb_is_contained(sandbox: DockerSandbox, tools_dir: Path) -> None:
    limits = Limits(memory_mb=128)
    ended = await outcome(sandbox, call(tools_dir, "eat_memory"), limits)
    if isinstance(ended, ExecResult):  # an allocation failed first and the runner said so
        assert tool_failure(ended).startswith("MemoryError")
    else:  # the kernel's OOM killer ended the runner
        assert isinstance(ended, SandboxResourceError) and ended.resource == "memory", ended
    await greet(sandbox, tools_dir, limits)


@pytest.mark.parametrize("function", ["spin", "nap"])
async def test_a_call_past_its_deadline_is_killed_within_a_second(
    sandbox: DockerSandbox, tools_dir: Path, function: str
) -> None:
    limits = Limits(timeout_s=1)
    await sandbox.warm(tools_dir, limits)  # the deadline is the call's, not a cold start's
    started = time.monotonic()
    with pytest.raises(SandboxTimeout):
        await sandbox.run(call(tools_dir, function), limits=limits)
    assert time.monotonic() - started < limits.timeout_s + 1.0
    await greet(sandbox, tools_dir, limits)


@pytest.mark.parametrize("line", ["x" * 1000, "\U0001f600" * 250], ids=["ascii", "emoji"])
async def test_printed_output_is_cut_at_the_limit(
    sandbox: DockerSandbox, tools_dir: Path, line: str
) -> None:
    limits = Limits()
    result = await sandbox.run(call(tools_dir, "chatter", line=line), limits=limits)
    assert result.ok and result.value == "done"
    assert result.stdout_truncated and len(result.stdout) == limits.output_bytes
    await greet(sandbox, tools_dir, limits)


async def test_output_written_past_the_capture_ends_the_call_at_once(
    sandbox: DockerSandbox, tools_dir: Path
) -> None:
    limits = Limits(timeout_s=2)
    await sandbox.warm(tools_dir, limits)
    started = time.monotonic()
    with pytest.raises(SandboxResourceError) as caught:
        await sandbox.run(call(tools_dir, "flood"), limits=limits)
    assert time.monotonic() - started < limits.timeout_s + 1.0, "no wait on killing it"
    assert caught.value.resource == "output"
    await greet(sandbox, tools_dir, limits)


async def test_a_deadline_holds_after_a_flood_of_output(
    sandbox: DockerSandbox, tools_dir: Path
) -> None:
    limits = Limits(timeout_s=2)
    await sandbox.warm(tools_dir, limits)
    started = time.monotonic()
    with pytest.raises(SandboxTimeout):  # 20 MB to stderr: under the cap, then it hangs
        await sandbox.run(call(tools_dir, "flood_then_hang", mb=20), limits=limits)
    assert time.monotonic() - started < limits.timeout_s + 1.0
    await greet(sandbox, tools_dir, limits)


async def test_a_result_over_the_cap_is_output_too_large_not_a_timeout(
    sandbox: DockerSandbox, tools_dir: Path
) -> None:
    # The cap on output and result is 24 MB with the default output_bytes. Reading up to it
    # takes a fraction of a second when linear (quadratic reading took 5 s and more).
    limits = Limits(timeout_s=3)
    await sandbox.warm(tools_dir, limits)
    started = time.monotonic()
    with pytest.raises(SandboxResourceError) as caught:
        await sandbox.run(call(tools_dir, "big_result", mb=30), limits=limits)
    assert caught.value.resource == "output"
    assert time.monotonic() - started < limits.timeout_s
    ten = await sandbox.run(call(tools_dir, "big_result", mb=10), limits=limits)
    assert ten.ok and len(ten.value) == 10_000_000


# -- secrets and state ------------------------------------------------------------------


async def test_only_declared_secrets_reach_the_tool(
    sandbox: DockerSandbox, tools_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTFLOW_TEST_HOST_SECRET", "host only")
    declared = SandboxCall(
        source=tools_dir / "tools.py",
        function="environment",
        arguments={},
        secrets={"API_TOKEN": "s3cret"},
    )
    with_secret = await sandbox.run(declared, limits=Limits())
    without = await sandbox.run(call(tools_dir, "environment"), limits=Limits())
    assert with_secret.value["API_TOKEN"] == "s3cret"
    assert set(with_secret.value) == set(without.value) | {"API_TOKEN"}
    assert "AGENTFLOW_TEST_HOST_SECRET" not in with_secret.value
    assert "host only" not in with_secret.value.values()


async def test_a_reused_container_starts_clean(tools_dir: Path) -> None:
    limits = Limits()
    async with DockerSandbox(pool_size=1) as sandbox:
        await sandbox.warm(tools_dir, limits)
        littered = await sandbox.run(call(tools_dir, "litter"), limits=limits)
        assert littered.ok, littered.error
        survey = await sandbox.run(call(tools_dir, "survey"), limits=limits)
    assert survey.value["host"] == littered.value["host"], "the same container, reused"
    assert survey.value["tmp"] == [], "/tmp was wiped"
    assert survey.value["others"] == [], "the child left running was killed and reaped"


# -- the pool ---------------------------------------------------------------------------


async def test_sequential_calls_reuse_the_warm_container(tools_dir: Path) -> None:
    async with DockerSandbox(pool_size=1) as sandbox:
        await sandbox.warm(tools_dir, Limits())
        hosts = {await greet(sandbox, tools_dir) for _ in range(6)}
    assert len(hosts) == 1, "no container started in the background to push the warm one out"


async def test_a_container_is_replaced_after_max_uses(tools_dir: Path) -> None:
    async with DockerSandbox(pool_size=1, max_uses=2) as sandbox:
        hosts = [await greet(sandbox, tools_dir) for _ in range(3)]
    assert hosts[0] == hosts[1] != hosts[2]


async def test_a_container_that_timed_out_is_replaced(
    tools_dir: Path, docker_client: docker.DockerClient
) -> None:
    limits = Limits(timeout_s=1)
    async with DockerSandbox(pool_size=1) as sandbox:
        before = await greet(sandbox, tools_dir, limits)
        with pytest.raises(SandboxTimeout):
            await sandbox.run(call(tools_dir, "nap"), limits=limits)
        after = await greet(sandbox, tools_dir, limits)
    assert after != before
    assert docker_client.containers.list(all=True, filters={"id": before}) == []


async def test_twenty_concurrent_calls_all_succeed(sandbox: DockerSandbox, tools_dir: Path) -> None:
    names = [f"caller-{i}" for i in range(20)]
    results = await asyncio.gather(
        *(sandbox.run(call(tools_dir, "greet", name=name), limits=Limits()) for name in names)
    )
    assert [r.value["greeting"] for r in results] == [f"hello {name}" for name in names]
    assert [r.stdout for r in results] == [f"greeting {name}\n" for name in names]


# -- no leaks ---------------------------------------------------------------------------


async def test_aclose_removes_that_sandboxes_containers_and_no_others(
    sandbox: DockerSandbox, tools_dir: Path, docker_client: docker.DockerClient
) -> None:
    await sandbox.warm(tools_dir, Limits())
    other = DockerSandbox(pool_size=2)
    await other.warm(tools_dir, Limits())
    await asyncio.gather(*(greet(other, tools_dir) for _ in range(3)))  # one more than the pool
    labels = (f"{OWNER_LABEL}={other.owner}", f"{INSTANCE_LABEL}={other.instance}")
    assert containers(docker_client, *labels)
    await other.aclose()
    assert containers(docker_client, *labels) == []
    await greet(sandbox, tools_dir)  # same process, same owner: its warm pool is intact


async def test_containers_of_a_killed_process_are_reaped(
    tools_dir: Path, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tools_dir / "tools.py"),
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(agentflow.__file__).parents[1])},
    )
    try:
        assert child.stdout is not None
        line = (await asyncio.wait_for(child.stdout.readline(), timeout=60)).decode()
    finally:
        child.send_signal(signal.SIGKILL)  # no aclose, no atexit: as from the OOM killer
        await child.wait()  # reaped, so its pid no longer names a live owner
    assert line.startswith("ready "), line
    owner = f"{OWNER_LABEL}={line.split()[1]}"
    assert containers(docker_client, owner), "SIGKILL gave the child no chance to clean up"
    reap(docker_client)
    assert containers(docker_client, owner) == []


async def test_a_missing_image_is_unavailable(tools_dir: Path) -> None:
    sandbox = DockerSandbox(image="agentflow-sandbox:nope")
    with pytest.raises(SandboxUnavailable, match="agentflow-sandbox:nope"):
        await sandbox.run(call(tools_dir, "greet", name="x"), limits=Limits())
    await sandbox.aclose()


async def test_a_tool_file_the_sandbox_user_cannot_read_is_a_clear_error(
    sandbox: DockerSandbox, tmp_path: Path
) -> None:
    private = tmp_path / "private"  # pytest's folders are 0700: uid 10001 cannot list them
    private.mkdir(mode=0o700)
    (private / "tools.py").write_text("def f():\n    return 1\n")
    with pytest.raises(SandboxError, match=r"chmod o\+rx"):
        await sandbox.run(call(private, "f"), limits=Limits())


NET_TOOLS = """
import os, socket
from urllib.parse import urlsplit

def tunnel(host, port):
    proxy = urlsplit(os.environ["HTTPS_PROXY"])
    s = socket.create_connection((proxy.hostname, proxy.port), timeout=3)
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\\r\\n\\r\\n".encode())
    status = s.recv(1024).split(b"\\r\\n")[0].decode()
    if " 200 " not in status:
        return status
    s.sendall(b"ping\\n")
    return s.recv(100).decode().strip()

def direct(host, port):
    try:
        socket.create_connection((host, port), timeout=1)
        return "connected"
    except OSError:
        return "blocked"

def interfaces():
    return sorted(os.listdir("/sys/class/net"))
"""


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A host service: answers `echo LINE` to the first line it reads."""
    writer.write(b"echo " + await reader.readline())
    await writer.drain()
    writer.close()


async def net(
    sandbox: DockerSandbox, tools_dir: Path, limits: Limits, function: str, *args: Any
) -> Any:
    """Run one of NET_TOOLS; return its value."""
    (tools_dir / "net.py").write_text(NET_TOOLS)
    arguments: dict[str, Any] = dict(zip(("host", "port"), args, strict=False))
    request = SandboxCall(source=tools_dir / "net.py", function=function, arguments=arguments)
    result = await sandbox.run(request, limits=limits)
    assert result.ok, result.error
    return result.value


async def test_a_network_allowlist_lets_through_only_its_hosts_and_ports(
    sandbox: DockerSandbox, tools_dir: Path
) -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    listed = Limits(network=(f"127.0.0.1:{port}",))
    bare = Limits(network=("127.0.0.1",))  # a bare host: port 443 alone
    try:
        assert await net(sandbox, tools_dir, listed, "tunnel", "127.0.0.1", port) == "echo ping"
        refused = "HTTP/1.1 403 Forbidden"
        assert await net(sandbox, tools_dir, listed, "tunnel", "127.0.0.2", port) == refused
        assert await net(sandbox, tools_dir, listed, "tunnel", "127.0.0.1", port + 1) == refused
        assert await net(sandbox, tools_dir, bare, "tunnel", "127.0.0.1", port) == refused
        assert await net(sandbox, tools_dir, bare, "tunnel", "127.0.0.1", 22) == refused
        assert await net(sandbox, tools_dir, listed, "direct", "1.1.1.1", 53) == "blocked"
    finally:
        server.close()
    assert await greet(sandbox, tools_dir)  # the no-network pool is untouched


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on Docker's default bridge. A daemon that chose the bridge's
    subnet itself may leave `Gateway` out of the network's IPAM config (Debian's 20.10
    does); the gateway is then the subnet's first address, as Docker assigns it."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    return config.get("Gateway") or str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def host_addresses(client: docker.DockerClient) -> list[str]:
    """This host's IPv4 addresses a container might try: Docker's default gateway, the rest."""
    gateway = bridge_gateway(client)
    found = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False)
    return sorted({gateway, *(a for a in found.stdout.split() if ":" not in a)})  # IPv4


def wait_until_reachable(host: str, port: int) -> None:
    """Readiness: the target answers from the host, so "blocked" in a container means it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{host}:{port} never answered"


async def test_an_allowlisted_container_reaches_only_the_proxy(
    sandbox: DockerSandbox, tools_dir: Path, docker_client: docker.DockerClient
) -> None:
    """Host services on 0.0.0.0 and on the gateway, and other containers, are out of reach."""
    addresses = host_addresses(docker_client)
    gateway = bridge_gateway(docker_client)
    anywhere = await asyncio.start_server(echo, "0.0.0.0", 0)
    port = anywhere.sockets[0].getsockname()[1]
    on_gateway = await asyncio.start_server(echo, gateway, 0)
    gateway_port = on_gateway.sockets[0].getsockname()[1]
    neighbour = docker_client.containers.run(  # a container with a service, on the bridge
        sandbox.image,
        ["python3", "-m", "http.server", "8000"],
        detach=True,
        labels={LABEL: "1", OWNER_LABEL: owner_id()},
    )
    limits = Limits(network=("example.com",))
    try:
        neighbour.reload()
        neighbour_ip = neighbour.attrs["NetworkSettings"]["IPAddress"]
        targets = [(address, port) for address in addresses]
        targets += [(gateway, gateway_port), (neighbour_ip, 8000)]
        for host, target_port in targets:
            await asyncio.to_thread(wait_until_reachable, host, target_port)
        assert await net(sandbox, tools_dir, limits, "interfaces") == ["lo"]
        for host, target_port in [*targets, ("host.docker.internal", port)]:
            assert await net(sandbox, tools_dir, limits, "direct", host, target_port) == "blocked"
            tunnelled = await net(sandbox, tools_dir, limits, "tunnel", host, target_port)
            assert tunnelled == "HTTP/1.1 403 Forbidden", (host, target_port)
    finally:
        anywhere.close()
        on_gateway.close()
        neighbour.remove(force=True)


async def test_close_leaves_no_network_or_proxy_behind(
    tools_dir: Path, docker_client: docker.DockerClient
) -> None:
    def networks() -> set[str]:
        return {str(n.id) for n in docker_client.networks.list()}

    before = networks()
    limits = Limits(network=("example.com", "example.org:8443"))
    async with DockerSandbox(pool_size=1) as sandbox:
        assert await net(sandbox, tools_dir, limits, "interfaces") == ["lo"]
        folders = [pool.proxy.folder for pool in sandbox._pools.values() if pool.proxy]
        assert folders and all(folder and folder.exists() for folder in folders)
    assert networks() == before, "no Docker network outlives the sandbox"
    assert not any(folder and folder.exists() for folder in folders), "proxy sockets removed"


async def test_a_warm_container_that_died_is_replaced_by_the_health_check(
    tools_dir: Path, docker_client: docker.DockerClient
) -> None:
    async with DockerSandbox(pool_size=1) as sandbox:
        first = await greet(sandbox, tools_dir)
        docker_client.containers.get(first).kill()  # dies while idle in the pool
        second = await greet(sandbox, tools_dir)
    assert second != first
