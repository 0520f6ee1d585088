"""The `local:` backend: an open-weight model in-process, with grammar-constrained decoding.

```python
model = LocalModel()                       # Gemma 3 270M from PyPI; or LocalModel("model.gguf")
```

Specs: `local:` (the packaged default), `local:/path/model.gguf`, `local:/path/folder`.

One constraint per request, compiled by xgrammar (SGLang's default grammar backend), so a
schema behaves here as it does on the GPU fleet:

- `output`: JSON schema, regex, EBNF, or a choice list;
- a forced tool call (`tool_choice` "required" or a tool's name): the output is exactly
  `{"name": <a tool>, "arguments": <that tool's schema>}`;
- `tool_choice="auto"`: free text, but once the model writes `<tool_call>` what follows
  must be a valid call of an offered tool, closed by `</tool_call>`;
- `tool_choice="none"`: free text that never contains `<tool_call>`. The tools stay in
  the prompt, as for every other choice, so the requests of a run share their prefix
  (system prompt and tool definitions) byte for byte, which a prefix cache reuses.

Prompts use the model's chat template when it has one. Otherwise (the packaged Gemma
is a base model without one) a plain transcript is used:

```text
<system prompt>

Tools you can call:
- lookup_order: Look up an order. Arguments (JSON schema): {...}
To call a tool, answer with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.

User: where is my order?
Assistant: <tool_call>{"name": "lookup_order", "arguments": {"order_id": 1042}}</tool_call>
Tool result (lookup_order): shipped
Assistant:
```
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import uuid
from typing import Any

from agentflow.exceptions import ModelError
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentflow.models._engine import DEFAULT_MODEL, Engine, json_source
from agentflow.models.base import (
    Choice,
    Ebnf,
    JsonSchema,
    Model,
    ModelProfile,
    ModelRequest,
    ModelResponse,
    Regex,
    ToolSpec,
)

__all__ = ["LOCAL_PROFILE", "LocalModel", "render_prompt"]

LOCAL_PROFILE = ModelProfile(
    json_schema=True, regex=True, ebnf=True, tools=True, tool_call_format="qwen", self_hosted=True
)
CALL_BEGIN, CALL_END = "<tool_call>", "</tool_call>"
TRANSCRIPT_STOPS = ("\nUser:", "\nTool result (", "\nAssistant:")
_CALLS = re.compile(re.escape(CALL_BEGIN) + r"(.*?)" + re.escape(CALL_END), re.DOTALL)


class LocalModel(Model):
    """An open-weight causal LM run in this process (CPU or CUDA).

    The weights load on the first request (or `await model.load()`), in a worker thread.

    Args:
        source: `gemma3-270m` (default), a `.gguf` file, or a Hugging Face model folder.
        device: `cpu` or `cuda`; defaults to CUDA when available.
        engine: An already loaded engine to share (the local server does this).
        repetition_penalty: Multiplicative penalty on tokens already generated.
        frequency_penalty: Additive penalty per occurrence of a generated token. Both as
            transformers and SGLang define them; small base models otherwise loop, e.g.
            on the digits of a number, until `max_tokens` cuts the JSON short.
    """

    provider = "local"
    profile = LOCAL_PROFILE

    def __init__(
        self,
        source: str | None = None,
        *,
        device: str | None = None,
        engine: Engine | None = None,
        repetition_penalty: float = 1.1,
        frequency_penalty: float = 0.3,
    ) -> None:
        self.source = source or DEFAULT_MODEL
        self.repetition_penalty = repetition_penalty
        self.frequency_penalty = frequency_penalty
        self.device = device
        self._engine = engine
        self._loading = threading.Lock()
        self.name = engine.name if engine else self.source.rsplit("/", 1)[-1].removesuffix(".gguf")

    async def load(self) -> Engine:
        """Load the model (once) and return its engine."""
        if self._engine is None:
            await asyncio.to_thread(self._load)
        assert self._engine is not None
        return self._engine

    def _load(self) -> None:
        with self._loading:
            if self._engine is None:
                self._engine = Engine(self.source, device=self.device)

    async def request(self, req: ModelRequest) -> ModelResponse:
        engine = await self.load()
        prompt, templated = render_prompt(engine.tokenizer, req)
        grammar = constraint(engine, req)
        # Free text on a plain transcript: the model would go on writing the next turns.
        free = req.output is None and not _forced_tools(req)
        stop = TRANSCRIPT_STOPS if free and not templated else ()
        generation = await asyncio.to_thread(
            engine.generate,
            prompt,
            grammar=grammar,
            max_tokens=req.settings.max_tokens,
            temperature=req.settings.temperature,
            seed=req.settings.seed,
            add_special_tokens=not templated,
            stop=stop,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
        )
        message = parse_reply(generation.text, req)
        return ModelResponse(
            message=message,
            usage=Usage(
                input_tokens=generation.prompt_tokens, output_tokens=len(generation.token_ids)
            ),
            model=self.name,
            provider=self.provider,
            finish_reason="tool_calls" if message.tool_calls else generation.finish_reason,
            latency_s=generation.latency_s,
        )


def _forced_tools(req: ModelRequest) -> list[ToolSpec]:
    if not req.tools or req.tool_choice in ("auto", "none"):
        return []
    if req.tool_choice == "required":
        return req.tools
    named = [t for t in req.tools if t.name == req.tool_choice]
    if not named:
        offered = ", ".join(t.name for t in req.tools)
        raise ModelError(
            f"tool_choice names {req.tool_choice!r}, which is not offered ({offered})", status=400
        )
    return named


def _call_schema(tool: ToolSpec) -> dict[str, Any]:
    """The schema of one call of `tool`: `{"name": <its name>, "arguments": {...}}`."""
    arguments = {k: v for k, v in tool.parameters.items() if k != "$defs"}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
    if "$defs" in tool.parameters:
        schema["$defs"] = tool.parameters["$defs"]  # refs stay relative to this root
    return schema


def _json_format(schema: dict[str, Any]) -> dict[str, Any]:
    # Structural tags allow any whitespace between JSON tokens by default, and a small
    # model will fill its whole budget with it; one space is all JSON needs.
    return {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": 1}


def _call_tag(tool: ToolSpec) -> dict[str, Any]:
    """One tagged call of `tool`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`."""
    return {
        "type": "tag",
        "begin": f'{CALL_BEGIN}{{"name": {json.dumps(tool.name)}, "arguments": ',
        "content": _json_format(tool.parameters),
        "end": f"}}{CALL_END}",
    }


def _parallel(req: ModelRequest, parallel: bool | None) -> bool:
    return req.tool_choice == "auto" if parallel is None else parallel


def _structural(fmt: dict[str, Any]) -> str:
    return json_source({"type": "structural_tag", "format": fmt})


def constraint(engine: Engine, req: ModelRequest, *, parallel: bool | None = None) -> Any:
    """Return the compiled grammar for the request's one constraint, or None.

    `parallel` lets an answer hold several tool calls (`tool_choice` "auto" or
    "required"; a named tool is called once): "required" then becomes one or more
    tagged calls, one per line, instead of one bare call object. None is the `local:`
    backend's own choice: several under "auto", one bare object under "required"
    (what a small model fills most reliably).
    """
    parallel = _parallel(req, parallel)
    forced = _forced_tools(req)
    if forced and parallel and req.tool_choice == "required":
        tags = [_call_tag(t) for t in forced]
        fmt = {"type": "tags_with_separator", "tags": tags, "separator": "\n", "at_least_one": True}
        return engine.grammar("structural_tag", _structural(fmt))
    if forced:
        if len(forced) == 1:
            return engine.grammar("json_schema", json_source(_call_schema(forced[0])))
        elements = [_json_format(_call_schema(t)) for t in forced]
        return engine.grammar("structural_tag", _structural({"type": "or", "elements": elements}))
    if req.tools and req.tool_choice == "auto":
        fmt = {
            "type": "triggered_tags",
            "triggers": [CALL_BEGIN],
            "tags": [_call_tag(t) for t in req.tools],
            "stop_after_first": not parallel,
        }
        return engine.grammar("structural_tag", _structural(fmt))
    output = req.output
    if output is None and req.tools and req.tool_choice == "none":
        fmt = {"type": "any_text", "excludes": [CALL_BEGIN]}
        return engine.grammar("structural_tag", _structural(fmt))
    if isinstance(output, JsonSchema):
        return engine.grammar("json_schema", json_source(output.schema))
    if isinstance(output, Regex):
        return engine.grammar("regex", output.pattern)
    if isinstance(output, Ebnf):
        return engine.grammar("ebnf", output.grammar)
    if isinstance(output, Choice):
        return engine.grammar(
            "ebnf", "root ::= " + " | ".join(json.dumps(o) for o in output.options)
        )
    return None


def _new_call(name: Any, arguments: Any) -> ToolCall:
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise ModelError(f"malformed tool call: name={name!r} arguments={arguments!r}", status=502)
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=arguments)


def _tagged_calls(text: str) -> list[ToolCall]:
    calls = []
    for body in _CALLS.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ModelError(f"tool call is not JSON: {body!r}", status=502) from exc
        calls.append(_new_call(call.get("name"), call.get("arguments")))
    return calls


def parse_reply(text: str, req: ModelRequest, *, parallel: bool | None = None) -> AssistantMessage:
    """Turn generated text into a message: forced calls, tagged calls, or plain text.

    `parallel` must be what `constraint` was given: it decides how a forced answer is written.
    """
    parallel = _parallel(req, parallel)
    if _forced_tools(req) and parallel and req.tool_choice == "required":
        calls = _tagged_calls(text)
        if not calls:
            raise ModelError(f"no complete tool call in {text!r}", status=502)
        return AssistantMessage(tool_calls=calls)
    if _forced_tools(req):
        try:
            call = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"forced tool call is not JSON: {text!r}", status=502) from exc
        return AssistantMessage(tool_calls=[_new_call(call.get("name"), call.get("arguments"))])
    if req.tools and req.tool_choice == "auto" and CALL_BEGIN in text:
        calls = _tagged_calls(text)
        return AssistantMessage(content=text.split(CALL_BEGIN, 1)[0].strip(), tool_calls=calls)
    return AssistantMessage(content=text.strip() if req.output is None else text)


def _tools_text(tools: list[ToolSpec]) -> str:
    lines = ["Tools you can call:"]
    for t in tools:
        lines.append(
            f"- {t.name}: {t.description} Arguments (JSON schema): {json.dumps(t.parameters)}"
        )
    lines.append(
        f'To call a tool, answer with {CALL_BEGIN}{{"name": ..., "arguments": {{...}}}}{CALL_END}.'
    )
    return "\n".join(lines)


def _call_text(call: ToolCall) -> str:
    return f"{CALL_BEGIN}{json.dumps({'name': call.name, 'arguments': call.arguments})}{CALL_END}"


def _as_dict(message: Message) -> dict[str, Any]:
    if isinstance(message, AssistantMessage) and message.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
        return {"role": "assistant", "content": message.content, "tool_calls": calls}
    if isinstance(message, ToolResultMessage):
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "name": message.name,
            "content": message.content,
        }
    return {"role": message.role, "content": message.content}


def render_prompt(tokenizer: Any, req: ModelRequest) -> tuple[str, bool]:
    """Render the conversation; return the prompt and whether a chat template made it.

    The tools are in it whatever the tool choice: `constraint` is what keeps a call out.
    """
    tools = req.tools
    if getattr(tokenizer, "chat_template", None):
        specs = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                },
            }
            for t in tools
        ]
        prompt = tokenizer.apply_chat_template(
            [_as_dict(m) for m in req.messages],
            tools=specs or None,
            add_generation_prompt=True,
            tokenize=False,
        )
        return str(prompt), True
    return _transcript(req.messages, tools), False


def _transcript(messages: list[Message], tools: list[ToolSpec]) -> str:
    header = [m.content for m in messages if isinstance(m, SystemMessage)]
    if tools:
        header.append(_tools_text(tools))
    lines = ["\n\n".join(header) + "\n"] if header else []
    for m in messages:
        if isinstance(m, UserMessage):
            lines.append(f"User: {m.content}")
        elif isinstance(m, AssistantMessage):
            parts = [m.content] if m.content else []
            parts += [_call_text(c) for c in m.tool_calls]
            lines.append(f"Assistant: {' '.join(parts)}")
        elif isinstance(m, ToolResultMessage):
            lines.append(f"Tool result ({m.name}): {m.content}")
    lines.append("Assistant:")
    return "\n".join(lines)
