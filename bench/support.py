"""The support agent under load: concurrent conversations through the HTTP server.

A real `agentflow serve` process on 127.0.0.1 serves the support graph on scripted
models that answer after a simulated 100 ms (bench/support_graph.py), over a SQLite
database and a seeded shop. `--conversations` clients start at once; each opens a
thread and posts `--turns` order questions, each resolved with a tool call (three model
calls a turn: triage, resolve, respond).

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
        [--servers N] [--database postgresql://...]

`--servers N` starts N server processes on the one state database (an empty one:
`--database`, else a fresh SQLite file) and keeps each conversation on one of them,
round robin, as replicas behind a load balancer would; CPU and memory figures are the
servers' (not the database's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.support_graph import MODEL_DELAY_S
from tests.server.live_server import free_port, seeded_server

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


async def measure(
    conversations: int, turns: int, warmup: int, servers: int, database_url: str | None
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    options: dict[str, Any] = {
        "graph": GRAPH,
        "tokens": f"client:ada@example.com:{TOKEN}",  # Ada: order 1042 is hers
        "env": {"LANGGRAPH_STRICT_MSGPACK": "true"},
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-support-") as folder,
        seeded_server(Path(folder), database_url=database_url, **options) as first,
        contextlib.ExitStack() as more,
    ):
        fleet = [first]
        for _ in range(servers - 1):
            other = replace(first, port=free_port(), process=None)
            more.callback(other.stop)
            fleet.append(other.start())
        pids = [server.process.pid for server in fleet if server.process is not None]
        # aiohttp, not httpx: at 200 connections httpx's pool spends more CPU per
        # request than the server does, on the same two cores.
        sessions = [
            aiohttp.ClientSession(
                server.url,
                headers=headers,
                connector=aiohttp.TCPConnector(limit=conversations, keepalive_timeout=2),
                timeout=aiohttp.ClientTimeout(300),
            )
            for server in fleet
        ]
        async with contextlib.AsyncExitStack() as open_sessions:
            for session in sessions:
                await open_sessions.enter_async_context(session)
            # Each conversation stays on one server, round robin over the fleet.
            await asyncio.gather(
                *(conversation(sessions[n % servers], turns, Samples()) for n in range(warmup))
            )
            samples = Samples()
            server_cpu, client_cpu = sum(map(cpu_s, pids)), time.process_time()
            start = time.perf_counter()
            await asyncio.gather(
                *(conversation(sessions[n % servers], turns, samples) for n in range(conversations))
            )
            wall_s = time.perf_counter() - start
            server_cpu = sum(map(cpu_s, pids)) - server_cpu
            client_cpu = time.process_time() - client_cpu
        rss_mb = max(map(peak_rss_mb, pids))
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
        "servers": servers,
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
    parser.add_argument("--servers", type=int, default=1, help="server processes, one database")
    parser.add_argument("--database", help="the state database URL (default: a SQLite file)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(
        measure(args.conversations, args.turns, args.warmup, args.servers, args.database)
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>16}: {value}")


if __name__ == "__main__":
    main()
