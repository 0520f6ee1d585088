"""A warm container's attached stream, as one call sees it: the runner's output read up
to the call's envelope line (in linear time, within a byte cap), and the call's
requests for host capabilities answered on the container's stdin as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentflow.sandbox.base import HostHandler

__all__ = ["Collected", "answer_line", "close_socket", "collect"]


@dataclass
class Collected:
    head: bytes
    """`MARKER + nonce`: what starts this call's envelope line."""
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    overflow: bool = False
    closed: bool = False
    at: int = -1
    """Where `head` starts in `stdout`, once seen."""
    end: int = -1
    """Where the envelope line ends (its newline) in `stdout`, once seen."""
    asks: bytes = b""
    """`CALL + nonce`: what starts a line asking for a host capability (none: empty)."""
    answer: Callable[[bytes], bytes] | None = None
    """Turns such a request (the JSON after `asks`) into the answer line to send back."""
    asked: int = 0
    """How far `stdout` has been searched for requests."""


def collect(sock: Any, cap: int, into: Collected) -> None:
    """Read the attached stream until this call's envelope line is complete, the
    stream ends (the container died, or the call was abandoned and its stream shut) or
    more than `cap` bytes came.

    Linear in what is read: each frame is appended once, and only the bytes a frame added
    (plus enough before them to catch a `head` split across frames) are searched.
    """
    from docker.utils.socket import STDOUT, next_frame_header, read

    try:
        while True:
            kind, size = next_frame_header(sock)
            if size < 0:
                break
            target = into.stdout if kind == STDOUT else into.stderr
            before = len(target)
            while len(target) - before < size:
                data = read(sock, size - (len(target) - before))
                if not data:
                    raise EOFError
                target.extend(data)
            if len(into.stdout) + len(into.stderr) > cap:
                into.overflow = True
                return
            if kind == STDOUT and into.answer is not None:
                _answer_requests(sock, into)
            if kind == STDOUT and _envelope_complete(into, before):
                return
    except (OSError, EOFError, ValueError):  # shut by an abandoning caller, or cut short
        pass
    into.closed = True


def _answer_requests(sock: Any, into: Collected) -> None:
    """Answer each complete request line that stdout gained: one at a time, in order,
    the call waiting for each answer before it asks again."""
    assert into.answer is not None
    while True:
        at = into.stdout.find(into.asks, into.asked)
        if at < 0:
            into.asked = max(into.asked, len(into.stdout) - len(into.asks) + 1)
            return
        end = into.stdout.find(b"\n", at)
        if end < 0:
            into.asked = at
            return
        into.asked = end + 1
        sock._sock.sendall(into.answer(bytes(into.stdout[at + len(into.asks) : end])))


def answer_line(host: HostHandler, request: bytes, loop: asyncio.AbstractEventLoop) -> bytes:
    """Run the host handler on the event loop for one request; the answer as a line."""
    try:
        asked = json.loads(request)
        name, arguments = asked["name"], asked["arguments"]
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise TypeError("name must be a string and arguments an object")
    except (ValueError, KeyError, TypeError) as exc:
        answer: dict[str, Any] = {"error": f"a malformed request for the host: {exc}"}
    else:
        answer = asyncio.run_coroutine_threadsafe(host(name, arguments), loop).result()
    return json.dumps(answer).encode() + b"\n"


def _envelope_complete(into: Collected, before: int) -> bool:
    """Search what stdout gained since `before` for the envelope's start and end."""
    if into.at < 0:
        into.at = into.stdout.find(into.head, max(0, before - len(into.head) + 1))
        if into.at < 0:
            return False
        before = into.at
    into.end = into.stdout.find(b"\n", max(before, into.at))
    return into.end >= 0


def close_socket(sock: Any) -> None:
    """Shut and close an attached stream; a thread blocked reading it returns at once."""
    if sock is None:
        return
    raw = getattr(sock, "_sock", None)  # SocketIO.close() drops it without closing it
    if raw is not None:
        with contextlib.suppress(OSError):  # a close alone does not wake a blocked recv
            raw.shutdown(socket.SHUT_RDWR)
    sock.close()
    if raw is not None:
        raw.close()
