"""`agentflow mcp serve` as a real subprocess, driven by the official MCP SDK's client
(stdio) and by agentflow's own (streamable HTTP)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from agentflow import ToolCall
from agentflow.mcp import McpServer
from agentflow.tools import RunContext
from tools.seed import seed
from tools.support import SUPPORT_TOOLS

ROOT = Path(__file__).resolve().parents[2]
CLI = ["-c", "from agentflow.cli import app; app()", "mcp", "serve"]


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AGENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'support.sqlite'}",
        "PAYOUTS_FILE": str(tmp_path / "payouts"),
    }


@contextlib.asynccontextmanager
async def support_tools(tmp_path: Path) -> AsyncIterator[ClientSession]:
    """The support graph's tools over stdio (the default), as an MCP client sees them.

    (Not a fixture: the SDK's client must be entered and left in one task.)"""
    seed(environment(tmp_path)["AGENTFLOW_DATABASE_URL"], customers=5)
    params = StdioServerParameters(
        command=sys.executable, args=CLI, env=environment(tmp_path), cwd=str(ROOT)
    )
    with (tmp_path / "stderr").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


async def test_the_support_graphs_tools_are_listed_with_their_schemas(tmp_path: Path) -> None:
    async with support_tools(tmp_path) as support:
        listed = {t.name: t for t in (await support.list_tools()).tools}
        assert list(listed) == [t.name for t in SUPPORT_TOOLS]
        lookup = listed["lookup_order"]
        assert lookup.inputSchema["required"] == ["order_id"]
        assert lookup.inputSchema["properties"]["order_id"]["exclusiveMinimum"] == 0
        assert lookup.annotations is not None and lookup.annotations.readOnlyHint is True
        refund = listed["issue_refund"].annotations
        assert refund is not None and refund.readOnlyHint is False


async def test_a_call_runs_the_tool_and_a_bad_argument_is_explained(tmp_path: Path) -> None:
    async with support_tools(tmp_path) as support:
        found = await support.call_tool("lookup_order", {"order_id": 424242})
        assert not found.isError
        assert found.content[0].text == (  # type: ignore[union-attr]
            "No order 424242 was found; ask the customer to check the order number."
        )
        bad = await support.call_tool("lookup_order", {"order_id": "A-1"})
        assert bad.isError
        text = bad.content[0].text  # type: ignore[union-attr]
        assert "The arguments for tool 'lookup_order' are invalid" in text
        assert "order_id: Input should be a valid integer" in text
        unknown = await support.call_tool("drop_tables", {})
        assert unknown.isError and "There is no tool 'drop_tables'" in unknown.content[0].text  # type: ignore[union-attr]


async def test_a_call_that_needs_approval_is_refused_without_running(tmp_path: Path) -> None:
    async with support_tools(tmp_path) as support:
        arguments = {"order_id": 1044, "amount_usd": 500.0, "reason": "mug arrived chipped"}
        refused = await support.call_tool("issue_refund", arguments)
        assert refused.isError
        assert "needs a person's approval" in refused.content[0].text  # type: ignore[union-attr]


@pytest.fixture
def journaled_http(tmp_path: Path) -> Iterator[str]:
    """`agentflow mcp serve FILE:TOOLS --http --port 0 --journal ...`; yields its URL."""
    command = [
        sys.executable, *CLI, "tests/mcp/servers/agentflow_tools.py:TOOLS",
        "--http", "--port", "0", "--journal", f"sqlite:///{tmp_path / 'journal.sqlite'}",
    ]  # fmt: skip
    with subprocess.Popen(
        command, cwd=ROOT, env=environment(tmp_path), stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        line = process.stderr.readline()  # `serving MCP at URL (...)` once it listens
        assert line.startswith("serving MCP at "), line
        try:
            yield line.split()[3]
        finally:
            process.kill()


async def test_a_repeated_idempotency_key_is_answered_from_the_journal(
    journaled_http: str, tmp_path: Path
) -> None:
    async with McpServer.http(journaled_http, name="served") as served:
        (pay,) = await served.tools()
        assert pay.side_effects
        ctx: RunContext[Any] = RunContext(deps=None, run_id="r", thread_id="t", tool_call_id="p1")
        call = ToolCall(id="p1", name="pay_out", arguments={"amount": 50})
        first = await pay.run(call, ctx)
        again = await pay.run(call, ctx)  # a resumed run sends the same call again
        other = await pay.run(ToolCall(id="p2", name="pay_out", arguments={"amount": 5}), ctx)
    assert first.message.content == again.message.content == '{"paid":50,"payouts":1}'
    assert other.message.content == '{"paid":5,"payouts":2}'
    assert (tmp_path / "payouts").read_text().split() == ["50", "5"]
