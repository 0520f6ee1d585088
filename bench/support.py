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
- `server_cpu_ms_per_turn`, `client_cpu_ms_per_turn`: CPU time (user + system) of the
  server process and of this load generator over the run, per turn: on a small machine
  the two share the cores, so the client has to be cheap (aiohttp, not httpx);
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
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.support_graph import MODEL_DELAY_S
from tests.server.live_server import seeded_server

GRAPH = "bench/support_graph.py"
TOKEN = "tok-bench"
QUESTIONS = ("where is my order 1042?", "and when will order 1042 arrive?")
TARGET_P99_MS = 50.0


@dataclass(kw_only=True)
class Samples:
    """What the clients saw."""

    turn_ms: list[float] = field(default_factory=list)
    """Added latency per message turn."""
    create_ms: list[float] = field(default_factory=list)
    model_calls: int = 0
    errors: list[str] = field(default_factory=list)


def cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/PID/status")


async def post(client: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Any:
    """POST JSON and return the decoded answer; a non-2xx answer raises with its body."""
    async with client.post(path, json=body) as response:
        if response.status >= 300:
            raise RuntimeError(f"POST {path}: {response.status} {(await response.text())[:200]}")
        return await response.json()


async def conversation(client: aiohttp.ClientSession, turns: int, samples: Samples) -> None:
    """Open a thread and post `turns` questions, noting each request's added latency."""
    try:
        start = time.perf_counter()
        thread = (await post(client, "/threads", {}))["thread_id"]
        samples.create_ms.append((time.perf_counter() - start) * 1e3)
        for number in range(turns):
            text = QUESTIONS[number % len(QUESTIONS)]
            start = time.perf_counter()
            answer = await post(client, f"/threads/{thread}/messages", {"text": text})
            elapsed = time.perf_counter() - start
            calls = len(answer["steps"])
            samples.model_calls += calls
            samples.turn_ms.append((elapsed - MODEL_DELAY_S * calls) * 1e3)
    except (aiohttp.ClientError, RuntimeError) as exc:
        samples.errors.append(f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(conversations: int, turns: int, warmup: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        tempfile.TemporaryDirectory(prefix="bench-support-") as folder,
        seeded_server(
            Path(folder),
            graph=GRAPH,
            tokens=f"client:bench:{TOKEN}",
            env={"LANGGRAPH_STRICT_MSGPACK": "true"},
        ) as server,
    ):
        # aiohttp, not httpx: at 200 connections httpx's pool spends more CPU per
        # request than the server does, on the same two cores.
        connector = aiohttp.TCPConnector(limit=conversations, keepalive_timeout=2)
        async with aiohttp.ClientSession(
            server.url, headers=headers, connector=connector, timeout=aiohttp.ClientTimeout(300)
        ) as client:
            await asyncio.gather(*(conversation(client, turns, Samples()) for _ in range(warmup)))
            assert server.process is not None
            samples = Samples()
            server_cpu, client_cpu = cpu_s(server.process.pid), time.process_time()
            start = time.perf_counter()
            await asyncio.gather(
                *(conversation(client, turns, samples) for _ in range(conversations))
            )
            wall_s = time.perf_counter() - start
            server_cpu = cpu_s(server.process.pid) - server_cpu
            client_cpu = time.process_time() - client_cpu
        rss_mb = peak_rss_mb(server.process.pid)
    turn_ms = samples.turn_ms or [float("nan")]
    return {
        "p50_ms": round(statistics.median(turn_ms), 1),
        "p99_ms": round(percentile(turn_ms, 0.99), 1),
        "max_ms": round(max(turn_ms), 1),
        "create_p99_ms": round(percentile(samples.create_ms or [float("nan")], 0.99), 1),
        "turns_per_s": round(len(samples.turn_ms) / wall_s, 1),
        "server_cpu_ms_per_turn": round(server_cpu * 1e3 / max(1, len(samples.turn_ms)), 2),
        "client_cpu_ms_per_turn": round(client_cpu * 1e3 / max(1, len(samples.turn_ms)), 2),
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
