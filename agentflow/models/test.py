"""Test doubles that ship with the library, so users test their graphs the way we do.

```python
model = ScriptedModel([ToolCall(id="c1", name="lookup_order", arguments={"order_id": 1042}),
                       "Your order ships tomorrow."])
...
assert model.requests[1].messages[-1].role == "tool"
```
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

from pydantic import BaseModel

from agentflow.exceptions import ModelError
from agentflow.messages import AssistantMessage, ToolCall, Usage, estimate_tokens, message_text
from agentflow.models.base import DEFAULT_PROFILE, Model, ModelProfile, ModelRequest, ModelResponse

__all__ = ["FunctionModel", "Reply", "ScriptedModel"]

Reply: TypeAlias = ModelResponse | AssistantMessage | str | ToolCall | list[ToolCall] | BaseModel
"""What a test double may answer: a full response, a message, text, tool calls, or a
pydantic value (sent as its JSON)."""

TEST_PROFILE = ModelProfile({**DEFAULT_PROFILE, "regex": True, "ebnf": True, "self_hosted": True})


def to_response(reply: Reply, req: ModelRequest, *, model: str, provider: str) -> ModelResponse:
    """Complete a reply into a `ModelResponse`, estimating usage where none is given."""
    if isinstance(reply, ModelResponse):
        return reply
    if isinstance(reply, AssistantMessage):
        message = reply
    elif isinstance(reply, str):
        message = AssistantMessage(content=reply)
    elif isinstance(reply, ToolCall):
        message = AssistantMessage(tool_calls=[reply])
    elif isinstance(reply, list):
        message = AssistantMessage(tool_calls=list(reply))
    else:
        message = AssistantMessage(content=reply.model_dump_json())
    prompt = "".join(message_text(m) for m in req.messages)
    usage = Usage(
        input_tokens=estimate_tokens(prompt), output_tokens=estimate_tokens(message_text(message))
    )
    finish = "tool_calls" if message.tool_calls else "stop"
    return ModelResponse(
        message=message, usage=usage, model=model, provider=provider, finish_reason=finish
    )


class ScriptedModel(Model):
    """Replay scripted replies in order and record every request.

    An `Exception` in the script is raised instead of answering, which is how tests
    exercise retries and fallbacks.

    Args:
        replies: What to answer, one item per request.
        name: The model name reported in responses.
        cycle: Start over when the script runs out instead of raising `ModelError`.
    """

    provider = "test"

    def __init__(
        self,
        replies: Sequence[Reply | Exception],
        *,
        name: str = "scripted",
        cycle: bool = False,
        profile: ModelProfile = TEST_PROFILE,
    ) -> None:
        self.name = name
        self.profile = profile
        self.replies = list(replies)
        self.cycle = cycle
        self.requests: list[ModelRequest] = []

    async def request(self, req: ModelRequest) -> ModelResponse:
        index = len(self.requests)
        self.requests.append(req)
        if index >= len(self.replies) and not (self.cycle and self.replies):
            raise ModelError(
                f"{self!r} has no reply left: it was scripted with {len(self.replies)} "
                f"and got request number {index + 1}",
                model=self.name,
            )
        reply = self.replies[index % len(self.replies)]
        if isinstance(reply, Exception):
            raise reply
        return to_response(reply, req, model=self.name, provider=self.provider)


class FunctionModel(Model):
    """Answer every request by calling a Python function (sync or async).

    ```python
    def answer(req: ModelRequest) -> Reply:
        return "refund approved" if "refund" in req.messages[-1].content else "hello"

    model = FunctionModel(answer)
    ```
    """

    provider = "test"

    def __init__(
        self,
        function: Callable[[ModelRequest], Reply | Awaitable[Reply]],
        *,
        name: str | None = None,
        profile: ModelProfile = TEST_PROFILE,
    ) -> None:
        self.function = function
        self.name = name or getattr(function, "__name__", "function")
        self.profile = profile
        self.requests: list[ModelRequest] = []

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.requests.append(req)
        reply = self.function(req)
        if inspect.isawaitable(reply):
            reply = await reply
        return to_response(reply, req, model=self.name, provider=self.provider)
