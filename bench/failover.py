"""Failover under a flaky endpoint: does every request still get an answer, and at what cost?

Two real HTTP servers on 127.0.0.1 speak the chat completions protocol. The primary
fails 30% of its requests (half as HTTP 503, half by dropping the connection) and, for
the middle fifth of the run, goes away entirely (its port refuses connections); the
backup always answers. Two clients meet the same fault script in one run, one after the
other, each on fresh servers seeded alike (the primary's Nth request fails the same way,
the outage covers the same requests), sending 1,000 requests, 16 at a time:

- `agentflow`: a `FallbackModel` over two `OpenAIModel`s, three tries each with a fast
  backoff, and a circuit breaker on the primary (5 failures in a row, 0.25 s cool-down);
- `litellm`: LiteLLM's `Router` with the two as deployments of one model group (`order`
  1 and 2), three tries (`num_retries=2`), `allowed_fails=5`, `cooldown_time=0.25`.

Per client:

- `success_rate`: requests that got an answer;
- `p50_ms`, `p99_ms`: latency per request, retries and failover included;
- `extra_calls_per_request`: HTTP attempts beyond one per request (retries, failovers),
  counted on the client, so connections refused count too;
- `breaker_refusals` (agentflow): calls the open circuit refused without touching the
  network;
- `primary_requests_received`, `backup_requests_received`: what each server saw.

    python -m bench.failover --json [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from agentflow import ModelRequest, ModelSettings, UserMessage
from agentflow.models.fallback import CircuitBreaker, FallbackModel, RetryPolicy
from agentflow.models.openai import OpenAIModel
from tests.loopback import LoopbackServer, Recorded, Reply

FAILURE_RATE = 0.3
CONCURRENCY = 16
TIMEOUT_S = 2.0
BASE_DELAY_S = 0.005
MAX_DELAY_S = 0.05
COOLDOWN_S = 0.25


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


@dataclass(kw_only=True)
class Arm:
    """One client under test: how it sends a request, and its HTTP attempt count."""

    send: Callable[[], Awaitable[str]]
    """Send one request; return the answer's text, raise if the client gave up."""
    attempts: Callable[[], int]
    aclose: Callable[[], Awaitable[None]]
    """Release what the client holds (its HTTP client)."""
    stats: Callable[[], dict[str, Any]] = dict
    """Figures of its own, beside the common ones."""


def counting_client() -> tuple[httpx.AsyncClient, Callable[[], int]]:
    """An HTTP client that counts the attempts it starts, refused connections included."""
    attempts = 0

    async def count(_: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    return httpx.AsyncClient(event_hooks={"request": [count]}), lambda: attempts


def agentflow_arm(primary: str, backup: str) -> Arm:
    client, attempts = counting_client()
    retry = RetryPolicy(attempts=3, base_delay_s=BASE_DELAY_S, max_delay_s=MAX_DELAY_S)
    breaker = CircuitBreaker(failure_threshold=5, cooldown_s=COOLDOWN_S)
    model = FallbackModel(
        OpenAIModel(
            "bench", base_url=primary, api_key="k", retry=retry, breaker=breaker, client=client
        ),
        OpenAIModel("bench", base_url=backup, api_key="k", retry=retry, client=client),
    )
    request = ModelRequest(
        messages=[UserMessage(content="Where is my order?")],
        settings=ModelSettings(timeout_s=TIMEOUT_S, max_tokens=16),
    )

    async def send() -> str:
        return (await model.request(request)).message.content

    return Arm(
        send=send,
        attempts=attempts,
        stats=lambda: {"breaker_refusals": breaker.refused},
        aclose=client.aclose,
    )


def litellm_arm(primary: str, backup: str) -> Arm:
    """LiteLLM's Router as its docs set up a primary and a backup deployment of one model:
    one model group, `order` 1 and 2, three tries per request, and a deployment that fails
    `allowed_fails` times cooled down for the same time as agentflow's breaker."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch of its price map
    import litellm
    from litellm.router import Router
    from litellm.types.llms.openai import AllMessageValues

    client, attempts = counting_client()
    litellm.aclient_session = client
    deployment = {"model": "openai/bench", "api_key": "k", "timeout": TIMEOUT_S}
    router = Router(
        model_list=[
            {
                "model_name": "bench",
                "litellm_params": {**deployment, "api_base": primary, "order": 1},
            },
            {
                "model_name": "bench",
                "litellm_params": {**deployment, "api_base": backup, "order": 2},
            },
        ],
        num_retries=2,  # three tries in all, as RetryPolicy(attempts=3)
        # `fallbacks=[{"primary": ["backup"]}]` over two groups instead sleeps its own
        # backoff (about 5 s a request here) before giving up on the primary.
        allowed_fails=5,
        cooldown_time=COOLDOWN_S,
    )
    messages: list[AllMessageValues] = [{"role": "user", "content": "Where is my order?"}]

    async def send() -> str:
        response = await router.acompletion(model="bench", messages=messages, max_tokens=16)
        return response.choices[0].message.content or ""  # pyright: ignore[reportAttributeAccessIssue]

    async def aclose() -> None:
        litellm.aclient_session = None
        await client.aclose()

    return Arm(send=send, attempts=attempts, aclose=aclose)


async def run_arm(make: Callable[[str, str], Arm], requests: int, seed: int) -> dict[str, Any]:
    """Send `requests` through one arm under the fault script, seeded so both arms meet the
    same one: the primary's Nth request gets the same fate, the outage the same requests."""
    primary, backup = LoopbackServer(), LoopbackServer()
    primary.handler = flaky(random.Random(seed))
    backup.handler = lambda _: Reply(body=completion("backup"))
    primary.start()
    backup.start()
    arm = make(primary.url, backup.url)
    outage = range(int(requests * 0.4), int(requests * 0.6))
    latencies: list[float] = []
    answered = sent = 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one() -> None:
        nonlocal answered, sent
        async with gate:
            sent += 1
            if sent == outage.start:
                primary.stop()
            elif sent == outage.stop:
                primary.start()
            started = time.perf_counter()
            try:
                text = await arm.send()
            except Exception:  # a failed request is what we count, whatever the client raised
                text = ""
            latencies.append((time.perf_counter() - started) * 1000)
            answered += bool(text)

    try:
        await asyncio.gather(*(one() for _ in range(requests)))
    finally:
        await arm.aclose()
        primary.stop()
        backup.stop()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "success_rate": round(answered / requests, 4),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(cuts[98], 2),
        "extra_calls_per_request": round(arm.attempts() / requests - 1, 3),
        **arm.stats(),
        "primary_requests_received": len(primary.requests),
        "backup_requests_received": len(backup.requests),
    }


async def run(requests: int, seed: int) -> dict[str, Any]:
    result: dict[str, Any] = {"requests": requests}
    for make in (agentflow_arm, litellm_arm):
        result[make.__name__.removesuffix("_arm")] = await run_arm(make, requests, seed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="failover under a flaky endpoint")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.seed))
    if args.json:
        print(json.dumps(result))
        return
    for arm in ("agentflow", "litellm"):
        print(arm)
        for key, value in result[arm].items():
            print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
