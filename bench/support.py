"""The support agent under load: concurrent conversations through the HTTP server.

A real `agentflow serve` process on 127.0.0.1 serves the support graph on scripted
models that answer after a simulated 100 ms (bench/support_graph.py), over a SQLite
database and a seeded shop. `--conversations` clients start at once; each opens a
thread and posts `--turns` order questions, each resolved with a tool call (four model
calls a turn: triage, resolve, resolve after the tool result, respond).

- `p50_ms`, `p99_ms`: added latency per turn, i.e. the latency the client sees minus
  the simulated model time (100 ms x the model calls the turn's steps report);
- `create_p99_ms`: the same for opening a thread (no model call);
- `turns_per_s`: message turns completed per second of the whole run;
- `errors`: requests answered with a non-2xx status or failing outright;
- `rss_mb`: the server process's peak resident memory (VmHWM).

    python -m bench.support --json [--conversations 200] [--turns 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.support_graph import MODEL_DELAY_S
from tests.server.live_server import free_port
from tools.seed import seed

ROOT = Path(__file__).resolve().parents[1]
GRAPH = "bench/support_graph.py"
TOKEN = "tok-bench"
QUESTIONS = ("where is my order 1042?", "and when will order 1042 arrive?")
START_TIMEOUT_S = 60.0
TARGET_P99_MS = 50.0


@dataclass(kw_only=True)
class Samples:
    """What the clients saw."""

    turn_ms: list[float] = field(default_factory=list)
    """Added latency per message turn."""
    create_ms: list[float] = field(default_factory=list)
    model_calls: int = 0
    errors: list[str] = field(default_factory=list)


class Server:
    """`agentflow serve bench/support_graph.py` as a process, over fresh databases."""

    def __init__(self, folder: Path) -> None:
        shop = f"sqlite:///{folder / 'shop.sqlite'}"
        seed(shop, customers=20)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        exe = Path(sys.executable).parent / "agentflow"
        command = [str(exe), "serve", GRAPH, "--database", f"sqlite:///{folder / 'state.sqlite'}"]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        env = {
            **os.environ,
            "AGENTFLOW_TOKENS": f"client:bench:{TOKEN}",
            "SCRIPTED_SHOP_URL": shop,
            "LANGGRAPH_STRICT_MSGPACK": "true",
        }
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text()}")
            try:
                if (await client.get(f"{self.url}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise RuntimeError(f"no /healthz within {START_TIMEOUT_S}s")
            await asyncio.sleep(0.05)  # poll interval; the loop checks the condition

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc/PID/status")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


async def conversation(client: httpx.AsyncClient, turns: int, samples: Samples) -> None:
    """Open a thread and post `turns` questions, noting each request's added latency."""
    try:
        start = time.perf_counter()
        created = await client.post("/threads", json={})
        samples.create_ms.append((time.perf_counter() - start) * 1e3)
        if created.status_code != 201:
            samples.errors.append(f"POST /threads: {created.status_code} {created.text[:200]}")
            return
        thread = created.json()["thread_id"]
        for number in range(turns):
            text = QUESTIONS[number % len(QUESTIONS)]
            start = time.perf_counter()
            response = await client.post(f"/threads/{thread}/messages", json={"text": text})
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                samples.errors.append(f"POST message: {response.status_code} {response.text[:200]}")
                return
            calls = len(response.json()["steps"])
            samples.model_calls += calls
            samples.turn_ms.append((elapsed - MODEL_DELAY_S * calls) * 1e3)
    except httpx.HTTPError as exc:
        samples.errors.append(f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(conversations: int, turns: int, warmup: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-support-") as folder:
        server = Server(Path(folder))
        limits = httpx.Limits(
            max_connections=conversations, max_keepalive_connections=conversations
        )
        headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            async with httpx.AsyncClient(
                base_url=server.url, headers=headers, limits=limits, timeout=300
            ) as client:
                await server.wait_ready(client)
                await asyncio.gather(
                    *(conversation(client, turns, Samples()) for _ in range(warmup))
                )
                samples = Samples()
                start = time.perf_counter()
                await asyncio.gather(
                    *(conversation(client, turns, samples) for _ in range(conversations))
                )
                wall_s = time.perf_counter() - start
            rss_mb = server.peak_rss_mb()
        finally:
            server.stop()
    turn_ms = samples.turn_ms or [float("nan")]
    return {
        "p50_ms": round(statistics.median(turn_ms), 1),
        "p99_ms": round(percentile(turn_ms, 0.99), 1),
        "max_ms": round(max(turn_ms), 1),
        "create_p99_ms": round(percentile(samples.create_ms or [float("nan")], 0.99), 1),
        "turns_per_s": round(len(samples.turn_ms) / wall_s, 1),
        "errors": len(samples.errors),
        "rss_mb": round(rss_mb, 1),
        "conversations": conversations,
        "turns": len(samples.turn_ms),
        "model_calls": samples.model_calls,
        "model_delay_ms": MODEL_DELAY_S * 1e3,
        "wall_s": round(wall_s, 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_met": not samples.errors and percentile(turn_ms, 0.99) <= TARGET_P99_MS,
        "first_errors": samples.errors[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="the support agent under concurrent load")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=2, help="messages per conversation")
    parser.add_argument("--warmup", type=int, default=5, help="conversations before measuring")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(measure(args.conversations, args.turns, args.warmup))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
