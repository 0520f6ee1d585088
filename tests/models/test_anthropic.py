"""The Anthropic backend against a loopback server replaying Anthropic's documented answers.

Fixtures live in `tests/fixtures/anthropic/`, each with the docs page it comes from.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from agentflow.exceptions import ConfigError, ModelError, ToolCallParseError
from agentflow.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentflow.models import infer_model
from agentflow.models.anthropic import (
    ANTHROPIC_PROFILE,
    OUTPUT_TOOL_DESCRIPTION,
    AnthropicModel,
    thinking_budget,
)
from agentflow.models.base import (
    Choice,
    Ebnf,
    JsonSchema,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    OutputSpec,
    Regex,
    StreamDelta,
    ToolSpec,
)
from agentflow.models.fallback import RetryPolicy
from tests.loopback import LoopbackServer, fixture, loopback

KEY = "sk-ant-test"

# https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking: the documented
# response format (thinking, redacted_thinking, text), in a Message from the same docs.
THINKING_ANSWER = {
    "id": "msg_01Bq9w938a90dw8r",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [
        {
            "type": "thinking",
            "thinking": "Let me analyze this step by step...",
            "signature": "WaUjzkypQ2mUEVM36O2TxuC06KN8xyfbJwyem2dw3URve/op91XWHOEBLLqIOMfFG/UvL",
        },
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIw"},
        {"type": "text", "text": "Based on my analysis..."},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 320, "output_tokens": 150},
}

# https://docs.anthropic.com/en/api/messages-examples#putting-words-in-claudes-mouth
MAX_TOKENS_ANSWER = {
    "id": "msg_01Q8Faay6S7QPTvEUUQARt7h",
    "type": "message",
    "role": "assistant",
    "content": [{"type": "text", "text": "C"}],
    "model": "claude-3-7-sonnet-20250219",
    "stop_reason": "max_tokens",
    "stop_sequence": None,
    "usage": {"input_tokens": 42, "output_tokens": 1},
}


class CalendarEvent(BaseModel):
    name: str
    date: str
    participants: list[str]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback() as running:
        yield running


def claude(
    server: LoopbackServer, model: str = "claude-sonnet-4-5", **kwargs: Any
) -> AnthropicModel:
    return AnthropicModel(model, base_url=server.url, api_key=KEY, **kwargs)


def replay(server: LoopbackServer, name: str) -> dict[str, Any]:
    """Script the fixture's answer as the server's next reply; return the fixture."""
    documented = fixture(f"anthropic/{name}")
    server.reply(documented["response"], status=documented["status"], headers=documented["headers"])
    return documented


def answer_with(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    """The documented text answer with other content blocks."""
    return {**fixture("anthropic/text")["response"], "content": content, "stop_reason": stop_reason}


def sse(events: list[dict[str, Any]]) -> list[str]:
    """Events as the API sends them: `event: TYPE` then `data: JSON`."""
    return [f"event: {event['type']}\ndata: {json.dumps(event)}" for event in events]


def sent(server: LoopbackServer) -> Any:
    return server.requests[-1].json


def ask(text: str = "Hello, Claude", **kwargs: Any) -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=text)], **kwargs)


def tool_use(call: ToolCall) -> dict[str, Any]:
    """A tool call as a documented `tool_use` block."""
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}


def documented_tool(documented: dict[str, Any]) -> ToolSpec:
    wire = documented["request"]["tools"][0]
    return ToolSpec(
        name=wire["name"], description=wire["description"], parameters=wire["input_schema"]
    )


async def drain(
    stream: AsyncIterator[StreamDelta | ModelResponse], *, into: list[StreamDelta | ModelResponse]
) -> None:
    async for event in stream:
        into.append(event)


async def collect(model: AnthropicModel, req: ModelRequest) -> tuple[list[str], ModelResponse]:
    """Run a stream; return the texts of its deltas and the final response (which is last)."""
    *deltas, final = [event async for event in model.stream(req)]
    assert isinstance(final, ModelResponse)
    assert all(isinstance(delta, StreamDelta) for delta in deltas)
    return [delta.text for delta in deltas if isinstance(delta, StreamDelta)], final


# -- construction -----------------------------------------------------------------------


def test_missing_api_key_is_a_config_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY") as info:
        AnthropicModel("claude-sonnet-4-5")
    assert info.value.key == "ANTHROPIC_API_KEY"


async def test_infer_model_builds_it_with_the_key_from_the_environment(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    replay(server, "text")
    model = infer_model(f"anthropic:claude-sonnet-4-5@{server.url}")
    assert isinstance(model, AnthropicModel)
    async with model:
        response = await model.request(ask())
    assert (model.name, model.provider) == ("claude-sonnet-4-5", "anthropic")
    assert model.profile == ANTHROPIC_PROFILE
    assert ANTHROPIC_PROFILE == {
        "json_schema": True,
        "regex": False,
        "ebnf": False,
        "tools": True,
        "tool_call_format": "openai",
        "self_hosted": False,
    }
    assert server.requests[-1].headers["x-api-key"] == "sk-ant-from-env"
    assert sent(server)["model"] == "claude-sonnet-4-5"
    assert response.message.content == "Hello!"


# -- plain answers ----------------------------------------------------------------------


async def test_text_answer_maps_the_documented_message(server: LoopbackServer) -> None:
    documented = replay(server, "text")
    async with claude(server, documented["request"]["model"]) as model:
        response = await model.request(ask(settings=ModelSettings(max_tokens=1024)))
    recorded = server.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/messages")
    assert recorded.headers["x-api-key"] == KEY
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert recorded.headers["content-type"] == "application/json"
    assert recorded.json == documented["request"]
    assert response.message == AssistantMessage(content="Hello!")
    assert response.usage == Usage(input_tokens=12, output_tokens=6)
    assert response.finish_reason == "stop"
    assert response.model == "claude-3-7-sonnet-20250219"
    assert response.provider == "anthropic"
    assert response.latency_s > 0


async def test_max_tokens_stop_is_length(server: LoopbackServer) -> None:
    server.reply(MAX_TOKENS_ANSWER)
    async with claude(server) as model:
        response = await model.request(ask(settings=ModelSettings(max_tokens=1)))
    assert sent(server)["max_tokens"] == 1
    assert (response.message.content, response.finish_reason) == ("C", "length")


async def test_prompt_cache_reads_and_writes_are_counted(server: LoopbackServer) -> None:
    replay(server, "cached_usage")
    async with claude(server) as model:
        response = await model.request(ask("Analyze the major themes in 'Pride and Prejudice'."))
    # The docs: total input = cache_read_input_tokens + cache_creation_input_tokens + input_tokens.
    assert response.usage == Usage(
        input_tokens=21 + 188086 + 1024,
        output_tokens=393,
        cached_tokens=188086,
        cache_write_tokens=1024,
    )


@pytest.mark.parametrize(
    "garbled",
    [{"id": "msg_1", "type": "message", "role": "assistant"}, {"content": "Hello!"}, [1, 2]],
)
async def test_a_body_that_is_not_a_messages_response_is_a_model_error(
    server: LoopbackServer, garbled: Any
) -> None:
    server.reply(garbled)
    async with claude(server) as model:
        with pytest.raises(ModelError, match="garbled") as info:
            await model.request(ask())
    assert info.value.body == garbled
    assert not info.value.transient
    assert len(server.requests) == 1


# -- conversations and tools ------------------------------------------------------------


async def test_conversation_maps_system_tool_use_and_grouped_tool_results(
    server: LoopbackServer,
) -> None:
    replay(server, "text")
    paris = ToolCall(id="toolu_1", name="get_weather", arguments={"location": "Paris"})
    clock = ToolCall(id="toolu_2", name="get_time", arguments={"timezone": "Europe/Paris"})
    again = ToolCall(id="toolu_3", name="get_weather", arguments={"location": "Lyon"})
    messages = [
        SystemMessage(content="You are a weather bot."),
        UserMessage(content="Weather and time in Paris?"),
        AssistantMessage(content="Checking.", tool_calls=[paris, clock]),
        ToolResultMessage(tool_call_id="toolu_1", name="get_weather", content="15 degrees"),
        ToolResultMessage(
            tool_call_id="toolu_2", name="get_time", content="time service down", is_error=True
        ),
        AssistantMessage(tool_calls=[again]),
        ToolResultMessage(tool_call_id="toolu_3", name="get_weather", content=""),
        SystemMessage(content="Answer in French."),
        UserMessage(content="Thanks!"),
    ]
    async with claude(server) as model:
        await model.request(ModelRequest(messages=messages))
    body = sent(server)
    assert body["system"] == "You are a weather bot.\n\nAnswer in French."
    assert body["messages"] == [
        {"role": "user", "content": "Weather and time in Paris?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Checking."}, tool_use(paris), tool_use(clock)],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": "time service down",
                    "is_error": True,
                },
            ],
        },
        {"role": "assistant", "content": [tool_use(again)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3"}]},
        {"role": "user", "content": "Thanks!"},
    ]
    assert "tools" not in body and "tool_choice" not in body


async def test_tool_use_answer_becomes_a_tool_call(server: LoopbackServer) -> None:
    documented = replay(server, "tool_call")
    question = documented["request"]["messages"][0]["content"]
    async with claude(server, documented["request"]["model"]) as model:
        response = await model.request(ask(question, tools=[documented_tool(documented)]))
    assert sent(server) == {**documented["request"], "tool_choice": {"type": "auto"}}
    assert response.message.tool_calls == [
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="get_weather",
            arguments={"location": "San Francisco, CA"},
        )
    ]
    assert response.message.content.startswith("<thinking>I need to call the get_weather")
    assert response.finish_reason == "tool_calls"
    assert response.usage == Usage(input_tokens=472, output_tokens=89)


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
async def test_tool_choice_is_written_the_anthropic_way(
    server: LoopbackServer, choice: str, wire: dict[str, str]
) -> None:
    documented = replay(server, "tool_call")
    async with claude(server) as model:
        await model.request(ask(tools=[documented_tool(documented)], tool_choice=choice))
    assert sent(server)["tool_choice"] == wire
    assert sent(server)["tools"] == documented["request"]["tools"]


async def test_naming_a_tool_that_is_not_offered_fails_before_sending(
    server: LoopbackServer,
) -> None:
    tool = documented_tool(fixture("anthropic/tool_call"))
    async with claude(server) as model:
        with pytest.raises(ValueError, match="'get_time', which is not offered"):
            await model.request(ask(tools=[tool], tool_choice="get_time"))
    assert server.requests == []


# -- structured output ------------------------------------------------------------------


async def test_json_schema_output_is_a_forced_tool_whose_input_is_the_content(
    server: LoopbackServer,
) -> None:
    documented = replay(server, "json_output")
    schema = documented["request"]["tools"][0]["input_schema"]
    spec = JsonSchema(schema=schema, name="CalendarEvent", type=CalendarEvent)
    question = documented["request"]["messages"][0]["content"]
    async with claude(server, documented["request"]["model"]) as model:
        response = await model.request(ask(question, output=spec))
    assert sent(server) == documented["request"]
    assert response.message.tool_calls == []
    assert response.finish_reason == "stop"
    assert spec.parse(response.message.content) == CalendarEvent(
        name="science fair", date="Friday", participants=["Alice", "Bob"]
    )


async def test_choice_output_is_a_forced_enum_tool_answered_with_the_option(
    server: LoopbackServer,
) -> None:
    picked = {"type": "tool_use", "id": "toolu_c", "name": "choice", "input": {"choice": "refund"}}
    server.reply(answer_with([picked], "tool_use"))
    spec = Choice(options=["refund", "cancel", "other"])
    async with claude(server) as model:
        response = await model.request(ask("My parcel arrived broken.", output=spec))
    body = sent(server)
    assert body["tools"] == [
        {
            "name": "choice",
            "description": OUTPUT_TOOL_DESCRIPTION,
            "input_schema": {
                "type": "object",
                "properties": {"choice": {"enum": ["refund", "cancel", "other"]}},
                "required": ["choice"],
            },
        }
    ]
    assert body["tool_choice"] == {"type": "tool", "name": "choice"}
    assert (response.message.content, response.message.tool_calls) == ("refund", [])
    assert spec.parse(response.message.content) == "refund"


async def test_a_schema_that_is_not_an_object_is_wrapped_and_unwrapped(
    server: LoopbackServer,
) -> None:
    spec = JsonSchema(schema=TypeAdapter(list[int]).json_schema(), name="numbers", type=list[int])
    numbers = {"type": "tool_use", "id": "toolu_n", "name": "numbers", "input": {"value": [4, 2]}}
    server.reply(answer_with([numbers], "tool_use"))
    async with claude(server) as model:
        response = await model.request(ask("Two numbers, please.", output=spec))
    assert sent(server)["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"value": {"type": "array", "items": {"type": "integer"}}},
        "required": ["value"],
    }
    assert spec.parse(response.message.content) == [4, 2]


@pytest.mark.parametrize(
    ("spec", "stated"),
    [(Regex(pattern=r"\d{4}"), r"\d{4}"), (Ebnf(grammar='root ::= "yes" | "no"'), "root ::=")],
)
async def test_regex_and_ebnf_are_stated_in_the_system_prompt(
    server: LoopbackServer, spec: OutputSpec, stated: str
) -> None:
    replay(server, "text")
    messages = [SystemMessage(content="Be brief."), UserMessage(content="Which year?")]
    async with claude(server) as model:
        response = await model.request(ModelRequest(messages=messages, output=spec))
    body = sent(server)
    assert body["system"].startswith("Be brief.\n\n")
    assert stated in body["system"]
    assert "tools" not in body
    assert response.message.content == "Hello!"  # left for the client-side validation


async def test_tools_and_an_output_spec_together_are_refused(server: LoopbackServer) -> None:
    tool = documented_tool(fixture("anthropic/tool_call"))
    async with claude(server) as model:
        with pytest.raises(ValueError, match="either tools or an output spec"):
            await model.request(ask(tools=[tool], output=Choice(options=["a", "b"])))
    assert server.requests == []


# -- extended thinking ------------------------------------------------------------------


@pytest.mark.parametrize(("max_tokens", "budget"), [(1025, 1024), (4096, 2048), (64000, 8192)])
def test_thinking_budget_is_half_of_max_tokens_within_the_documented_bounds(
    max_tokens: int, budget: int
) -> None:
    assert thinking_budget(ModelSettings(max_tokens=max_tokens)) == budget


async def test_reasoning_turns_thinking_on_and_thinking_blocks_become_reasoning(
    server: LoopbackServer,
) -> None:
    server.reply(THINKING_ANSWER)
    settings = ModelSettings(max_tokens=16000, temperature=0.2, reasoning=True)
    async with claude(server) as model:
        response = await model.request(ask("What is 27 * 453?", settings=settings))
    body = sent(server)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8000}
    assert body["max_tokens"] == 16000
    assert "temperature" not in body  # the API refuses temperature changes with thinking
    assert response.message.reasoning == "Let me analyze this step by step..."
    assert response.message.content == "Based on my analysis..."


async def test_reasoning_needs_room_above_the_minimum_budget(server: LoopbackServer) -> None:
    async with claude(server) as model:
        with pytest.raises(ValueError, match="max_tokens above 1024"):
            await model.request(ask(settings=ModelSettings(max_tokens=1024, reasoning=True)))
    assert server.requests == []


async def test_a_forced_tool_goes_without_thinking(server: LoopbackServer) -> None:
    replay(server, "json_output")
    settings = ModelSettings(max_tokens=4096, temperature=0.0, reasoning=True)
    spec = JsonSchema(schema=CalendarEvent.model_json_schema(), name="CalendarEvent")
    async with claude(server) as model:
        await model.request(
            ask("Alice and Bob: science fair, Friday.", output=spec, settings=settings)
        )
    body = sent(server)
    assert "thinking" not in body
    assert body["temperature"] == 0.0


# -- errors and retries -----------------------------------------------------------------


async def test_rate_limit_is_retried(server: LoopbackServer) -> None:
    replay(server, "error_rate_limit")
    replay(server, "text")
    async with claude(server, retry=RetryPolicy(base_delay_s=0.01)) as model:
        response = await model.request(ask())
    assert len(server.requests) == 2
    assert response.message.content == "Hello!"


async def test_retry_after_is_honoured_over_the_backoff(server: LoopbackServer) -> None:
    # retry-after: 0 against a 60 s backoff: only a client that honours it answers in time.
    replay(server, "error_rate_limit")
    replay(server, "text")
    async with claude(server, retry=RetryPolicy(base_delay_s=60.0, jitter=0.0)) as model:
        response = await asyncio.wait_for(model.request(ask()), timeout=10)
    assert response.message.content == "Hello!"


async def test_rate_limit_error_carries_status_retry_after_and_the_message(
    server: LoopbackServer,
) -> None:
    documented = replay(server, "error_rate_limit")
    async with claude(server, retry=RetryPolicy(attempts=1)) as model:
        with pytest.raises(ModelError, match="Your account has hit a rate limit") as info:
            await model.request(ask())
    error = info.value
    assert (error.status, error.transient, error.retry_after) == (429, True, 0.0)
    assert error.body == documented["response"]


async def test_overloaded_is_retried(server: LoopbackServer) -> None:
    replay(server, "error_overloaded")
    replay(server, "text")
    async with claude(server, retry=RetryPolicy(base_delay_s=0.01)) as model:
        response = await model.request(ask())
    assert len(server.requests) == 2
    assert response.message.content == "Hello!"


async def test_invalid_request_is_not_retried(server: LoopbackServer) -> None:
    documented = replay(server, "error_invalid_request")
    replay(server, "text")  # what a retry would get
    async with claude(server, retry=RetryPolicy(base_delay_s=0.01)) as model:
        with pytest.raises(ModelError, match="There was an issue with the format") as info:
            await model.request(ask())
    assert len(server.requests) == 1
    assert (info.value.status, info.value.transient) == (400, False)
    assert info.value.body == documented["response"]


# -- streaming --------------------------------------------------------------------------


async def test_stream_yields_text_then_the_assembled_response(server: LoopbackServer) -> None:
    documented = fixture("anthropic/stream_text")
    server.reply(sse=sse(documented["events"]))
    async with claude(server, documented["request"]["model"]) as model:
        texts, final = await collect(model, ask("Hello", settings=ModelSettings(max_tokens=256)))
    assert sent(server) == documented["request"]
    assert server.requests[-1].headers["accept"] == "text/event-stream"
    assert texts == ["Hello", "!"]
    assert final.message == AssistantMessage(content="Hello!")
    assert final.usage == Usage(input_tokens=25, output_tokens=15)
    assert final.finish_reason == "stop"
    assert final.model == "claude-opus-4-20250514"


async def test_stream_assembles_a_tool_call_from_input_json_deltas(
    server: LoopbackServer,
) -> None:
    documented = fixture("anthropic/stream_tool_call")
    server.reply(sse=sse(documented["events"]))
    question = documented["request"]["messages"][0]["content"]
    req = ask(question, tools=[documented_tool(documented)], tool_choice="required")
    async with claude(server, documented["request"]["model"]) as model:
        texts, final = await collect(model, req)
    assert sent(server) == documented["request"]
    assert "".join(texts) == "Okay, let's check the weather for San Francisco, CA:"
    assert final.message.content == "Okay, let's check the weather for San Francisco, CA:"
    assert final.message.tool_calls == [
        ToolCall(
            id="toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            name="get_weather",
            arguments={"location": "San Francisco, CA", "unit": "fahrenheit"},
        )
    ]
    assert final.finish_reason == "tool_calls"
    assert final.usage == Usage(input_tokens=472, output_tokens=89)
    assert final.model == "claude-3-haiku-20240307"


async def test_stream_of_a_json_schema_answer_yields_it_whole(server: LoopbackServer) -> None:
    documented = fixture("anthropic/json_output")
    block = documented["response"]["content"][0]
    arguments = json.dumps(block["input"])
    empty = {"content": [], "stop_reason": None}  # as message_start carries the Message
    events = [
        {"type": "message_start", "message": {**documented["response"], **empty}},
        {"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
        *(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": arguments[i : i + 16]},
            }
            for i in range(0, len(arguments), 16)
        ),
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 53},
        },
        {"type": "message_stop"},
    ]
    server.reply(sse=sse(events))
    spec = JsonSchema(
        schema=CalendarEvent.model_json_schema(), name="CalendarEvent", type=CalendarEvent
    )
    async with claude(server) as model:
        texts, final = await collect(
            model, ask("Alice and Bob: science fair, Friday.", output=spec)
        )
    assert texts == []
    assert sent(server)["stream"] is True
    assert spec.parse(final.message.content).participants == ["Alice", "Bob"]
    assert (final.message.tool_calls, final.finish_reason) == ([], "stop")


@pytest.mark.parametrize(
    ("kind", "transient"), [("overloaded_error", True), ("invalid_request_error", False)]
)
async def test_an_error_event_mid_stream_is_a_model_error(
    server: LoopbackServer, kind: str, transient: bool
) -> None:
    # The streaming docs' error event: {"type": "error", "error": {"type": ..., "message": ...}}.
    error = {"type": "error", "error": {"type": kind, "message": "Overloaded"}}
    events = fixture("anthropic/stream_text")["events"]
    server.reply(sse=sse([*events[:4], error]))  # after the "Hello" delta
    seen: list[StreamDelta | ModelResponse] = []
    async with claude(server) as model:
        with pytest.raises(ModelError, match=kind) as info:
            await drain(model.stream(ask()), into=seen)
    assert seen == [StreamDelta(text="Hello")]
    assert info.value.transient is transient
    assert info.value.body == error


async def test_a_stream_that_ends_before_message_stop_is_a_transient_error(
    server: LoopbackServer,
) -> None:
    events = fixture("anthropic/stream_text")["events"]
    server.reply(sse=sse(events[:-2]))  # no message_delta, no message_stop
    async with claude(server) as model:
        with pytest.raises(ModelError, match="before message_stop") as info:
            await collect(model, ask())
    assert info.value.transient


async def test_a_dropped_stream_is_a_model_error(server: LoopbackServer) -> None:
    server.reply(sse=sse(fixture("anthropic/stream_text")["events"]), sse_fail_after=4)
    async with claude(server) as model:
        with pytest.raises(ModelError):
            await collect(model, ask())


async def test_streamed_tool_arguments_that_are_not_json_are_a_parse_error(
    server: LoopbackServer,
) -> None:
    documented = fixture("anthropic/stream_tool_call")
    events = [e for e in documented["events"] if "renheit" not in json.dumps(e)]  # cut the JSON
    server.reply(sse=sse(events))
    async with claude(server) as model:
        with pytest.raises(ToolCallParseError, match="get_weather") as info:
            await collect(model, ask(tools=[documented_tool(documented)]))
    assert info.value.raw.endswith('"unit": "fah')
