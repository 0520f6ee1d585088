"""One MCP server tool as an agentflow `Tool`: its schema, validation and results.

An `McpTool` is a `Tool` like any `@tool`, so an agent loop runs it the same way
(approval gate, exactly-once journal for side effects, `execute_tool` span, retries
counted); only three things differ:

- the model sees the server's `inputSchema` as the parameters (sent non-strict: MCP
  schemas are not written for OpenAI's strict mode), and arguments are checked against
  it with `jsonschema` on the client; invalid ones go back to the model as a retry, as
  a pydantic error does for `@tool`;
- a call goes to the server (`tools/call`), with the call's idempotency key in the
  request's `_meta` (`io.agentflow/idempotency-key`) so an agentflow server (`agentflow
  mcp serve`) acts once per key;
- the result is the server's `CallToolResult`: `isError` goes back to the model as a
  retryable error (it can fix its call or tell the user); otherwise `structuredContent`
  when the tool declares an `outputSchema` (the SDK has validated it), else the text of
  the content blocks (images, audio and resources as a one-line placeholder).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from agentflow._json_schema import json_schema_errors, schema_validator
from agentflow.exceptions import ConfigError
from agentflow.models.base import ToolSpec
from agentflow.tools import ArgumentsPredicate, RunContext, Tool, ToolRetry

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from mcp import types

    from agentflow.mcp.client import McpServer
    from agentflow.sandbox import Sandboxes

__all__ = ["IDEMPOTENCY_META", "McpTool", "result_value"]

IDEMPOTENCY_META = "io.agentflow/idempotency-key"
"""The `_meta` key a call's idempotency key travels under."""


class McpTool(Tool[Any]):
    """A tool of an MCP server, called through its `McpServer` (see `McpServer.tools`)."""

    server: McpServer
    """The connection its calls go through."""
    remote_name: str
    """The tool's name on the server (the agentflow name may carry a prefix)."""
    output_schema: dict[str, Any] | None
    """The server's `outputSchema` for the tool, if it declares one."""

    def __init__(
        self,
        server: McpServer,
        remote: types.Tool,
        *,
        name: str,
        requires_approval: bool | ArgumentsPredicate = False,
        high_stakes: bool | ArgumentsPredicate = False,
        side_effects: bool = False,
        timeout_s: float | None = None,
        retries: int = 2,
    ) -> None:
        """Wrap the server's tool `remote`; raise `ConfigError` naming the server and tool
        if its schema or options cannot make a tool."""
        where = f"MCP server {server.name!r}: tool {remote.name!r}"
        schema, self._validator = _input_schema(remote.inputSchema, where)
        try:
            super().__init__(
                self.call_remote,
                name=name,
                description=remote.description or remote.title or "",
                requires_approval=requires_approval,
                high_stakes=high_stakes,
                timeout_s=timeout_s,
                side_effects=side_effects,
                retries=retries,
            )
        except ConfigError as exc:
            raise ConfigError(exc.reason, key=where) from exc
        self.server = server
        self.remote_name = remote.name
        self.output_schema = remote.outputSchema
        self.parameters = schema
        self._mcp_spec = ToolSpec(
            name=self.name, description=self.description, parameters=schema, strict=False
        )

    def __repr__(self) -> str:
        return f"McpTool(name={self.name!r}, server={self.server.name!r})"

    @property
    def spec(self) -> ToolSpec:
        """The tool as the model sees it: the server's description and input schema."""
        return self._mcp_spec

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Return the arguments (a copy) if they match the server's input schema.

        Raises:
            pydantic.ValidationError: They do not; each error says where and why.
        """
        errors = json_schema_errors(arguments, self._validator)
        if errors:
            raise ValidationError.from_exception_data(
                self.name,
                [
                    {
                        "type": PydanticCustomError("json_schema", "{why}", {"why": why}),
                        "loc": (),
                        "input": arguments,
                    }
                    for why in errors
                ],
            )
        return dict(arguments)

    def explain_invalid(self, exc: ValidationError) -> str:
        """Explain every schema violation so the model can fix its call."""
        lines = [f"The arguments for tool {self.name!r} do not match its input schema:"]
        lines += [f"- {error['msg']}" for error in exc.errors(include_url=False)]
        lines.append("Fix these arguments and call the tool again.")
        return "\n".join(lines)

    async def call(
        self, arguments: dict[str, Any], ctx: RunContext[Any], *, sandboxes: Sandboxes | None = None
    ) -> Any:
        """Call the server's tool with validated arguments; return the result's value.

        Raises:
            ToolRetry: The server answered with `isError` (the model sees its text).
            ToolError: The call timed out, the server refused it, or the connection was lost.
        """
        where = f"MCP server {self.server.name!r}: tool {self.remote_name!r}"
        return await self._within_deadline(self.call_remote(ctx, arguments), where)

    async def call_remote(self, ctx: RunContext[Any], arguments: dict[str, Any]) -> Any:
        """Send one `tools/call` to the server, without a deadline (`call` adds it)."""
        result = await self.server.call_tool(
            self.remote_name, arguments, tool=self.name, key=ctx.idempotency_key
        )
        return result_value(result, self.output_schema)


def result_value(result: types.CallToolResult, output_schema: dict[str, Any] | None) -> Any:
    """What a `CallToolResult` means to the model (see the module's docstring).

    Raises:
        ToolRetry: The result is an error (`isError`).
    """
    text = "\n".join(_block_text(block) for block in result.content)
    if result.isError:
        raise ToolRetry(text or "the tool failed and gave no reason")
    if output_schema is not None and result.structuredContent is not None:
        return result.structuredContent
    return text


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return f"[{kind} {block.mimeType}, {len(block.data) * 3 // 4} bytes, not shown]"
    if kind == "resource_link":
        return f"[resource {block.uri}]"
    if kind == "resource":
        text = getattr(block.resource, "text", None)
        return text if isinstance(text, str) else f"[resource {block.resource.uri}, binary]"
    return f"[{kind or 'unknown'} content, not shown]"


def _input_schema(schema: Any, where: str) -> tuple[dict[str, Any], Validator]:
    """The tool's input schema and its validator; a `ConfigError` if it cannot be one."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ConfigError(
            f"its inputSchema must be a JSON Schema of type 'object' (MCP requires it), "
            f"not {schema!r}",
            key=where,
        )
    try:
        return schema, schema_validator(schema)
    except ValueError as exc:
        raise ConfigError(f"its inputSchema is {exc}", key=where) from exc
