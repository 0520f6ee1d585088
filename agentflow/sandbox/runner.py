"""Run one tool function inside a sandbox and report the outcome as one JSON envelope.

    python3 runner.py SOURCE_FILE FUNCTION ARGUMENTS_JSON    (one call: the process sandbox)
    python3 runner.py --serve          (a warm Docker container's pid 1; see `serve`)

Standard library only: it runs in the sandbox image's bare Python. The tool's module is
imported with a minimal `agentflow` stand-in (`tool` as a pass-through decorator,
`ToolRetry`, `RunContext`), so a module written for agentflow imports unchanged. What
the function prints is captured, cut at `AGENTFLOW_OUTPUT_BYTES`, and returned in the
envelope, which follows `MARKER` as the last thing written to the real stdout.

In a Docker container the runner also reports whether the call ran into the container's
pids limit (`pids_exhausted`, from the cgroup's `pids.events`), and, for a call with a
network allowlist, relays `127.0.0.1:EGRESS_PORT` to the egress proxy's Unix socket: the
container has no network interface but loopback, so that relay is its only way out.

As a warm container's pid 1 it keeps the calls it serves apart, though they run as its
own user (see `shield`, `reset` and `relay`): they cannot open its /proc files, ptrace it
or stop it with a signal; each starts with nothing an earlier one left (processes,
files, System V IPC); and each writes into pipes of its own, passed on only up to its
envelope.
"""

import asyncio
import contextlib
import ctypes
import importlib.util
import inspect
import io
import json
import os
import select
import shutil
import signal
import socket
import sys
import threading
import time
import types

MARKER = "\x1eagentflow-result\x1e"
CALL = "\x1eagentflow-host-call\x1e"
"""Starts a line in which a call asks the host for a capability (then its nonce, JSON)."""
EGRESS_PORT = 3128
"""Where a container's tools find the egress proxy (`HTTPS_PROXY=http://127.0.0.1:3128`)."""
PIDS_EVENTS = ("/sys/fs/cgroup/pids/pids.events", "/sys/fs/cgroup/pids.events")
"""The container's cgroup `pids.events` (cgroup v1, v2): `max N` counts refused forks."""
SCRATCH = ("/tmp", "/dev/shm", "/dev/mqueue")
"""Where a tool can write (the root filesystem is read-only): emptied before each call."""
SHIELDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
"""Signals a tool could send the runner to stop it: ignored by the runner, as pid 1."""
PR_SET_DUMPABLE = 4
PIPE_MAX = 1 << 20
"""The most a pipe holds (Linux's default `pipe-max-size`)."""
IPC_RMID = 0


class CappedText(io.TextIOBase):
    """A text sink that keeps the first `limit` characters and notes what it dropped."""

    def __init__(self, limit):
        self.limit = limit
        self.parts = []
        self.size = 0
        self.truncated = False

    def writable(self):
        return True

    def write(self, text):
        room = self.limit - self.size
        if room > 0:
            kept = text[:room]
            self.parts.append(kept)
            self.size += len(kept)
        if len(text) > max(room, 0):
            self.truncated = True
        return len(text)

    def getvalue(self):
        return "".join(self.parts)


class ToolRetry(Exception):
    """Raised by a tool to have its message sent back to the model."""


def tool(function=None, **options):
    """The stand-in for `agentflow.tool`: the function itself, unchanged."""
    if function is None:
        return lambda f: f
    return function


class HostError(Exception):
    """A host capability refused the call or failed (its message says why)."""


class Host:
    """The stand-in's `agentflow.host`: `host.NAME(**arguments)` calls the capability NAME
    that the tool declares (`@tool(host=[...])`) on the host, and returns its JSON value.

    A request goes out on the call's stdout as a line `CALL + nonce + JSON`; the runner
    passes the host's answer, a JSON line, into the pipe `replies`.
    """

    def __init__(self):
        self._channel = None  # (this call's request head, the fd answers come from)

    def _serve(self, head, replies):
        """Serve the call this process runs: its requests start with `head`."""
        self._channel = (head, replies)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda **arguments: self._ask(name, arguments)

    def _ask(self, name, arguments):
        if self._channel is None:
            raise HostError("host capabilities are there for a call in the Docker sandbox only")
        head, replies = self._channel
        request = json.dumps({"name": name, "arguments": arguments})
        write_all(1, head + request.encode() + b"\n")
        answer = json.loads(read_line(replies))
        if "retry" in answer:
            raise ToolRetry(answer["retry"])
        if "error" in answer:
            raise HostError(answer["error"])
        return answer["value"]


HOST = Host()


def read_line(fd):
    """One line from `fd`, read a byte at a time (nothing of the next line is taken)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise HostError("the host's answer was cut short")
        line += byte
    return bytes(line)


def install_stand_in():
    module = types.ModuleType("agentflow")
    context = type("RunContext", (), {"__class_getitem__": classmethod(lambda c, _: c)})
    vars(module).update(
        tool=tool, ToolRetry=ToolRetry, RunContext=context, host=HOST, HostError=HostError
    )
    sys.modules["agentflow"] = module


def call(source, name, arguments):
    spec = importlib.util.spec_from_file_location("agentflow_sandboxed_tool", source)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {source}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, name)
    function = getattr(function, "function", function)
    result = function(**arguments)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    return result


def reset():
    """Kill what a previous call left running and empty /tmp (Docker containers only)."""
    if not os.path.exists("/.dockerenv"):
        sys.exit("runner.py: resetting is only for Docker sandbox containers")
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)  # every process we may signal but pid 1 and ourselves
    # kill() returns before they are gone, and pid 1 reaps them after that: wait (a little)
    # until /proc shows none, so the tool does not see them and they write nothing more.
    me, deadline = str(os.getpid()), time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if me == "1":  # as the warm container's pid 1, reap what was killed
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
        if not [pid for pid in os.listdir("/proc") if pid.isdigit() and pid not in ("1", me)]:
            break
        time.sleep(0.001)
    for folder in SCRATCH:
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
    remove_ipc()


def remove_ipc():
    """Remove the System V shared memory, message queues and semaphores earlier calls
    made: they outlive the processes that made them."""
    libc = ctypes.CDLL(None, use_errno=True)
    controls = {"shm": libc.shmctl, "msg": libc.msgctl, "sem": libc.semctl}
    for kind, control in controls.items():
        with contextlib.suppress(OSError), open(f"/proc/sysvipc/{kind}") as table:
            for row in list(table)[1:]:  # key, id, ...
                control(int(row.split()[1]), IPC_RMID, None)


def shield():
    """Keep the tools off the runner: as a non-dumpable process, its /proc files (the
    stdin carrying every request and secret, the stdout carrying every result, its
    memory and environment) are closed to them, and they cannot ptrace it, although
    they run as the same user; and the signals that would stop it are ignored. Forked
    children inherit both: each call's child undoes the second for the tool."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit(f"runner.py: cannot make the runner non-dumpable: errno {ctypes.get_errno()}")
    for sig in SHIELDED:
        signal.signal(sig, signal.SIG_IGN)


def pids_refused():
    """How many forks the container's pids limit has refused so far (0 outside Docker)."""
    for path in PIDS_EVENTS:
        with contextlib.suppress(OSError, ValueError, KeyError), open(path) as events:
            return int(dict(line.split() for line in events)["max"])
    return 0


def relay_egress(socket_path):
    """Pipe each connection to `127.0.0.1:EGRESS_PORT` to the proxy's Unix socket."""
    listener = socket.create_server(("127.0.0.1", EGRESS_PORT))

    def pipe(source, sink):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept():
        while True:
            client, _ = listener.accept()
            upstream = socket.socket(socket.AF_UNIX)
            try:
                upstream.connect(socket_path)
            except OSError:
                client.close()
                upstream.close()
                continue
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def run_one(source, name, raw, limit, me):
    """Call the function; return the envelope (None in a child the tool forked)."""
    real_stdout = sys.stdout
    out, err = CappedText(limit), CappedText(limit)
    sys.stdout, sys.stderr = out, err
    envelope = {"ok": False, "value": None, "error": None, "retry": False}
    try:
        install_stand_in()
        value = call(source, name, json.loads(raw))
        envelope["value"] = json.loads(json.dumps(value))
        envelope["ok"] = True
    except ToolRetry as exc:
        envelope["error"] = str(exc)
        envelope["retry"] = True
    except BaseException as exc:  # the tool's failure is the result, not ours
        envelope["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        sys.stdout, sys.stderr = real_stdout, sys.__stderr__
    if os.getpid() != me:  # a child the tool forked: only the runner itself reports
        os._exit(0)
    envelope.update(
        stdout=out.getvalue(),
        stderr=err.getvalue(),
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
    )
    return envelope


def serve():
    """Be a warm container's pid 1: one request per stdin line, each in a forked child.

    A request is `{"nonce", "source", "function", "arguments", "env", "output_bytes"}`,
    and `"egress"` (the proxy's socket path) when the call may use the network.
    Before each call the container is reset (stray processes killed, /tmp emptied); the
    call runs in a fresh child with only the request's environment, which writes
    `MARKER + nonce + envelope` (with `pids_exhausted`: whether a fork was refused during
    the call); a child that dies without one (killed for memory) is reported as
    `{"died": signal}`. Forking from this already-started interpreter is what
    makes a warm call cost milliseconds instead of an exec and a Python start-up.
    """
    if os.getpid() != 1 or not os.path.exists("/.dockerenv"):
        sys.exit("runner.py: --serve is only for Docker sandbox containers")
    base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
    shield()
    stdin = Lines(0)
    while (line := stdin.next()) is not None:
        request = json.loads(line)
        reset()
        head = MARKER + request["nonce"]
        out, err, answers = os.pipe(), os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:
            for sig in SHIELDED:
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            devnull = os.open(os.devnull, os.O_RDONLY)  # the next request is not the tool's
            os.dup2(devnull, 0)
            os.dup2(out[1], 1)  # the runner's own stdout and stderr are not the tool's
            os.dup2(err[1], 2)
            for fd in (*out, *err, answers[1]):
                os.close(fd)
            HOST._serve((CALL + request["nonce"]).encode(), answers[0])
            os.environ.clear()
            os.environ.update(base_env, **request["env"])
            limit = int(request["output_bytes"])
            raw = json.dumps(request["arguments"])
            if request.get("egress"):
                # Without the relay the tool's connections fail; the call still reports.
                with contextlib.suppress(OSError):
                    relay_egress(request["egress"])
            refused = pids_refused()
            envelope = run_one(request["source"], request["function"], raw, limit, os.getpid())
            envelope["pids_exhausted"] = pids_refused() > refused
            write_all(1, (head + json.dumps(envelope) + "\n").encode())
            os._exit(0)
        for fd in (out[1], err[1], answers[0]):
            os.close(fd)
        status = relay(pid, out[0], err[0], head.encode(), stdin, answers[1])
        if os.WIFSIGNALED(status):
            died = {"died": os.WTERMSIG(status)}
            os.write(1, (head + json.dumps(died) + "\n").encode())


class Lines:
    """Lines read from a file descriptor with `os.read`, so that `select` on it tells
    the truth (a buffered file would hide what it read ahead)."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = b""

    def feed(self):
        """Read what is there (one `read`); False at the end of the stream."""
        data = os.read(self.fd, 1 << 16)
        self.pending += data
        return bool(data)

    def take(self):
        """The complete lines read so far."""
        *lines, self.pending = self.pending.split(b"\n")
        return [line + b"\n" for line in lines]

    def next(self):
        """The next line, waiting for it; None at the end of the stream."""
        while b"\n" not in self.pending:
            if not self.feed():
                return None
        line, self.pending = self.pending.split(b"\n", 1)
        return line


def relay(pid, out, err, head, stdin, answers):
    """Pass a call's stdout and stderr (pipes from its process) on to the runner's own,
    up to the end of its envelope line, or until its process is gone and what it wrote is
    passed on; meanwhile pass the host's answers to its capability requests (lines on
    the runner's stdin) into the pipe `answers`. Then close the pipes and return the
    process's wait status.

    Nothing after the envelope goes on: a process the call left behind cannot put bytes
    in front of a later call's result, and gets EPIPE once the pipes are closed.
    """
    streams = {out: 1, err: 2, stdin.fd: answers}
    held = b""  # stdout not passed on yet: what could be the start of a `head` split in two
    enveloped = False  # `head` was passed on: the envelope follows, up to its newline
    status = None
    # Once the process is gone, how much more to read: what it left in the pipes fits,
    # and a process it left behind, writing on, does not keep the runner here.
    left = 0
    try:
        while streams:
            ready, _, _ = select.select(list(streams), [], [], 0.05 if status is None else 0)
            if status is not None and (not ready or left <= 0):
                break
            for fd in ready:
                if fd == stdin.fd:
                    if not stdin.feed():
                        del streams[fd]  # the host hung up: the call is being abandoned
                    for answer in stdin.take():
                        with contextlib.suppress(OSError):  # the call is gone already
                            write_all(answers, answer)
                    continue
                data = os.read(fd, 1 << 16)
                left -= len(data)
                if not data:
                    del streams[fd]
                    continue
                if streams[fd] == 2:
                    write_all(2, data)
                    continue
                if not enveloped:
                    held += data
                    at = held.find(head)
                    if at < 0:  # hold back only what could begin a `head` split in two
                        cut = held.rfind(head[:1], max(0, len(held) - len(head) + 1))
                        if cut < 0 or not head.startswith(held[cut:]):
                            cut = len(held)
                        write_all(1, held[:cut])
                        held = held[cut:]
                        continue
                    write_all(1, held[:at])
                    data, held, enveloped = held[at:], b"", True
                end = data.find(b"\n")
                if end >= 0:
                    write_all(1, data[: end + 1])
                    return status if status is not None else os.waitpid(pid, 0)[1]
                write_all(1, data)
            if status is None:
                waited, code = os.waitpid(pid, os.WNOHANG)
                if waited:
                    status, left = code, 2 * PIPE_MAX
    finally:
        for fd in (out, err, answers):
            os.close(fd)
    return status if status is not None else os.waitpid(pid, 0)[1]


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main():
    args = sys.argv[1:]
    if args[0] == "--serve":
        serve()
        return
    source, name, raw = args
    limit = int(os.environ.get("AGENTFLOW_OUTPUT_BYTES", "1000000"))
    envelope = run_one(source, name, raw, limit, os.getpid())
    sys.stdout.write(MARKER + json.dumps(envelope) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
