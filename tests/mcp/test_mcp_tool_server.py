"""`ToolServer` in process, through the MCP SDK's in-memory transport: the same server
`agentflow mcp serve` runs (tests/mcp/test_mcp_serve.py drives it as a subprocess)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, types
from mcp.shared.memory import create_connected_server_and_client_session

from agentflow import RunContext, ToolRetry, tool
from agentflow.exceptions import ConfigError
from agentflow.journal import open_journal
from agentflow.mcp.server import ToolServer
from agentflow.mcp.tool import IDEMPOTENCY_META
from tests.telemetry import Telemetry


class Till:
    def __init__(self) -> None:
        self.paid: list[int] = []


@tool(side_effects=True, requires_approval=lambda args: args["amount"] > 100)
def pay_out(ctx: RunContext[Till], amount: int) -> dict[str, Any]:
    """Pay money out.

    Args:
        amount: USD.
    """
    if amount <= 0:
        raise ToolRetry("the amount must be positive")
    ctx.deps.paid.append(amount)
    return {"paid": amount, "payouts": len(ctx.deps.paid)}


@tool
def balance(ctx: RunContext[Till]) -> int:
    """What has been paid out so far."""
    return sum(ctx.deps.paid)


def text(result: types.CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, types.TextContent)
    return content.text


async def call(session: ClientSession, name: str, key: str | None = None, **arguments: Any) -> Any:
    meta = {IDEMPOTENCY_META: key} if key else None
    return await session.call_tool(name, arguments, meta=meta)


async def test_tools_are_listed_and_calls_run_validated(telemetry: Telemetry) -> None:
    till = Till()
    server = ToolServer(tools=[pay_out, balance], deps=till)
    async with create_connected_server_and_client_session(server.mcp_server()) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
        assert listed["pay_out"].inputSchema["required"] == ["amount"]
        assert listed["pay_out"].annotations.readOnlyHint is False  # type: ignore[union-attr]
        assert listed["balance"].annotations.readOnlyHint is True  # type: ignore[union-attr]
        paid = await call(session, "pay_out", amount=20)
        assert not paid.isError and text(paid) == '{"paid":20,"payouts":1}'
        bad = await call(session, "pay_out", amount="lots")
        assert bad.isError and "amount: Input should be a valid integer" in text(bad)
        retry = await call(session, "pay_out", amount=-5)
        assert retry.isError and text(retry) == "the amount must be positive"
        big = await call(session, "pay_out", amount=500)
        assert big.isError and "needs a person's approval" in text(big)
        unknown = await call(session, "drop_tables")
        assert unknown.isError and text(unknown).startswith("There is no tool 'drop_tables'")
        assert text(await call(session, "balance")) == "20"
    assert till.paid == [20], "the invalid, retried and refused calls did not pay"
    spans = [s.name for s in telemetry.spans()]
    assert spans.count("execute_tool pay_out") == 3  # the refused call never ran


async def test_allowing_approval_tools_lets_the_clients_confirmation_stand_in() -> None:
    till = Till()
    server = ToolServer(tools=[pay_out], deps=till, allow_approval_tools=True)
    async with create_connected_server_and_client_session(server.mcp_server()) as session:
        assert not (await call(session, "pay_out", amount=500)).isError
    assert till.paid == [500]


async def test_a_repeated_key_is_answered_from_the_journal(tmp_path: Path) -> None:
    till = Till()
    journal = open_journal(str(tmp_path / "journal.sqlite"))
    server = ToolServer(tools=[pay_out], deps=till, journal=journal)
    async with create_connected_server_and_client_session(server.mcp_server()) as session:
        first = await call(session, "pay_out", key="k1", amount=50)
        again = await call(session, "pay_out", key="k1", amount=50)
        other = await call(session, "pay_out", key="k2", amount=5)
        unkeyed = [await call(session, "pay_out", amount=1) for _ in range(2)]
    await journal.aclose()
    assert text(first) == text(again) == '{"paid":50,"payouts":1}'
    assert text(other) == '{"paid":5,"payouts":2}'
    assert [text(r) for r in unkeyed] == ['{"paid":1,"payouts":3}', '{"paid":1,"payouts":4}']
    assert till.paid == [50, 5, 1, 1], "a call without a key runs each time it is sent"


def test_two_tools_with_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="two tools share a name"):
        ToolServer(tools=[pay_out, pay_out])
