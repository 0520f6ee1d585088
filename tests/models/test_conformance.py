"""One conformance suite every model backend passes.

- `sglang` runs against the real SGLang-compatible local server (the embedded Gemma model
  behind `agentflow serve-model`'s app) on 127.0.0.1;
- `openai` and `anthropic` run against a loopback server replaying request/response
  pairs from the providers' documentation (`tests/fixtures/<provider>/`, each citing
  its source);
- `local` runs the embedded engine in-process (no HTTP, so no transport cases).

Every backend: text, JSON-schema output, a forced tool call whose arguments validate,
usage, streaming, a graph that runs unchanged on it. Every HTTP backend also: timeouts,
error mapping, retries and failover, against real sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    GpuPrice,
    Router,
    RoutingPolicy,
    StepContext,
    Tier,
    run_usage,
    tool,
)
from agentflow.exceptions import ModelError
from agentflow.messages import UserMessage
from agentflow.models.anthropic import AnthropicModel
from agentflow.models.base import Model, ModelRequest, ModelSettings, StreamDelta, output_spec
from agentflow.models.fallback import FallbackModel, RetryPolicy
from agentflow.models.openai import OpenAIModel
from agentflow.models.sglang import SGLangModel
from tests.loopback import FIXTURES, LoopbackServer, Reply, fixture, loopback

FAST = RetryPolicy(attempts=2, base_delay_s=0.001, max_delay_s=0.002)
SETTINGS = ModelSettings(max_tokens=64, temperature=0.0, timeout_s=120)


class EventState(AgentState, total=False):
    event: str
    answer: str


Day = Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


class CalendarEvent(BaseModel):
    # Bounded so a 270M model's answer always fits `max_tokens`: structure is guaranteed
    # by the grammar, length is not.
    name: str = Field(max_length=24)
    date: Day
    participants: list[Annotated[str, Field(max_length=12)]] = Field(max_length=3)


@tool
def get_weather(location: str, unit: str = "celsius") -> str:
    """Get the current weather in a given location.

    Args:
        location: The city and state, e.g. San Francisco, CA.
        unit: celsius or fahrenheit.
    """
    return f"18 degrees {unit} in {location}"


@dataclass(frozen=True)
class Backend:
    """How the suite reaches one backend."""

    name: str
    make: Callable[[str], Model]
    """Build the model for a base URL."""
    replay: str | None
    """The fixture folder the loopback replays, or None for a live server."""
    done_marker: bool = True
    """Whether the provider's streams end with `data: [DONE]`."""


BACKENDS = {
    "sglang": Backend(
        "sglang",
        lambda url: SGLangModel("google/gemma-3-270m", base_url=url, retry=FAST),
        replay=None,
    ),
    "openai": Backend(
        "openai",
        lambda url: OpenAIModel("gpt-4.1", base_url=url, api_key="test", retry=FAST),
        replay="openai",
    ),
    "anthropic": Backend(
        "anthropic",
        lambda url: AnthropicModel("claude-sonnet-4-5", base_url=url, api_key="test", retry=FAST),
        replay="anthropic",
        done_marker=False,
    ),
}
HTTP = sorted(BACKENDS)
ALL = [*HTTP, "local"]


@pytest.fixture
def replay() -> Iterator[LoopbackServer]:
    with loopback() as server:
        yield server


class Target:
    """One backend, ready for a scenario: replays queue the documented answers."""

    def __init__(self, name: str, replay: LoopbackServer, request: pytest.FixtureRequest):
        self.name = name
        self.server = replay
        self.backend = BACKENDS.get(name)
        self.request = request

    def model(self, *scenarios: str) -> Model:
        if self.name == "local":
            return self.request.getfixturevalue("gemma")
        assert self.backend is not None
        if self.backend.replay is None:
            return self.backend.make(self.request.getfixturevalue("live_url"))
        for scenario in scenarios:
            self.queue(scenario)
        return self.backend.make(self.server.url)

    def queue(self, scenario: str) -> None:
        assert self.backend is not None and self.backend.replay is not None
        data = fixture(f"{self.backend.replay}/{scenario}")
        if "events" in data:
            events = [*data["events"], *(["data: [DONE]"] if self.backend.done_marker else [])]
            self.server.reply(sse=events)
        else:
            self.server.reply(data["response"], status=data["status"], headers=data["headers"])

    @property
    def live(self) -> bool:
        return self.backend is None or self.backend.replay is None


@pytest.fixture(params=ALL)
def target(request: pytest.FixtureRequest, replay: LoopbackServer) -> Target:
    return Target(request.param, replay, request)


@pytest.fixture(params=HTTP)
def http_target(request: pytest.FixtureRequest, replay: LoopbackServer) -> Target:
    return Target(request.param, replay, request)


def ask(text: str, **fields: Any) -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=text)], settings=SETTINGS, **fields)


# -- every backend -----------------------------------------------------------------------


async def test_text_answer_with_usage(target: Target) -> None:
    model = target.model("text")
    try:
        response = await model.request(ask("Hello, Claude"))
    finally:
        await _close(model, target)
    assert response.message.content.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert 0 <= response.usage.cached_tokens <= response.usage.input_tokens
    assert response.latency_s > 0
    assert response.provider == model.provider


async def test_json_schema_output_validates(target: Target) -> None:
    model = target.model("json_output")
    req = ask(
        "Extract the event: Alice and Bob are going to a science fair on Friday.",
        output=output_spec(CalendarEvent),
    )
    try:
        response = await model.request(req)
    finally:
        await _close(model, target)
    assert req.output is not None
    event = req.output.parse(response.message.content)
    assert isinstance(event, CalendarEvent)
    if not target.live:
        assert event == CalendarEvent(
            name="science fair", date="Friday", participants=["Alice", "Bob"]
        )


async def test_forced_tool_call_has_valid_arguments(target: Target) -> None:
    model = target.model("tool_call")
    req = ask(
        "What is the weather like in San Francisco?",
        tools=[get_weather.spec],
        tool_choice="get_weather",
    )
    try:
        response = await model.request(req)
    finally:
        await _close(model, target)
    [call] = response.message.tool_calls
    assert call.name == "get_weather" and call.id
    arguments = get_weather.validate(call.arguments)
    assert isinstance(arguments["location"], str)
    assert response.finish_reason == "tool_calls"
    if not target.live:
        assert arguments["location"] == "San Francisco, CA"


async def test_streamed_text_adds_up_to_the_final_answer(target: Target) -> None:
    model = target.model("stream_text")
    try:
        events = [event async for event in model.stream(ask("Say hello."))]
    finally:
        await _close(model, target)
    *deltas, final = events
    assert all(isinstance(d, StreamDelta) for d in deltas)
    assert not isinstance(final, StreamDelta)
    assert "".join(d.text for d in deltas if isinstance(d, StreamDelta)) == final.message.content
    assert final.message.content.strip()
    assert final.usage.output_tokens > 0


async def test_a_graph_runs_unchanged_on_the_backend(target: Target) -> None:
    model = target.model("json_output", "text")
    router = Router(
        tiers=[
            Tier(
                name="tools",
                model=model,
                price=GpuPrice(gpu_hour_usd=2.0, tokens_per_s=2500),
                self_hosted=True,
            )
        ],
        policy=RoutingPolicy(kinds={"extract": "tools", "respond": "tools"}),
    )
    graph: AgentGraph[None] = AgentGraph("conformance", state=EventState, router=router)

    @graph.node(kind="extract")
    async def extract(state: dict[str, Any], ctx: StepContext[None]) -> dict[str, Any]:
        event = await ctx.llm(
            "Extract the event: Alice and Bob are going to a science fair on Friday.",
            output=CalendarEvent,
            settings=SETTINGS,
        )
        return {"event": event.name}

    @graph.node(kind="respond")
    async def respond(state: dict[str, Any], ctx: StepContext[None]) -> dict[str, Any]:
        return {"answer": await ctx.llm("Say hello.", settings=SETTINGS)}

    graph.edge(START, "extract").edge("extract", "respond").edge("respond", END)
    try:
        state = await graph.compile().ainvoke({"messages": [UserMessage(content="hi")]})
    finally:
        await _close(model, target)
    assert state["answer"].strip()
    usage = run_usage(state)
    assert usage.total.calls == 2 and usage.total.priced
    assert [s.tier for s in state["steps"]] == ["tools", "tools"]


# -- every HTTP backend --------------------------------------------------------------------


async def test_timeout_is_a_transient_model_error(http_target: Target) -> None:
    server = http_target.server
    server.handler = lambda _: Reply(stall=True)
    assert http_target.backend is not None
    async with http_target.backend.make(server.url) as model:
        settings = ModelSettings(max_tokens=8, timeout_s=0.2)
        with pytest.raises(ModelError, match="timed out") as info:
            await model.request(
                ModelRequest(messages=[UserMessage(content="hi")], settings=settings)
            )
    assert info.value.transient and info.value.status is None


@pytest.mark.parametrize(
    ("scenario", "transient"),
    [("error_invalid_request", False), ("error_rate_limit", True), ("error_overloaded", True)],
)
async def test_errors_map_to_model_errors(
    http_target: Target, scenario: str, transient: bool
) -> None:
    backend, server = http_target.backend, http_target.server
    assert backend is not None
    folder = backend.replay or "sglang"
    if backend.replay is None and not (FIXTURES / folder / f"{scenario}.json").exists():
        pytest.skip(f"SGLang documents no {scenario} example")
    data = fixture(f"{folder}/{scenario}")
    for _ in range(FAST.attempts):
        server.reply(data["response"], status=data["status"], headers=data["headers"])
    async with backend.make(server.url) as model:
        with pytest.raises(ModelError) as info:
            await model.request(ask("Hello"))
    error = info.value
    assert error.status == data["status"]
    assert error.transient is transient
    assert str(error.status) in str(error) and error.body == data["response"]
    assert len(server.requests) == (FAST.attempts if transient else 1)


async def test_rate_limit_is_retried_then_answered(http_target: Target) -> None:
    backend, server = http_target.backend, http_target.server
    assert backend is not None
    folder = backend.replay or "openai"
    limited = fixture(f"{folder}/error_rate_limit")
    server.reply(
        limited["response"], status=429, headers={**limited["headers"], "retry-after": "0"}
    )
    answer = fixture(f"{folder}/text")
    server.reply(answer["response"])
    async with backend.make(server.url) as model:
        response = await model.request(ask("Hello"))
    assert response.message.content.strip()
    assert len(server.requests) == 2


async def test_fails_over_from_a_dead_endpoint(http_target: Target) -> None:
    backend = http_target.backend
    assert backend is not None
    with loopback() as dead:
        dead_url = dead.url
    chain = FallbackModel(backend.make(dead_url), http_target.model("text"))
    async with chain as model:
        response = await model.request(ask("Hello, Claude"))
    assert response.message.content.strip()


async def _close(model: Model, target: Target) -> None:
    if target.name != "local":  # the session's embedded model is shared
        await model.aclose()
