"""The SGLang-compatible local server, on a real socket, with httpx and the openai client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel


class Ticket(BaseModel):
    intent: Literal["order_status", "refund", "other"]
    order_id: int | None


LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "integer"}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
def client(live_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_url}/v1", api_key="none", max_retries=0)


def test_health_models_and_model_info(live_url: str) -> None:
    assert httpx.get(f"{live_url}/health").status_code == 200
    models = httpx.get(f"{live_url}/v1/models").json()
    assert models["data"][0]["id"] == "gemma3-270m"
    info = httpx.get(f"{live_url}/get_model_info").json()
    assert info["is_generation"] is True and info["context_length"] > 0


def test_openai_client_gets_schema_valid_json(client: openai.OpenAI) -> None:
    for text in ("Where is my order 1042?", "Refund order 77 please"):
        completion = client.chat.completions.create(
            model="gemma3-270m",
            messages=[{"role": "user", "content": text}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Ticket", "schema": Ticket.model_json_schema()},
            },
            max_tokens=64,
        )
        choice = completion.choices[0]
        assert choice.finish_reason == "stop"
        Ticket.model_validate_json(choice.message.content or "")
        assert completion.usage is not None and completion.usage.completion_tokens > 0


def test_openai_client_gets_forced_tool_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gemma3-270m",
        messages=[{"role": "user", "content": "Where is order 1042?"}],
        tools=[LOOKUP],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "lookup_order"}},
        max_tokens=48,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "lookup_order"  # type: ignore[union-attr]
    assert isinstance(json.loads(call.function.arguments)["order_id"], int)  # type: ignore[union-attr]


def test_openai_client_streams_text(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gemma3-270m",
        messages=[{"role": "user", "content": "Say hello to the customer."}],
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    finishes = [f for f in finishes if f]
    assert text.strip()
    assert finishes in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_streamed_tool_call_and_done_marker(live_url: str) -> None:
    body = {
        "messages": [{"role": "user", "content": "Where is order 5?"}],
        "tools": [LOOKUP],
        "tool_choice": "required",
        "stream": True,
        "max_tokens": 48,
    }
    with httpx.stream("POST", f"{live_url}/v1/chat/completions", json=body, timeout=60) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    deltas = [json.loads(e[6:])["choices"] for e in events[:-1]]
    calls = [c[0]["delta"]["tool_calls"] for c in deltas if c and c[0]["delta"].get("tool_calls")]
    assert calls[0][0]["function"]["name"] == "lookup_order"
    assert deltas[-1][0]["finish_reason"] == "tool_calls"


def test_generate_with_a_json_schema(live_url: str) -> None:
    params = {"max_new_tokens": 64, "json_schema": json.dumps(Ticket.model_json_schema())}
    reply = httpx.post(
        f"{live_url}/generate",
        json={"text": "Order 1042 is late. Ticket:", "sampling_params": params},
        timeout=60,
    ).json()
    Ticket.model_validate_json(reply["text"])
    meta = reply["meta_info"]
    assert meta["finish_reason"]["type"] == "stop"
    assert meta["prompt_tokens"] > 0 and meta["completion_tokens"] > 0
    assert meta["e2e_latency"] > 0 and meta["cached_tokens"] == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "only n=1"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "bad", "schema": {"type": "objekt"}},
                },
            },
            "not a valid JSON Schema",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [LOOKUP],
                "tool_choice": {"type": "function", "function": {"name": "teleport"}},
            },
            "not offered",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "regex": "(", "ebnf": 'root ::= "a"'},
            "one constraint",
        ),
        ({"messages": [{"role": "user", "content": "word " * 40000}]}, "context holds"),
    ],
)
def test_bad_input_is_a_400_with_a_json_body(
    live_url: str, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(f"{live_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]  # OpenAI's shape
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]
    assert httpx.get(f"{live_url}/health").status_code == 200  # still serving


def test_bad_generate_input_is_a_400(live_url: str) -> None:
    for params in ({"json_schema": "{not json"}, {"regex": "(", "ebnf": 'root ::= "a"'}):
        response = httpx.post(
            f"{live_url}/generate", json={"text": "x", "sampling_params": params}, timeout=60
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_concurrent_requests_are_queued_not_dropped(live_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    async with httpx.AsyncClient(base_url=live_url, timeout=120) as http:
        responses = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=body) for _ in range(4))
        )
    assert [r.status_code for r in responses] == [200] * 4


def test_serve_model_command_answers_the_openai_client() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    exe = Path(sys.executable).parent / "agentflow"
    server = subprocess.Popen(
        [str(exe), "serve-model", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{port}"
        # The banner comes once the model is loaded (after its progress output).
        banner = next((line for line in server.stdout if url in line), None)
        assert banner is not None, "serve-model exited without serving"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
        deadline = time.monotonic() + 30
        while True:  # readiness: uvicorn binds the port just after the banner
            try:
                httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "server never listened"
                time.sleep(0.05)
        completion = client.chat.completions.create(
            model="gemma3-270m",
            messages=[{"role": "user", "content": "Where is order 1042?"}],
            tools=[LOOKUP],  # type: ignore[list-item]
            tool_choice="required",
            max_tokens=48,
        )
        [call] = completion.choices[0].message.tool_calls or []
        assert call.function.name == "lookup_order"  # type: ignore[union-attr]
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
