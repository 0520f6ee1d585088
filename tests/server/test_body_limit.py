"""Request bodies over the limit are refused before they are read, before the token is
looked at: through `agentflow serve` as a real process, with raw sockets, so a body can be
declared larger than what is sent, or sent chunked without any Content-Length."""

from __future__ import annotations

import http.client
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.live_server import TOKENS, LiveServer, seeded_server

MiB = 1024 * 1024
FILLER = b"x" * (64 * 1024)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with seeded_server(tmp_path) as live:  # the default limit: 1 MiB
        yield live


def _answered(sock: socket.socket) -> bool:
    """Whether the server has begun to answer (or closed): a poll, it does not wait."""
    return bool(select.select([sock], [], [], 0)[0])


def json_body(size: int) -> Iterator[bytes]:
    """A JSON body `{"text": "xx..."}` of exactly `size` bytes, in pieces of at most 64 KiB."""
    head, tail = b'{"text": "', b'"}'
    yield head
    left = size - len(head) - len(tail)
    while left > 0:
        yield FILLER[:left]
        left -= len(FILLER)
    yield tail


def raw_post(
    server: LiveServer,
    size: int,
    *,
    chunked: bool,
    who: str | None = None,
    path: str = "/threads",
) -> tuple[int, Any]:
    """POST a JSON body of `size` bytes, declared in Content-Length or sent chunked,
    stopping as soon as the server answers; return its status and JSON body."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}")
    if who is not None:
        head.append(f"Authorization: Bearer {TOKENS[who]}")
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for piece in json_body(size):
                if _answered(sock):
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked and not _answered(sock):
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed the connection, as it should
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, json.loads(response.read())


def vm_rss_mb(pid: int) -> float:
    """The process's resident memory, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def too_large(status: int, body: Any) -> bool:
    return status == 413 and body["error"]["type"] == "payload_too_large"


def test_oversize_bodies_are_refused_unread_and_the_server_keeps_its_memory(
    server: LiveServer,
) -> None:
    """Found by an attacker: four anonymous 100 MB posts took the server from 98 to
    796 MB, the bodies read whole before the token was looked at."""
    assert server.process is not None
    with server.client() as anonymous:  # warm: the first requests allocate for good
        assert anonymous.get("/healthz").status_code == 200
    before = vm_rss_mb(server.process.pid)
    for chunked in (False, True, False, True):
        status, body = raw_post(server, 64 * MiB, chunked=chunked)
        assert too_large(status, body), (status, body)
        assert "1048576 bytes" in body["error"]["message"]
    grown = vm_rss_mb(server.process.pid) - before
    assert grown < 50, f"the server grew by {grown:.0f} MB"
    with server.client("ada") as ada:  # and it keeps serving
        thread = ada.post("/threads", json={}).json()["thread_id"]
        turn = ada.post(f"/threads/{thread}/messages", json={"text": "where is my order 1042?"})
        assert turn.status_code == 200, turn.text


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_limit_is_set_with_max_body_bytes_and_comes_before_the_token(
    tmp_path: Path, chunked: bool
) -> None:
    with seeded_server(tmp_path, extra=("--max-body-bytes", "4096")) as server:
        with server.client("ada") as ada:
            thread = ada.post("/threads", json={}).json()["thread_id"]
        path = f"/threads/{thread}/messages"
        # Without a token: too large is a 413 before anything else, small enough a 401.
        assert too_large(*raw_post(server, 4097, chunked=chunked, path=path))
        status, body = raw_post(server, 4096, chunked=chunked, path=path)
        assert (status, body["error"]["type"]) == (401, "unauthorized")
        # With one: a message within the limit is a turn; one byte over is a 413.
        with server.client("ada") as ada:
            fits = json.dumps({"text": "where is my order 1042? " + "x" * 3800})
            over = json.dumps({"text": "where is my order 1042? " + "x" * 4100})
            headers = {"Content-Type": "application/json"}
            answered = ada.post(path, content=fits.encode(), headers=headers)
            assert answered.status_code == 200, answered.text
            refused = ada.post(path, content=over.encode(), headers=headers)
            assert too_large(refused.status_code, refused.json()), refused.text
            assert "4096 bytes" in refused.json()["error"]["message"]
            assert ada.get(f"/threads/{thread}").status_code == 200
