"""`agentflow serve` as a real process on 127.0.0.1, for the HTTP tests.

Readiness is `/healthz` answering 200, polled with a deadline; a server that exits
during start-up fails the test with its log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
GRAPH = "tests/server/scripted_support.py"
TOKENS = {
    "ada": "tok-ada",
    "grace": "tok-grace",
    "sam": "tok-sam",
    "rita": "tok-rita",
    "ops": "tok-ops",
}
CUSTOMERS = {"ada": "ada@example.com", "grace": "grace@example.com"}
"""The client tokens' subjects: the seeded shop's customers Ada (orders 1042, 1043, 1045)
and Grace (order 1044)."""
TOKENS_ENV = (
    "client:ada@example.com:tok-ada,client:grace@example.com:tok-grace,"
    "reviewer:sam:tok-sam,reviewer:rita:tok-rita,admin:ops:tok-ops"
)
START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(kw_only=True)
class LiveServer:
    """One `agentflow serve` process over a scripted support graph."""

    database_url: str
    shop_url: str
    log: Path
    port: int = field(default_factory=free_port)
    graph: str = GRAPH
    """The graph file to serve (the tests' scripted support graph by default)."""
    tokens: str = TOKENS_ENV
    """`AGENTFLOW_TOKENS` for the process."""
    extra: tuple[str, ...] = ()
    """More `agentflow serve` options."""
    env: dict[str, str] = field(default_factory=dict)
    """More environment for the process."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        """Start the process and wait until `/healthz` says ok."""
        exe = Path(sys.executable).parent / "agentflow"
        command = [str(exe), "serve", self.graph, "--database", self.database_url]
        command += ["--host", "127.0.0.1", "--port", str(self.port), *self.extra]
        env = {
            **os.environ,
            # this checkout's agentflow, whichever one the environment has installed
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "AGENTFLOW_TOKENS": self.tokens,
            "SCRIPTED_SHOP_URL": self.shop_url,
            **self.env,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"agentflow serve exited with {self.process.returncode}:\n{self.output()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise AssertionError(f"no /healthz within {START_TIMEOUT_S}s:\n{self.output()}")
            time.sleep(0.05)  # poll interval, not synchronisation: the loop checks the condition

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def client(self, who: str | None = None) -> httpx.Client:
        """A client for the server, with `who`'s bearer token (None: no token)."""
        headers = {"Authorization": f"Bearer {TOKENS[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no lifespan, nothing flushed; as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait: the server closes its service on the way out."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@contextmanager
def seeded_server(
    folder: Path, *, database_url: str | None = None, **options: Any
) -> Iterator[LiveServer]:
    """A started server over a freshly seeded shop and an empty state database in `folder`.

    Args:
        database_url: The state database (default: a SQLite file in `folder`).
        options: More `LiveServer` fields (`graph`, `tokens`, `env`, `extra`).
    """
    from tools.seed import seed

    shop = f"sqlite:///{folder / 'shop.sqlite'}"
    seed(shop, customers=20)
    live = LiveServer(
        database_url=database_url or f"sqlite:///{folder / 'state.sqlite'}",
        shop_url=shop,
        log=folder / "log",
        **options,
    )
    try:
        yield live.start()
    finally:
        live.stop()
