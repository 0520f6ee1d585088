"""Loading a graph from its file (`agentflow run`, `serve`, `inbox`): a stable module name,
and the module's `make_context()` checked before any model is asked anything."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentflow.cli import app
from agentflow.exceptions import ConfigError
from agentflow.graph_files import load_graph, module_name

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

HELPDESK = '''
"""An IT helpdesk graph on a scripted tier, with a context its tool needs."""
from dataclasses import dataclass

from pydantic import BaseModel

from agentflow import (
    END, START, AgentGraph, AgentState, FunctionModel, GpuPrice, Router, RoutingPolicy,
    RunContext, StepContext, Tier, ToolCall, tool,
)


@dataclass
class Desk:
    queue: str


class Ticket(BaseModel):
    category: str


class State(AgentState, total=False):
    ticket: Ticket


CALLS = []


def answer(request):
    CALLS.append(request)
    if request.output is not None:
        return Ticket(category="vpn")
    if request.messages[-1].role == "tool":
        return "filed"
    return [ToolCall(id="c1", name="file_ticket", arguments={})]


@tool
def file_ticket(ctx: RunContext[Desk]) -> str:
    """File the ticket in the desk's queue."""
    return f"filed in {ctx.deps.queue}"


router = Router(
    tiers=[Tier(name="t", model=FunctionModel(answer), price=GpuPrice(gpu_hour_usd=1,
                tokens_per_s=1), self_hosted=True)],
    policy=RoutingPolicy(kinds={"classify": "t", "tool_call": "t"}),
)
graph = AgentGraph("helpdesk", state=State, context=Desk, router=router)


@graph.node(kind="classify")
async def classify(state: State, ctx: StepContext[Desk]) -> dict:
    return {"ticket": await ctx.llm(state["messages"], output=Ticket)}


graph.agent("act", tools=[file_ticket])
graph.edge(START, "classify").edge("classify", "act").edge("act", END)
'''


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder with `helpdesk/bot.py`, as the current directory."""
    (tmp_path / "helpdesk").mkdir()
    (tmp_path / "helpdesk" / "bot.py").write_text(HELPDESK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m == "helpdesk" or m.startswith("helpdesk.")]:
        del sys.modules[name]


def test_a_graph_file_imports_under_its_dotted_name_from_the_current_directory(
    project: Path,
) -> None:
    loaded = load_graph("helpdesk/bot.py")
    assert loaded.module.__name__ == "helpdesk.bot"
    assert sys.modules["helpdesk.bot"] is loaded.module
    import helpdesk.bot  # type: ignore[import-not-found]  # the way a worker imports it

    assert helpdesk.bot.graph is loaded.graph  # one module, never run twice
    assert load_graph("helpdesk/bot.py:graph").graph is loaded.graph
    assert loaded.module.Ticket.__module__ == "helpdesk.bot"


def test_a_file_outside_the_current_directory_imports_by_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "srv" / "bot_elsewhere.py"
    elsewhere.parent.mkdir()
    elsewhere.write_text("X = 1\n")
    monkeypatch.chdir(ROOT)
    assert module_name(elsewhere) == ("bot_elsewhere", elsewhere.parent.resolve())


def test_a_file_whose_name_is_taken_by_another_module_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "json.py").write_text("graph = None\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="imports as 'json', which is another module"):
        load_graph("json.py")


def test_run_gives_the_tools_the_modules_context(project: Path) -> None:
    (project / "helpdesk" / "bot.py").write_text(
        HELPDESK + "\n\ndef make_context():\n    return Desk(queue='it-queue')\n"
    )
    result = runner.invoke(
        app, ["run", "helpdesk/bot.py", "-m", "vpn is down"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "agent: filed" in result.output
    import helpdesk.bot  # type: ignore[import-not-found]

    [*_, last] = helpdesk.bot.CALLS
    assert last.messages[-1].content == "filed in it-queue"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "graph 'helpdesk' needs a Desk as its context: define make_context()"),
        ("def make_context():\n    return 'desk'\n", "make_context() returned a str; graph"),
        ("def make_context():\n    raise KeyError('DESK_URL')\n", "make_context() failed: Key"),
    ],
)
def test_a_missing_or_wrong_context_fails_before_any_model_call(
    project: Path, extra: str, message: str
) -> None:
    (project / "helpdesk" / "bot.py").write_text(HELPDESK + "\n\n" + extra)
    result = runner.invoke(app, ["run", "helpdesk/bot.py", "-m", "vpn is down"])
    assert result.exit_code == 1
    assert message in result.output and "helpdesk/bot.py" in result.output
    assert len(result.output.strip().splitlines()) == 1
    import helpdesk.bot  # type: ignore[import-not-found]

    assert helpdesk.bot.CALLS == []


REVIVE = """
import asyncio, sys
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
import helpdesk.bot as bot

async def main():
    async with AsyncSqliteSaver.from_conn_string(sys.argv[1]) as saver:
        state = await bot.graph.compile(checkpointer=saver).aget_state(
            {"configurable": {"thread_id": "t1"}}
        )
    ticket = state.values["ticket"]
    print(type(ticket).__module__, type(ticket).__name__, ticket.category)

asyncio.run(main())
"""


def test_a_worker_importing_the_package_revives_what_the_cli_checkpointed(
    project: Path,
) -> None:
    """Types are recorded as `helpdesk.bot.Ticket`, not a name only the CLI process had."""
    (project / "helpdesk" / "bot.py").write_text(
        HELPDESK + "\n\ndef make_context():\n    return Desk(queue='q')\n"
    )
    env = {**os.environ, "LANGGRAPH_STRICT_MSGPACK": "false", "PYTHONPATH": str(project)}
    exe = Path(sys.executable).parent / "agentflow"
    database = project / "threads.sqlite"
    run = [str(exe), "run", "helpdesk/bot.py", "-m", "vpn", "--thread", "t1"]
    subprocess.run([*run, "--database", f"sqlite:///{database}"], env=env, check=True)
    revived = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(REVIVE), str(database)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert revived.stdout.split() == ["helpdesk.bot", "Ticket", "vpn"]
