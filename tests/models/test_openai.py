"""The OpenAI-compatible backend over real HTTP.

A loopback server on 127.0.0.1 replays the request/response pairs the providers document
(`tests/fixtures/openai/`, each citing its source) and records what the backend sent, so
the body shapes are checked on the wire and the answers are mapped from documented
bodies. Hosts that cannot be reached from CI (api.openai.com, DeepSeek, Moonshot, ...)
are covered by what they change: the key variable, the profile, the body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from agentflow.exceptions import ConfigError, ModelError, ToolCallParseError
from agentflow.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentflow.models.base import (
    DEFAULT_PROFILE,
    Choice,
    Ebnf,
    JsonSchema,
    ModelProfile,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    Regex,
    StreamDelta,
    ToolSpec,
    output_spec,
)
from agentflow.models.fallback import RetryPolicy
from agentflow.models.openai import OpenAIModel
from tests.loopback import LoopbackServer, Recorded, fixture, loopback

FAST = RetryPolicy(attempts=3, base_delay_s=0.001, max_delay_s=0.002)
NO_JSON_SCHEMA = ModelProfile({**DEFAULT_PROFILE, "json_schema": False})
WEATHER_ARGS = {
    "type": "object",
    "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
    "required": ["location"],
}
STRICT_ARGS = {
    "type": "object",
    "properties": {"order_id": {"type": "integer"}},
    "required": ["order_id"],
    "additionalProperties": False,
}


class CalendarEvent(BaseModel):
    name: str
    date: str
    participants: list[str]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback() as running:
        yield running


def documented(name: str) -> dict[str, Any]:
    return fixture(f"openai/{name}")


def replay(server: LoopbackServer, name: str) -> dict[str, Any]:
    """Queue the documented answer `name` (a stream ends with `data: [DONE]`)."""
    data = documented(name)
    if "events" in data:
        server.reply(sse=[*data["events"], "data: [DONE]"])
    else:
        server.reply(data["response"], status=data["status"], headers=data["headers"])
    return data


def answer(content: str, **message: Any) -> dict[str, Any]:
    """The documented text answer with its message replaced."""
    body = documented("text")["response"]
    choice = {**body["choices"][0], "message": {"role": "assistant", "content": content, **message}}
    return {**body, "choices": [choice]}


def model_at(server: LoopbackServer, **kwargs: Any) -> OpenAIModel:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("api_key", "test-key")
    return OpenAIModel("gpt-4.1", base_url=f"{server.url}/v1", **kwargs)


def ask(text: str = "Hello!", **fields: Any) -> ModelRequest:
    fields.setdefault("settings", ModelSettings(timeout_s=10))
    return ModelRequest(messages=[UserMessage(content=text)], **fields)


def sent(server: LoopbackServer) -> dict[str, Any]:
    last: Recorded = server.requests[-1]
    assert last.method == "POST" and last.path == "/v1/chat/completions"
    return last.json


# -- what goes on the wire -----------------------------------------------------------------


async def test_body_carries_auth_settings_and_the_tool_history_in_order(
    server: LoopbackServer,
) -> None:
    replay(server, "text")
    call = ToolCall(id="call_abc123", name="get_weather", arguments={"location": "Paris"})
    req = ModelRequest(
        messages=[
            SystemMessage(content="You are a helpful assistant."),
            UserMessage(content="What is the weather like in Paris?"),
            AssistantMessage(tool_calls=[call]),
            ToolResultMessage(tool_call_id="call_abc123", name="get_weather", content="18 C"),
            AssistantMessage(content="It is 18 C in Paris."),
            UserMessage(content="Thanks!"),
        ],
        settings=ModelSettings(max_tokens=64, temperature=0.2, seed=7, timeout_s=10),
    )
    async with model_at(server) as model:
        await model.request(req)
    body = sent(server)
    assert server.requests[-1].headers["authorization"] == "Bearer test-key"
    assert body["model"] == "gpt-4.1"
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather like in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": "18 C"},
        {"role": "assistant", "content": "It is 18 C in Paris."},
        {"role": "user", "content": "Thanks!"},
    ]
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (64, 0.2, 7)
    assert "max_completion_tokens" not in body and "stream" not in body
    assert "tools" not in body and "response_format" not in body


async def test_tools_are_strict_only_where_the_schema_allows_it(server: LoopbackServer) -> None:
    replay(server, "tool_call")
    tools = [
        ToolSpec(name="lookup_order", description="Look up an order.", parameters=STRICT_ARGS),
        ToolSpec(name="get_weather", description="Get the weather.", parameters=WEATHER_ARGS),
        ToolSpec(name="cancel", description="Cancel.", parameters=STRICT_ARGS, strict=False),
    ]
    async with model_at(server) as model:
        await model.request(ask(tools=tools))
    body = sent(server)
    assert [t["function"]["name"] for t in body["tools"]] == [
        "lookup_order",
        "get_weather",
        "cancel",
    ]
    assert body["tools"][0] == {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Look up an order.",
            "parameters": STRICT_ARGS,
            "strict": True,
        },
    }
    assert "strict" not in body["tools"][1]["function"]  # `unit` is optional: not strict-able
    assert "strict" not in body["tools"][2]["function"]  # the tool opted out
    assert body["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("required", "required"),
        ("none", "none"),
        ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
async def test_tool_choice_forms(server: LoopbackServer, choice: str, wire: Any) -> None:
    replay(server, "tool_call")
    tool = ToolSpec(name="get_weather", description="Get the weather.", parameters=WEATHER_ARGS)
    async with model_at(server) as model:
        await model.request(ask(tools=[tool], tool_choice=choice))
    assert sent(server)["tool_choice"] == wire


async def test_json_schema_is_sent_as_the_documented_response_format(
    server: LoopbackServer,
) -> None:
    data = replay(server, "json_output")
    schema = data["request"]["response_format"]["json_schema"]["schema"]
    req = ask(output=JsonSchema(schema=schema, name="CalendarEvent"))
    async with model_at(server) as model:
        response = await model.request(req)
    body = sent(server)
    assert body["response_format"] == data["request"]["response_format"]
    assert body["messages"] == [{"role": "user", "content": "Hello!"}]  # no schema in the prompt
    assert req.output is not None
    assert req.output.parse(response.message.content) == {
        "name": "science fair",
        "date": "Friday",
        "participants": ["Alice", "Bob"],
    }


async def test_a_schema_strict_mode_would_reject_is_sent_non_strict(
    server: LoopbackServer,
) -> None:
    replay(server, "json_output")
    req = ask(output=output_spec({"title": "Calendar event!", **WEATHER_ARGS}))
    async with model_at(server) as model:
        await model.request(req)
    json_schema = sent(server)["response_format"]["json_schema"]
    assert json_schema["name"] == "Calendar_event_"  # the API allows [a-zA-Z0-9_-] only
    assert json_schema["strict"] is False


async def test_without_json_schema_support_the_schema_goes_in_the_prompt(
    server: LoopbackServer,
) -> None:
    replay(server, "json_output")
    req = ask(
        "Alice and Bob are going to a science fair on Friday.", output=output_spec(CalendarEvent)
    )
    async with model_at(server, profile=NO_JSON_SCHEMA) as model:
        response = await model.request(req)
    body = sent(server)
    assert body["response_format"] == {"type": "json_object"}
    user, note = body["messages"]
    assert user == {
        "role": "user",
        "content": "Alice and Bob are going to a science fair on Friday.",
    }
    assert note["role"] == "system"
    assert json.dumps(CalendarEvent.model_json_schema()) in note["content"]
    assert req.output is not None
    assert req.output.parse(response.message.content) == CalendarEvent(
        name="science fair", date="Friday", participants=["Alice", "Bob"]
    )


@pytest.mark.parametrize("profile", [DEFAULT_PROFILE, NO_JSON_SCHEMA], ids=["schema", "prompt"])
async def test_choice_is_wrapped_in_json_and_unwrapped(
    server: LoopbackServer, profile: ModelProfile
) -> None:
    server.reply(answer('{"choice": "refund"}'))
    options = ["order_status", "refund", "other"]
    async with model_at(server, profile=profile) as model:
        response = await model.request(ask("I want my money back", output=Choice(options=options)))
    assert response.message.content == "refund"
    body = sent(server)
    if profile["json_schema"]:
        assert body["response_format"]["type"] == "json_schema"
        json_schema = body["response_format"]["json_schema"]
        assert json_schema["name"] == "choice" and json_schema["strict"] is True
        assert json_schema["schema"]["properties"]["choice"]["enum"] == options
        assert len(body["messages"]) == 1
    else:
        assert body["response_format"] == {"type": "json_object"}
        assert repr(options) in body["messages"][-1]["content"]


async def test_a_choice_answer_that_is_not_json_is_left_for_validation(
    server: LoopbackServer,
) -> None:
    server.reply(answer("refund, obviously"))
    spec = Choice(options=["refund", "other"])
    async with model_at(server) as model:
        response = await model.request(ask(output=spec))
    assert response.message.content == "refund, obviously"
    with pytest.raises(ValueError, match="not one of"):
        spec.parse(response.message.content)


@pytest.mark.parametrize(
    ("spec", "words"),
    [(Regex(pattern=r"[0-9]{4}"), "regular expression"), (Ebnf(grammar='root ::= "a"'), "EBNF")],
)
async def test_regex_and_ebnf_are_asked_for_in_the_prompt(
    server: LoopbackServer, spec: Regex | Ebnf, words: str
) -> None:
    server.reply(answer("1042"))
    async with model_at(server) as model:
        await model.request(ask(output=spec))
    body = sent(server)
    assert "response_format" not in body
    assert words in body["messages"][-1]["content"]


def test_a_request_with_tools_and_an_output_spec_is_refused() -> None:
    model = OpenAIModel("m", base_url="http://127.0.0.1:9", api_key="k")
    tool = ToolSpec(name="t", description="", parameters=STRICT_ARGS)
    with pytest.raises(ValueError, match="either tools or an output spec"):
        model.body(ask(tools=[tool], output=Regex(pattern="a")))


def test_openai_itself_gets_max_completion_tokens_and_others_max_tokens() -> None:
    req = ask(settings=ModelSettings(max_tokens=99))
    openai_body = OpenAIModel("o3", api_key="k").body(req)
    assert openai_body["max_completion_tokens"] == 99 and "max_tokens" not in openai_body
    other = OpenAIModel("deepseek-chat", base_url="https://api.deepseek.com/v1", api_key="k")
    assert other.body(req)["max_tokens"] == 99 and "max_completion_tokens" not in other.body(req)


def test_a_stream_asks_for_usage() -> None:
    body = OpenAIModel("gpt-4.1", api_key="k").body(ask(), stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


# -- hosts, keys and profiles -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "variable", "json_schema"),
    [
        (None, "OPENAI_API_KEY", True),
        ("https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", False),
        ("https://api.moonshot.ai/v1", "MOONSHOT_API_KEY", False),
        ("https://api.moonshot.cn/v1", "MOONSHOT_API_KEY", False),
        ("https://api.z.ai/api/paas/v4", "ZAI_API_KEY", False),
        ("https://dashscope-intl.aliyuncs.com/compatible-mode/v1", "DASHSCOPE_API_KEY", False),
        ("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", True),
    ],
)
def test_known_hosts_need_their_key_and_set_the_profile(
    monkeypatch: pytest.MonkeyPatch, base_url: str | None, variable: str, json_schema: bool
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ConfigError, match=variable) as info:
        OpenAIModel("some-model", base_url=base_url)
    assert info.value.key == variable
    monkeypatch.setenv(variable, "sk-from-env")
    model = OpenAIModel("some-model", base_url=base_url)
    assert model.endpoint.headers == {"authorization": "Bearer sk-from-env"}
    assert model.profile["json_schema"] is json_schema


def test_an_explicit_key_and_profile_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    model = OpenAIModel(
        "deepseek-chat",
        base_url="https://api.deepseek.com/v1",
        api_key="sk-explicit",
        profile=DEFAULT_PROFILE,
    )
    assert model.endpoint.headers == {"authorization": "Bearer sk-explicit"}
    assert model.body(ask(output=output_spec(CalendarEvent)))["response_format"]["type"] == (
        "json_schema"
    )


async def test_a_self_run_server_needs_no_key(server: LoopbackServer) -> None:
    replay(server, "text")
    async with OpenAIModel("my-vllm-model", base_url=f"{server.url}/v1", retry=FAST) as model:
        await model.request(ask())
    assert "authorization" not in server.requests[-1].headers


# -- documented answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "reasoning", "usage", "model"),
    [
        (
            "text",
            "Hello! How can I assist you today?",
            None,
            Usage(input_tokens=2006, output_tokens=300, cached_tokens=1920),
            "gpt-4.1-2025-04-14",
        ),
        (
            "json_output",
            '{"name":"science fair","date":"Friday","participants":["Alice","Bob"]}',
            None,
            Usage(input_tokens=71, output_tokens=20),
            "gpt-4o-2024-08-06",
        ),
        (
            "deepseek_reasoning",
            'There are three Rs in the word "strawberry".',
            "Let me spell it out: s-t-r-a-w-b-e-r-r-y. The letter r appears at position 3, then "
            "twice more at positions 8 and 9. That makes three.",
            Usage(input_tokens=88, output_tokens=112, cached_tokens=64),
            "deepseek-reasoner",
        ),
        (
            "moonshot_text",
            "Hello, Li Lei! 1 + 1 equals 2.",
            None,
            Usage(input_tokens=83, output_tokens=13),
            "kimi-k2.5",
        ),
    ],
)
async def test_documented_text_answers_map(
    server: LoopbackServer,
    name: str,
    content: str,
    reasoning: str | None,
    usage: Usage,
    model: str,
) -> None:
    replay(server, name)
    async with model_at(server) as backend:
        response = await backend.request(ask())
    assert response.message == AssistantMessage(content=content, reasoning=reasoning)
    assert response.usage == usage
    assert (response.model, response.provider, response.finish_reason) == (model, "openai", "stop")
    assert response.latency_s > 0


async def test_the_documented_tool_call_maps(server: LoopbackServer) -> None:
    replay(server, "tool_call")
    tool = ToolSpec(name="get_weather", description="Get the weather.", parameters=WEATHER_ARGS)
    async with model_at(server) as model:
        response = await model.request(ask(tools=[tool], tool_choice="get_weather"))
    assert response.message == AssistantMessage(
        tool_calls=[
            ToolCall(
                id="call_abc123", name="get_weather", arguments={"location": "San Francisco, CA"}
            )
        ]
    )
    assert response.finish_reason == "tool_calls"
    assert response.usage == Usage(input_tokens=82, output_tokens=17)


async def test_a_tool_call_without_an_id_gets_one(server: LoopbackServer) -> None:
    server.reply(
        answer("", tool_calls=[{"type": "function", "function": {"name": "f", "arguments": "{}"}}])
    )
    async with model_at(server) as model:
        response = await model.request(ask())
    [call] = response.message.tool_calls
    assert call.id.startswith("call_") and call.arguments == {}


# -- streaming ----------------------------------------------------------------------------------


async def test_streamed_text_is_assembled(server: LoopbackServer) -> None:
    data = replay(server, "stream_text")
    async with model_at(server) as model:
        events = [event async for event in model.stream(ask())]
    *deltas, final = events
    pieces = [c["choices"][0]["delta"].get("content") for c in data["events"] if c["choices"]]
    assert deltas == [StreamDelta(text=piece) for piece in pieces if piece]
    assert isinstance(final, ModelResponse)
    assert final.message == AssistantMessage(content="Hello! How can I assist you today?")
    assert final.usage == Usage(input_tokens=19, output_tokens=10)
    assert (final.finish_reason, final.model) == ("stop", "gpt-4.1-2025-04-14")
    body = sent(server)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert server.requests[-1].headers["accept"] == "text/event-stream"


async def test_streamed_tool_call_fragments_are_assembled(server: LoopbackServer) -> None:
    replay(server, "stream_tool_call")
    tool = ToolSpec(name="get_weather", description="Get the weather.", parameters=WEATHER_ARGS)
    async with model_at(server) as model:
        events = [event async for event in model.stream(ask(tools=[tool]))]
    [final] = events  # no text: nothing but the answer
    assert isinstance(final, ModelResponse)
    assert final.message.tool_calls == [
        ToolCall(
            id="call_DdmO9pD3xa9XTPNJ32zg2hcA",
            name="get_weather",
            arguments={"location": "Paris, France"},
        )
    ]
    assert final.finish_reason == "tool_calls"
    assert final.usage == Usage(input_tokens=58, output_tokens=16)


def fragment(index: int, arguments: str, *, name: str | None = None, id: str | None = None) -> Any:
    """One streamed piece of a tool call, as OpenAI sends it (id and name come first)."""
    call = {"index": index, "id": id, "function": {"arguments": arguments, "name": name}}
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


async def test_interleaved_fragments_of_parallel_calls_are_kept_apart(
    server: LoopbackServer,
) -> None:
    server.reply(
        sse=[
            fragment(0, "", name="get_weather", id="call_a"),
            fragment(1, "", name="get_weather", id="call_b"),
            fragment(1, '{"location": "Oslo"}'),
            fragment(0, '{"location": '),
            fragment(0, '"Paris"}'),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
            "data: [DONE]",
        ]
    )
    async with model_at(server) as model:
        [final] = [event async for event in model.stream(ask())]
    assert isinstance(final, ModelResponse)
    assert [(c.id, c.arguments["location"]) for c in final.message.tool_calls] == [
        ("call_a", "Paris"),
        ("call_b", "Oslo"),
    ]


@pytest.mark.parametrize(
    "error",
    [
        {"error": {"message": "The server had an error while processing your request."}},
        {"object": "error", "message": "Internal server error", "type": "InternalServerError"},
    ],
    ids=["openai", "sglang"],
)
async def test_an_error_event_in_a_stream_is_a_model_error(
    server: LoopbackServer, error: dict[str, Any]
) -> None:
    first = documented("stream_text")["events"][:2]
    server.reply(sse=[*first, error])
    async with model_at(server) as model:
        stream = model.stream(ask())
        assert await anext(stream) == StreamDelta(text="Hello")
        with pytest.raises(ModelError, match="stream failed") as info:
            await anext(stream)
    assert info.value.body == error


async def test_a_streamed_tool_call_that_is_not_json_is_a_parse_error(
    server: LoopbackServer,
) -> None:
    server.reply(
        sse=[
            fragment(0, '{"location": "Par', name="get_weather", id="call_a"),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        ]
    )
    async with model_at(server) as model:
        with pytest.raises(ToolCallParseError) as info:
            _ = [event async for event in model.stream(ask())]
    assert info.value.raw == '{"location": "Par'


# -- broken answers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "<html>502 Bad Gateway</html>",
        {"choices": []},
        {"object": "chat.completion", "model": "gpt-4.1"},
        [1, 2, 3],
        {"choices": [{"index": 0, "message": None}]},
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": ["a", "b"]}}]},
        {"choices": [{"index": 0, "message": {"tool_calls": [{"id": "call_1"}]}}]},
        {"choices": [{"index": 0, "message": {"tool_calls": [{"function": {"name": None}}]}}]},
    ],
    ids=[
        "html",
        "no-choice",
        "no-choices",
        "list",
        "null-message",
        "parts",
        "no-function",
        "no-name",
    ],
)
async def test_a_garbled_200_body_is_a_model_error(server: LoopbackServer, body: Any) -> None:
    server.reply(body)
    async with model_at(server) as model:
        with pytest.raises(ModelError) as info:
            await model.request(ask())
    assert not isinstance(info.value, ToolCallParseError)
    assert not info.value.transient and info.value.body == body
    assert len(server.requests) == 1  # the same request would get the same garbage


@pytest.mark.parametrize("arguments", ['{"location": "San Francisco, CA"', '["San Francisco"]'])
async def test_tool_arguments_that_are_not_a_json_object_are_a_parse_error(
    server: LoopbackServer, arguments: str
) -> None:
    body = documented("tool_call")["response"]
    [call] = body["choices"][0]["message"]["tool_calls"]
    call["function"]["arguments"] = arguments
    server.reply(body)
    async with model_at(server) as model:
        with pytest.raises(ToolCallParseError, match="get_weather") as info:
            await model.request(ask())
    assert (info.value.raw, info.value.format) == (arguments, "openai")


# -- errors and retries -------------------------------------------------------------------------


async def test_a_rate_limit_is_retried_after_the_servers_retry_after(
    server: LoopbackServer,
) -> None:
    data = replay(server, "error_rate_limit")
    assert data["headers"]["retry-after"] == "0"
    replay(server, "text")
    slow_backoff = RetryPolicy(attempts=2, base_delay_s=5.0, jitter=0.0)
    started = time.monotonic()
    async with model_at(server, retry=slow_backoff) as model:
        response = await model.request(ask())
    assert time.monotonic() - started < 2.5  # Retry-After: 0, not the 5 s backoff
    assert response.message.content == "Hello! How can I assist you today?"
    assert len(server.requests) == 2


async def test_a_rate_limit_maps_to_a_transient_error_with_its_wait(
    server: LoopbackServer,
) -> None:
    data = documented("error_rate_limit")
    server.reply(data["response"], status=429, headers={**data["headers"], "retry-after": "120"})
    async with model_at(server) as model:
        with pytest.raises(ModelError, match="HTTP 429: Rate limit reached") as info:
            await model.request(ask())
    error = info.value
    assert (error.status, error.transient, error.retry_after) == (429, True, 120.0)
    assert error.body == data["response"]
    assert len(server.requests) == 1  # a wait beyond the policy's limit is left to failover


async def test_an_invalid_request_is_not_retried(server: LoopbackServer) -> None:
    data = replay(server, "error_invalid_request")
    async with model_at(server) as model:
        with pytest.raises(ModelError, match="HTTP 400: Invalid 'messages'") as info:
            await model.request(ask())
    error = info.value
    assert (error.status, error.transient, error.body) == (400, False, data["response"])
    assert error.model == "openai:gpt-4.1"
    assert len(server.requests) == 1


async def test_an_overloaded_server_is_retried_then_reported(server: LoopbackServer) -> None:
    data = documented("error_overloaded")
    for _ in range(FAST.attempts):
        replay(server, "error_overloaded")
    async with model_at(server) as model:
        with pytest.raises(ModelError, match="overloaded") as info:
            await model.request(ask())
    assert (info.value.status, info.value.transient) == (503, True)
    assert info.value.body == data["response"]
    assert len(server.requests) == FAST.attempts


def test_strict_mode_is_checked_inside_arrays_and_defs() -> None:
    from agentflow.models.openai import wire_tools

    loose_item = {"type": "object", "properties": {"a": {"type": "string"}}}
    tight_item = {**loose_item, "required": ["a"], "additionalProperties": False}

    def tool_with(items: dict[str, Any], where: str) -> ToolSpec:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"xs": {"type": "array", "items": {"$ref": "#/$defs/X"}}},
            "required": ["xs"],
            "additionalProperties": False,
            "$defs": {"X": items},
        }
        if where == "items":
            schema["properties"]["xs"]["items"] = items
            del schema["$defs"]
        return ToolSpec(name="t", description="", parameters=schema)

    for where in ("items", "$defs"):
        assert "strict" not in wire_tools([tool_with(loose_item, where)])[0]["function"]
        assert wire_tools([tool_with(tight_item, where)])[0]["function"]["strict"] is True
