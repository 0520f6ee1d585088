"""OpenAI's chat-completions wire format, as the local server reads and writes it.

The request bodies (pydantic), every check a request must pass before an answer or a
stream starts, the translation into a `ModelRequest`, and errors in OpenAI's shape:

```json
{"error": {"message": "...", "type": "invalid_request_error", "param": "tool_choice", "code": null}}
```

The `openai` client reads `type`, `param` and `code` from that object (`APIError`), and
raises `APIError` for a stream event of the same shape. The checks follow what OpenAI's
API refuses: `tool_choice` or `parallel_tool_calls` without `tools`, a `tool_choice`
naming a tool that is not offered, an invalid JSON schema (of the response format or of
a tool's parameters), a field of the wrong type (`invalid_type`), a missing one
(`missing_required_parameter`), a value out of range (`invalid_value`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentflow._json_schema import schema_validator
from agentflow.exceptions import ModelError
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

__all__ = [
    "ChatCompletionRequest",
    "ChatPlan",
    "GenerateRequest",
    "chat_plan",
    "completion",
    "error_body",
    "invalid",
    "model_error_body",
    "validation_error_body",
    "wire_calls",
]


class _Function(BaseModel):
    name: str = Field(min_length=1)
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


class _NamedFunction(BaseModel):
    name: str


class _NamedChoice(BaseModel):
    type: Literal["function"] = "function"
    function: _NamedFunction


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's (and SGLang's) chat completion request that is served."""

    model_config = ConfigDict(extra="allow")
    model: str = ""
    """Empty (SGLang allows leaving it out) or "default" means the served model."""
    messages: list[_Message] = Field(min_length=1)
    tools: list[_Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | _NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    regex: str | None = None
    ebnf: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(default=1, ge=1)


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


# -- errors -------------------------------------------------------------------------


def invalid(message: str, *, param: str | None, code: str | None = None) -> ModelError:
    """A 400 in OpenAI's shape: `param` names the offending field."""
    return ModelError(message, status=400, body={"param": param, "code": code})


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: `invalid_request_error` for a 4xx, `server_error` for a 5xx."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def model_error_body(exc: ModelError) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI-shaped body for a `ModelError` (its body holds param/code)."""
    status = exc.status or 500
    extra = exc.body if isinstance(exc.body, dict) else {}
    return status, error_body(status, str(exc), param=extra.get("param"), code=extra.get("code"))


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _param(loc: tuple[Any, ...]) -> str | None:
    """`('body', 'messages', 0, 'content', 'str')` -> `messages[0].content`.

    Union members appear in pydantic's locations as tags (`str`, `_NamedChoice`,
    `literal['auto',...]`), which are not fields: the path stops at the first one.
    """
    path = ""
    for step in loc[1:] if loc and loc[0] == "body" else loc:
        if isinstance(step, int):
            path += f"[{step}]"
            continue
        name = str(step)
        if not name.isidentifier() or name[0] == "_" or name[0].isupper() or name in _TYPE_TAGS:
            break
        path += f".{name}" if path else name
    return path or None


def validation_error_body(errors: list[Any]) -> dict[str, Any]:
    """OpenAI's 400 for a body that does not validate, naming the first problem."""
    first = errors[0] if errors else {"type": "", "loc": (), "msg": "invalid request"}
    param = _param(tuple(first.get("loc", ())))
    kind = str(first.get("type", ""))
    where = f"'{param}'" if param else "the request body"
    if kind == "missing":
        message, code = f"Missing required parameter: {where}.", "missing_required_parameter"
    elif kind == "json_invalid":
        message = "We could not parse the JSON body of your request: it is not valid JSON."
        param, code = None, "invalid_json"
    elif kind == "too_short":
        message, code = f"Invalid {where}: empty array. {first['msg']}.", "empty_array"
    elif kind.endswith(("_type", "_parsing")) or kind in ("model_attributes_type", "dict_type"):
        message, code = f"Invalid type for {where}: {first['msg']}.", "invalid_type"
    else:
        message, code = f"Invalid value for {where}: {first['msg']}.", "invalid_value"
    if len(errors) > 1:
        message += f" ({len(errors) - 1} more problem(s) in the request)"
    return error_body(400, message, param=param, code=code)


# -- requests -----------------------------------------------------------------------


def _text(content: str | list[dict[str, Any]] | None) -> str:
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return content or ""


def _message(m: _Message, index: int) -> Message:
    text = _text(m.content)
    if m.role in ("system", "developer"):
        return SystemMessage(content=text)
    if m.role == "user":
        return UserMessage(content=text)
    if m.role == "tool":
        return ToolResultMessage(tool_call_id=m.tool_call_id or "", name=m.name or "", content=text)
    calls = []
    for j, c in enumerate(m.tool_calls or []):
        try:
            arguments = json.loads(c.function.arguments or "{}")
        except json.JSONDecodeError as exc:
            raise invalid(
                f"tool call arguments are not JSON: {exc}",
                param=f"messages[{index}].tool_calls[{j}].function.arguments",
                code="invalid_value",
            ) from exc
        calls.append(ToolCall(id=c.id, name=c.function.name, arguments=arguments))
    return AssistantMessage(content=text, tool_calls=calls)


def _checked_schema(schema: dict[str, Any], param: str) -> None:
    try:
        schema_validator(schema)
    except ValueError as exc:
        raise invalid(f"Invalid schema for {param!r}: {exc}", param=param) from exc


def _output(body: ChatCompletionRequest) -> OutputSpec | None:
    given = [x for x in (body.regex, body.ebnf) if x is not None]
    fmt = body.response_format
    if fmt is not None and fmt.type != "text":
        given.append(fmt.type)
    if len(given) > 1:
        raise invalid("give one constraint: response_format, regex or ebnf", param="regex")
    if body.regex is not None:
        return Regex(pattern=body.regex)
    if body.ebnf is not None:
        return Ebnf(grammar=body.ebnf)
    if fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise invalid(
                "response_format json_schema needs a json_schema",
                param="response_format.json_schema",
                code="missing_required_parameter",
            )
        _checked_schema(fmt.json_schema.schema_, "response_format.json_schema.schema")
        return JsonSchema(schema=fmt.json_schema.schema_, name=fmt.json_schema.name)
    if fmt is not None and fmt.type == "json_object":
        return JsonSchema(schema={"type": "object"})
    return None


def _tools(body: ChatCompletionRequest) -> list[ToolSpec]:
    tools: list[ToolSpec] = []
    for i, t in enumerate(body.tools or []):
        if any(seen.name == t.function.name for seen in tools):
            raise invalid(
                f"two tools are named {t.function.name!r}", param=f"tools[{i}].function.name"
            )
        _checked_schema(t.function.parameters, f"tools[{i}].function.parameters")
        tools.append(
            ToolSpec(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters,
            )
        )
    return tools


def _tool_choice(body: ChatCompletionRequest, tools: list[ToolSpec]) -> str:
    choice = body.tool_choice
    if not tools:
        for field in ("tool_choice", "parallel_tool_calls"):
            if getattr(body, field) is not None:
                raise invalid(
                    f"Invalid value for {field!r}: {field!r} is only allowed when 'tools' "
                    "are specified.",
                    param=field,
                )
        return "none"
    if not isinstance(choice, _NamedChoice):
        return choice or "auto"
    name = choice.function.name
    if all(t.name != name for t in tools):
        offered = ", ".join(t.name for t in tools)
        raise invalid(
            f"Invalid value for 'tool_choice': tool_choice names {name!r}, which is not "
            f"offered in 'tools' ({offered}).",
            param="tool_choice",
            code="invalid_value",
        )
    return name


@dataclass(kw_only=True, frozen=True)
class ChatPlan:
    """A checked chat request: what to ask the engine, and how to answer."""

    request: ModelRequest
    parallel_tool_calls: bool
    """Whether the answer may hold several tool calls (a named `tool_choice`: one)."""
    stream: bool
    include_usage: bool

    @property
    def constraint_param(self) -> str | None:
        """The request field the grammar is compiled from, for errors about it."""
        req = self.request
        if req.tools and req.tool_choice != "none":
            return "tools"
        if isinstance(req.output, Regex):
            return "regex"
        if isinstance(req.output, Ebnf):
            return "ebnf"
        return "response_format" if req.output is not None else None


def chat_plan(body: ChatCompletionRequest, *, parallel_default: bool) -> ChatPlan:
    """Check a chat request the way OpenAI does and translate it; raise a 400 `ModelError`.

    `parallel_default` is what a request that leaves out `parallel_tool_calls` gets.
    """
    if body.n != 1:
        raise invalid("only n=1 is supported", param="n", code="invalid_value")
    messages = [_message(m, i) for i, m in enumerate(body.messages)]
    tools = _tools(body)
    tool_choice = _tool_choice(body, tools)
    output = _output(body)
    if tools and output is not None and tool_choice != "none":
        raise invalid("give either tools or a response format, not both", param="response_format")
    settings = ModelSettings(
        max_tokens=body.max_completion_tokens or body.max_tokens or 1024,
        temperature=body.temperature,
        seed=body.seed,
    )
    request = ModelRequest(
        messages=messages, tools=tools, tool_choice=tool_choice, output=output, settings=settings
    )
    return ChatPlan(
        request=request,
        parallel_tool_calls=(
            parallel_default if body.parallel_tool_calls is None else body.parallel_tool_calls
        ),
        stream=body.stream,
        include_usage=bool((body.stream_options or {}).get("include_usage")),
    )


# -- responses ----------------------------------------------------------------------


def usage_object(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def wire_calls(message: AssistantMessage) -> list[dict[str, Any]] | None:
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


def completion(
    message: AssistantMessage, finish: str, name: str, usage: dict[str, Any]
) -> dict[str, Any]:
    """A `chat.completion` object."""
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
                    "tool_calls": wire_calls(message),
                    "reasoning_content": message.reasoning,
                },
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": usage,
    }
