"""The test doubles users test their graphs with: ScriptedModel and FunctionModel."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from agentflow import (
    AssistantMessage,
    FunctionModel,
    ModelError,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    Usage,
    UserMessage,
)


class Order(BaseModel):
    id: int


def request(text: str = "hello there") -> ModelRequest:
    return ModelRequest(messages=[UserMessage(content=text)])


async def test_scripted_model_replays_every_kind_of_reply_and_records_requests() -> None:
    call = ToolCall(id="c1", name="lookup", arguments={"id": 1})
    full = ModelResponse(message=AssistantMessage(content="x"), usage=Usage(input_tokens=9))
    model = ScriptedModel(
        ["text", call, [call, call], Order(id=3), AssistantMessage(content="m"), full]
    )
    answers = [await model.request(request(str(i))) for i in range(6)]
    assert answers[0].message == AssistantMessage(content="text")
    assert answers[1].message.tool_calls == [call] and answers[1].finish_reason == "tool_calls"
    assert len(answers[2].message.tool_calls) == 2
    assert answers[3].message.content == '{"id":3}'
    assert answers[4].message.content == "m"
    assert answers[5] is full
    assert [r.messages[0].content for r in model.requests] == ["0", "1", "2", "3", "4", "5"]
    assert answers[0].model == "scripted" and answers[0].provider == "test"


async def test_usage_is_estimated_from_the_text() -> None:
    answer = await ScriptedModel(["12345678"]).request(request("x" * 40))
    assert answer.usage == Usage(input_tokens=10, output_tokens=2)


async def test_running_out_is_a_model_error_unless_cycling() -> None:
    model = ScriptedModel(["only"])
    await model.request(request())
    with pytest.raises(ModelError, match="no reply left"):
        await model.request(request())
    cycling = ScriptedModel(["a", "b"], cycle=True)
    assert [(await cycling.request(request())).message.content for _ in range(3)] == ["a", "b", "a"]


async def test_scripted_exceptions_are_raised() -> None:
    model = ScriptedModel([ModelError("boom", status=503)])
    with pytest.raises(ModelError) as caught:
        await model.request(request())
    assert caught.value.status == 503


async def test_function_model_sync_and_async() -> None:
    def sync(req: ModelRequest) -> str:
        return req.messages[-1].content.upper()

    async def asynchronous(req: ModelRequest) -> str:
        return "async " + req.messages[-1].content

    assert (await FunctionModel(sync).request(request("hi"))).message.content == "HI"
    model = FunctionModel(asynchronous, name="mine")
    async with model:
        answer = await model.request(request("hi"))
    assert answer.message.content == "async hi"
    assert answer.model == "mine" and len(model.requests) == 1
    assert repr(model) == "FunctionModel(test:mine)"
