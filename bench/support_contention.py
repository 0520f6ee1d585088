"""The support turn with many conversations at once in one process, and how long the
stores' SQLite statements take on their worker threads meanwhile.

Both arms of `bench.support` (agentflow's server app over `bench/support_graph.py`, and
bare LangGraph's of `bench/support_bare.py`), each on its own SQLite files, are served
in this process through httpx's ASGI transport (no sockets), one after the other,
`--rounds` times, the arms' order alternating. A round is `--conversations`
conversations of two order questions, `--at-once` at a time (a closed loop: one ends,
the next starts, so turns overlap at every stage of theirs), on scripted models that
answer after the simulated 100 ms; a turn's added latency is what the client sees minus
its 300 ms of model time. Meanwhile each statement agentflow's stores (the thread
directory and its leases, the review queue, the journal) run in a worker thread is
timed there, from its start to its end: time a statement spends waiting for another
writer of the file (in SQLite's busy handler, which sleeps between tries) or for the
GIL shows here.

    python -m bench.support_contention --json [--conversations 100] [--at-once 20]
        [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.support_instructions import HEADERS, overlapping, support_app
from bench.support_instructions import conversations as support_conversations

ARMS = ("agentflow", "bare_langgraph")


def _timed(store_calls: list[float], run: Callable[..., Any]) -> Callable[..., Any]:
    """`SqliteDatabase._one` (a store's one-statement call, in its worker thread), timed."""

    def one(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return run(*args)
        finally:
            store_calls.append((time.perf_counter() - started) * 1000)

    return one


async def _round(
    arm: str, conversations: int, at_once: int, latencies: list[float], store_calls: list[float]
) -> None:
    """`conversations` conversations, `at_once` at a time, on a new app of `arm`, after
    one alone (its store calls, the schema's making among them, not kept)."""
    import httpx

    from bench.support_graph import MODEL_DELAY_S

    model_ms = 1000 * MODEL_DELAY_S * 3  # triage, resolve, respond

    with tempfile.TemporaryDirectory(prefix="bench-contention-") as folder:
        app = support_app(arm.removeprefix("bare_"), Path(folder))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://b", headers=HEADERS) as client,
        ):
            kept = len(store_calls)
            await support_conversations(client, 1)  # files, tables and imports made
            del store_calls[kept:]
            took_ms: list[float] = []
            await overlapping(client, conversations, at_once, took_ms)
    latencies.extend(ms - model_ms for ms in took_ms)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[round(q * (len(ordered) - 1))], 2)


async def measure(conversations: int, at_once: int, rounds: int) -> dict[str, Any]:
    from agentflow import _stores

    latencies: dict[str, list[float]] = {arm: [] for arm in ARMS}
    store_calls: list[float] = []
    one = _stores.SqliteDatabase._one
    _stores.SqliteDatabase._one = _timed(store_calls, one)  # type: ignore[method-assign]
    try:
        for i in range(rounds):
            for arm in ARMS if i % 2 == 0 else reversed(ARMS):
                await _round(arm, conversations, at_once, latencies[arm], store_calls)
    finally:
        _stores.SqliteDatabase._one = one  # type: ignore[method-assign]
    turns = len(latencies["agentflow"])
    result: dict[str, Any] = {}
    for arm in ARMS:
        result[f"{arm}_p50_ms"] = _quantile(latencies[arm], 0.5)
        result[f"{arm}_p99_ms"] = _quantile(latencies[arm], 0.99)
    result |= {
        "store_call_p50_ms": _quantile(store_calls, 0.5),
        "store_call_p99_ms": _quantile(store_calls, 0.99),
        "store_call_max_ms": round(max(store_calls), 2),
        "store_calls_over_1ms": sum(ms > 1 for ms in store_calls),
        "store_calls": len(store_calls),
        "store_calls_per_turn": round(len(store_calls) / turns, 2),
        "store_call_mean_ms": round(statistics.fmean(store_calls), 3),
        "turns_per_arm": turns,
        "conversations": conversations,
        "at_once": at_once,
        "rounds": rounds,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="support turns at once in one process")
    parser.add_argument("--conversations", type=int, default=100, help="per round and arm")
    parser.add_argument("--at-once", type=int, default=20, help="conversations at a time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    # As `bench.support` serves both arms; read when LangGraph is imported, so set first.
    os.environ.setdefault("LANGGRAPH_STRICT_MSGPACK", "true")
    result = asyncio.run(measure(args.conversations, args.at_once, args.rounds))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
