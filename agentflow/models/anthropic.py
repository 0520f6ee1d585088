"""The `anthropic:` backend: Anthropic's Messages API (`POST /v1/messages`) over httpx.

```python
model = AnthropicModel("claude-sonnet-4-5")          # key from ANTHROPIC_API_KEY
```

How a `ModelRequest` is written in the Messages format:

| agentflow | Messages API |
|---|---|
| `SystemMessage`s | the top-level `system` string (the API has no system role) |
| `AssistantMessage.tool_calls` | `tool_use` blocks after the message's text |
| consecutive `ToolResultMessage`s | one `user` message of `tool_result` blocks (`is_error` kept) |
| `tools` | `{name, description, input_schema}` |
| `tool_choice` `auto`/`required`/`none`/NAME | `{"type": "auto"/"any"/"none"/"tool"}` |
| `settings.reasoning=True` | `thinking: {"type": "enabled", ...}` (see `thinking_budget`) |
| `output` | a forced tool, or a prompt instruction (see `AnthropicModel`) |

`settings.seed` is not sent: the API has no seed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentflow.exceptions import ModelError, ToolCallParseError
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
)
from agentflow.models._http import HttpEndpoint, require_api_key
from agentflow.models.base import (
    Choice,
    Ebnf,
    JsonSchema,
    Model,
    ModelProfile,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    OutputSpec,
    Regex,
    StreamDelta,
    ToolChoice,
    ToolSpec,
)
from agentflow.models.fallback import CircuitBreaker, RetryPolicy

__all__ = ["ANTHROPIC_PROFILE", "AnthropicModel", "thinking_budget", "wire_messages"]

ANTHROPIC_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
MESSAGES_PATH = "/v1/messages"
API_KEY_VARIABLE = "ANTHROPIC_API_KEY"

# JSON schemas are enforced as a forced tool call; tool calls come structured, as OpenAI's do.
ANTHROPIC_PROFILE = ModelProfile(
    json_schema=True,
    regex=False,
    ebnf=False,
    tools=True,
    tool_call_format="openai",
    self_hosted=False,
)

MIN_THINKING_BUDGET = 1024
"""The smallest `budget_tokens` the API accepts."""
MAX_THINKING_BUDGET = 8192

OUTPUT_TOOL_DESCRIPTION = "Answer by calling this tool once; its input is your whole answer."
_WRAPPED_KEY = "value"
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types that match the HTTP statuses `HttpEndpoint` retries (429, 500, 504, 529).
_TRANSIENT = frozenset({"rate_limit_error", "api_error", "timeout_error", "overloaded_error"})


def wire_messages(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """Split messages into the `system` text and the `messages` list, in order."""
    system: list[str] = []
    wire: list[dict[str, Any]] = []
    results: list[dict[str, Any]] | None = None  # the tool_result blocks being grouped
    for m in messages:
        if isinstance(m, ToolResultMessage):
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id}
            if m.content:  # the docs' "empty tool result" leaves content out
                block["content"] = m.content
            if m.is_error:
                block["is_error"] = True
            if results is None:
                results = []
                wire.append({"role": "user", "content": results})
            results.append(block)
            continue
        results = None
        if isinstance(m, SystemMessage):
            system.append(m.content)
        elif isinstance(m, AssistantMessage):
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": m.content}] if m.content else []
            )
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            ]
            if blocks:  # the API refuses an assistant turn without content
                wire.append({"role": "assistant", "content": blocks})
        else:
            wire.append({"role": "user", "content": m.content})
    return "\n\n".join(system), wire


def _wire_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools
    ]


def _wire_tool_choice(choice: ToolChoice, tools: list[ToolSpec]) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if choice not in {t.name for t in tools}:
        offered = ", ".join(t.name for t in tools)
        raise ValueError(f"tool_choice names {choice!r}, which is not offered ({offered})")
    return {"type": "tool", "name": choice}


def _wraps(spec: JsonSchema) -> bool:
    """Whether the schema needs wrapping: `input_schema` must describe an object."""
    return spec.schema.get("type") != "object"


def _output_tool(spec: JsonSchema | Choice) -> dict[str, Any]:
    """The tool whose forced call carries the answer to a JSON-schema or choice spec."""
    if isinstance(spec, Choice):
        name = "choice"
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {"choice": {"enum": list(spec.options)}},
            "required": ["choice"],
        }
    else:
        name = re.sub(r"[^a-zA-Z0-9_-]", "_", spec.name)[:64] or "output"
        schema = spec.schema
        if _wraps(spec):
            inner = {k: v for k, v in schema.items() if k != "$defs"}
            schema = {
                "type": "object",
                "properties": {_WRAPPED_KEY: inner},
                "required": [_WRAPPED_KEY],
            }
            if "$defs" in spec.schema:
                schema["$defs"] = spec.schema["$defs"]  # refs stay relative to the root
    return {"name": name, "description": OUTPUT_TOOL_DESCRIPTION, "input_schema": schema}


def _instruction(spec: OutputSpec | None) -> str | None:
    """The system-prompt line for a constraint the API cannot enforce."""
    if isinstance(spec, Regex):
        return f"Answer with text that matches this regular expression in full: {spec.pattern}"
    if isinstance(spec, Ebnf):
        return f"Answer with text in the language of this EBNF grammar:\n{spec.grammar}"
    return None


def thinking_budget(settings: ModelSettings) -> int:
    """Return `budget_tokens` for extended thinking: half of `max_tokens`, within bounds.

    The API wants at least 1,024 tokens and less than `max_tokens` (thinking counts
    towards it); half leaves the other half for the answer, and 8,192 caps the cost.

    Raises:
        ValueError: `max_tokens` is 1,024 or less, which leaves no room for thinking.
    """
    budget = max(MIN_THINKING_BUDGET, min(settings.max_tokens // 2, MAX_THINKING_BUDGET))
    if budget >= settings.max_tokens:
        raise ValueError(
            f"reasoning on Anthropic needs max_tokens above {MIN_THINKING_BUDGET} "
            f"(the smallest thinking budget, which counts towards max_tokens); "
            f"got max_tokens={settings.max_tokens}"
        )
    return budget


def _usage(data: Any) -> Usage:
    """Map Messages usage; the API's `input_tokens` leaves out the cached prefix."""
    if not isinstance(data, dict):
        return Usage()
    read = int(data.get("cache_read_input_tokens") or 0)
    written = int(data.get("cache_creation_input_tokens") or 0)
    return Usage(
        input_tokens=int(data.get("input_tokens") or 0) + read + written,
        output_tokens=int(data.get("output_tokens") or 0),
        cached_tokens=read,
        cache_write_tokens=written,
    )


@dataclass(kw_only=True)
class _Assembly:
    """A Messages response being rebuilt from its stream events."""

    blocks: dict[int, dict[str, Any]] = field(default_factory=dict)
    partial_json: dict[int, list[str]] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: str | None = None
    model: str = ""
    id: str = ""
    done: bool = False

    def apply(self, event: dict[str, Any]) -> str:
        """Take in one event; return the answer text it adds (often none)."""
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.model = message.get("model") or self.model
            self.id = str(message.get("id") or self.id)
            self._count(message.get("usage"))
        elif kind == "content_block_start":
            self.blocks[int(event["index"])] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._delta(int(event["index"]), event.get("delta") or {})
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            self._count(event.get("usage"))
        elif kind == "message_stop":
            self.done = True
        return ""  # ping, content_block_stop, and event types added later

    def _count(self, usage: Any) -> None:
        # The docs: usage in message_delta is cumulative, so later counts replace earlier.
        if isinstance(usage, dict):
            self.usage.update({k: v for k, v in usage.items() if v is not None})

    def _delta(self, index: int, delta: dict[str, Any]) -> str:
        block = self.blocks.setdefault(index, {})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
            return delta.get("text", "")
        if kind == "input_json_delta":
            self.partial_json.setdefault(index, []).append(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        return ""

    def content(self, label: str) -> list[dict[str, Any]]:
        """The finished content blocks, tool inputs parsed from their JSON chunks."""
        for index, parts in self.partial_json.items():
            raw = "".join(parts)
            if not raw.strip():
                continue  # a tool called with no arguments keeps its `input: {}`
            try:
                self.blocks[index]["input"] = json.loads(raw)
            except ValueError as exc:
                name = self.blocks[index].get("name")
                raise ToolCallParseError(
                    f"{label} streamed arguments for {name!r} that are not JSON: {raw[:200]!r}",
                    raw=raw,
                    format="anthropic",
                    model=label,
                ) from exc
        return [self.blocks[i] for i in sorted(self.blocks)]


class AnthropicModel(Model):
    """A Claude model behind Anthropic's Messages API.

    Output specs are enforced with tools, which every Claude model honours without a beta
    header:

    - `JsonSchema`: a tool named after the spec, whose `input_schema` is the schema, is
      forced with `tool_choice` `{"type": "tool"}`; its input comes back serialized as
      `message.content` (no tool calls), for the step layer's `output.parse` to validate.
      A schema that is not an object (a list, a union) is wrapped as `{"value": ...}`
      because the API only takes object schemas, and unwrapped again.
    - `Choice`: the same with `{"choice": {"enum": [...]}}`; the content is the option.
    - `Regex`, `Ebnf`: not enforceable. The pattern or grammar is stated in the system
      prompt and the answer is validated on the client (`Regex.parse`; an EBNF answer is
      not re-checked at all).

    Extended thinking (`settings.reasoning=True`) cannot be combined with a forced tool
    (`tool_choice` `required` or a tool's name, or a JSON-schema/choice output): the API
    rejects it, so such requests are sent without thinking. With thinking on,
    `temperature` is not sent either (the API rejects changing it). Thinking blocks
    become `message.reasoning`; their signatures are not kept, so they are not sent back.

    Args:
        model: The model's name, e.g. `claude-sonnet-4-5`.
        base_url: The API root; `https://api.anthropic.com` by default.
        api_key: Defaults to `ANTHROPIC_API_KEY`.
        retry: How transient failures (429 honouring `retry-after`, 5xx, 529) are retried.
        breaker: The endpoint's circuit breaker (one per model object by default).
        client: An `httpx.AsyncClient` to share.

    Raises:
        ConfigError: No API key was given and `ANTHROPIC_API_KEY` is not set.
    """

    provider = "anthropic"
    profile = ANTHROPIC_PROFILE

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = model
        # The path carries the version, so a base URL written with `/v1` works too.
        self.base_url = (base_url or ANTHROPIC_URL).rstrip("/").removesuffix("/v1")
        api_key = require_api_key(api_key, API_KEY_VARIABLE, model=model, base_url=self.base_url)
        self.endpoint = HttpEndpoint(
            self.base_url,
            label=f"{self.provider}:{model}",
            headers={
                "x-api-key": api_key,
                "anthropic-version": ANTHROPIC_VERSION,
                "content-type": "application/json",
            },
            retry=retry,
            breaker=breaker or CircuitBreaker(),
            client=client,
        )

    def body(self, req: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        """Build the JSON body for `req` (public so tests and users can inspect it).

        Raises:
            ValueError: The request carries both tools and an output spec, names a tool
                it does not offer, or asks for reasoning with too small a `max_tokens`.
        """
        if req.tools and req.output is not None:
            raise ValueError("a request carries either tools or an output spec, not both")
        system, messages = wire_messages(req.messages)
        note = _instruction(req.output)
        if note is not None:
            system = f"{system}\n\n{note}" if system else note
        settings = req.settings
        body: dict[str, Any] = {"model": self.name, "max_tokens": settings.max_tokens}
        if system:
            body["system"] = system
        body["messages"] = messages
        if isinstance(req.output, JsonSchema | Choice):
            tool = _output_tool(req.output)
            body["tools"] = [tool]
            body["tool_choice"] = {"type": "tool", "name": tool["name"]}
        elif req.tools:
            body["tools"] = _wire_tools(req.tools)
            body["tool_choice"] = _wire_tool_choice(req.tool_choice, req.tools)
        forced = body.get("tool_choice", {}).get("type") in ("any", "tool")
        if settings.reasoning and not forced:
            body["thinking"] = {"type": "enabled", "budget_tokens": thinking_budget(settings)}
        elif settings.temperature is not None:
            body["temperature"] = settings.temperature
        if stream:
            body["stream"] = True
        return body

    def parse(self, data: Any, req: ModelRequest, latency_s: float) -> ModelResponse:
        """Turn a Messages response body into a `ModelResponse` (garbled bodies raise)."""
        content = data.get("content") if isinstance(data, dict) else None
        if not isinstance(content, list):
            raise ModelError(
                f"{self.endpoint.label} answered with a garbled body, not a Messages "
                f"response: {str(data)[:300]}",
                model=self.name,
                body=data,
            )
        return self._response(
            content,
            stop_reason=data.get("stop_reason"),
            usage=_usage(data.get("usage")),
            model=data.get("model") or self.name,
            req=req,
            latency_s=latency_s,
            response_id=str(data.get("id") or ""),
        )

    def _tool_call(self, block: dict[str, Any]) -> ToolCall:
        call_id, name, arguments = block.get("id"), block.get("name"), block.get("input", {})
        if isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, dict):
            return ToolCall(id=call_id, name=name, arguments=arguments)
        raise ModelError(
            f"{self.endpoint.label} answered with a garbled tool_use block: {block!r}",
            model=self.name,
            body=block,
        )

    def _response(
        self,
        content: list[Any],
        *,
        stop_reason: str | None,
        usage: Usage,
        model: str,
        req: ModelRequest,
        latency_s: float,
        response_id: str = "",
    ) -> ModelResponse:
        text: list[str] = []
        reasoning: list[str] = []
        calls: list[ToolCall] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                text.append(str(block.get("text", "")))
            elif kind == "thinking":
                reasoning.append(str(block.get("thinking", "")))
            elif kind == "tool_use":
                calls.append(self._tool_call(block))
        answer = "".join(text)
        finish = _FINISH.get(stop_reason or "end_turn", stop_reason or "stop")
        if isinstance(req.output, JsonSchema | Choice):
            answer = _structured_answer(req.output, calls) or answer
            calls = []
            finish = "stop" if finish == "tool_calls" else finish
        return ModelResponse(
            message=AssistantMessage(
                content=answer, tool_calls=calls, reasoning="".join(reasoning) or None
            ),
            usage=usage,
            model=model,
            provider=self.provider,
            finish_reason="tool_calls" if calls else finish,
            latency_s=latency_s,
            id=response_id,
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        data = await self.endpoint.post(
            MESSAGES_PATH, self.body(req), timeout_s=req.settings.timeout_s
        )
        return self.parse(data, req, time.perf_counter() - started)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamDelta | ModelResponse]:
        """Stream the answer's text; a JSON-schema or choice answer comes whole at the end."""
        started = time.perf_counter()
        assembly = _Assembly(model=self.name)
        structured = isinstance(req.output, JsonSchema | Choice)
        events = self.endpoint.stream(
            MESSAGES_PATH, self.body(req, stream=True), timeout_s=req.settings.timeout_s
        )
        async for event in events:
            if event.get("type") == "error":
                raise self._stream_error(event)
            text = assembly.apply(event)
            if text and not structured:
                yield StreamDelta(text=text)
        if not assembly.done:
            raise ModelError(
                f"{self.endpoint.label} stream ended before message_stop",
                model=self.name,
                transient=True,
            )
        yield self._response(
            assembly.content(self.endpoint.label),
            stop_reason=assembly.stop_reason,
            usage=_usage(assembly.usage),
            model=assembly.model,
            req=req,
            latency_s=time.perf_counter() - started,
            response_id=assembly.id,
        )

    def _stream_error(self, event: dict[str, Any]) -> ModelError:
        error = event.get("error")
        details: dict[str, Any] = error if isinstance(error, dict) else {}
        kind = details.get("type", "error")
        return ModelError(
            f"{self.endpoint.label} stream failed: {kind}: {details.get('message', '')}",
            model=self.name,
            body=event,
            transient=kind in _TRANSIENT,
        )

    async def aclose(self) -> None:
        await self.endpoint.aclose()


def _structured_answer(spec: JsonSchema | Choice, calls: list[ToolCall]) -> str | None:
    """The answer carried by the forced output tool's call, or None if it was not made."""
    name = _output_tool(spec)["name"]
    call = next((c for c in calls if c.name == name), None)
    if call is None:
        return None
    if isinstance(spec, Choice):
        choice = call.arguments.get("choice")
        return choice if isinstance(choice, str) else json.dumps(call.arguments)
    if _wraps(spec) and _WRAPPED_KEY in call.arguments:
        return json.dumps(call.arguments[_WRAPPED_KEY])
    return json.dumps(call.arguments)
