"""What a tool function's signature says: the model that validates its arguments, the
JSON schema the model sees, how to explain invalid arguments to a model, and the
validator of its return value. `agentflow.tools` builds every `Tool` on these.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic.json_schema import GenerateJsonSchema

from agentflow.exceptions import ConfigError

__all__ = ["Signature", "analyse_signature", "describe_invalid", "json_schema", "return_type"]

_MAX_INPUT_REPR = 80


@dataclass(kw_only=True, frozen=True)
class Signature:
    model: type[BaseModel]
    """Validates the model-visible arguments; one field per parameter, aliased to its name."""
    fields: tuple[tuple[str, str], ...]
    """(parameter name, model field name) for every model-visible parameter, in order."""
    context: str | None
    """The name of the `RunContext` parameter, if there is one."""
    positional: tuple[str, ...]
    """Positional-only parameters (the context included), in order."""


class _SchemaWithoutTitles(GenerateJsonSchema):
    """Pydantic's JSON schema without per-field titles, which only repeat the names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def analyse_signature(
    function: Callable[..., Any], key: str, descriptions: dict[str, str], context_type: type
) -> Signature:
    """Build the arguments model from the signature; find the parameter annotated
    `context_type` (the `RunContext`), which the model never sees."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot read the signature: {exc}", key=key) from exc
    hints = _type_hints(function, key)
    definitions: dict[str, Any] = {}
    fields: list[tuple[str, str]] = []
    positional: list[str] = []
    context: str | None = None
    for parameter in signature.parameters.values():
        pname = parameter.name
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(f"parameter {pname!r}: *args and **kwargs are not supported", key=key)
        if pname not in hints:
            raise ConfigError(f"parameter {pname!r} has no type annotation", key=key)
        if parameter.kind is parameter.POSITIONAL_ONLY:
            positional.append(pname)
        if _is_context(hints[pname], context_type):
            if context is not None:
                raise ConfigError(f"parameters {context!r} and {pname!r}: one RunContext", key=key)
            context = pname
            continue
        # Fields get neutral names and the parameter's name as alias, so parameters may
        # be called anything (`json`, `_id`, `model_config`) without clashing with pydantic.
        field = f"p{len(fields)}"
        fields.append((pname, field))
        definitions[field] = _field(hints[pname], parameter.default, pname, descriptions.get(pname))
    try:
        model = create_model(
            key.removeprefix("tool "), __config__=ConfigDict(extra="forbid"), **definitions
        )
    except Exception as exc:  # pydantic raises several types for unsupported annotations
        raise ConfigError(f"cannot build the arguments model: {exc}", key=key) from exc
    return Signature(
        model=model, fields=tuple(fields), context=context, positional=tuple(positional)
    )


def _field(annotation: Any, default: Any, alias: str, description: str | None) -> tuple[Any, Any]:
    """Return a `create_model` field definition; the docstring's description wins."""
    if isinstance(default, FieldInfo):
        # `x: int = Field(3, ge=0)`: keep the user's field, let ours override the alias.
        annotation, default = Annotated[annotation, default], inspect.Parameter.empty
    options: dict[str, Any] = {"alias": alias}
    if description:
        options["description"] = description
    if default is not inspect.Parameter.empty:
        options["default"] = default
    return annotation, Field(**options)


def _type_hints(function: Callable[..., Any], key: str) -> dict[str, Any]:
    target: Any = function
    while isinstance(target, functools.partial):
        target = target.func
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = type(target).__call__  # a callable object: the hints of its __call__
    try:
        return get_type_hints(target, include_extras=True)
    except Exception as exc:
        raise ConfigError(
            f"cannot resolve the type hints ({exc}); define the types at module level", key=key
        ) from exc


def _is_context(annotation: Any, context_type: type) -> bool:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation is context_type or get_origin(annotation) is context_type


def json_schema(model: type[BaseModel], key: str) -> dict[str, Any]:
    """The model's JSON schema as a strict-style tool `parameters` object."""
    try:
        schema = model.model_json_schema(schema_generator=_SchemaWithoutTitles)
    except Exception as exc:  # e.g. a Callable parameter validates but has no JSON schema
        raise ConfigError(f"the arguments have no JSON schema: {exc}", key=key) from exc
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": schema.get("properties", {}),
        "required": schema.get("required", []),
        "additionalProperties": False,
    }
    if "$defs" in schema:
        parameters["$defs"] = schema["$defs"]
    return parameters


def describe_invalid(name: str, exc: ValidationError, signature: Signature) -> str:
    """Explain every invalid argument so a model can fix its call."""
    lines = [f"The arguments for tool {name!r} are invalid:"]
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        if not where:
            lines.append("- the arguments must be a JSON object of named arguments")
            continue
        if error["type"] == "missing":
            problem = "required, but missing"
        elif error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
            known = ", ".join(param for param, _ in signature.fields) or "none"
            problem = f"not a parameter of this tool (parameters: {known})"
        elif error["type"] == "extra_forbidden":
            problem = "not an allowed field here"
        else:
            problem = f"{error['msg']} (got {_short_repr(error.get('input'))})"
        lines.append(f"- {where}: {problem}")
    lines.append("Fix these arguments and call the tool again.")
    return "\n".join(lines)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_INPUT_REPR else f"{text[: _MAX_INPUT_REPR - 3]}..."


@functools.cache
def return_type(function: Callable[..., Any]) -> tuple[Any, TypeAdapter[Any] | None]:
    """A function's return annotation and its validator, built once per function."""
    annotation = get_type_hints(function).get("return")
    return annotation, None if annotation is None else TypeAdapter(annotation)
