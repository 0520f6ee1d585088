"""The support server's garbage-collector pauses, with its start-up heap frozen (as
`agentflow serve` runs it) and as loaded.

CPython's cycle collector stops everything while it runs; a full collection (its oldest
generation) walks every container object the process has, and the modules, graph and
stores loaded at start are most of them. Every turn in flight waits out the pause.
`create_app(freeze_heap=True)` moves what is alive once the service is open into the
collector's permanent generation (`gc.freeze`), which no collection walks.

Each round serves agentflow's server app over `bench/support_graph.py` (as
`bench.support_instructions` builds it) in a fresh process of its own, once with
`freeze_heap` and once without, the order alternating, driven in-process through httpx's
ASGI transport: one conversation to warm up, then `--conversations` conversations of two
order questions, `--at-once` at a time (a closed loop), on scripted models that answer
after the simulated 100 ms. `gc.callbacks` time every collection meanwhile. The client
lives in the same process, so its objects are walked too.

Fields of the one JSON object, for each arm (`frozen_`, `loaded_`):

- `longest_pause_ms`: the longest collection over all rounds; `full_collections`: how many
  collections of the oldest generation, all rounds;
- `gc_ms_per_turn`: time in collections per turn (median over rounds);
- `p99_ms`: a turn's added latency, what the client sees minus its 300 ms of model time
  (median over rounds of each round's p99); `cpu_ms_per_turn`: the process's CPU per
  turn, client included (median over rounds);
- `frozen_objects`: what `gc.freeze` moved (the frozen arm's first round).

    python -m bench.support_gc --json [--conversations 200] [--at-once 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.support_instructions import HEADERS, overlapping, support_app
from bench.support_instructions import conversations as support_conversations

ARMS = ("frozen", "loaded")


async def child(arm: str, conversations: int, at_once: int) -> dict[str, Any]:
    """One round of `arm` in this process: its figures."""
    import httpx

    from bench.support_graph import MODEL_DELAY_S

    pauses: list[tuple[int, float]] = []
    started = 0.0

    def timed(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
        else:
            pauses.append((info["generation"], (time.perf_counter() - started) * 1000))

    with tempfile.TemporaryDirectory(prefix="bench-gc-") as folder:
        app = support_app("agentflow", Path(folder), freeze_heap=arm == "frozen")
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://b", headers=HEADERS) as client,
        ):
            frozen = gc.get_freeze_count()
            await support_conversations(client, 1)  # first-request imports and caches
            took_ms: list[float] = []
            gc.callbacks.append(timed)
            cpu = time.process_time()
            await overlapping(client, conversations, at_once, took_ms)
            cpu = time.process_time() - cpu
            gc.callbacks.remove(timed)
    model_ms = 1000 * MODEL_DELAY_S * 3  # triage, resolve, respond
    added = sorted(ms - model_ms for ms in took_ms)
    return {
        "p99_ms": added[round(0.99 * (len(added) - 1))],
        "cpu_ms_per_turn": cpu * 1000 / len(added),
        "gc_ms_per_turn": sum(ms for _, ms in pauses) / len(added),
        "longest_pause_ms": max((ms for _, ms in pauses), default=0.0),
        "full_collections": sum(generation == 2 for generation, _ in pauses),
        "frozen_objects": frozen,
    }


def _round(arm: str, conversations: int, at_once: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.support_gc", f"--child={arm}"]
    command += [f"--conversations={conversations}", f"--at-once={at_once}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{arm} round failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def measure(conversations: int, at_once: int, rounds: int) -> dict[str, Any]:
    found: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    for i in range(rounds):
        for arm in ARMS if i % 2 == 0 else reversed(ARMS):
            found[arm].append(_round(arm, conversations, at_once))
    result: dict[str, Any] = {}
    for arm, runs in found.items():

        def median(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return round(statistics.median(run[key] for run in runs), 2)

        result[f"{arm}_longest_pause_ms"] = round(max(run["longest_pause_ms"] for run in runs), 2)
        result[f"{arm}_full_collections"] = sum(run["full_collections"] for run in runs)
        result[f"{arm}_gc_ms_per_turn"] = median("gc_ms_per_turn")
        result[f"{arm}_p99_ms"] = median("p99_ms")
        result[f"{arm}_cpu_ms_per_turn"] = median("cpu_ms_per_turn")
    result |= {
        "frozen_objects": found["frozen"][0]["frozen_objects"],
        "turns_per_round": 2 * conversations,
        "conversations": conversations,
        "at_once": at_once,
        "rounds": rounds,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="the support server's collector pauses")
    parser.add_argument("--conversations", type=int, default=200, help="per round and arm")
    parser.add_argument("--at-once", type=int, default=20, help="conversations at a time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    # As `bench.support` serves the app; read when LangGraph is imported, so set first.
    os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")
    if args.child:
        print(json.dumps(asyncio.run(child(args.child, args.conversations, args.at_once))))
        return
    result = measure(args.conversations, args.at_once, args.rounds)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
