"""Validate decoded JSON against a JSON Schema given as a dict.

Outputs declared as a dict schema (`output_spec({...})`) and tools that come with a
schema rather than a signature (MCP tools) have no pydantic type to validate into, and a
provider in `json_object` mode only promises *some* JSON. Both are checked here with
`jsonschema` (the reference validator), built once per schema.
"""

from __future__ import annotations

import json
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = ["check_schema", "json_schema_errors", "validate_json_value"]


def check_schema(schema: dict[str, Any]) -> None:
    """Raise `ValueError` if `schema` is not a valid JSON Schema."""
    _validator(_key(schema))


def validate_json_value(value: Any, schema: dict[str, Any]) -> None:
    """Raise `ValueError` naming where and why `value` breaks `schema` (the first few errors)."""
    errors = json_schema_errors(value, schema)
    if errors:
        shown = "; ".join(errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ValueError(f"output does not match the schema: {shown}{more}")


def json_schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every way `value` breaks `schema`, as `at $['a'][0]: why` lines, in path order."""
    found = _validator(_key(schema)).iter_errors(value)
    errors = sorted(found, key=lambda e: [str(step) for step in e.path])
    return [_describe(error) for error in errors]


def _describe(error: Any) -> str:
    where = "".join(f"[{step!r}]" for step in error.absolute_path)
    return f"at ${where}: {error.message}"


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@cache
def _validator(key: str) -> Validator:
    from jsonschema import exceptions, validators

    schema = json.loads(key)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    return cls(schema, format_checker=cls.FORMAT_CHECKER)
