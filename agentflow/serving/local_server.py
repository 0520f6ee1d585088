"""An SGLang-compatible HTTP server over the embedded engine.

`agentflow serve-model [--model local-spec] [--host 127.0.0.1] [--port 30000]` serves the
subset of SGLang's API an agent needs, with SGLang's request and response shapes, so the
official `openai` client, and agentflow's own SGLang backend, work against it:

- `POST /v1/chat/completions`: messages, tools, `tool_choice`, `response_format`
  (`json_schema` / `json_object` / `text`), the `regex` and `ebnf` extras, `max_tokens`,
  `temperature`, `seed`, `stream` (SSE, ending `data: [DONE]`); usage in the response;
- `POST /generate`: `text` and `sampling_params` (`max_new_tokens`, `temperature`,
  `json_schema` as a JSON string, `regex`, `ebnf`); `meta_info` with token counts,
  `e2e_latency` and `finish_reason`;
- `GET /v1/models`, `GET /health`, `GET /get_model_info`.

Bad input is a 400 with SGLang's JSON error body; requests queue on the engine, none is
dropped; the server never dies on bad input.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from agentflow.exceptions import ConfigError, ModelError
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentflow.models.base import (
    Ebnf,
    JsonSchema,
    ModelRequest,
    ModelSettings,
    OutputSpec,
    Regex,
    ToolSpec,
)
from agentflow.models.local import (
    TRANSCRIPT_STOPS,
    LocalModel,
    constraint,
    parse_reply,
    render_prompt,
)

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f'the local server needs its extra ({exc.name} is missing): pip install "agentflow[server]"'
    ) from exc

__all__ = ["create_app"]


class _Function(BaseModel):
    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None


class _Tool(BaseModel):
    type: Literal["function"] = "function"
    function: _Function


class _CallFunction(BaseModel):
    name: str
    arguments: str = "{}"


class _Call(BaseModel):
    id: str = ""
    type: Literal["function"] = "function"
    function: _CallFunction


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[_Call] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class _JsonSchemaFormat(BaseModel):
    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class _ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchemaFormat | None = None


class _NamedChoice(BaseModel):
    type: Literal["function"] = "function"
    function: dict[str, str]


class ChatCompletionRequest(BaseModel):
    """The subset of SGLang's `ChatCompletionRequest` the embedded engine serves."""

    model_config = ConfigDict(extra="allow")
    model: str = ""
    messages: list[_Message] = Field(min_length=1)
    tools: list[_Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | _NamedChoice | None = None
    response_format: _ResponseFormat | None = None
    regex: str | None = None
    ebnf: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1


class SamplingParams(BaseModel):
    model_config = ConfigDict(extra="allow")
    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    json_schema: str | None = None
    regex: str | None = None
    ebnf: str | None = None
    stop: str | list[str] | None = None


class GenerateRequest(BaseModel):
    text: str
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    stream: bool = False


def _error(status: int, message: str) -> JSONResponse:
    kind = "BadRequestError" if status == 400 else "InternalServerError"
    body = {"object": "error", "message": message, "type": kind, "param": None, "code": status}
    return JSONResponse(body, status_code=status)


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


def _message(m: _Message) -> Message:
    text = _text(m.content)
    if m.role in ("system", "developer"):
        return SystemMessage(content=text)
    if m.role == "user":
        return UserMessage(content=text)
    if m.role == "tool":
        return ToolResultMessage(tool_call_id=m.tool_call_id or "", name=m.name or "", content=text)
    calls = [
        ToolCall(id=c.id, name=c.function.name, arguments=json.loads(c.function.arguments or "{}"))
        for c in m.tool_calls or []
    ]
    return AssistantMessage(content=text, tool_calls=calls)


def _output(body: ChatCompletionRequest) -> OutputSpec | None:
    given = [x for x in (body.regex, body.ebnf) if x is not None]
    fmt = body.response_format
    if fmt is not None and fmt.type != "text":
        given.append(fmt.type)
    if len(given) > 1:
        raise ModelError("give one constraint: response_format, regex or ebnf", status=400)
    if body.regex is not None:
        return Regex(pattern=body.regex)
    if body.ebnf is not None:
        return Ebnf(grammar=body.ebnf)
    if fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise ModelError("response_format json_schema needs a json_schema", status=400)
        return JsonSchema(schema=fmt.json_schema.schema_, name=fmt.json_schema.name)
    if fmt is not None and fmt.type == "json_object":
        return JsonSchema(schema={"type": "object"})
    return None


def chat_request(body: ChatCompletionRequest) -> ModelRequest:
    """Translate an OpenAI-style chat request into agentflow's `ModelRequest`."""
    if body.n != 1:
        raise ModelError("only n=1 is supported", status=400)
    try:
        messages = [_message(m) for m in body.messages]
    except json.JSONDecodeError as exc:
        raise ModelError(f"tool call arguments are not JSON: {exc}", status=400) from exc
    tools = [
        ToolSpec(
            name=t.function.name,
            description=t.function.description,
            parameters=t.function.parameters,
        )
        for t in body.tools or []
    ]
    choice = body.tool_choice
    tool_choice = (
        choice.function.get("name", "")
        if isinstance(choice, _NamedChoice)
        else (choice or ("auto" if tools else "none"))
    )
    output = _output(body)
    if tools and output is not None and tool_choice != "none":
        raise ModelError("give either tools or a response format, not both", status=400)
    settings = ModelSettings(
        max_tokens=body.max_completion_tokens or body.max_tokens or 1024,
        temperature=body.temperature,
        seed=body.seed,
    )
    return ModelRequest(
        messages=messages, tools=tools, tool_choice=tool_choice, output=output, settings=settings
    )


def create_app(model: LocalModel) -> FastAPI:
    """Build the FastAPI app serving `model` (loaded on start-up if it is not yet)."""
    app = FastAPI(title="agentflow local model server")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _error(400, problems)

    @app.exception_handler(ModelError)
    async def model_error(request: Request, exc: ModelError) -> JSONResponse:
        return _error(exc.status or 500, str(exc))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        await model.load()
        return {}

    @app.get("/get_model_info")
    async def model_info() -> dict[str, Any]:
        engine = await model.load()
        return {
            "model_path": engine.source,
            "tokenizer_path": engine.source,
            "is_generation": True,
            "context_length": engine.context_length,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        engine = await model.load()
        card = {
            "id": model.name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "agentflow",
            "root": model.name,
            "max_model_len": engine.context_length,
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest) -> Any:
        req = chat_request(body)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _stream(model, req, include_usage), media_type="text/event-stream"
            )
        response = await model.request(req)
        return _completion(response.message, response.finish_reason, model.name, response.usage)

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> dict[str, Any]:
        return await _generate(model, body)

    return app


def _usage(usage: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _wire_calls(message: AssistantMessage) -> list[dict[str, Any]] | None:
    if not message.tool_calls:
        return None
    return [
        {
            "id": c.id,
            "index": i,
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for i, c in enumerate(message.tool_calls)
    ]


def _completion(message: AssistantMessage, finish: str, name: str, usage: Any) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": message.content or None if message.tool_calls else message.content,
                    "tool_calls": _wire_calls(message),
                    "reasoning_content": message.reasoning,
                },
                "finish_reason": finish,
            }
        ],
        "usage": _usage(usage),
    }


async def _stream(model: LocalModel, req: ModelRequest, include_usage: bool) -> AsyncIterator[str]:
    """Stream a chat completion as SSE chunks; tool calls arrive whole, in the last delta."""
    engine = await model.load()
    prompt, templated = render_prompt(engine.tokenizer, req)
    grammar = constraint(engine, req)
    plain = not req.tools or req.tool_choice == "none"  # text that can be streamed as it comes
    free = plain and req.output is None
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        body = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model.name,
            "choices": [choice] if delta or finish else [],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def on_text(text: str) -> None:
        if plain:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

    async def run() -> Any:
        try:
            return await asyncio.to_thread(
                engine.generate,
                prompt,
                grammar=grammar,
                max_tokens=req.settings.max_tokens,
                temperature=req.settings.temperature,
                seed=req.settings.seed,
                add_special_tokens=not templated,
                stop=TRANSCRIPT_STOPS if free and not templated else (),
                repetition_penalty=model.repetition_penalty,
                frequency_penalty=model.frequency_penalty,
                on_text=on_text,
            )
        finally:
            loop.call_soon_threadsafe(pieces.put_nowait, None)

    task = asyncio.create_task(run())
    yield chunk({"role": "assistant", "content": ""})
    while (piece := await pieces.get()) is not None:
        yield chunk({"content": piece})
    try:
        generation = await task
        message = parse_reply(generation.text, req)
    except ModelError as exc:
        error = {"object": "error", "message": str(exc), "code": exc.status}
        yield f"data: {json.dumps(error)}\n\n"
        yield "data: [DONE]\n\n"
        return
    if not plain:
        yield chunk({"content": message.content or None, "tool_calls": _wire_calls(message)})
    finish = "tool_calls" if message.tool_calls else generation.finish_reason
    yield chunk({}, finish)
    if include_usage:
        tokens = generation.prompt_tokens, len(generation.token_ids)
        usage = {
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "total_tokens": sum(tokens),
        }
        yield chunk({}, None, usage=usage)
    yield "data: [DONE]\n\n"


async def _generate(model: LocalModel, body: GenerateRequest) -> dict[str, Any]:
    params = body.sampling_params
    constraints = [c for c in (params.json_schema, params.regex, params.ebnf) if c is not None]
    if len(constraints) > 1:
        raise ModelError("give one of json_schema, regex or ebnf", status=400)
    engine = await model.load()
    grammar = None
    if params.json_schema is not None:
        try:
            json.loads(params.json_schema)
        except json.JSONDecodeError as exc:
            raise ModelError(f"json_schema is not valid JSON: {exc}", status=400) from exc
        grammar = engine.grammar("json_schema", params.json_schema)
    elif params.regex is not None:
        grammar = engine.grammar("regex", params.regex)
    elif params.ebnf is not None:
        grammar = engine.grammar("ebnf", params.ebnf)
    stop = (params.stop,) if isinstance(params.stop, str) else tuple(params.stop or ())
    generation = await asyncio.to_thread(
        engine.generate,
        body.text,
        grammar=grammar,
        max_tokens=params.max_new_tokens,
        temperature=params.temperature,
        stop=stop,
        repetition_penalty=model.repetition_penalty,
        frequency_penalty=model.frequency_penalty,
    )
    finish: dict[str, Any] = {"type": generation.finish_reason}
    if generation.finish_reason == "length":
        finish["length"] = len(generation.token_ids)
    return {
        "text": generation.text,
        "meta_info": {
            "id": uuid.uuid4().hex,
            "prompt_tokens": generation.prompt_tokens,
            "completion_tokens": len(generation.token_ids),
            "cached_tokens": 0,
            "e2e_latency": generation.latency_s,
            "finish_reason": finish,
        },
    }
