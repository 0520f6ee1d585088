"""MCP servers' tools as agentflow tools, against real MCP server processes (the SDK's
FastMCP over stdio and streamable HTTP, and a low-level server with bad tools)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from opentelemetry.trace import StatusCode

from agentflow import (
    END,
    START,
    AgentGraph,
    RunContext,
    ScriptedModel,
    ToolCall,
    ToolError,
    ToolResultMessage,
    UserMessage,
    tool,
)
from agentflow.exceptions import ConfigError
from agentflow.journal import open_journal
from agentflow.mcp import McpServer, McpTool, tools_from_mcp
from tests.helpers import three_tiers
from tests.telemetry import Telemetry

SERVERS = Path(__file__).parent / "servers"
WEATHER = str(SERVERS / "weather.py")
BROKEN = str(SERVERS / "broken.py")


def weather(**options: Any) -> McpServer:
    return McpServer.stdio(sys.executable, WEATHER, name="weather", **options)


@pytest.fixture
async def stdio_server() -> AsyncIterator[McpServer]:
    async with weather() as server:
        yield server


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    """The weather server over streamable HTTP, as a process of its own."""
    with http_server() as url:
        yield url


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """Start the weather server over streamable HTTP; yield its URL; kill it."""
    with subprocess.Popen(
        [sys.executable, WEATHER, "http"], stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()  # `PORT n` once it listens
        assert line.startswith("PORT "), line
        try:
            yield f"http://127.0.0.1:{line.split()[1]}/mcp"
        finally:
            process.kill()


def run_ctx(call_id: str = "c1") -> RunContext[Any]:
    return RunContext(deps=None, run_id="run-1", thread_id="thread-1", tool_call_id=call_id)


async def by_name(server: McpServer, **options: Any) -> dict[str, McpTool]:
    return {t.name: t for t in await server.tools(**options)}


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_tools_carry_the_servers_names_descriptions_and_schemas(
    transport: str, http_url: str
) -> None:
    server = weather() if transport == "stdio" else McpServer.http(http_url, name="weather")
    async with server:
        tools = await by_name(server)
        assert set(tools) >= {"forecast", "temperature", "fail", "pay_out"}
        spec = tools["forecast"].spec
        assert spec.description == "Tell the weather of the coming days in a city."
        assert spec.parameters["required"] == ["city"]
        assert spec.parameters["properties"]["days"]["maximum"] == 7
        assert spec.strict is False
        outcome = await tools["forecast"].run(
            ToolCall(id="c1", name="forecast", arguments={"city": "Oslo", "days": 3}), run_ctx()
        )
        assert not outcome.retryable_error
        assert outcome.value == {"result": "Oslo: sunny for 3 day(s)"}


async def test_arguments_are_validated_against_the_input_schema_before_any_call(
    stdio_server: McpServer,
) -> None:
    tools = await by_name(stdio_server)
    bad = ToolCall(id="c1", name="pay_out", arguments={"amount": "ten"})
    outcome = await tools["pay_out"].run(bad, run_ctx())
    assert outcome.retryable_error and outcome.message.is_error
    assert "at $['amount']: 'ten' is not of type 'integer'" in outcome.message.content
    good = ToolCall(id="c2", name="pay_out", arguments={"amount": 10})
    paid = await tools["pay_out"].run(good, run_ctx("c2"))
    assert paid.value["payouts"] == 1, "the invalid call never reached the server"
    missing = await tools["forecast"].run(ToolCall(id="c3", name="forecast"), run_ctx("c3"))
    assert "'city' is a required property" in missing.message.content


async def test_results_map_structured_content_text_and_errors(stdio_server: McpServer) -> None:
    tools = await by_name(stdio_server)
    reading = await tools["temperature"].run(
        ToolCall(id="c1", name="temperature", arguments={"city": "Oslo"}), run_ctx()
    )
    assert reading.value == {"city": "Oslo", "celsius": 21.5}
    assert reading.message.content == '{"city":"Oslo","celsius":21.5}'
    failed = await tools["fail"].run(
        ToolCall(id="c2", name="fail", arguments={"reason": "no umbrella"}), run_ctx()
    )
    assert failed.retryable_error and failed.message.is_error
    assert "cannot do that: no umbrella" in failed.message.content


async def test_the_idempotency_key_travels_in_the_calls_meta(stdio_server: McpServer) -> None:
    tools = await by_name(stdio_server)
    outcome = await tools["pay_out"].run(
        ToolCall(id="call-7", name="pay_out", arguments={"amount": 1}), run_ctx("call-7")
    )
    assert outcome.value["key"] == "thread-1:call-7"


async def test_options_pick_tools_and_flags_by_name(stdio_server: McpServer) -> None:
    tools = await by_name(
        stdio_server,
        include={"forecast", "pay_out"},
        prefix="wx_",
        requires_approval={"pay_out": lambda args: args["amount"] > 100},
        high_stakes={"pay_out"},
        timeout_s=5,
    )
    assert set(tools) == {"wx_forecast", "wx_pay_out"}
    pay = tools["wx_pay_out"]
    assert pay.remote_name == "pay_out" and pay.timeout_s == 5
    assert pay.needs_approval({"amount": 500}) and not pay.needs_approval({"amount": 5})
    assert pay.is_high_stakes({"amount": 5})
    assert not tools["wx_forecast"].needs_approval({"city": "Oslo"})
    # readOnlyHint says forecast changes nothing; pay_out has no hint: journaled
    assert pay.side_effects and not tools["wx_forecast"].side_effects
    with pytest.raises(ConfigError, match=r"requires_approval names 'refund'.*its tools: "):
        await stdio_server.tools(requires_approval={"refund"})


async def test_a_call_past_its_timeout_is_a_tool_error_and_the_server_stays_usable(
    stdio_server: McpServer, tmp_path: Path
) -> None:
    tools = await by_name(stdio_server, timeout_s=0.5)
    fifo = tmp_path / "entered"
    os.mkfifo(fifo)
    call = ToolCall(id="c1", name="hang", arguments={"signal_path": str(fifo)})
    pid = asyncio.create_task(asyncio.to_thread(fifo.read_text))
    with pytest.raises(ToolError, match=r"'hang' timed out after 0.5s"):
        await tools["hang"].run(call, run_ctx())
    assert int(await pid) > 0  # the server was inside the call
    outcome = await tools["forecast"].run(
        ToolCall(id="c2", name="forecast", arguments={"city": "Oslo"}), run_ctx("c2")
    )
    assert not outcome.retryable_error


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_server_killed_mid_call_fails_the_call_instead_of_hanging(
    transport: str, tmp_path: Path
) -> None:
    with contextlib.ExitStack() as stack:
        if transport == "stdio":
            server = weather()
        else:
            server = McpServer.http(stack.enter_context(http_server()), name="weather")
        async with server:
            tools = await by_name(server, timeout_s=60)
            fifo = tmp_path / "entered"
            os.mkfifo(fifo)
            pid = asyncio.create_task(asyncio.to_thread(fifo.read_text))
            call = ToolCall(id="c1", name="hang", arguments={"signal_path": str(fifo)})
            running = asyncio.create_task(tools["hang"].run(call, run_ctx()))
            os.kill(int(await pid), signal.SIGKILL)
            async with asyncio.timeout(20):  # far below the tool's 60 s: it did not hang
                with pytest.raises(ToolError, match=r"MCP server 'weather'.*'hang'") as raised:
                    await running
            assert raised.value.tool == "hang"
            with pytest.raises(ToolError, match="MCP server 'weather'"):
                await tools["forecast"].run(
                    ToolCall(id="c2", name="forecast", arguments={"city": "x"}), run_ctx("c2")
                )


async def test_a_server_that_dies_during_a_call_names_itself(stdio_server: McpServer) -> None:
    tools = await by_name(stdio_server)
    with pytest.raises(ToolError, match=r"MCP server 'weather': connection lost during a call"):
        await tools["die"].run(ToolCall(id="c1", name="die"), run_ctx())


async def test_a_server_that_cannot_start_is_a_config_error_quoting_its_stderr() -> None:
    crashing = McpServer.stdio(
        sys.executable, "-c", "import sys; sys.exit('no API key for weather')", name="crashing"
    )
    with pytest.raises(ConfigError, match=r"MCP server 'crashing'.*no API key for weather"):
        await crashing.connect()
    missing = McpServer.stdio("/nonexistent/mcp-server", name="missing")
    with pytest.raises(ConfigError, match=r"MCP server 'missing': could not start"):
        await missing.connect()
    silent = McpServer.stdio(
        sys.executable, "-c", "import time; time.sleep(60)", name="silent", startup_timeout_s=1
    )
    with pytest.raises(ConfigError, match=r"MCP server 'silent': did not answer within 1s"):
        await silent.connect()


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (
            "array-schema",
            r"MCP server 'broken': tool 'numbers': its inputSchema must be .*'object'",
        ),
        ("dotted-name", r"MCP server 'broken': tool 'weather.today': tool names must be"),
    ],
)
async def test_tools_that_cannot_be_agentflow_tools_are_refused_by_name(
    mode: str, message: str
) -> None:
    async with McpServer.stdio(sys.executable, BROKEN, mode, name="broken") as server:
        with pytest.raises(ConfigError, match=message):
            await server.tools()


async def test_colliding_tool_names_are_refused_naming_both_origins(
    stdio_server: McpServer,
) -> None:
    async with McpServer.stdio(sys.executable, BROKEN, "same-name", name="other") as other:
        with pytest.raises(
            ConfigError,
            match=r"MCP server 'other'.s tool 'forecast' and MCP server 'weather'.s tool "
            r"'forecast' are both named 'forecast'",
        ):
            await tools_from_mcp(stdio_server, other)
        both = await tools_from_mcp(stdio_server, await other.tools(prefix="other_"))
        assert "other_forecast" in {t.name for t in both}

    @tool
    def whoami() -> str:
        """Our own whoami."""
        return "me"

    with pytest.raises(ConfigError, match=r"'whoami' and tool 'whoami' given alongside"):
        await tools_from_mcp(stdio_server, alongside=[whoami])


@dataclass
class Printer:
    on_fire: bool = True


@tool(side_effects=True)
def print_receipt(ctx: RunContext[Printer]) -> str:
    """Print a receipt."""
    if ctx.deps.on_fire:
        ctx.deps.on_fire = False
        raise RuntimeError("printer on fire")  # the process "dies" after the payout
    return "printed"


async def test_a_graph_runs_mcp_tools_exactly_once_across_a_resume(
    stdio_server: McpServer, tmp_path: Path
) -> None:
    model = ScriptedModel(
        [
            [
                ToolCall(id="p1", name="pay_out", arguments={"amount": 50}),
                ToolCall(id="r1", name="print_receipt"),
            ],
            "done",
        ]
    )
    graph: AgentGraph[Any] = AgentGraph(
        "till", context=Printer, router=three_tiers(model, model, model)
    )
    graph.agent("work", tools=[*await stdio_server.tools(include={"pay_out"}), print_receipt])
    graph.edge(START, "work").edge("work", END)
    journal = open_journal(str(tmp_path / "journal.sqlite"))
    app = graph.compile(checkpointer=InMemorySaver(), journal=journal)
    config: Any = {"configurable": {"thread_id": "till"}}
    deps = Printer()
    with pytest.raises(ToolError, match="printer on fire"):
        await app.ainvoke({"messages": [UserMessage(content="pay 50")]}, config, context=deps)
    state = await app.ainvoke(None, config, context=deps)  # resume from the last checkpoint
    results = [m for m in state["messages"] if isinstance(m, ToolResultMessage)]
    assert results[0].content == '{"payouts":1,"key":"till:p1"}', "paid out once"
    assert results[1].content == "printed"
    await journal.aclose()


async def test_mcp_tool_calls_are_execute_tool_spans_in_the_run(
    stdio_server: McpServer, telemetry: Telemetry
) -> None:
    """An MCP call is traced like any `@tool`: its span in the run's trace, a failed
    call an error on it that goes back to the model."""
    model = ScriptedModel(
        [
            [ToolCall(id="f1", name="forecast", arguments={"city": "Oslo", "days": 2})],
            [ToolCall(id="x1", name="fail", arguments={"reason": "no"})],
            "sunny",
        ]
    )
    graph: AgentGraph[Any] = AgentGraph("weather", router=three_tiers(model, model, model))
    graph.agent("work", tools=await stdio_server.tools(include={"forecast", "fail"}))
    graph.edge(START, "work").edge("work", END)
    config: Any = {"configurable": {"thread_id": "wx"}}
    app = graph.compile(checkpointer=InMemorySaver())
    await app.ainvoke({"messages": [UserMessage(content="weather?")]}, config)
    spans = {s.name: s for s in telemetry.spans()}
    run = spans["invoke_agent weather"]
    forecast, failed = spans["execute_tool forecast"], spans["execute_tool fail"]
    for span in (forecast, failed):
        assert span.context is not None and run.context is not None
        assert span.context.trace_id == run.context.trace_id
        assert span.attributes is not None
        assert span.attributes["gen_ai.conversation.id"] == "wx"
    assert forecast.attributes is not None and failed.attributes is not None
    assert forecast.attributes["gen_ai.tool.call.id"] == "f1"
    assert forecast.attributes["gen_ai.tool.description"] == (
        "Tell the weather of the coming days in a city."
    )
    assert forecast.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "tool_retry"
    assert "cannot do that: no" in (failed.status.description or "")
