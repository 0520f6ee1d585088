"""The model protocol: one request type, one response type, one async method.

Every backend (SGLang, OpenAI-compatible, Anthropic, the embedded engine, the test
doubles) and every wrapper (fallback, routing, tracing) implements `Model`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias, TypedDict

from pydantic import TypeAdapter

from agentflow._json_schema import schema_validator, validate_json_value
from agentflow.messages import AssistantMessage, Message, Usage

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "DEFAULT_PROFILE",
    "Choice",
    "Ebnf",
    "JsonSchema",
    "Model",
    "ModelProfile",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "OutputSpec",
    "Regex",
    "StreamDelta",
    "ToolChoice",
    "ToolSpec",
    "output_spec",
]


@dataclass(kw_only=True, frozen=True)
class JsonSchema:
    """Constrain the output to JSON matching a schema.

    Build it with `output_spec(MyModel)` or `output_spec({...})`: from a pydantic type the
    parsed value is an instance of that type; from a plain dict it is the decoded JSON.
    """

    schema: dict[str, Any]
    name: str = "output"
    type: Any = None
    """The Python type the output is validated into, when there is one."""

    def __post_init__(self) -> None:
        if self.type is None:  # a type's schema comes from pydantic and is valid
            try:
                self._validator  # noqa: B018 - made (and checked) now, kept for parse
            except ValueError as exc:
                raise ValueError(f"output schema {self.name!r}: {exc}") from None

    @cached_property
    def _adapter(self) -> TypeAdapter[Any] | None:
        return None if self.type is None else TypeAdapter(self.type)

    @cached_property
    def _validator(self) -> Validator:
        return schema_validator(self.schema)

    def parse(self, text: str) -> Any:
        """Return the validated value, or raise `ValueError` saying what is wrong.

        A pydantic type validates into an instance of it; a plain dict schema is checked
        with a JSON Schema validator, so a provider that only promises *some* JSON (a
        `json_object` mode) cannot hand back `[1, 2, 3]` for an object with required keys.
        """
        if self._adapter is not None:
            return self._adapter.validate_json(text)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"output is not valid JSON: {exc}") from None
        validate_json_value(value, self._validator)
        return value


@dataclass(kw_only=True, frozen=True)
class Regex:
    """Constrain the output to match a regular expression in full."""

    pattern: str

    def parse(self, text: str) -> str:
        if re.fullmatch(self.pattern, text) is None:
            raise ValueError(f"output {text!r} does not match the pattern {self.pattern!r}")
        return text


@dataclass(kw_only=True, frozen=True)
class Ebnf:
    """Constrain the output to an EBNF grammar (enforced by the server; not re-checked here)."""

    grammar: str

    def parse(self, text: str) -> str:
        return text


@dataclass(kw_only=True, frozen=True)
class Choice:
    """Constrain the output to exactly one of a few strings."""

    options: list[str]

    def parse(self, text: str) -> str:
        stripped = text.strip()
        if stripped not in self.options:
            raise ValueError(f"output {text!r} is not one of {self.options!r}")
        return stripped


OutputSpec: TypeAlias = JsonSchema | Regex | Ebnf | Choice


def output_spec(output: type[Any] | dict[str, Any] | OutputSpec) -> OutputSpec:
    """Turn a pydantic type, any type pydantic can validate, or a JSON-schema dict into a spec."""
    if isinstance(output, JsonSchema | Regex | Ebnf | Choice):
        return output
    if isinstance(output, dict):
        return JsonSchema(schema=output, name=str(output.get("title", "output")))
    try:
        return _type_spec(output)
    except TypeError:  # an unhashable type expression: build it each time
        return _type_spec.__wrapped__(output)


@cache
def _type_spec(output: Any) -> JsonSchema:
    """The spec of a type, built once: pydantic's schema generation costs a
    millisecond or more, and a node asks for the same type on every call."""
    name = output.__name__ if isinstance(output, type) else "output"
    return JsonSchema(schema=TypeAdapter(output).json_schema(), name=name, type=output)


@dataclass(kw_only=True, frozen=True)
class ToolSpec:
    """A tool as the model sees it: name, description, JSON schema of the arguments."""

    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool = True


ToolChoice: TypeAlias = Literal["auto", "required", "none"] | str
"""`auto`, `required`, `none`, or the name of the one tool the model must call."""


@dataclass(kw_only=True, frozen=True)
class ModelSettings:
    """Sampling and transport settings for one request."""

    temperature: float | None = None
    max_tokens: int = 1024
    """Upper bound on output tokens; budgets use it to estimate a call's cost."""
    seed: int | None = None
    timeout_s: float = 60.0
    reasoning: bool | None = None
    """Turn a reasoning model's thinking on or off; None leaves the model's default."""


@dataclass(kw_only=True)
class ModelRequest:
    """Everything a model needs for one call.

    One constraint per request: either `tools` (with `tool_choice`) or `output`.
    """

    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice = "auto"
    output: OutputSpec | None = None
    settings: ModelSettings = field(default_factory=ModelSettings)


@dataclass(kw_only=True)
class ModelResponse:
    """A model's answer with what it cost."""

    message: AssistantMessage
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    provider: str = ""
    finish_reason: str = "stop"
    latency_s: float = 0.0
    id: str = ""
    """The provider's id of this completion (`chatcmpl-...`, `msg_...`); empty if none."""


@dataclass(kw_only=True, frozen=True)
class StreamDelta:
    """A piece of answer text, as a streaming model produces it."""

    text: str


class ModelProfile(TypedDict):
    """What a model family supports; backends read it to shape requests."""

    json_schema: bool
    regex: bool
    ebnf: bool
    tools: bool
    tool_call_format: str
    """`openai`, `glm45`, `glm47`, `kimi_k2`, `qwen`, `deepseek`, ..."""
    self_hosted: bool


DEFAULT_PROFILE = ModelProfile(
    json_schema=True,
    regex=False,
    ebnf=False,
    tools=True,
    tool_call_format="openai",
    self_hosted=False,
)


class Model(ABC):
    """A model endpoint. Implement `request`; use as `async with model:` to release resources."""

    name: str
    provider: str
    """The backend: the wire format spoken (`openai` for any OpenAI-compatible endpoint)."""
    profile: ModelProfile = DEFAULT_PROFILE

    @property
    def provider_name(self) -> str:
        """Who serves the model, as OpenTelemetry's `gen_ai.provider.name` names it
        (`deepseek` for DeepSeek's OpenAI-compatible API); `provider` unless the backend
        knows better."""
        return self.provider

    @abstractmethod
    async def request(self, req: ModelRequest) -> ModelResponse:
        """Send one request and return the validated-shape response."""

    async def stream(self, req: ModelRequest) -> AsyncIterator[StreamDelta | ModelResponse]:
        """Yield the answer's text as it is produced, then the whole `ModelResponse`.

        Backends that speak a streaming protocol override this; the default makes one
        `request` and yields its text in one piece.
        """
        response = await self.request(req)
        if response.message.content:
            yield StreamDelta(text=response.message.content)
        yield response

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not an abstract method
        """Release connections and other resources; the default holds none."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.provider}:{self.name})"
