"""Host capabilities: a sandboxed tool asks the host to run the functions it declares,
with the call's `RunContext`, and for nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentflow import ConfigError, RunContext, Tool, ToolError, tool
from agentflow.sandbox import Sandboxes
from agentflow.sandbox.docker import DockerSandbox
from tests.sandbox import capability_tools as sandboxed


@dataclass
class Shop:
    """The host's side: data the container never sees, and what the capabilities did."""

    customers: dict[int, str] = field(default_factory=lambda: {7: "ada lovelace"})
    asked: list[int] = field(default_factory=list)
    tickets: dict[str, tuple[int, str]] = field(default_factory=dict)


def customer_of(ctx: RunContext[Shop], order_id: int) -> dict[str, str]:
    """Who placed an order.

    Args:
        order_id: The order.
    """
    ctx.deps.asked.append(order_id)
    return {"name": ctx.deps.customers[order_id]}


def file_ticket(ctx: RunContext[Shop], subject: str) -> int:
    """File a ticket once per idempotency key; return its number.

    Args:
        subject: What it is about.
    """
    assert ctx.idempotency_key is not None
    number = len(ctx.deps.tickets) + 1
    return ctx.deps.tickets.setdefault(ctx.idempotency_key, (number, subject))[0]


greet = Tool(sandboxed.greet_customer, sandbox="docker", host=[customer_of])
ask_for = Tool(sandboxed.ask_for, sandbox="docker", host=[customer_of])
open_ticket = Tool(sandboxed.open_ticket, sandbox="docker", side_effects=True, host=[file_ticket])
ask_after = Tool(sandboxed.ask_after_the_call, sandbox="docker", host=[customer_of])


@pytest.fixture
async def sandboxes() -> AsyncIterator[Sandboxes]:
    async with Sandboxes(docker=DockerSandbox(pool_size=1, max_containers=1)) as made:
        yield made


async def run(
    sandboxes: Sandboxes, shop: Shop, tool: Tool[Any], call_id: str = "c1", **arguments: Any
) -> Any:
    ctx = RunContext(deps=shop, run_id="r1", thread_id="t1", tool_call_id=call_id)
    return await tool.call(tool.validate(arguments), ctx, sandboxes=sandboxes)


async def test_a_sandboxed_tool_reads_host_data_through_a_declared_capability(
    sandboxes: Sandboxes,
) -> None:
    shop = Shop()
    assert await run(sandboxes, shop, greet, order_id=7) == "Hello, Ada Lovelace!"
    assert shop.asked == [7]


async def test_only_declared_capabilities_with_valid_arguments_run(sandboxes: Sandboxes) -> None:
    shop = Shop()
    undeclared = await run(sandboxes, shop, ask_for, name="file_ticket", arguments={})
    may = "tool 'ask_for' may ask the host for customer_of, not 'file_ticket'"
    assert undeclared == {"error": may}
    invalid = await run(sandboxes, shop, ask_for, name="customer_of", arguments={"order_id": "x"})
    assert "order_id" in invalid["error"]
    extra = {"order_id": 7, "drop_table": True}
    over = await run(sandboxes, shop, ask_for, name="customer_of", arguments=extra)
    assert "drop_table" in over["error"]
    assert shop.asked == [], "no invalid request reached the capability"
    valid = await run(sandboxes, shop, ask_for, name="customer_of", arguments={"order_id": 7})
    assert valid == {"value": {"name": "ada lovelace"}} and shop.asked == [7]


async def test_a_side_effecting_sandboxed_tool_acts_once_per_key_through_the_host(
    sandboxes: Sandboxes,
) -> None:
    shop = Shop()
    first = await run(sandboxes, shop, open_ticket, subject=" printer on fire ")
    again = await run(sandboxes, shop, open_ticket, subject=" printer on fire ")  # a replay
    other = await run(sandboxes, shop, open_ticket, call_id="c2", subject="refund")
    assert (first, again, other) == (1, 1, 2)
    keys = [
        RunContext(deps=shop, run_id="r1", thread_id="t1", tool_call_id=c).idempotency_key
        for c in ("c1", "c2")
    ]
    assert shop.tickets == {keys[0]: (1, "Printer on fire"), keys[1]: (2, "Refund")}


async def test_a_process_left_behind_cannot_ask_the_host_after_its_call(
    sandboxes: Sandboxes,
) -> None:
    shop = Shop()
    assert await run(sandboxes, shop, ask_after) == "left"
    for _ in range(3):
        assert await run(sandboxes, shop, greet, order_id=7) == "Hello, Ada Lovelace!"
    assert shop.asked == [7, 7, 7], "only the calls in flight asked"


def test_host_capabilities_are_declared_on_sandboxed_tools_only() -> None:
    with pytest.raises(ConfigError, match="host capabilities are for sandboxed tools"):
        Tool(sandboxed.greet_customer, host=[customer_of])
    with pytest.raises(ConfigError, match="side-effecting tool must take a RunContext"):
        tool(sandbox="docker", side_effects=True)(sandboxed.open_ticket)


async def test_without_docker_a_tool_with_host_capabilities_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    anywhere = Tool(sandboxed.greet_customer, sandbox="auto", host=[customer_of])
    async with Sandboxes(allow_unisolated=True) as unisolated:
        with pytest.raises(ToolError, match="Docker sandbox only"):
            await run(unisolated, Shop(), anywhere, order_id=7)
