"""What tracing may record of messages and tool calls: redacted, and without secrets.

Content is recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` asks
for it (see `agentflow.tracing`), as structured values in the GenAI conventions' shapes
(`gen_ai.input.messages`, `gen_ai.output.messages`, `gen_ai.system_instructions`: lists
of objects, not JSON text). Everything recorded, error messages included, goes through
`redact`: the values of the secrets tools declared are cut, then the node's PII detector
redacts personal data.
"""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from typing import Any

from agentflow.messages import AssistantMessage, Message, SystemMessage, ToolResultMessage
from agentflow.models.base import ModelResponse
from agentflow.pii import PiiDetector

__all__ = [
    "DEFAULT_REDACTOR",
    "chat_content",
    "redact",
    "redacted",
    "redactor",
    "secret_names",
    "structured",
]

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


def redacted(value: Any) -> Any:
    """Structured content as it may be recorded: every string in it (keys aside) redacted,
    other values kept, anything else (a date, say) as its redacted text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    return redact(str(value))


def structured(text: str) -> Any:
    """A tool's result as the conventions want it: the object its JSON text holds, else
    the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parts(message: Message) -> list[dict[str, Any]]:
    if isinstance(message, ToolResultMessage):
        return [
            {
                "type": "tool_call_response",
                "id": message.tool_call_id,
                "response": structured(message.content),
            }
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


def chat_content(
    messages: list[Message], response: ModelResponse
) -> tuple[list[Any], list[Any], list[Any] | None]:
    """The input messages, output messages and system instructions of one call, redacted."""
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
    return redacted(history), redacted(output), redacted(instructions) if system else None
