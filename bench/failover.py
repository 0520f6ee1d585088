"""Failover under a flaky endpoint: does every request still get an answer, and at what cost?

Two real HTTP servers on 127.0.0.1 speak the chat completions protocol. The primary
fails 30% of its requests (half as HTTP 503, half by dropping the connection) and, for
the middle fifth of the run, goes away entirely (its port refuses connections); the
backup always answers. A `FallbackModel` over two `OpenAIModel`s, each with the default
retry policy (fast backoff here) and a circuit breaker, sends 1,000 requests, 16 at a
time.

- `success_rate`: requests that got an answer;
- `p50_ms`, `p99_ms`: latency per request, retries and failover included;
- `extra_calls_per_request`: HTTP attempts beyond one per request (retries, failovers),
  counted on the client, so connections refused count too;
- `breaker_refusals`: calls the open circuit refused without touching the network.

    python -m bench.failover --json [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

import httpx

from agentflow import ModelRequest, ModelSettings, UserMessage
from agentflow.exceptions import AgentflowError
from agentflow.models.fallback import CircuitBreaker, FallbackModel, RetryPolicy
from agentflow.models.openai import OpenAIModel
from tests.loopback import LoopbackServer, Recorded, Reply

FAILURE_RATE = 0.3
CONCURRENCY = 16


def completion(text: str) -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


def flaky(rng: random.Random) -> Any:
    def answer(_: Recorded) -> Reply:
        roll = rng.random()
        if roll < FAILURE_RATE / 2:
            return Reply(status=503, body={"error": {"message": "overloaded"}})
        if roll < FAILURE_RATE:
            return Reply(drop=True)
        return Reply(body=completion("primary"))

    return answer


async def run(requests: int, seed: int) -> dict[str, Any]:
    primary, backup = LoopbackServer(), LoopbackServer()
    primary.handler = flaky(random.Random(seed))
    backup.handler = lambda _: Reply(body=completion("backup"))
    primary.start()
    backup.start()
    attempts = 0

    async def count(_: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    client = httpx.AsyncClient(event_hooks={"request": [count]})
    retry = RetryPolicy(attempts=3, base_delay_s=0.005, max_delay_s=0.05)
    breaker = CircuitBreaker(failure_threshold=5, cooldown_s=0.25)
    model = FallbackModel(
        OpenAIModel(
            "bench", base_url=primary.url, api_key="k", retry=retry, breaker=breaker, client=client
        ),
        OpenAIModel("bench", base_url=backup.url, api_key="k", retry=retry, client=client),
    )
    request = ModelRequest(
        messages=[UserMessage(content="Where is my order?")],
        settings=ModelSettings(timeout_s=2.0, max_tokens=16),
    )
    outage = range(int(requests * 0.4), int(requests * 0.6))
    latencies: list[float] = []
    answered = 0
    sent = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        nonlocal answered, sent
        async with gate:
            sent += 1
            if sent == outage.start:
                primary.stop()
            elif sent == outage.stop:
                primary.start()
            started = time.perf_counter()
            try:
                response = await model.request(request)
            except AgentflowError:  # a failed request is what we count
                return
            finally:
                latencies.append((time.perf_counter() - started) * 1000)
            answered += bool(response.message.content)

    try:
        await asyncio.gather(*(one(i) for i in range(requests)))
    finally:
        await client.aclose()
        primary.stop()
        backup.stop()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "requests": requests,
        "success_rate": round(answered / requests, 4),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(cuts[98], 2),
        "extra_calls_per_request": round(attempts / requests - 1, 3),
        "breaker_refusals": breaker.refused,
        "primary_requests_received": len(primary.requests),
        "backup_requests_received": len(backup.requests),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="failover under a flaky endpoint")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.seed))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
