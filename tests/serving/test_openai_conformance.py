"""`serve-model` driven by the clients people point at it: openai, langchain-openai, litellm.

The server runs on 127.0.0.1 over a `ScriptedEngine`: the real tokenizer and xgrammar
grammars, scripted text (each answer must be one the request's grammar accepts), so a
case takes milliseconds. The error cases check what each client raises and what it
reads from the body: status, `code`, `param`, `type`.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest
import xgrammar

from agentflow.messages import UserMessage
from agentflow.models.base import ModelRequest, ToolSpec
from agentflow.models.local import LocalModel, constraint, parse_reply
from agentflow.serving.local_server import create_app
from agentflow.serving.sse import KEEPALIVE
from tests.serving.scripted_engine import ScriptedEngine, scripted_model, serving
from tests.serving.test_local_server import LOOKUP, Ticket

NAME = "gemma3-270m"
ALIAS = "support-small"


REFUND = {
    "type": "function",
    "function": {**LOOKUP["function"], "name": "issue_refund", "description": "Refund."},
}
HI = [{"role": "user", "content": "Where is order 1042?"}]


def tagged(name: str, order_id: int) -> str:
    call = json.dumps({"name": name, "arguments": {"order_id": order_id}})
    return f"<tool_call>{call}</tool_call>"


@pytest.fixture(scope="module")
def scripted(gemma: LocalModel) -> Iterator[tuple[str, ScriptedEngine]]:
    model, engine = scripted_model(gemma)
    app = create_app(model, aliases=[ALIAS], keepalive_s=0.02)
    with serving(app) as url:
        yield url, engine


@pytest.fixture
def url(scripted: tuple[str, ScriptedEngine]) -> str:
    return scripted[0]


@pytest.fixture
def engine(scripted: tuple[str, ScriptedEngine]) -> Iterator[ScriptedEngine]:
    engine = scripted[1]
    engine.replies.clear()
    engine.prompts.clear()
    engine.gate = None
    yield engine
    assert not engine.replies, "the test scripted answers nobody asked for"


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


# -- the openai client -----------------------------------------------------------------


def test_sync_client_text_and_usage(client: openai.OpenAI, engine: ScriptedEngine) -> None:
    engine.replies.append("It shipped on Monday.")
    completion = client.chat.completions.create(model=NAME, messages=HI)  # type: ignore[arg-type]
    choice = completion.choices[0]
    assert choice.message.content == "It shipped on Monday."
    assert choice.finish_reason == "stop" and completion.model == NAME
    assert completion.usage is not None and completion.usage.prompt_tokens > 0


async def test_async_client_streams_with_usage(url: str, engine: ScriptedEngine) -> None:
    engine.replies.append("Your order 1042 is on its way to you.")
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model=NAME,
            messages=HI,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Your order 1042 is on its way to you."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_parse_with_a_pydantic_type(client: openai.OpenAI, engine: ScriptedEngine) -> None:
    engine.replies.append('{"intent": "refund", "order_id": 77}')
    completion = client.chat.completions.parse(
        model=NAME,
        messages=HI,  # type: ignore[arg-type]
        response_format=Ticket,
    )
    assert completion.choices[0].message.parsed == Ticket(intent="refund", order_id=77)


def test_a_forced_call_and_parallel_calls_with_distinct_ids(
    client: openai.OpenAI, engine: ScriptedEngine
) -> None:
    # The grammar writes an object's keys in sorted order (the schema is serialized so).
    engine.replies.append('{"arguments": {"order_id": 1042},"name":"lookup_order"}')
    one = client.chat.completions.create(
        model=NAME,
        messages=HI,  # type: ignore[arg-type]
        tools=[LOOKUP, REFUND],  # type: ignore[list-item]
        tool_choice="required",
    )
    [call] = one.choices[0].message.tool_calls or []
    assert call.function.name == "lookup_order"  # type: ignore[union-attr]
    engine.replies.append(f"{tagged('lookup_order', 5)}\n{tagged('issue_refund', 6)}")
    two = client.chat.completions.create(
        model=NAME,
        messages=HI,  # type: ignore[arg-type]
        tools=[LOOKUP, REFUND],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=True,
    )
    calls = two.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
        ("lookup_order", {"order_id": 5}),
        ("issue_refund", {"order_id": 6}),
    ]
    assert len({c.id for c in calls}) == 2 and two.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_is_the_grammar(gemma: LocalModel) -> None:
    """Several calls where the request allows them; exactly one where it does not."""
    engine = gemma._engine
    assert engine is not None
    tools = [
        ToolSpec(name=t["function"]["name"], description="", parameters=t["function"]["parameters"])
        for t in (LOOKUP, REFUND)
    ]
    two = f"{tagged('lookup_order', 5)}\n{tagged('issue_refund', 6)}"
    required = ModelRequest(
        messages=[UserMessage(content="x")], tools=tools, tool_choice="required"
    )
    auto = ModelRequest(messages=[UserMessage(content="x")], tools=tools, tool_choice="auto")

    def allows(req: ModelRequest, parallel: bool, text: str) -> bool:
        matcher = xgrammar.GrammarMatcher(constraint(engine, req, parallel=parallel))
        return matcher.accept_string(text) and matcher.is_completed()

    assert allows(required, True, two) and allows(required, True, tagged("lookup_order", 5))
    assert not allows(required, True, "")  # at least one call
    assert not allows(required, False, two)
    assert allows(required, False, '{"arguments": {"order_id": 6},"name":"issue_refund"}')
    assert allows(auto, True, f"Let me look. {two}")
    assert allows(auto, False, f"Let me look. {tagged('lookup_order', 5)}")
    assert not allows(auto, False, f"Let me look. {two}")
    calls = parse_reply(two, required, parallel=True).tool_calls
    assert [c.name for c in calls] == ["lookup_order", "issue_refund"]


# -- errors in OpenAI's shape ---------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"tool_choice": "required"}, "tool_choice", None),
        ({"parallel_tool_calls": True}, "parallel_tool_calls", None),
        (
            {"tools": [LOOKUP], "tool_choice": {"type": "function", "function": {"name": "x"}}},
            "tool_choice",
            "invalid_value",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "bad", "schema": {"type": "objekt"}},
                }
            },
            "response_format.json_schema.schema",
            None,
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "tools[0].function.parameters",
            None,
        ),
        ({"regex": "("}, "regex", None),
        ({"max_tokens": "many"}, "max_tokens", "invalid_type"),
        ({"temperature": -1}, "temperature", "invalid_value"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": [{"role": "user", "content": "word " * 40000}]}, "messages", None),
    ],
)
def test_bad_input_is_a_400_before_any_stream(
    client: openai.OpenAI,
    engine: ScriptedEngine,
    extra: dict[str, Any],
    param: str,
    code: str | None,
    stream: bool,
) -> None:
    extra = dict(extra)  # the parameters are shared by the two `stream` cases
    messages = extra.pop("messages", HI)

    def ask() -> None:
        response = client.chat.completions.create(
            model=NAME, messages=messages, stream=stream, extra_body=extra
        )
        if stream:
            list(response)  # type: ignore[call-overload]

    with pytest.raises(openai.BadRequestError) as raised:  # not APIConnectionError
        ask()
    error = raised.value
    assert (
        error.status_code == 400 and error.param == param and error.type == "invalid_request_error"
    )
    assert code is None or error.code == code, error.body
    assert engine.prompts == []  # refused before the engine saw it


def test_an_unknown_model_is_a_404_unless_aliased(
    client: openai.OpenAI, engine: ScriptedEngine
) -> None:
    for stream in (False, True):
        with pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(model="gpt-9", messages=HI, stream=stream)  # type: ignore[call-overload]
        assert raised.value.code == "model_not_found" and raised.value.param == "model"
    engine.replies.append("ok")
    aliased = client.chat.completions.create(model=ALIAS, messages=HI)  # type: ignore[arg-type]
    assert aliased.choices[0].message.content == "ok"


def test_a_missing_field_and_broken_json(url: str, engine: ScriptedEngine) -> None:
    missing = httpx.post(f"{url}/v1/chat/completions", json={"model": NAME})
    assert missing.status_code == 400
    assert missing.json()["error"] == {
        "message": "Missing required parameter: 'messages'.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "missing_required_parameter",
    }
    broken = httpx.post(
        f"{url}/v1/chat/completions",
        content=b'{"messages": [',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"


def test_an_error_mid_stream_is_raised_by_the_client(
    client: openai.OpenAI, engine: ScriptedEngine
) -> None:
    """A forced call that `max_tokens` cut short cannot be parsed once the 200 is out."""
    engine.replies.append(('{"arguments": {"order_', "length"))
    stream = client.chat.completions.create(
        model=NAME,
        messages=HI,  # type: ignore[arg-type]
        tools=[LOOKUP],  # type: ignore[list-item]
        tool_choice="required",
        stream=True,
    )
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert "forced tool call is not JSON" in raised.value.message
    assert raised.value.type == "server_error"


def test_models_and_one_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [NAME, ALIAS, "google/gemma-3-270m"]
    card = client.models.retrieve(ALIAS)
    assert (card.id, card.object, card.owned_by) == (ALIAS, "model", "agentflow")
    assert client.models.retrieve("google/gemma-3-270m").id == "google/gemma-3-270m"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("gpt-9")
    assert raised.value.code == "model_not_found"


# -- keep-alive -----------------------------------------------------------------------


def test_a_busy_stream_sends_keep_alive_comments(url: str, engine: ScriptedEngine) -> None:
    engine.gate = threading.Event()
    engine.replies.append("Done at last.")
    body = {"model": NAME, "messages": HI, "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            lines.append(line)
            if line == KEEPALIVE.strip():
                engine.gate.set()  # the engine answers only once a comment came through
    assert response.status_code == 200
    lines = [line for line in lines if line]
    assert lines.index(": keep-alive") < next(i for i, x in enumerate(lines) if "Done" in x)
    assert lines[-1] == "data: [DONE]"


class _Tap(httpx2.SyncByteStream):
    """The response bytes as the client reads them; opens `gate` once a comment passed."""

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self.inner, self.gate = inner, gate

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.inner:
            yield chunk
            if KEEPALIVE.encode() in chunk:
                self.gate.set()

    def close(self) -> None:
        self.inner.close()


class _Watching(httpx2.HTTPTransport):
    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = super().handle_request(request)
        response.stream = _Tap(response.stream, self.gate)
        return response


def test_the_openai_client_reads_through_keep_alive_comments(
    url: str, engine: ScriptedEngine
) -> None:
    engine.gate = threading.Event()
    engine.replies.append("Still here, and the order shipped.")
    with httpx2.Client(transport=_Watching(engine.gate)) as http:
        client = openai.OpenAI(
            base_url=f"{url}/v1", api_key="none", max_retries=0, http_client=http
        )
        stream = client.chat.completions.create(model=NAME, messages=HI, stream=True)  # type: ignore[arg-type]
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert engine.gate.is_set() and text == "Still here, and the order shipped."


# -- langchain-openai -----------------------------------------------------------------


@pytest.fixture
def chat(url: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=NAME, base_url=f"{url}/v1", api_key="none", max_retries=0)  # type: ignore[arg-type]


def test_langchain_invoke_stream_structured_and_tools(chat: Any, engine: ScriptedEngine) -> None:
    from langchain_core.tools import tool

    @tool
    def lookup_order(order_id: int) -> str:
        """Look up an order."""
        return "shipped"

    engine.replies.extend(
        [
            "Hello from the engine.",
            "Streamed words arrive in pieces.",
            '{"intent": "order_status", "order_id": 1042}',
            '{"arguments": {"intent": "other", "order_id": null}, "name": "Ticket"}',
            tagged("lookup_order", 1042),
        ]
    )
    assert chat.invoke("hi").content == "Hello from the engine."
    assert "".join(str(c.content) for c in chat.stream("hi")) == "Streamed words arrive in pieces."
    assert chat.with_structured_output(Ticket).invoke("x") == Ticket(
        intent="order_status", order_id=1042
    )
    by_call = chat.with_structured_output(Ticket, method="function_calling").invoke("x")
    assert by_call == Ticket(intent="other", order_id=None)
    message = chat.bind_tools([lookup_order]).invoke("Where is order 1042?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("lookup_order", {"order_id": 1042})
    ]


def test_langchain_sees_openai_errors(chat: Any, engine: ScriptedEngine) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        chat.bind_tools([LOOKUP], tool_choice="teleport").invoke("x")
    assert raised.value.param == "tool_choice"


# -- litellm --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def litellm() -> Any:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no fetch of the cost map
    import litellm

    return litellm


def test_litellm_completion_stream_and_tools(
    litellm: Any, url: str, engine: ScriptedEngine
) -> None:
    where = {"model": f"openai/{NAME}", "api_base": f"{url}/v1", "api_key": "none"}
    engine.replies.extend(["Plain answer.", "A streamed answer.", tagged("lookup_order", 7)])
    response = litellm.completion(messages=HI, **where)
    assert response.choices[0].message.content == "Plain answer."
    chunks = list(litellm.completion(messages=HI, stream=True, **where))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "A streamed answer."
    called = litellm.completion(messages=HI, tools=[LOOKUP], **where)
    [call] = called.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "lookup_order",
        {"order_id": 7},
    )
    with pytest.raises(litellm.NotFoundError):
        litellm.completion(messages=HI, **{**where, "model": "openai/gpt-9"})
    bad = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "objekt"}}}
    with pytest.raises(litellm.BadRequestError):
        litellm.completion(messages=HI, response_format=bad, **where)


def test_litellm_async_stream(litellm: Any, url: str, engine: ScriptedEngine) -> None:
    engine.replies.append("Async pieces.")

    async def run() -> str:
        stream = await litellm.acompletion(
            model=f"openai/{NAME}", api_base=f"{url}/v1", api_key="none", messages=HI, stream=True
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream])

    assert asyncio.run(run()) == "Async pieces."
