"""Retries, circuit breakers and failover, against real loopback servers that fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.exceptions import (
    BudgetExceeded,
    CircuitOpen,
    ModelError,
    OutputValidationError,
    StreamInterrupted,
)
from agentflow.messages import AssistantMessage, ToolCall, UserMessage
from agentflow.models.base import ModelRequest, ModelSettings, StreamDelta, ToolSpec, output_spec
from agentflow.models.fallback import (
    CircuitBreaker,
    FallbackModel,
    RetryPolicy,
    send_with_retries,
    try_in_order,
)
from agentflow.models.openai import OpenAIModel
from agentflow.models.test import ScriptedModel
from tests.loopback import LoopbackServer, Reply, loopback

FAST = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.002)


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def chunk(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def done() -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def ask(text: str = "hi", *, timeout_s: float = 5.0) -> ModelRequest:
    return ModelRequest(
        messages=[UserMessage(content=text)], settings=ModelSettings(timeout_s=timeout_s)
    )


def model_at(server: LoopbackServer, **kwargs: Any) -> OpenAIModel:
    kwargs.setdefault("retry", FAST)
    return OpenAIModel("m", base_url=server.url, api_key="k", **kwargs)


@pytest.fixture
def primary() -> Iterator[LoopbackServer]:
    with loopback() as server:
        yield server


@pytest.fixture
def backup() -> Iterator[LoopbackServer]:
    with loopback() as server:
        yield server


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- retry policy ---------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=5.0, jitter=0.5)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = {policy.delay_s(attempt) for _ in range(50)}
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert len(delays) > 1, "jitter spreads retries"
    assert policy.delay_s(1, retry_after=7.5) == 7.5


async def test_transient_errors_are_retried_then_raised() -> None:
    waits: list[float] = []
    calls = 0

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def send() -> str:
        nonlocal calls
        calls += 1
        raise ModelError("busy", status=503, transient=True, retry_after=0.25)

    with pytest.raises(ModelError, match="busy"):
        await send_with_retries(send, policy=RetryPolicy(attempts=4), sleep=sleep)
    assert calls == 4
    assert waits == [0.25, 0.25, 0.25]


async def test_a_retry_after_longer_than_allowed_fails_at_once() -> None:
    calls = 0

    async def send() -> str:
        nonlocal calls
        calls += 1
        raise ModelError("slow down", status=429, transient=True, retry_after=3600)

    with pytest.raises(ModelError, match="slow down"):
        await send_with_retries(send, policy=RetryPolicy(attempts=5, max_retry_after_s=30))
    assert calls == 1


async def test_429_with_retry_after_is_retried_over_http(primary: LoopbackServer) -> None:
    primary.reply({"error": {"message": "rate limited"}}, status=429, headers={"retry-after": "0"})
    primary.reply(completion("done"))
    async with model_at(primary) as model:
        response = await model.request(ask())
    assert response.message.content == "done"
    assert len(primary.requests) == 2


async def test_400_is_not_retried(primary: LoopbackServer) -> None:
    primary.reply({"error": {"message": "bad schema"}}, status=400)
    async with model_at(primary) as model:
        with pytest.raises(ModelError, match="HTTP 400: bad schema") as info:
            await model.request(ask())
    assert info.value.status == 400 and not info.value.transient
    assert len(primary.requests) == 1


async def test_a_stalled_server_times_out_as_a_transient_error(primary: LoopbackServer) -> None:
    primary.reply(stall=True)
    async with model_at(primary, retry=RetryPolicy(attempts=1)) as model:
        with pytest.raises(ModelError, match=r"timed out after 0\.2s") as info:
            await model.request(ask(timeout_s=0.2))
    assert info.value.transient and info.value.status is None


# -- circuit breaker --------------------------------------------------------------------


def test_breaker_opens_after_n_failures_and_half_opens_after_cooldown() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_failure()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen, match="after 3 failures") as info:
        breaker.before_call("sglang:glm")
    assert info.value.retry_after == pytest.approx(10)
    clock.now += 10
    breaker.before_call()  # the probe
    assert breaker.state == "half_open"
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # only one probe at a time
    breaker.record_failure()  # the probe failed: open again, for a new cool-down
    assert breaker.state == "open"
    clock.now += 10
    breaker.before_call()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.failures == 0


async def test_open_circuit_stops_calling_a_dead_endpoint(primary: LoopbackServer) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=3600)
    primary.stop()
    async with model_at(primary, retry=RetryPolicy(attempts=1), breaker=breaker) as model:
        for _ in range(2):
            with pytest.raises(ModelError, match="could not connect"):
                await model.request(ask())
        primary.start()
        primary.reply(completion("never sent"))
        with pytest.raises(CircuitOpen):
            await model.request(ask())
    assert primary.requests == [], "an open circuit sends nothing"


async def test_half_open_probe_closes_the_circuit_when_the_endpoint_is_back(
    primary: LoopbackServer,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    primary.reply(status=503, body={"error": {"message": "down"}})
    async with model_at(primary, retry=RetryPolicy(attempts=1), breaker=breaker) as model:
        with pytest.raises(ModelError, match="down"):
            await model.request(ask())
        assert breaker.state == "open"
        clock.now += 5
        primary.reply(completion("back"))
        assert (await model.request(ask())).message.content == "back"
    assert breaker.state == "closed"


# -- failover ---------------------------------------------------------------------------


async def test_fails_over_when_the_primary_is_killed_mid_test(
    primary: LoopbackServer, backup: LoopbackServer
) -> None:
    primary.reply(completion("from primary"))
    backup.handler = lambda _: Reply(body=completion("from backup"))
    async with FallbackModel(model_at(primary), model_at(backup)) as model:
        assert (await model.request(ask())).message.content == "from primary"
        primary.stop()
        assert (await model.request(ask())).message.content == "from backup"
    assert len(backup.requests) == 1


async def test_fails_over_when_the_primary_stalls(
    primary: LoopbackServer, backup: LoopbackServer
) -> None:
    primary.handler = lambda _: Reply(stall=True)
    backup.reply(completion("from backup"))
    fallback = FallbackModel(model_at(primary, retry=RetryPolicy(attempts=1)), model_at(backup))
    async with fallback as model:
        response = await model.request(ask(timeout_s=0.3))
    assert response.message.content == "from backup"


async def test_fails_over_on_garbled_and_empty_answers(
    primary: LoopbackServer, backup: LoopbackServer
) -> None:
    primary.reply("<html>bad gateway</html>")
    primary.reply(completion(""))
    backup.handler = lambda _: Reply(body=completion("fine"))
    async with FallbackModel(model_at(primary), model_at(backup)) as model:
        assert (await model.request(ask())).message.content == "fine"  # garbled
        assert (await model.request(ask())).message.content == "fine"  # empty
    assert len(primary.requests) == 2


async def test_fails_over_on_invalid_output_and_unknown_tools() -> None:
    spec = output_spec({"type": "object", "properties": {"n": {"type": "integer"}}})
    weather = ToolSpec(name="get_weather", description="", parameters={"type": "object"})
    first = ScriptedModel(["not json", ToolCall(id="c1", name="rm_rf", arguments={})])
    second = ScriptedModel(['{"n": 1}', ToolCall(id="c2", name="get_weather", arguments={})])
    model = FallbackModel(first, second)
    structured = ModelRequest(messages=[UserMessage(content="n?")], output=spec)
    assert (await model.request(structured)).message.content == '{"n": 1}'
    tools = ModelRequest(messages=[UserMessage(content="w?")], tools=[weather])
    assert (await model.request(tools)).message.tool_calls[0].name == "get_weather"


async def test_when_every_model_fails_the_last_failure_is_raised_with_the_others() -> None:
    spec = output_spec({"type": "object"})
    model = FallbackModel(
        ScriptedModel([ModelError("primary down", status=503, transient=True)]),
        ScriptedModel(["still not json"]),
    )
    with pytest.raises(OutputValidationError) as info:
        await model.request(ModelRequest(messages=[UserMessage(content="x")], output=spec))
    assert info.value.raw == "still not json"
    assert any("primary down" in note for note in info.value.__notes__)


async def test_try_in_order_tells_each_option_why_the_one_before_failed() -> None:
    seen: list[tuple[str, str | None]] = []

    async def attempt(option: str, failure: ModelError | OutputValidationError | None) -> str:
        seen.append((option, None if failure is None else str(failure)))
        if option != "c":
            raise ModelError(f"{option} down")
        return "from c"

    assert await try_in_order(["a", "b", "c"], attempt, name=str) == "from c"
    assert seen == [("a", None), ("b", "a down"), ("c", "b down")]


async def test_try_in_order_stops_at_an_error_another_option_would_meet_too() -> None:
    tried: list[str] = []

    async def attempt(option: str, failure: ModelError | OutputValidationError | None) -> str:
        tried.append(option)
        raise BudgetExceeded(unit="usd", limit=1.0, spent=1.0, estimate=0.1)

    with pytest.raises(BudgetExceeded):
        await try_in_order(["a", "b"], attempt)
    assert tried == ["a"]


def test_capabilities_and_data_boundary_are_the_weakest_of_the_chain() -> None:
    hosted = ScriptedModel(["x"])
    hosted.profile = {**hosted.profile, "self_hosted": False, "regex": False}  # type: ignore[assignment]
    model = FallbackModel(ScriptedModel(["x"]), hosted)
    assert model.profile["self_hosted"] is False
    assert model.profile["regex"] is False
    assert model.profile["json_schema"] is True


async def test_stream_fails_over_if_nothing_was_emitted(
    primary: LoopbackServer, backup: LoopbackServer
) -> None:
    primary.reply(status=503, body={"error": {"message": "down"}})
    backup.reply(sse=[chunk("Hel"), chunk("lo"), done(), "data: [DONE]"])
    fallback = FallbackModel(model_at(primary, retry=RetryPolicy(attempts=1)), model_at(backup))
    async with fallback as model:
        events = [event async for event in model.stream(ask())]
    assert [e.text for e in events if isinstance(e, StreamDelta)] == ["Hel", "lo"]
    assert events[-1].message == AssistantMessage(content="Hello")  # type: ignore[union-attr]


async def test_stream_that_breaks_after_emitting_raises_stream_interrupted(
    primary: LoopbackServer, backup: LoopbackServer
) -> None:
    primary.reply(sse=[chunk("Hel"), chunk("lo"), chunk(" world")], sse_fail_after=2)
    backup.reply(sse=[chunk("never"), "data: [DONE]"])
    emitted: list[str] = []

    async def consume(model: FallbackModel) -> None:
        async for event in model.stream(ask()):
            if isinstance(event, StreamDelta):
                emitted.append(event.text)

    async with FallbackModel(model_at(primary), model_at(backup)) as model:
        with pytest.raises(StreamInterrupted) as info:
            await consume(model)
    assert info.value.emitted == "Hello" == "".join(emitted)
    assert backup.requests == [], "no silent failover once text went out"
