"""An SGLang- and OpenAI-compatible HTTP server over the embedded engine.

`agentflow serve-model [--model local-spec] [--alias NAME ...] [--host 127.0.0.1]
[--port 30000] [--keepalive-s 15]` serves the subset of the chat-completions API an agent
needs, in SGLang's and OpenAI's request and response shapes, so the official `openai`
client, langchain-openai, litellm and agentflow's own SGLang backend work against it:

- `POST /v1/chat/completions`: messages, tools, `tool_choice`, `parallel_tool_calls`,
  `response_format` (`json_schema` / `json_object` / `text`), the `regex` and `ebnf`
  extras, `max_tokens`, `temperature`, `seed`, `stream` (SSE, ending `data: [DONE]`,
  with `: keep-alive` comments while the engine is busy); usage in the response;
- `POST /generate`: `text` and `sampling_params` (`max_new_tokens`, `temperature`,
  `json_schema` as a JSON string, `regex`, `ebnf`); `meta_info` with token counts,
  `e2e_latency` and `finish_reason`;
- `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, `GET /get_model_info`.

A request is checked whole before an answer starts, a stream included: bad input is a
400 (an unknown model a 404, `model_not_found`) with OpenAI's error body, never a 200
stream that breaks off. An error after a stream began is an event of the same shape,
which the `openai` client raises as `APIError`. Requests queue on the engine, none is
dropped; the server never dies on bad input.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentflow.exceptions import ConfigError, ModelError
from agentflow.models._engine import DEFAULT_MODEL
from agentflow.models.local import (
    TRANSCRIPT_STOPS,
    LocalModel,
    constraint,
    parse_reply,
    render_prompt,
)
from agentflow.serving.sse import DEFAULT_KEEPALIVE_S, keep_alive

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    from agentflow.serving.openai_api import (
        ChatCompletionRequest,
        ChatPlan,
        GenerateRequest,
        chat_plan,
        completion,
        error_body,
        model_error_body,
        usage_object,
        validation_error_body,
        wire_calls,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigError(
        f'the local server needs its extra ({exc.name} is missing): pip install "agentflow[server]"'
    ) from exc

__all__ = ["DEFAULT_ALIASES", "create_app"]

DEFAULT_ALIASES = ("google/gemma-3-270m",)
"""Names the packaged model (`gemma3-270m`) also answers to: its Hugging Face id."""
_SGLANG_DEFAULT = "default"
"""The name SGLang gives a model served without `--served-model-name`."""


def _error(status: int, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, status_code=status)


@dataclass(kw_only=True, frozen=True)
class _Served:
    """The names the server answers to: the model's, then its aliases."""

    names: tuple[str, ...]
    created: int

    def check(self, requested: str, *, default_ok: bool = True) -> None:
        """Raise a 404 `model_not_found` unless `requested` is served (or left out)."""
        if requested in self.names or (default_ok and requested in ("", _SGLANG_DEFAULT)):
            return
        raise ModelError(
            f"The model {requested!r} does not exist: this server serves "
            f"{', '.join(map(repr, self.names))}.",
            status=404,
            body={"param": "model", "code": "model_not_found"},
        )

    def card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "agentflow"}


def create_app(
    model: LocalModel,
    *,
    aliases: Sequence[str] = (),
    keepalive_s: float = DEFAULT_KEEPALIVE_S,
    parallel_tool_calls: bool = False,
) -> FastAPI:
    """Build the FastAPI app serving `model` (loaded on start-up if it is not yet).

    Args:
        aliases: More names requests may give as `model` (the packaged model also
            answers to `DEFAULT_ALIASES`); any other name is a 404.
        keepalive_s: Seconds of silence after which a stream gets a `: keep-alive`
            comment (0: never).
        parallel_tool_calls: What a request that leaves `parallel_tool_calls` out gets.
            OpenAI's default is true; this server's is false, because a small base
            model allowed several calls repeats its call until `max_tokens` runs out.
    """
    app = FastAPI(title="agentflow local model server")
    extra = DEFAULT_ALIASES if model.source == DEFAULT_MODEL else ()
    names = tuple(dict.fromkeys((model.name, *aliases, *extra)))
    served = _Served(names=names, created=int(time.time()))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, validation_error_body(list(exc.errors())))

    @app.exception_handler(ModelError)
    async def model_error(request: Request, exc: ModelError) -> JSONResponse:
        return _error(*model_error_body(exc))

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
        cards = [
            {**served.card(name), "root": model.name, "max_model_len": engine.context_length}
            for name in served.names
        ]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model_id:path}")
    async def model_card(model_id: str) -> dict[str, Any]:
        served.check(model_id, default_ok=False)
        return served.card(model_id)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatCompletionRequest) -> Any:
        served.check(body.model)
        plan = chat_plan(body, parallel_default=parallel_tool_calls)
        job = await _Job.prepare(model, plan)
        if plan.stream:
            events = keep_alive(_stream(job, model.name), keepalive_s)
            return StreamingResponse(
                events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        generation = await job.run()
        message = job.reply(generation.text)
        return completion(
            message, job.finish(message, generation), model.name, job.usage(generation)
        )

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> dict[str, Any]:
        return await _generate(model, body)

    return app


@dataclass(kw_only=True)
class _Job:
    """A checked chat request, ready for the engine: prompt rendered, grammar compiled."""

    model: LocalModel
    engine: Any
    plan: ChatPlan
    prompt: str
    templated: bool
    grammar: Any

    @classmethod
    async def prepare(cls, model: LocalModel, plan: ChatPlan) -> _Job:
        """Do everything that can refuse the request (400) before an answer starts."""
        engine = await model.load()
        req = plan.request
        prompt, templated = render_prompt(engine.tokenizer, req)
        try:
            grammar = constraint(engine, req, parallel=plan.parallel_tool_calls)
        except ModelError as exc:
            raise ModelError(
                str(exc), status=exc.status, body={"param": plan.constraint_param, "code": None}
            ) from exc
        prompt_tokens = len(engine.encode(prompt, add_special_tokens=not templated))
        if prompt_tokens >= engine.context_length:
            raise ModelError(
                f"the prompt has {prompt_tokens} tokens; the context holds {engine.context_length}",
                status=400,
                body={"param": "messages", "code": "context_length_exceeded"},
            )
        return cls(
            model=model,
            engine=engine,
            plan=plan,
            prompt=prompt,
            templated=templated,
            grammar=grammar,
        )

    @property
    def plain(self) -> bool:
        """Whether the answer is text that can be streamed as it comes (no tool call)."""
        req = self.plan.request
        return not req.tools or req.tool_choice == "none"

    async def run(self, on_text: Callable[[str], None] | None = None) -> Any:
        req = self.plan.request
        # Free text on a plain transcript would go on to write the next turns; a call
        # the model must make has no room for them.
        free = req.output is None and (not req.tools or req.tool_choice in ("auto", "none"))
        return await asyncio.to_thread(
            self.engine.generate,
            self.prompt,
            grammar=self.grammar,
            max_tokens=req.settings.max_tokens,
            temperature=req.settings.temperature,
            seed=req.settings.seed,
            add_special_tokens=not self.templated,
            stop=TRANSCRIPT_STOPS if free and not self.templated else (),
            repetition_penalty=self.model.repetition_penalty,
            frequency_penalty=self.model.frequency_penalty,
            on_text=on_text,
        )

    def reply(self, text: str) -> Any:
        return parse_reply(text, self.plan.request, parallel=self.plan.parallel_tool_calls)

    @staticmethod
    def usage(generation: Any) -> dict[str, Any]:
        return usage_object(generation.prompt_tokens, len(generation.token_ids))

    @staticmethod
    def finish(message: Any, generation: Any) -> str:
        return "tool_calls" if message.tool_calls else generation.finish_reason


def _error_event(exc: Exception) -> str:
    """An error after the stream began, as OpenAI sends it: `data: {"error": {...}}`."""
    if isinstance(exc, ModelError):
        body = model_error_body(exc)[1]
    else:
        body = error_body(500, f"the engine failed: {type(exc).__name__}: {exc}")
    return f"data: {json.dumps(body)}\n\n"


async def _stream(job: _Job, name: str) -> AsyncIterator[str]:
    """Stream a chat completion as SSE chunks; tool calls arrive whole, in the last delta."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        body = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": name,
            "choices": [choice] if delta or finish else [],
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n"

    def on_text(text: str) -> None:
        if job.plain:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

    async def run() -> Any:
        try:
            return await job.run(on_text)
        finally:
            loop.call_soon_threadsafe(pieces.put_nowait, None)

    task = asyncio.create_task(run())
    yield chunk({"role": "assistant", "content": ""})
    while (piece := await pieces.get()) is not None:
        yield chunk({"content": piece})
    try:
        generation = await task
        message = job.reply(generation.text)
    except Exception as exc:  # the 200 is out: the error travels as an event
        yield _error_event(exc)
        return
    if not job.plain:
        yield chunk({"content": message.content or None, "tool_calls": wire_calls(message)})
    yield chunk({}, job.finish(message, generation))
    if job.plan.include_usage:
        yield chunk({}, None, usage=job.usage(generation))
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
