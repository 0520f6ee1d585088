"""The SGLang backend: against the real local server, and against SGLang's documented answers.

The live half talks to `agentflow serve-model`'s app (the SGLang-compatible server over the
embedded Gemma 3 270M, ~10 tokens/s on a CPU) on 127.0.0.1, so every constraint is
enforced by a real grammar engine; outputs are kept a few tokens long. The loopback half
replays what SGLang documents (`tests/fixtures/sglang/`, each citing its source) and
records the bodies sent: the SGLang extras, the reasoning switches per model family, and
raw tool-call text from a server started without `--tool-call-parser`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from agentflow import tool
from agentflow.exceptions import ModelError, ToolCallParseError
from agentflow.messages import AssistantMessage, Usage, UserMessage
from agentflow.models.base import (
    Choice,
    Ebnf,
    JsonSchema,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    Regex,
    StreamDelta,
    ToolSpec,
    output_spec,
)
from agentflow.models.fallback import RetryPolicy
from agentflow.models.sglang import SGLangModel
from tests.loopback import LoopbackServer, Recorded, fixture, loopback

FAST = RetryPolicy(attempts=2, base_delay_s=0.001, max_delay_s=0.002)
ONCE = RetryPolicy(attempts=1)  # a live answer that fails must fail the test, not be retried


class Ticket(BaseModel):
    """Short by construction: a 270M model may ramble digits into an unbounded integer."""

    intent: Literal["order_status", "refund", "other"]
    urgent: bool


@tool
def lookup_order(order_id: int) -> str:
    """Look up an order by its number.

    Args:
        order_id: The order number the customer gave.
    """
    return f"order {order_id} ships tomorrow"


def live(max_tokens: int) -> ModelSettings:
    return ModelSettings(max_tokens=max_tokens, temperature=0.0, timeout_s=120)


def ask(text: str, settings: ModelSettings | None = None, **fields: Any) -> ModelRequest:
    return ModelRequest(
        messages=[UserMessage(content=text)],
        settings=settings or ModelSettings(timeout_s=10),
        **fields,
    )


# -- the real local server ---------------------------------------------------------------------


async def test_ready_learns_the_model_name(live_url: str) -> None:
    async with SGLangModel(base_url=live_url, retry=ONCE) as model:
        assert model.name == ""
        info = await model.ready()
    assert info["is_generation"] is True
    assert model.name and model.name == info["model_path"]


async def test_a_text_answer_with_usage(live_url: str) -> None:
    async with SGLangModel(base_url=live_url, retry=ONCE) as model:
        response = await model.request(ask("Say hello to the customer.", live(8)))
        assert model.name  # asked the server first
    assert response.message.content.strip()
    assert response.finish_reason in ("stop", "length")
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 8
    assert response.provider == "sglang" and response.latency_s > 0


async def test_json_schema_output_validates(live_url: str) -> None:
    req = ask("Refund order 77 please.", live(32), output=output_spec(Ticket))
    async with SGLangModel(base_url=live_url, retry=ONCE) as model:
        response = await model.request(req)
    assert req.output is not None
    assert isinstance(req.output.parse(response.message.content), Ticket)


async def test_regex_and_choice_outputs_are_valid(live_url: str) -> None:
    number = ask("Order 1042 is late. Which order?", live(6), output=Regex(pattern=r"[0-9]{4}"))
    options = ["order_status", "refund", "other"]
    intent = ask("I want my money back!", live(6), output=Choice(options=options))
    async with SGLangModel(base_url=live_url, retry=ONCE) as model:
        by_regex = await model.request(number)
        by_choice = await model.request(intent)
    assert re.fullmatch(r"[0-9]{4}", by_regex.message.content)
    assert by_choice.message.content in options  # sent as a regex: no JSON around it


async def test_a_forced_tool_call_has_valid_arguments(live_url: str) -> None:
    req = ask(
        "Where is order 1042?", live(40), tools=[lookup_order.spec], tool_choice="lookup_order"
    )
    async with SGLangModel(base_url=live_url, retry=ONCE) as model:
        response = await model.request(req)
    [call] = response.message.tool_calls
    assert call.name == "lookup_order" and call.id
    assert isinstance(lookup_order.validate(call.arguments)["order_id"], int)
    assert response.finish_reason == "tool_calls"


async def test_streamed_text_adds_up_to_the_answer(live_url: str) -> None:
    async with SGLangModel(
        base_url=live_url, retry=ONCE
    ) as model:  # a stream asks the name first too
        events = [event async for event in model.stream(ask("Say hello.", live(8)))]
    *deltas, final = events
    assert deltas and all(isinstance(delta, StreamDelta) for delta in deltas)
    assert isinstance(final, ModelResponse)
    assert "".join(d.text for d in deltas if isinstance(d, StreamDelta)) == final.message.content
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


async def test_generate_with_a_regex_and_with_a_json_schema(live_url: str) -> None:
    async with SGLangModel(base_url=live_url, retry=ONCE) as model:
        number = await model.generate(
            "Order 1042 is late. The order number is",
            output=Regex(pattern=r"[0-9]{4}"),
            settings=live(6),
        )
        ticket = await model.generate(
            "Refund order 77 please. Ticket as JSON:",
            output=output_spec(Ticket),
            settings=live(32),
        )
    assert re.fullmatch(r"[0-9]{4}", number.message.content)
    Ticket.model_validate_json(ticket.message.content)
    for response in (number, ticket):
        assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
        assert response.finish_reason == "stop" and response.latency_s > 0


# -- the body, on the wire -------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback() as running:
        yield running


def documented(name: str) -> dict[str, Any]:
    return fixture(f"sglang/{name}")


def completion(content: str, **message: Any) -> dict[str, Any]:
    """SGLang's documented chat completion with its message replaced."""
    body = documented("reasoning")["response"]
    choice = {**body["choices"][0], "message": {"role": "assistant", "content": content, **message}}
    return {**body, "choices": [choice]}


def model_at(server: LoopbackServer, model: str = "Qwen/Qwen3-32B", **kwargs: Any) -> SGLangModel:
    kwargs.setdefault("retry", FAST)
    return SGLangModel(model, base_url=server.url, **kwargs)


def sent(server: LoopbackServer) -> dict[str, Any]:
    last: Recorded = server.requests[-1]
    assert last.method == "POST" and last.path == "/v1/chat/completions"
    return last.json


def tools_of(data: dict[str, Any]) -> list[ToolSpec]:
    """The tools a documented request offered."""
    return [
        ToolSpec(
            name=t["function"]["name"],
            description=t["function"]["description"],
            parameters=t["function"]["parameters"],
        )
        for t in data["request"]["tools"]
    ]


async def test_every_tool_is_strict_and_no_key_is_sent_by_default(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SGLANG_API_KEY", raising=False)
    server.reply(completion("ok"))
    loose = ToolSpec(name="get_weather", description="Weather.", parameters={"type": "object"})
    async with model_at(server) as model:
        await model.request(ask("hi", tools=[lookup_order.spec, loose], tool_choice="required"))
    body = sent(server)
    assert [t["function"].get("strict") for t in body["tools"]] == [True, True]
    assert body["tool_choice"] == "required"
    assert body["max_tokens"] == 1024 and "max_completion_tokens" not in body
    assert "authorization" not in server.requests[-1].headers


async def test_the_servers_api_key_comes_from_the_environment(
    server: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SGLANG_API_KEY", "sk-sglang")
    server.reply(completion("ok"))
    async with model_at(server) as model:
        await model.request(ask("hi"))
    assert server.requests[-1].headers["authorization"] == "Bearer sk-sglang"


@pytest.mark.parametrize(
    ("spec", "extra"),
    [
        (Regex(pattern=r"[0-9]{4}"), {"regex": "[0-9]{4}"}),
        (Ebnf(grammar='root ::= "yes" | "no"'), {"ebnf": 'root ::= "yes" | "no"'}),
        (Choice(options=["refund", "a.b", "c|d"]), {"regex": r"(refund|a\.b|c\|d)"}),
    ],
    ids=["regex", "ebnf", "choice"],
)
async def test_constraints_go_in_sglangs_extras(
    server: LoopbackServer, spec: Regex | Ebnf | Choice, extra: dict[str, str]
) -> None:
    server.reply(completion("refund"))
    async with model_at(server) as model:
        response = await model.request(ask("Refund me.", output=spec))
    body = sent(server)
    assert {key: body[key] for key in extra} == extra
    assert "response_format" not in body
    assert body["messages"] == [{"role": "user", "content": "Refund me."}]  # nothing in the prompt
    assert response.message.content == "refund"  # a choice comes back bare


async def test_a_json_schema_goes_in_response_format(server: LoopbackServer) -> None:
    server.reply(completion('{"intent": "refund", "urgent": false}'))
    req = ask("Refund order 77.", output=output_spec(Ticket))
    async with model_at(server) as model:
        response = await model.request(req)
    body = sent(server)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == Ticket.model_json_schema()
    assert "regex" not in body and len(body["messages"]) == 1
    assert isinstance(req.output, JsonSchema)
    assert req.output.parse(response.message.content) == Ticket(intent="refund", urgent=False)


@pytest.mark.parametrize(
    ("model", "reasoning", "separate", "kwargs"),
    [
        ("Qwen/Qwen3-32B", True, True, {"enable_thinking": True}),
        ("Qwen/Qwen3-32B", False, True, {"enable_thinking": False}),
        ("Qwen/Qwen3-32B", None, True, None),
        ("zai-org/GLM-4.6", False, True, {"enable_thinking": False}),
        ("moonshotai/Kimi-K2.5", True, True, {"thinking": True}),
        ("deepseek-ai/DeepSeek-V3.2", False, True, {"thinking": False}),
        ("moonshotai/Kimi-K2-Instruct", True, False, None),
        ("google/gemma-3-27b-it", True, False, None),
    ],
)
async def test_reasoning_switches_follow_the_model_family(
    server: LoopbackServer,
    model: str,
    reasoning: bool | None,
    separate: bool,
    kwargs: dict[str, bool] | None,
) -> None:
    server.reply(completion("4"))
    settings = ModelSettings(reasoning=reasoning, timeout_s=10)
    async with model_at(server, model) as backend:
        await backend.request(ask("What is 1+3?", settings))
    body = sent(server)
    assert body["model"] == model
    assert body.get("separate_reasoning", False) is separate
    assert body.get("chat_template_kwargs") == kwargs


@pytest.mark.parametrize("streamed", [False, True], ids=["request", "stream"])
async def test_without_a_name_the_server_is_asked_before_the_first_call(
    server: LoopbackServer, streamed: bool
) -> None:
    server.reply({})  # /health
    server.reply({"model_path": "zai-org/GLM-4.6", "is_generation": True})  # /get_model_info
    if streamed:
        done = {"choices": [{"index": 0, "delta": {"content": "ok"}, "finish_reason": "stop"}]}
        server.reply(sse=[done, "data: [DONE]"])
    else:
        server.reply(completion("ok"))
    req = ask("hi", ModelSettings(reasoning=True, timeout_s=10))
    async with SGLangModel(base_url=server.url, retry=FAST) as model:
        if streamed:
            _ = [event async for event in model.stream(req)]
        else:
            await model.request(req)
    assert [(r.method, r.path) for r in server.requests] == [
        ("GET", "/health"),
        ("GET", "/get_model_info"),
        ("POST", "/v1/chat/completions"),
    ]
    body = sent(server)
    assert body["model"] == "zai-org/GLM-4.6"  # and the family it names
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["separate_reasoning"] is True


# -- raw tool calls (a server without --tool-call-parser) -----------------------------------------


@pytest.mark.parametrize(
    ("name", "model", "calls", "text"),
    [
        (
            "raw_glm45",
            "zai-org/GLM-4.6",
            [(None, "get_weather", {"city": "北京", "date": "2024-06-27"})],
            "",
        ),
        (
            "raw_glm47",
            "zai-org/GLM-4.7",
            [
                (None, "get_weather", {"city": "北京", "date": "2024-06-27"}),
                (None, "get_weather", {"city": "上海", "date": "2024-06-27"}),
            ],
            "",
        ),
        (
            "raw_kimi_k2",
            "moonshotai/Kimi-K2-Instruct",
            [
                ("functions.get_weather:0", "get_weather", {"city": "Paris"}),
                (
                    "functions.get_tourist_attractions:1",
                    "get_tourist_attractions",
                    {"city": "London"},
                ),
            ],
            "",
        ),
        (
            "raw_qwen",
            "Qwen/Qwen3-32B",
            [
                (
                    None,
                    "get_current_weather",
                    {"city": "Boston", "state": "MA", "unit": "fahrenheit"},
                )
            ],
            "I need the current weather in Boston, so I will call the weather tool.",
        ),
    ],
)
async def test_raw_tool_call_text_is_parsed_in_the_familys_format(
    server: LoopbackServer,
    name: str,
    model: str,
    calls: list[tuple[str | None, str, dict[str, Any]]],
    text: str,
) -> None:
    data = documented(name)
    assert data["request"]["model"] == model
    server.reply(data["response"])
    async with model_at(server, model) as backend:
        response = await backend.request(ask("?", tools=tools_of(data)))
    got = response.message.tool_calls
    assert [(c.name, c.arguments) for c in got] == [(n, a) for _, n, a in calls]
    assert all(c.id == i for c, (i, _, _) in zip(got, calls, strict=True) if i is not None)
    assert len({c.id for c in got}) == len(got)
    assert response.message.content == text
    assert response.finish_reason == "tool_calls"
    offered = {t["function"]["name"] for t in sent(server)["tools"]}
    assert {c.name for c in got} <= offered


@pytest.mark.parametrize(
    ("model", "kept"),
    [
        ("moonshotai/Kimi-K2-Instruct", True),
        ("deepseek-ai/DeepSeek-V3.2", True),
        ("zai-org/GLM-4.6", False),
        ("Qwen/Qwen3-32B", False),
    ],
)
async def test_special_token_markers_are_kept_for_families_that_use_them(
    server: LoopbackServer, model: str, kept: bool
) -> None:
    data = documented("raw_kimi_k2")
    server.reply(completion("no call"))
    server.reply(completion("no call"))
    async with model_at(server, model) as backend:
        await backend.request(ask("?", tools=tools_of(data)))
        assert sent(server).get("skip_special_tokens") is (False if kept else None)
        await backend.request(ask("?"))
        assert "skip_special_tokens" not in sent(server), "only when a tool may be called"


async def test_raw_tool_call_text_is_not_streamed_to_the_user(server: LoopbackServer) -> None:
    data = documented("raw_glm45")
    raw = data["response"]["choices"][0]["message"]["content"]
    pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
    events: list[Any] = [
        {"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces
    ]
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, "data: [DONE]"]
    server.reply(sse=events)
    async with model_at(server, "zai-org/GLM-4.6") as backend:
        out = [e async for e in backend.stream(ask("?", tools=tools_of(data)))]
    assert not [e for e in out if isinstance(e, StreamDelta)], "the raw call text stayed back"
    final = out[-1]
    assert isinstance(final, ModelResponse)
    assert [c.name for c in final.message.tool_calls] == ["get_weather"]


@pytest.mark.parametrize("tool_choice", ["none", None], ids=["tool_choice=none", "no tools"])
async def test_raw_text_is_left_alone_when_no_tool_may_be_called(
    server: LoopbackServer, tool_choice: str | None
) -> None:
    data = documented("raw_glm45")
    server.reply(data["response"])
    fields: dict[str, Any] = (
        {"tools": tools_of(data), "tool_choice": tool_choice} if tool_choice else {}
    )
    async with model_at(server, "zai-org/GLM-4.6") as model:
        response = await model.request(ask("?", **fields))
    assert response.message.tool_calls == []
    assert response.message.content == data["response"]["choices"][0]["message"]["content"]


async def test_a_garbled_raw_call_is_a_parse_error(server: LoopbackServer) -> None:
    data = documented("raw_glm45")
    cut_off = "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>北京"  # max_tokens
    server.reply(completion(cut_off))
    async with model_at(server, "zai-org/GLM-4.6") as model:
        with pytest.raises(ToolCallParseError, match="glm45") as info:
            await model.request(ask("?", tools=tools_of(data)))
    assert isinstance(info.value, ModelError)  # so a fallback tier takes the step
    assert (info.value.raw, info.value.format) == (cut_off, "glm45")


# -- documented answers ---------------------------------------------------------------------------


async def test_reasoning_is_kept_apart_from_the_answer(server: LoopbackServer) -> None:
    data = documented("reasoning")
    server.reply(data["response"])
    message = data["response"]["choices"][0]["message"]
    async with model_at(server, data["request"]["model"]) as model:
        response = await model.request(ask("What is 1+3?"))
    assert response.message == AssistantMessage(
        content=message["content"], reasoning=message["reasoning_content"]
    )
    assert response.usage == Usage(input_tokens=11, output_tokens=203, cached_tokens=1)
    assert response.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"


async def test_streamed_reasoning_is_not_streamed_as_text(server: LoopbackServer) -> None:
    message = documented("reasoning")["response"]["choices"][0]["message"]

    def delta(**fields: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": fields, "finish_reason": None}]}

    server.reply(
        sse=[
            delta(role="assistant", content=""),
            delta(reasoning_content=message["reasoning_content"]),
            delta(content=message["content"]),
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            "data: [DONE]",
        ]
    )
    async with model_at(server) as model:
        *deltas, final = [event async for event in model.stream(ask("What is 1+3?"))]
    assert deltas == [StreamDelta(text=message["content"])]
    assert isinstance(final, ModelResponse)
    assert final.message.reasoning == message["reasoning_content"]
    assert sent(server)["separate_reasoning"] is True


async def test_cached_tokens_are_read_from_usage(server: LoopbackServer) -> None:
    usage = {
        "prompt_tokens": 2048,
        "completion_tokens": 12,
        "total_tokens": 2060,
        "prompt_tokens_details": {"cached_tokens": 1984},
    }
    server.reply({**completion("ok"), "usage": usage})
    async with model_at(server) as model:
        response = await model.request(ask("hi"))
    assert response.usage == Usage(input_tokens=2048, output_tokens=12, cached_tokens=1984)


@pytest.mark.parametrize(
    ("name", "transient"), [("error_invalid_request", False), ("error_overloaded", True)]
)
async def test_sglangs_error_bodies_map_to_model_errors(
    server: LoopbackServer, name: str, transient: bool
) -> None:
    data = documented(name)
    for _ in range(FAST.attempts):
        server.reply(data["response"], status=data["status"], headers=data["headers"])
    async with model_at(server, data["request"]["model"]) as model:
        with pytest.raises(ModelError) as info:
            await model.request(ask("hi"))
    error = info.value
    assert f"HTTP {data['status']}: {data['response']['message']}" in str(error)
    assert (error.status, error.transient, error.body) == (
        data["status"],
        transient,
        data["response"],
    )
    assert len(server.requests) == (FAST.attempts if transient else 1)


async def test_the_documented_generate_answer_maps(server: LoopbackServer) -> None:
    data = documented("generate")
    server.reply(data["response"])
    schema = json.loads(data["request"]["sampling_params"]["json_schema"])
    settings = ModelSettings(max_tokens=64, temperature=0.0, timeout_s=10)
    async with model_at(server, "meta-llama/Meta-Llama-3.1-8B-Instruct") as model:
        response = await model.generate(
            data["request"]["text"], output=JsonSchema(schema=schema), settings=settings
        )
    last = server.requests[-1]
    assert (last.method, last.path) == ("POST", "/generate")
    assert last.json == data["request"]
    assert response.message.content == '{"name": "Paris", "population": 2147000}'
    assert response.usage == Usage(input_tokens=50, output_tokens=15, cached_tokens=49)
    assert response.finish_reason == "stop"
    assert response.latency_s == pytest.approx(0.40511612175032496)


@pytest.mark.parametrize(
    ("spec", "params"),
    [
        (Regex(pattern="(France|England)"), {"regex": "(France|England)"}),
        (Choice(options=["France", "England"]), {"regex": "(France|England)"}),
        (Ebnf(grammar='root ::= "Paris"'), {"ebnf": 'root ::= "Paris"'}),
    ],
)
async def test_generate_sends_the_constraint_in_sampling_params(
    server: LoopbackServer, spec: Regex | Choice | Ebnf, params: dict[str, str]
) -> None:
    server.reply({"text": "France", "meta_info": {"finish_reason": {"type": "stop"}}})
    async with model_at(server) as model:
        response = await model.generate("Paris is the capital of", output=spec)
    assert server.requests[-1].json["sampling_params"] == {"max_new_tokens": 1024, **params}
    assert response.message.content == "France" and response.usage == Usage()
