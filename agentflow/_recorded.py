"""What tracing may record of messages and tool calls: redacted, and without secrets.

Content is recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` asks
for it (see `agentflow.tracing`), in the GenAI conventions' JSON shapes
(`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`).
Everything recorded, error messages included, goes through `redact`: the values of the
secrets tools declared are cut, then the node's PII detector redacts personal data.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from typing import Any

from agentflow.messages import AssistantMessage, Message, SystemMessage, ToolResultMessage
from agentflow.models.base import ModelResponse
from agentflow.pii import PiiDetector

__all__ = ["DEFAULT_REDACTOR", "chat_content", "json_text", "redact", "redactor", "secret_names"]

redactor: ContextVar[PiiDetector | None] = ContextVar("agentflow_redactor", default=None)
"""Set inside a traced node: the PII detector (the router's) for what is recorded there."""
DEFAULT_REDACTOR = PiiDetector()
secret_names: set[str] = set()
"""Variables tools declared as secrets; their values are cut from anything recorded."""


def redact(text: str) -> str:
    """Text as it may be recorded: tool secrets removed, personal data redacted."""
    for name in secret_names:
        value = os.environ.get(name)
        if value and value in text:
            text = text.replace(value, "[SECRET]")
    return (redactor.get() or DEFAULT_REDACTOR).redact(text)[0]


def json_text(value: Any) -> str:
    """JSON of recorded content, redacted as a whole (strings nested in arguments too)."""
    return redact(json.dumps(value, ensure_ascii=False, default=str))


def _parts(message: Message) -> list[dict[str, Any]]:
    if isinstance(message, ToolResultMessage):
        return [
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.content}
        ]
    if not isinstance(message, AssistantMessage):
        return [{"type": "text", "content": message.content}]
    parts: list[dict[str, Any]] = []
    if message.reasoning:
        parts.append({"type": "reasoning", "content": message.reasoning})
    if message.content:
        parts.append({"type": "text", "content": message.content})
    parts.extend(
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in message.tool_calls
    )
    return parts


def chat_content(messages: list[Message], response: ModelResponse) -> tuple[str, str, str | None]:
    """The input messages, output messages and system instructions of one call, as JSON."""
    system = [m for m in messages if isinstance(m, SystemMessage)]
    history = [
        {"role": m.role, "parts": _parts(m)} for m in messages if not isinstance(m, SystemMessage)
    ]
    output = [
        {
            "role": "assistant",
            "parts": _parts(response.message),
            "finish_reason": response.finish_reason,
        }
    ]
    instructions = [{"type": "text", "content": m.content} for m in system]
    return json_text(history), json_text(output), json_text(instructions) if system else None
