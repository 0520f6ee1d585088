"""Any OpenAI-compatible chat completions endpoint, over httpx.

OpenAI itself, and the hosted open-model APIs that copy its wire format: DeepSeek,
Moonshot (Kimi), Z.ai (GLM), DashScope (Qwen), OpenRouter, and self-run vLLM. What
differs between them is configuration: the base URL, the API key's variable, and a
profile saying whether `response_format` json_schema is honoured. Where it is not, the
schema goes into the prompt (with `json_object` mode where offered) and the answer is
validated on the client like every other answer.

`SGLangModel` (models/sglang.py) builds on this file: SGLang speaks the same protocol
with extras (regex/EBNF constraints, reasoning switches).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

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
    DEFAULT_PROFILE,
    Choice,
    Ebnf,
    JsonSchema,
    Model,
    ModelProfile,
    ModelRequest,
    ModelResponse,
    Regex,
    StreamDelta,
    ToolSpec,
)
from agentflow.models.fallback import CircuitBreaker, RetryPolicy

__all__ = ["OpenAIModel", "wire_messages", "wire_tools"]

OPENAI_URL = "https://api.openai.com/v1"

# host suffix -> (API key variable, honours response_format json_schema)
_HOSTS: dict[str, tuple[str, bool]] = {
    "api.openai.com": ("OPENAI_API_KEY", True),
    "api.deepseek.com": ("DEEPSEEK_API_KEY", False),
    "api.moonshot.ai": ("MOONSHOT_API_KEY", False),
    "api.moonshot.cn": ("MOONSHOT_API_KEY", False),
    "api.z.ai": ("ZAI_API_KEY", False),
    "open.bigmodel.cn": ("ZAI_API_KEY", False),
    "aliyuncs.com": ("DASHSCOPE_API_KEY", False),
    "openrouter.ai": ("OPENROUTER_API_KEY", True),
}

# host suffix -> `gen_ai.provider.name`: the conventions' well-known value where it has
# one (v1.41: openai, deepseek, groq, mistral_ai, perplexity, x_ai, azure.ai.openai,
# gcp.gemini), else the provider's name in the same lowercase style.
_PROVIDER_NAMES: dict[str, str] = {
    "api.openai.com": "openai",
    "api.deepseek.com": "deepseek",
    "api.moonshot.ai": "moonshot_ai",
    "api.moonshot.cn": "moonshot_ai",
    "api.z.ai": "z_ai",
    "open.bigmodel.cn": "z_ai",
    "aliyuncs.com": "dashscope",
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral_ai",
    "api.perplexity.ai": "perplexity",
    "api.x.ai": "x_ai",
    "openai.azure.com": "azure.ai.openai",
    "generativelanguage.googleapis.com": "gcp.gemini",
}

_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def _by_host(base_url: str, table: Mapping[str, Any]) -> Any:
    host = urlsplit(base_url).hostname or ""
    for suffix, value in table.items():
        if host == suffix or host.endswith("." + suffix):
            return value
    return None


def _host_settings(base_url: str) -> tuple[str | None, bool]:
    # Unknown: a self-run server (vLLM, SGLang): no key needed, schemas honoured.
    return _by_host(base_url, _HOSTS) or (None, True)


def wire_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Write messages in the chat completions format, in order (so prefixes stay stable)."""
    wire: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, ToolResultMessage):
            wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif isinstance(m, AssistantMessage):
            entry: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                entry["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in m.tool_calls
                ]
            wire.append(entry)
        else:
            wire.append({"role": m.role, "content": m.content})
    return wire


def _strict_compatible(schema: Any) -> bool:
    """OpenAI's strict mode needs, in every object (nested, in arrays, in `$defs`), every
    property required and no extra properties."""
    if isinstance(schema, list):
        return all(_strict_compatible(item) for item in schema)
    if not isinstance(schema, Mapping):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required", [])) != set(properties):
            return False
    nested = ("properties", "$defs", "definitions")
    parts = [v for k in nested for v in (schema.get(k) or {}).values()]
    parts += [schema[k] for k in ("items", "anyOf", "oneOf", "allOf") if k in schema]
    return all(_strict_compatible(part) for part in parts)


def wire_tools(tools: list[ToolSpec], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Write tool definitions in the order given; `strict` None means "where the schema allows"."""
    wire = []
    for t in tools:
        function: dict[str, Any] = {
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
        }
        if t.strict and (strict or (strict is None and _strict_compatible(t.parameters))):
            function["strict"] = True
        wire.append({"type": "function", "function": function})
    return wire


def _wire_tool_choice(choice: str) -> Any:
    if choice in ("auto", "required", "none"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _choice_schema(options: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": options}},
        "required": ["choice"],
        "additionalProperties": False,
    }


def _instruction(spec: Any, *, schema_in_prompt: bool) -> str | None:
    """The prompt line for a constraint the endpoint cannot enforce itself."""
    if isinstance(spec, Regex):
        return f"Answer with text matching this regular expression exactly: {spec.pattern}"
    if isinstance(spec, Ebnf):
        return f"Answer with text in the language of this EBNF grammar:\n{spec.grammar}"
    if schema_in_prompt and isinstance(spec, JsonSchema):
        return (
            "Answer with one JSON value, and nothing else, matching this JSON schema:\n"
            + json.dumps(spec.schema)
        )
    if schema_in_prompt and isinstance(spec, Choice):
        return f'Answer with JSON {{"choice": ...}} where choice is one of {spec.options!r}.'
    return None


def _usage(data: Any) -> Usage:
    if not isinstance(data, Mapping) or not data:
        return Usage()
    details = data.get("prompt_tokens_details") or {}
    cached = (
        details.get("cached_tokens")
        or data.get("prompt_cache_hit_tokens")  # DeepSeek
        or data.get("cached_tokens")  # Moonshot
        or 0
    )
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(cached),
    )


def _arguments(raw: Any, name: str, label: str) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError) as exc:
        raise ToolCallParseError(
            f"{label} called {name!r} with arguments that are not JSON: {raw!r}",
            raw=str(raw),
            format="openai",
            model=label,
        ) from exc
    if not isinstance(value, dict):
        raise ToolCallParseError(
            f"{label} called {name!r} with arguments that are not an object: {raw!r}",
            raw=str(raw),
            format="openai",
            model=label,
        )
    return value


@dataclass(kw_only=True)
class _CallBuffer:
    """A tool call being assembled from streamed fragments."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class OpenAIModel(Model):
    """A model behind an OpenAI-compatible `/chat/completions` endpoint.

    Args:
        model: The model's name at the endpoint, e.g. `gpt-4.1` or `deepseek-chat`.
        base_url: The API root, ending in `/v1` for most providers; OpenAI's by default.
        api_key: Defaults to the provider's variable (`OPENAI_API_KEY`, `DEEPSEEK_API_KEY`,
            `MOONSHOT_API_KEY`, `ZAI_API_KEY`, `DASHSCOPE_API_KEY`, `OPENROUTER_API_KEY`);
            an unknown host (a self-run server) needs none.
        profile: What the endpoint supports; by default taken from its host.
        retry: How transient failures are retried.
        breaker: The endpoint's circuit breaker (one per model object by default).
        client: An `httpx.AsyncClient` to share.
    """

    provider = "openai"
    chat_path = "/chat/completions"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.name = model
        self.base_url = (base_url or OPENAI_URL).rstrip("/")
        key_var, json_schema = self._host_settings()
        if api_key is None and key_var is not None:
            api_key = require_api_key(None, key_var, model=model, base_url=self.base_url)
        self.profile = profile or ModelProfile({**DEFAULT_PROFILE, "json_schema": json_schema})
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.endpoint = HttpEndpoint(
            self.base_url,
            label=f"{self.provider}:{model}",
            headers=headers,
            retry=retry,
            breaker=breaker or CircuitBreaker(),
            client=client,
        )

    def _host_settings(self) -> tuple[str | None, bool]:
        return _host_settings(self.base_url)

    @property
    def provider_name(self) -> str:
        """The hosted API's provider (`deepseek`, `moonshot_ai`, `z_ai`, `openrouter`, ...)
        from the base URL's host; `openai` for an endpoint of unknown origin, whose wire
        format is all that is known of it."""
        return _by_host(self.base_url, _PROVIDER_NAMES) or self.provider

    # -- request ------------------------------------------------------------------

    def body(self, req: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        """Build the JSON body for `req` (public so tests and users can inspect it)."""
        if req.tools and req.output is not None:
            raise ValueError("a request carries either tools or an output spec, not both")
        messages = list(req.messages)
        body: dict[str, Any] = {"model": self.name}
        output = req.output
        schema_in_prompt = not self.profile["json_schema"]
        note = None if output is None else self._instruction(output, schema_in_prompt)
        if note is not None:
            messages = [*messages, SystemMessage(content=note)]
        body["messages"] = wire_messages(messages)
        if req.tools:
            body["tools"] = wire_tools(req.tools, strict=self._strict_tools())
            body["tool_choice"] = _wire_tool_choice(req.tool_choice)
        body.update(self._constraint(output))
        settings = req.settings
        body[self._max_tokens_key()] = settings.max_tokens
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.seed is not None:
            body["seed"] = settings.seed
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _instruction(self, output: Any, schema_in_prompt: bool) -> str | None:
        return _instruction(output, schema_in_prompt=schema_in_prompt)

    def _strict_tools(self) -> bool | None:
        return None

    def _max_tokens_key(self) -> str:
        # OpenAI's reasoning models refuse `max_tokens`; everyone else knows it.
        return "max_completion_tokens" if self.base_url == OPENAI_URL else "max_tokens"

    def _constraint(self, output: Any) -> dict[str, Any]:
        """The body fields that enforce `output` on the server, if it can."""
        if isinstance(output, JsonSchema | Choice):
            if not self.profile["json_schema"]:
                return {"response_format": {"type": "json_object"}}
            schema = output.schema if isinstance(output, JsonSchema) else None
            name = output.name if isinstance(output, JsonSchema) else "choice"
            return {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64],
                        "schema": schema or _choice_schema(output.options),  # type: ignore[union-attr]
                        "strict": bool(schema is None or _strict_compatible(schema)),
                    },
                }
            }
        return {}

    # -- response -----------------------------------------------------------------

    def parse(self, data: Any, req: ModelRequest, latency_s: float) -> ModelResponse:
        """Turn a chat completion body into a `ModelResponse` (garbled bodies raise)."""
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            wire_calls = [
                (c.get("id"), c["function"]["name"], c["function"].get("arguments"))
                for c in message.get("tool_calls") or []
            ]
            if not isinstance(content, str) or not all(isinstance(c[1], str) for c in wire_calls):
                raise TypeError("content and tool names must be strings")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"{self.endpoint.label} answered with a body that is not a chat completion: "
                f"{str(data)[:300]}",
                model=self.name,
                body=data,
            ) from exc
        calls = [
            ToolCall(
                id=call_id or f"call_{uuid.uuid4().hex[:24]}",
                name=name,
                arguments=_arguments(arguments, name, self.endpoint.label),
            )
            for call_id, name, arguments in wire_calls
        ]
        return self._response(
            content=content,
            calls=calls,
            reasoning=message.get("reasoning_content"),
            finish=choice.get("finish_reason"),
            usage=_usage(data.get("usage")),
            model=data.get("model") or self.name,
            req=req,
            latency_s=latency_s,
            response_id=str(data.get("id") or ""),
        )

    def _response(
        self,
        *,
        content: str,
        calls: list[ToolCall],
        reasoning: str | None,
        finish: str | None,
        usage: Usage,
        model: str,
        req: ModelRequest,
        latency_s: float,
        response_id: str = "",
    ) -> ModelResponse:
        if isinstance(req.output, Choice) and content:
            content = self._unwrap_choice(content)
        return ModelResponse(
            message=AssistantMessage(content=content, tool_calls=calls, reasoning=reasoning),
            usage=usage,
            model=model,
            provider=self.provider,
            finish_reason="tool_calls" if calls else _FINISH.get(finish or "stop", finish or ""),
            latency_s=latency_s,
            id=response_id,
        )

    def _unwrap_choice(self, content: str) -> str:
        try:
            value = json.loads(content)
        except ValueError:
            return content  # left for the spec's validation to report
        return value["choice"] if isinstance(value, dict) and "choice" in value else content

    async def request(self, req: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        data = await self.endpoint.post(
            self.chat_path, self.body(req), timeout_s=req.settings.timeout_s
        )
        return self.parse(data, req, time.perf_counter() - started)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamDelta | ModelResponse]:
        started = time.perf_counter()
        text: list[str] = []
        reasoning: list[str] = []
        calls: dict[int, _CallBuffer] = {}
        finish: str | None = None
        usage = Usage()
        model = self.name
        response_id = ""
        events = self.endpoint.stream(
            self.chat_path, self.body(req, stream=True), timeout_s=req.settings.timeout_s
        )
        async for event in events:
            if "error" in event or event.get("object") == "error":
                raise ModelError(
                    f"{self.endpoint.label} stream failed: {event.get('error') or event}",
                    model=self.name,
                    body=event,
                )
            model = event.get("model") or model
            response_id = response_id or str(event.get("id") or "")
            if event.get("usage"):
                usage = _usage(event["usage"])
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                finish = choice.get("finish_reason") or finish
                if delta.get("reasoning_content"):
                    reasoning.append(delta["reasoning_content"])
                if delta.get("content"):
                    text.append(delta["content"])
                    if not isinstance(req.output, Choice):
                        yield StreamDelta(text=delta["content"])
                for part in delta.get("tool_calls") or []:
                    buffer = calls.setdefault(int(part.get("index", len(calls))), _CallBuffer())
                    buffer.id = part.get("id") or buffer.id
                    function = part.get("function") or {}
                    buffer.name += function.get("name") or ""
                    buffer.arguments.append(function.get("arguments") or "")
        if finish is None:
            raise ModelError(
                f"{self.endpoint.label} stream ended before the answer was finished",
                model=self.name,
                transient=True,
            )
        tool_calls = [
            ToolCall(
                id=b.id or f"call_{uuid.uuid4().hex[:24]}",
                name=b.name,
                arguments=_arguments("".join(b.arguments), b.name, self.endpoint.label),
            )
            for _, b in sorted(calls.items())
        ]
        yield self._response(
            content="".join(text),
            calls=tool_calls,
            reasoning="".join(reasoning) or None,
            finish=finish,
            usage=usage,
            model=model,
            req=req,
            latency_s=time.perf_counter() - started,
            response_id=response_id,
        )

    async def aclose(self) -> None:
        await self.endpoint.aclose()
