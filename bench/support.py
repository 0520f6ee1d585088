"""The support agent under load, side by side with the same turn on bare LangGraph.

Two server processes on 127.0.0.1, each over its own SQLite checkpoints and seeded shop:

- agentflow: a real `agentflow serve` of the support graph on scripted models that
  answer after a simulated 100 ms (bench/support_graph.py);
- bare LangGraph: the same turn written as a plain `StateGraph`, on the same web stack,
  checkpointer (`AsyncSqliteSaver`) and `durability="sync"` (bench/support_bare.py).

A conversation opens a thread and posts `--turns` order questions, each resolved with a
tool call (three model calls a turn: triage, resolve, respond). Added latency is what the
client sees minus the simulated model time (100 ms x the model calls the turn reports).
The load comes from this process (aiohttp: at 200 connections httpx's pool spends more
CPU per request than the server does, on the same two cores). Every phase runs the two
arms one after the other, in one run, so their ratio shares the machine's noise:

1. saturation (`--rounds` rounds, the arms' order alternating): a closed loop of
   `--conversations` conversations, each starting the next as soon as one ends, enough to
   keep the server's one core busy; after `--ramp-s` (longer than a turn takes at
   saturation, so the window sees the steady state, not the first wave), a `--window-s`
   window counts the turns completed per second; the server's CPU per turn is that of the
   whole round, from the first conversation to the last one's end, over all its turns
   (a window's edges cut through turns in flight, whose CPU falls partly outside it);
2. open loop at 70 % of each arm's own saturation: conversations arrive at random
   (Poisson, seeded) at the rate that offers 0.7 x its saturation turns/s, for `--open-s`;
3. a burst: `--conversations` conversations start at once (the original figure).

Fields of the one JSON object (`--json`):

- `cpu_ms_per_turn`, `bare_langgraph_cpu_ms_per_turn`: server CPU (user + system) per
  turn over a saturation round, thread creation included (one per `--turns` turns); the
  median over the rounds;
- `cpu_ratio`: the median over the rounds of the quotient of the two arms' CPU per turn
  in the same round (`target_cpu_ratio`: 1.3); `cpu_ratio_per_round`: each round's;
- `saturation_turns_per_s`, `bare_langgraph_saturation_turns_per_s`: turns completed per
  second per server process in the saturation windows;
- `saturation_cpu_util`, `bare_langgraph_saturation_cpu_util`: the server's CPU seconds per
  second in those windows (1.0: one core busy, i.e. CPU-bound);
- `p99_ms_at_70pct`, `p50_ms_at_70pct`, `bare_langgraph_p99_ms_at_70pct`: added latency per
  turn in the open loop (`target_p99_ms`: 50); `offered_turns_per_s_at_70pct` and
  `bare_langgraph_offered_turns_per_s_at_70pct` are the rates offered;
- `p50_ms`, `p99_ms`, `max_ms`, `bare_langgraph_p99_ms`: added latency per turn in the burst
  of `conversations`; `create_p99_ms` the same for opening a thread (agentflow);
  `turns_per_s`: the burst's turns per second of its whole run (agentflow);
- `server_cpu_ms_per_turn`, `client_cpu_ms_per_turn`: CPU time of the agentflow servers
  and of this load generator in the burst, per turn;
- `errors`: requests answered with a non-2xx status or failing outright, all phases and
  arms; `first_errors`: the first three;
- `rss_mb`: the agentflow server's peak resident memory (VmHWM);
- `turns`, `model_calls`, `wall_s`: the burst's (agentflow); `conversations`, `servers`,
  `model_delay_ms`: the set-up;
- `target_met`: no errors, `cpu_ratio` <= 1.3 and `p99_ms_at_70pct` <= 50 ms;
  `target_met_at_burst`: no errors and `p99_ms` <= 50 ms.

    python -m bench.support --json [--conversations 200] [--turns 2] [--rounds 3]
        [--ramp-s 2] [--window-s 6] [--open-s 10] [--servers N] [--database postgresql://...]

(About three minutes with the defaults.)

`--servers N` starts N agentflow server processes on the one state database (an empty
one: `--database`, else a fresh SQLite file) and keeps each conversation on one of them,
round robin, as replicas behind a load balancer would; CPU and memory figures are the
servers' (not the database's), throughput is per process. The bare arm is always one
process on SQLite, so its ratio compares like with like only without these options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from bench.support_graph import MODEL_DELAY_S
from tests.server.live_server import ROOT, free_port, seeded_server

GRAPH = "bench/support_graph.py"
TOKEN = "tok-bench"
TOKENS = f"client:ada@example.com:{TOKEN}"  # Ada: order 1042 is hers
ENV = {"LANGGRAPH_STRICT_MSGPACK": "true"}
QUESTIONS = ("where is my order 1042?", "and when will order 1042 arrive?")
TARGET_P99_MS = 50.0
TARGET_CPU_RATIO = 1.3
OPEN_LOOP_LOAD = 0.7
START_TIMEOUT_S = 60.0


@dataclass(kw_only=True)
class Samples:
    """What the clients saw."""

    turn_ms: list[float] = field(default_factory=list)
    """Added latency per message turn."""
    done_at: list[float] = field(default_factory=list)
    """When each turn completed (`time.perf_counter()`)."""
    create_ms: list[float] = field(default_factory=list)
    model_calls: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Arm:
    """One contender: its server processes and a client session to each."""

    name: str
    pids: list[int]
    sessions: list[aiohttp.ClientSession]

    def cpu_s(self) -> float:
        return sum(map(cpu_s, self.pids))


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
            done = time.perf_counter()
            calls = len(answer["steps"])
            samples.model_calls += calls
            samples.turn_ms.append((done - start - MODEL_DELAY_S * calls) * 1e3)
            samples.done_at.append(done)
    except (aiohttp.ClientError, RuntimeError) as exc:
        samples.errors.append(f"{type(exc).__name__}: {exc}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cpu_ms(window: Window) -> float:
    """A saturation round's server CPU per turn, in ms."""
    return window.round_cpu_s * 1e3 / max(1, window.round_turns)


@dataclass(kw_only=True)
class Window:
    """What a saturation round counted: in its window, and over the whole round."""

    turns: int
    cpu_s: float
    seconds: float
    round_turns: int
    """Every turn of the round, from the first conversation to the last one's end."""
    round_cpu_s: float
    """The server CPU of the whole round: all of those turns' (and their threads')."""


async def saturate(
    arm: Arm, conversations: int, turns: int, ramp_s: float, window_s: float, errors: list[str]
) -> Window:
    """A closed loop of `conversations`, each starting another as soon as it ends; count
    the turns completed and the server CPU spent in a window after the ramp, then let
    the conversations in flight finish (outside the window)."""
    samples = Samples()
    stop = asyncio.Event()

    async def keep_talking(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            await conversation(session, turns, samples)

    sessions = arm.sessions
    round_cpu = arm.cpu_s()
    talkers = [
        asyncio.create_task(keep_talking(sessions[n % len(sessions)])) for n in range(conversations)
    ]
    await asyncio.sleep(ramp_s)  # a timer: the window starts once the loop is busy
    start, cpu = time.perf_counter(), arm.cpu_s()
    await asyncio.sleep(window_s)
    end, cpu = time.perf_counter(), arm.cpu_s() - cpu
    stop.set()
    await asyncio.gather(*talkers)
    round_cpu = arm.cpu_s() - round_cpu
    errors.extend(samples.errors)
    counted = sum(1 for at in samples.done_at if start <= at <= end)
    return Window(
        turns=counted,
        cpu_s=cpu,
        seconds=end - start,
        round_turns=len(samples.done_at),
        round_cpu_s=round_cpu,
    )


async def open_loop(
    arm: Arm, turns_per_s: float, turns: int, seconds: float, seed: int, errors: list[str]
) -> Samples:
    """Conversations arriving at random (Poisson) so that `turns_per_s` turns are offered,
    for `seconds`; wait for all of them to finish."""
    samples = Samples()
    rng = random.Random(seed)
    sessions = arm.sessions
    started: list[asyncio.Task[None]] = []
    due = time.perf_counter()
    end = due + seconds
    while True:
        due += rng.expovariate(turns_per_s / turns)
        if due >= end:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))  # the arrival schedule
        session = sessions[len(started) % len(sessions)]
        started.append(asyncio.create_task(conversation(session, turns, samples)))
    await asyncio.gather(*started)
    errors.extend(samples.errors)
    return samples


async def burst(arm: Arm, conversations: int, turns: int, errors: list[str]) -> Samples:
    """`conversations` conversations at once, each on one server, round robin."""
    samples = Samples()
    sessions = arm.sessions
    await asyncio.gather(
        *(conversation(sessions[n % len(sessions)], turns, samples) for n in range(conversations))
    )
    errors.extend(samples.errors)
    return samples


@contextlib.contextmanager
def bare_server(folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The bare-LangGraph server (bench/support_bare.py) over its own seeded shop, and
    its URL."""
    from tools.seed import seed

    shop = f"sqlite:///{folder / 'shop.sqlite'}"
    seed(shop, customers=20)
    port = free_port()
    command = [sys.executable, "-m", "bench.support_bare", "--port", str(port)]
    command += ["--database", str(folder / "state.sqlite"), "--shop", shop, "--token", TOKENS]
    with (folder / "log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **ENV}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, folder / "log")
        yield process, url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)  # poll interval, not synchronisation: the loop checks the condition
    raise RuntimeError(f"the bare server did not start:\n{log.read_text(errors='replace')}")


def _session(url: str, conversations: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        connector=aiohttp.TCPConnector(limit=conversations, keepalive_timeout=2),
        timeout=aiohttp.ClientTimeout(300),
    )


@dataclass(kw_only=True)
class Options:
    conversations: int
    turns: int
    warmup: int
    servers: int
    database_url: str | None
    rounds: int
    ramp_s: float
    window_s: float
    open_s: float


async def measure(options: Options) -> dict[str, Any]:
    """Start both arms, run the three phases interleaved, and summarise."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-support-") as folder,
        seeded_server(
            Path(folder), database_url=options.database_url, graph=GRAPH, tokens=TOKENS, env=ENV
        ) as first,
        tempfile.TemporaryDirectory(prefix="bench-support-bare-") as bare_folder,
        bare_server(Path(bare_folder)) as (bare_process, bare_url),
        contextlib.ExitStack() as more,
    ):
        fleet = [first]
        for _ in range(options.servers - 1):
            other = replace(first, port=free_port(), process=None)
            more.callback(other.stop)
            fleet.append(other.start())
        pids = [server.process.pid for server in fleet if server.process is not None]
        async with contextlib.AsyncExitStack() as stack:
            limit = options.conversations
            sessions = [
                await stack.enter_async_context(_session(server.url, limit)) for server in fleet
            ]
            agentflow = Arm(name="agentflow", pids=pids, sessions=sessions)
            bare = Arm(
                name="bare_langgraph",
                pids=[bare_process.pid],
                sessions=[await stack.enter_async_context(_session(bare_url, limit))],
            )
            result = await _phases(options, agentflow, bare)
        result["rss_mb"] = round(max(map(peak_rss_mb, pids)), 1)
    return result


async def _phases(options: Options, agentflow: Arm, bare: Arm) -> dict[str, Any]:
    """Warm both arms up, then saturation, open loop and burst, each arm in turn."""
    errors: list[str] = []
    arms = (agentflow, bare)
    for arm in arms:
        await burst(arm, options.warmup, options.turns, errors)
    windows: dict[str, list[Window]] = {arm.name: [] for arm in arms}
    for number in range(options.rounds):
        for arm in arms if number % 2 == 0 else arms[::-1]:
            window = await saturate(
                arm, options.conversations, options.turns, options.ramp_s, options.window_s, errors
            )
            windows[arm.name].append(window)
    result: dict[str, Any] = {}
    for arm in arms:
        prefix = "" if arm is agentflow else "bare_langgraph_"
        result |= {
            prefix + key: value
            for key, value in (
                await _at_saturation(options, arm, windows[arm.name], errors)
            ).items()
        }
    # Each round's two windows are next to each other in time, so their quotient shares
    # the machine's load of the moment; the median drops a round another process spoiled.
    ratios = [
        _cpu_ms(ours) / _cpu_ms(theirs)
        for ours, theirs in zip(windows[agentflow.name], windows[bare.name], strict=True)
    ]
    result["cpu_ratio"] = round(statistics.median(ratios), 3)
    result["cpu_ratio_per_round"] = [round(r, 3) for r in ratios]
    result |= await _burst_figures(options, agentflow, bare, errors)
    return result | {
        "errors": len(errors),
        "target_met": not errors
        and result["cpu_ratio"] <= TARGET_CPU_RATIO
        and result["p99_ms_at_70pct"] <= TARGET_P99_MS,
        "target_met_at_burst": not errors and result["p99_ms"] <= TARGET_P99_MS,
        "first_errors": errors[:3],
    }


async def _at_saturation(
    options: Options, arm: Arm, windows: list[Window], errors: list[str]
) -> dict[str, Any]:
    """An arm's figures from its saturation windows, and from the open loop at 70 % of
    the saturation they measured."""
    seconds = sum(w.seconds for w in windows)
    per_process = sum(w.turns for w in windows) / seconds / len(arm.pids)
    offered = OPEN_LOOP_LOAD * per_process * len(arm.pids)
    opened = await open_loop(arm, offered, options.turns, options.open_s, 7, errors)
    return {
        "cpu_ms_per_turn": round(statistics.median(map(_cpu_ms, windows)), 2),
        "saturation_turns_per_s": round(per_process, 1),
        "saturation_cpu_util": round(sum(w.cpu_s for w in windows) / seconds / len(arm.pids), 2),
        "offered_turns_per_s_at_70pct": round(offered, 1),
        "p50_ms_at_70pct": round(statistics.median(opened.turn_ms or [0.0]), 1),
        "p99_ms_at_70pct": round(percentile(opened.turn_ms, 0.99), 1),
    }


async def _burst_figures(
    options: Options, agentflow: Arm, bare: Arm, errors: list[str]
) -> dict[str, Any]:
    """`--conversations` conversations at once on each arm (agentflow's figures in full)."""
    client_cpu, server_cpu = time.process_time(), agentflow.cpu_s()
    start = time.perf_counter()
    samples = await burst(agentflow, options.conversations, options.turns, errors)
    wall_s = time.perf_counter() - start
    server_cpu, client_cpu = agentflow.cpu_s() - server_cpu, time.process_time() - client_cpu
    bare_samples = await burst(bare, options.conversations, options.turns, errors)
    done = max(1, len(samples.turn_ms))
    return {
        "p50_ms": round(statistics.median(samples.turn_ms or [float("nan")]), 1),
        "p99_ms": round(percentile(samples.turn_ms, 0.99), 1),
        "max_ms": round(max(samples.turn_ms or [float("nan")]), 1),
        "bare_langgraph_p99_ms": round(percentile(bare_samples.turn_ms, 0.99), 1),
        "create_p99_ms": round(percentile(samples.create_ms, 0.99), 1),
        "turns_per_s": round(len(samples.turn_ms) / wall_s, 1),
        "server_cpu_ms_per_turn": round(server_cpu * 1e3 / done, 2),
        "client_cpu_ms_per_turn": round(client_cpu * 1e3 / done, 2),
        "conversations": options.conversations,
        "servers": options.servers,
        "turns": len(samples.turn_ms),
        "model_calls": samples.model_calls,
        "model_delay_ms": MODEL_DELAY_S * 1e3,
        "wall_s": round(wall_s, 2),
        "target_p99_ms": TARGET_P99_MS,
        "target_cpu_ratio": TARGET_CPU_RATIO,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="the support agent under load, and bare LangGraph")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=2, help="messages per conversation")
    parser.add_argument("--warmup", type=int, default=5, help="conversations before measuring")
    parser.add_argument("--servers", type=int, default=1, help="agentflow server processes")
    parser.add_argument("--database", help="agentflow's state database URL (default: SQLite)")
    parser.add_argument("--rounds", type=int, default=3, help="saturation rounds per arm")
    parser.add_argument("--ramp-s", type=float, default=6.0, help="closed loop before a window")
    parser.add_argument("--window-s", type=float, default=10.0, help="a saturation window")
    parser.add_argument("--open-s", type=float, default=10.0, help="open-loop arrivals per arm")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    options = Options(
        conversations=args.conversations,
        turns=args.turns,
        warmup=args.warmup,
        servers=args.servers,
        database_url=args.database,
        rounds=args.rounds,
        ramp_s=args.ramp_s,
        window_s=args.window_s,
        open_s=args.open_s,
    )
    result = asyncio.run(measure(options))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>40}: {value}")


if __name__ == "__main__":
    main()
