"""`agentflow run --thread` and `agentflow inbox`: a conversation kept in a database, its
escalation listed, shown and resolved from the terminal, the thread resumed to its end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentflow.cli import app
from tests.server.scripted_support import SHOP_URL_ENV
from tools.db import SupportDB
from tools.seed import seed

GRAPH = "tests/server/scripted_support.py"
REFUNDED = "Sorry about the trouble. I've refunded 600.00 USD for order 1043"
runner = CliRunner()


@pytest.fixture
def databases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, SupportDB]:
    shop = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(shop, customers=20)
    monkeypatch.setenv(SHOP_URL_ENV, shop)
    return f"sqlite:///{tmp_path / 'threads.sqlite'}", SupportDB(shop)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def listed(url: str, status: str) -> list[dict[str, Any]]:
    output = cli("inbox", "list", "--status", status, "--json", "--database", url)
    return [json.loads(line) for line in output.splitlines()]


def test_a_refund_is_escalated_listed_and_approved_from_the_terminal(
    databases: tuple[str, SupportDB],
) -> None:
    url, shop = databases
    said = cli("run", GRAPH, "-m", "refund my laptop please", "--thread", "t1", "--database", url)
    assert "waiting for a person (approval" in said and "issue_refund" in said
    [item] = listed(url, "pending")
    assert (item["thread_id"], item["kind"]) == ("t1", "approval")
    # Piped, the table keeps each row on one line: the id can be cut out for a script.
    [row] = [line for line in cli("inbox", "list", "--database", url).splitlines() if "t1" in line]
    assert item["id"] in row and "issue_refund" in row
    assert item["payload"]["calls"][0]["name"] == "issue_refund"
    assert "issue_refund" in cli("inbox", "show", item["id"], "--database", url)
    assert shop.counts()["refunds"] == 0

    # No --graph: the thread was created with the scripted graph, and resumes with it.
    done = cli("inbox", "resolve", "--thread", "t1", "--approve", "--by", "sam", "--database", url)
    assert f"agent: {REFUNDED}" in done, done
    assert "-> issue_refund" not in done and '<- {"refund_id":1,"order_id":1043' in done
    assert shop.counts()["refunds"] == 1
    assert listed(url, "pending") == []
    [resolved] = listed(url, "resolved")
    assert resolved["id"] == item["id"] and resolved["resolved_by"] == "sam"


def test_a_handoff_is_answered_from_the_terminal(databases: tuple[str, SupportDB]) -> None:
    url, _ = databases
    said = cli("run", GRAPH, "-m", "a human please", "--thread", "t2", "--database", url)
    assert "waiting for a person (handoff" in said
    done = cli(
        "inbox",
        "resolve",
        "--thread",
        "t2",
        "--reply",
        "Hi, Sam here.",
        "--graph",
        GRAPH,
        "--database",
        url,
    )
    assert "agent: Hi, Sam here." in done


def test_options_that_do_not_fit_the_item_are_one_line_errors(
    databases: tuple[str, SupportDB],
) -> None:
    url, _ = databases
    cli("run", GRAPH, "-m", "refund it", "--thread", "t3", "--database", url)
    for args, message in [
        (["--thread", "t3", "--reply", "hi"], "an approval takes one of --approve, --reject"),
        (["--thread", "t3", "--edit", "{not json"], "--edit is not JSON"),
        (["nope", "--approve"], "no review item 'nope'"),
        (["--thread", "t9", "--approve"], "thread 't9' has 0 waiting escalations"),
    ]:
        result = runner.invoke(
            app, ["inbox", "resolve", *args, "--graph", GRAPH, "--database", url]
        )
        assert result.exit_code == 1
        assert message in result.output
        assert "Traceback" not in result.output


def test_a_thread_without_a_recorded_graph_asks_for_one(
    databases: tuple[str, SupportDB],
) -> None:
    """Threads created by a ThreadService given no graph file (a library user's) record
    none: resolving their escalations from the terminal names the option to give."""
    import asyncio

    from agentflow.threads import ThreadService
    from tests.server.scripted_support import graph

    url, _ = databases

    async def escalate() -> None:
        async with ThreadService(graph, database_url=url) as service:
            await service.create_thread("lib", thread_id="t4")
            await service.post("t4", "a human please")

    asyncio.run(escalate())
    result = runner.invoke(
        app, ["inbox", "resolve", "--thread", "t4", "--reply", "hi", "--database", url]
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --graph: thread 't4' has no recorded graph; name it with --graph FILE.py"
    )
