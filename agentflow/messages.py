"""Messages exchanged with models, tool calls, and token usage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "AssistantMessage",
    "Message",
    "SystemMessage",
    "ToolCall",
    "ToolResultMessage",
    "Usage",
    "UserMessage",
    "estimate_tokens",
    "message_text",
    "prompt_tokens",
]


@dataclass(kw_only=True, frozen=True)
class SystemMessage:
    """Instructions for the model."""

    content: str
    role: Literal["system"] = "system"


@dataclass(kw_only=True, frozen=True)
class UserMessage:
    """What the user (a customer, a caller) said."""

    content: str
    role: Literal["user"] = "user"


@dataclass(kw_only=True, frozen=True)
class ToolCall:
    """A model's request to run one tool."""

    id: str
    """Unique per call; side-effecting tools use it as their idempotency key."""
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    """Arguments as the model produced them, before validation."""


@dataclass(kw_only=True, frozen=True)
class AssistantMessage:
    """A model's answer: text, tool calls, or both."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    reasoning: str | None = None
    """Reasoning ("thinking") text, kept apart from the answer."""
    role: Literal["assistant"] = "assistant"


@dataclass(kw_only=True, frozen=True)
class ToolResultMessage:
    """The result of one tool call, sent back to the model."""

    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    """True when the call failed (bad arguments, tool error); the model may try again."""
    role: Literal["tool"] = "tool"


Message: TypeAlias = SystemMessage | UserMessage | AssistantMessage | ToolResultMessage


def message_text(message: Message) -> str:
    """Return all text a message carries, tool-call arguments included."""
    if isinstance(message, AssistantMessage) and message.tool_calls:
        calls = " ".join(f"{c.name}({c.arguments})" for c in message.tool_calls)
        return f"{message.content} {calls}" if message.content else calls
    return message.content


@dataclass(kw_only=True, frozen=True)
class Usage:
    """Tokens one or more model calls consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    """Input tokens served from a prefix cache (a subset of `input_tokens`)."""
    cache_write_tokens: int = 0
    """Input tokens written to a provider's prompt cache (a subset of `input_tokens`)."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


def estimate_tokens(text: str) -> int:
    """Estimate a token count without a tokenizer: about four characters per token.

    Used for budget checks before a call and by the test doubles; real backends report
    the count their tokenizer saw.
    """
    return _tokens(len(text))


def prompt_tokens(messages: Sequence[Message]) -> int:
    """`estimate_tokens` of all the messages' text (`message_text`), without joining it."""
    return _tokens(sum(len(message_text(m)) for m in messages))


def _tokens(chars: int) -> int:
    return (chars + 3) // 4
