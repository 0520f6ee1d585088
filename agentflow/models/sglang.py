"""SGLang: open-weight models on the company's own GPUs.

SGLang speaks the OpenAI chat completions protocol (`/v1/chat/completions`) with
extras this backend uses, and a native `/generate`:

- one constraint per step, enforced by the server's grammar backend: a tool step sends
  `tools` (each `strict: true`) and `tool_choice`; a structured step sends
  `response_format` json_schema, or the `regex` / `ebnf` extras (a choice list is sent
  as a regex);
- reasoning models: `separate_reasoning` keeps the thinking in `reasoning_content`, and
  `chat_template_kwargs` carries the family's switch (`enable_thinking` for Qwen3 and
  GLM, `thinking` for Kimi K2.5 and DeepSeek V3.1/V3.2) when a step turns thinking on
  or off;
- usage includes `cached_tokens` (the radix cache hits) when the server was started
  with `--enable-cache-report`;
- a server started without `--tool-call-parser` returns tool calls as raw text; they
  are parsed here in the family's format (GLM-4.5/4.6, GLM-4.7, Kimi K2, Qwen/Hermes,
  ...), see `models/toolcalls.py`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agentflow.messages import AssistantMessage, ToolCall, Usage
from agentflow.models.base import (
    DEFAULT_PROFILE,
    Choice,
    Ebnf,
    ModelProfile,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    OutputSpec,
    Regex,
    StreamDelta,
)
from agentflow.models.fallback import CircuitBreaker, RetryPolicy
from agentflow.models.families import ModelFamily, family_of
from agentflow.models.openai import OpenAIModel
from agentflow.models.toolcalls import parse_tool_calls

__all__ = ["SGLANG_PROFILE", "SGLangModel"]

SGLANG_PROFILE = ModelProfile({**DEFAULT_PROFILE, "regex": True, "ebnf": True, "self_hosted": True})


_SPECIAL_TOKEN_FORMATS = frozenset({"kimi_k2", "deepseekv3", "deepseekv31", "deepseekv32"})


def _may_call(req: ModelRequest) -> bool:
    return bool(req.tools) and req.tool_choice != "none"


def _choice_regex(options: list[str]) -> str:
    return "(" + "|".join(re.escape(option) for option in options) + ")"


class SGLangModel(OpenAIModel):
    """A model served by SGLang (`python -m sglang.launch_server`).

    Args:
        model: The model's name or path (`zai-org/GLM-4.6`); None asks the server
            (`/get_model_info`) on first use. The name picks the family: its reasoning
            switch and its raw tool-call format.
        base_url: The server's root, e.g. `http://gpu-glm:30000` (no `/v1`).
        api_key: The server's `--api-key`, if it was started with one; defaults to
            `SGLANG_API_KEY`.
    """

    provider = "sglang"
    chat_path = "/v1/chat/completions"

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str,
        api_key: str | None = None,
        profile: ModelProfile | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(
            model or "",
            base_url=base_url,
            api_key=api_key or os.environ.get("SGLANG_API_KEY") or "",
            profile=profile or SGLANG_PROFILE,
            retry=retry,
            breaker=breaker,
            client=client,
        )
        self.model_info: dict[str, Any] | None = None

    def _host_settings(self) -> tuple[str | None, bool]:
        return None, True

    @property
    def family(self) -> ModelFamily:
        return family_of(self.name)

    async def ready(self, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """Check `/health`, read `/get_model_info`, learn the model's name if unknown."""
        await self.endpoint.get("/health", timeout_s=timeout_s)
        info = await self.endpoint.get("/get_model_info", timeout_s=timeout_s)
        self.model_info = info if isinstance(info, dict) else {}
        if not self.name:
            self.name = str(self.model_info.get("model_path") or "default")
        return self.model_info

    # -- request ------------------------------------------------------------------

    def body(self, req: ModelRequest, *, stream: bool = False) -> dict[str, Any]:
        body = super().body(req, stream=stream)
        body["model"] = self.name or "default"
        family = self.family
        if family.reasoning_parser is not None:
            body["separate_reasoning"] = True
        if req.settings.reasoning is not None and family.thinking_switch is not None:
            body["chat_template_kwargs"] = {family.thinking_switch: req.settings.reasoning}
        if _may_call(req) and family.tool_call_format in _SPECIAL_TOKEN_FORMATS:
            # Without --tool-call-parser these markers are special tokens, which SGLang
            # strips from the text by default; keep them so the calls can be parsed here.
            body["skip_special_tokens"] = False
        return body

    def _instruction(self, output: Any, schema_in_prompt: bool) -> str | None:
        return None  # every constraint is enforced by the server's grammar backend

    def _strict_tools(self) -> bool | None:
        return True  # SGLang enforces the parameters schema for strict tools

    def _max_tokens_key(self) -> str:
        return "max_tokens"

    def _constraint(self, output: Any) -> dict[str, Any]:
        if isinstance(output, Regex):
            return {"regex": output.pattern}
        if isinstance(output, Choice):
            return {"regex": _choice_regex(output.options)}
        if isinstance(output, Ebnf):
            return {"ebnf": output.grammar}
        return super()._constraint(output)

    async def request(self, req: ModelRequest) -> ModelResponse:
        if not self.name:
            await self.ready(timeout_s=req.settings.timeout_s)
        return await super().request(req)

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamDelta | ModelResponse]:
        if not self.name:  # the name picks the family: its reasoning switch and call format
            await self.ready(timeout_s=req.settings.timeout_s)
        # Raw tool-call text (a server without --tool-call-parser) must not reach the
        # user as it streams, so a step that may call a tool gets its text when parsed.
        hold = _may_call(req)
        async for event in super().stream(req):
            if isinstance(event, StreamDelta) and hold:
                continue
            if hold and isinstance(event, ModelResponse) and event.message.content:
                yield StreamDelta(text=event.message.content)
            yield event

    # -- response -----------------------------------------------------------------

    def _response(self, *, content: str, calls: list[ToolCall], **rest: Any) -> ModelResponse:
        req: ModelRequest = rest["req"]
        if not calls and _may_call(req) and content:
            content, calls = parse_tool_calls(content, self.family.tool_call_format, req.tools)
        return super()._response(content=content, calls=calls, **rest)

    def _unwrap_choice(self, content: str) -> str:
        return content  # sent as a regex, so the answer is the option itself

    # -- native API ---------------------------------------------------------------

    async def generate(
        self,
        text: str,
        *,
        output: OutputSpec | None = None,
        settings: ModelSettings | None = None,
    ) -> ModelResponse:
        """Complete raw `text` with SGLang's native `/generate` (no chat template)."""
        settings = settings or ModelSettings()
        params: dict[str, Any] = {"max_new_tokens": settings.max_tokens}
        if settings.temperature is not None:
            params["temperature"] = settings.temperature
        if isinstance(output, Regex | Choice | Ebnf):
            params.update(self._constraint(output))
        elif output is not None:
            params["json_schema"] = json.dumps(output.schema)
        started = time.perf_counter()
        data = await self.endpoint.post(
            "/generate", {"text": text, "sampling_params": params}, timeout_s=settings.timeout_s
        )
        meta = data.get("meta_info") or {}
        finish = meta.get("finish_reason") or {}
        return ModelResponse(
            message=AssistantMessage(content=str(data.get("text", ""))),
            usage=Usage(
                input_tokens=int(meta.get("prompt_tokens") or 0),
                output_tokens=int(meta.get("completion_tokens") or 0),
                cached_tokens=int(meta.get("cached_tokens") or 0),
            ),
            model=self.name,
            provider=self.provider,
            finish_reason=str(finish.get("type", "stop")) if isinstance(finish, dict) else "stop",
            latency_s=float(meta.get("e2e_latency") or time.perf_counter() - started),
            id=str(meta.get("id") or ""),
        )
