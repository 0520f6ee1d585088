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

__all__ = ["json_schema_errors", "schema_validator", "validate_json_value"]


def schema_validator(schema: dict[str, Any]) -> Validator:
    """The validator of `schema`, made once per distinct schema; keep it to validate with.

    Raises:
        ValueError: `schema` is not a valid JSON Schema.
    """
    return _validator(json.dumps(schema, sort_keys=True, separators=(",", ":")))


def validate_json_value(value: Any, validator: Validator) -> None:
    """Raise `ValueError` naming where and why `value` breaks the schema (the first few errors)."""
    errors = json_schema_errors(value, validator)
    if errors:
        shown = "; ".join(errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ValueError(f"output does not match the schema: {shown}{more}")


def json_schema_errors(value: Any, validator: Validator) -> list[str]:
    """Every way `value` breaks the schema, as `at $['a'][0]: why` lines, in path order."""
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(step) for step in e.path])
    return [_describe(error) for error in errors]


def _describe(error: Any) -> str:
    where = "".join(f"[{step!r}]" for step in error.absolute_path)
    return f"at ${where}: {error.message}"


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
