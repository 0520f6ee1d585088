"""Cases from production: conversations of the scripted support graph kept in a real
thread database (SQLite and PostgreSQL), captured into proposed cases with personal data
redacted, re-captured without duplicates, reviewed at the terminal, then loaded."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agentflow import evals_capture_cli
from agentflow.cli import app
from agentflow.evals import load_cases
from agentflow.evals.capture import capture_cases
from agentflow.exceptions import ConfigError
from agentflow.threads import ThreadService
from graphs.support import last_customer_text, this_turn
from graphs.support_evals import SUITES, respond_state
from graphs.support_replies import facts_from
from tests.server.scripted_support import SHOP_URL_ENV, graph, make_context
from tools.seed import seed

runner = CliRunner()
ASKED = "Where is order 1042? Write to jane.doe@example.com"
AGAIN = "Thanks. Is order 1042 still on time?"
REFUND = "Please refund order 1043, I paid with card 4111 1111 1111 1111"
BOB = "bob@example.com"
"""A thread named after its customer: its name must not reach a case either."""
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    seed(url, customers=20)
    monkeypatch.setenv(SHOP_URL_ENV, url)


async def converse(url: str) -> None:
    """Two threads: Ada asks twice where her order is; another customer wants a refund
    that waits for a person's approval (its respond step never runs)."""
    async with ThreadService(graph, database_url=url, context=make_context()) as service:
        await service.create_thread("test", thread_id="t1", customer_email="ada@example.com")
        await service.post("t1", ASKED)
        await service.post("t1", AGAIN)
        await service.create_thread("test", thread_id=BOB)
        turn = await service.post(BOB, REFUND)
        assert [item.kind for item in turn.pending] == ["approval"]


async def checkpoint(url: str, thread: str, checkpoint_id: str) -> Any:
    """The thread's state at a checkpoint, read without the code under test."""
    async with ThreadService(graph, database_url=url) as service:
        config = {"configurable": {"thread_id": thread, "checkpoint_id": checkpoint_id}}
        return await service._app.aget_state(config)


@pytest.mark.usefixtures("shop")
def test_each_run_of_a_suites_node_becomes_a_redacted_proposed_case(store_url: str) -> None:
    asyncio.run(converse(store_url))
    captured = asyncio.run(capture_cases(graph, SUITES, database_url=store_url, now=NOW))
    assert captured.threads == ["t1", BOB]
    rows = captured.rows

    # classify: every turn's triage, the customer's message with its email and card gone.
    messages = [row["message"] for row in rows["classify"]]
    assert messages == [
        "Where is order 1042? Write to [EMAIL]",
        "Thanks. Is order 1042 still on time?",
        "Please refund order 1043, I paid with card [CARD]",
    ]
    first = rows["classify"][0]
    assert first["expected"] == {"intent": "order_status", "sentiment": "neutral"}
    assert first["negative_turns"] == 0 and first["review"] == "unreviewed"
    source = first["source"]
    assert (source["thread"], source["tier"]) == ("t1", "tools")
    assert source["captured_at"] == "2026-01-02T03:04:05+00:00"
    assert first["name"] == f"cap-t1-{source['checkpoint']}"
    # The checkpoint named is the one triage ran on, with the customer's words unredacted.
    state = asyncio.run(checkpoint(store_url, "t1", source["checkpoint"]))
    assert state.next == ("triage",) and last_customer_text(state.values) == ASKED
    refund = rows["classify"][2]
    assert refund["expected"]["intent"] == "refund"
    assert refund["name"].startswith("cap-[EMAIL]-") and refund["source"]["thread"] == "[EMAIL]"

    # tool_call: only each turn's first request (a later one needs the turn's calls so far).
    calls = [(row["message"][:6], row["expected"]) for row in rows["tool_call"]]
    assert calls == [
        ("Where ", {"tool": "lookup_order", "arguments": {"order_id": 1042}}),
        ("Thanks", {"tool": "lookup_order", "arguments": {"order_id": 1042}}),
        ("Please", {"tool": "lookup_order", "arguments": {"order_id": 1043}}),
    ]
    assert rows["tool_call"][0]["customer_email"] == "[EMAIL]"
    assert "customer_email" not in rows["tool_call"][2]
    # Left out: Bob's round after his lookup (it asks for the refund). Ada's turns end at
    # their lookup's results: the loop leaves from its tools node, with no round after.
    assert captured.left_out == {"tool_call": 1}
    first_call = rows["tool_call"][0]["source"]["checkpoint"]
    resolved = asyncio.run(checkpoint(store_url, "t1", first_call))
    assert resolved.next == ("resolve",) and this_turn(resolved.values) == []

    # respond: Ada's two replies; the refund waits for a person, so it has none yet.
    replies = rows["respond"]
    assert len(replies) == 2
    reply = replies[0]
    assert (reply["intent"], reply["sentiment"]) == ("order_status", "neutral")
    [looked_up] = reply["results"]
    assert (looked_up["tool"], looked_up["arguments"]) == ("lookup_order", {"order_id": 1042})
    assert looked_up["result"]["customer_email"] == "[EMAIL]" and not looked_up["is_error"]
    assert reply["expected"]["apologetic"] is False
    # The rebuilt results read to respond as the turn's own did: the same outcome.
    facts = facts_from(respond_state(reply)["messages"])
    assert reply["expected"]["must_say"] == [" ".join(f.text for f in facts if f.outcome)]
    assert reply["expected"]["must_say"][0].startswith("Order 1042 has shipped.")

    everything = json.dumps(rows)
    for personal in ("jane.doe@example.com", "ada@example.com", "4111", BOB):
        assert personal not in everything

    # A suite's own capture failing, or returning what no row can hold, is one error.
    broken = replace(SUITES[0], capture=lambda state: state["nope"])
    with pytest.raises(ConfigError, match=r"capture failed on thread 't1', checkpoint .*KeyError"):
        asyncio.run(capture_cases(graph, [broken], database_url=store_url, threads=["t1"]))
    clashing = replace(SUITES[0], capture=lambda state: {"name": "x", "review": "accepted"})
    with pytest.raises(ConfigError, match=r"none named .*; got \['name', 'review'\]"):
        asyncio.run(capture_cases(graph, [clashing], database_url=store_url, threads=["t1"]))


def cli(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("shop")
def test_capture_writes_new_cases_once_and_a_reviewer_labels_them(
    tmp_path: Path, store_url: str
) -> None:
    asyncio.run(converse(store_url))
    graph_file = tmp_path / f"support_{uuid.uuid4().hex}.py"  # a module name of its own
    graph_file.write_text("from tests.server.scripted_support import graph, make_context\n")
    folder = tmp_path / "evals" / "captured"  # next to the graph file, by default
    said = cli("eval", "capture", str(graph_file), "--database", store_url)
    assert f"classify: 3 new cases in {folder / 'classify.jsonl'} (0 already there)" in said
    assert "tool_call: 3 new cases" in said and "1 run is no case" in said
    assert "respond: 2 new cases" in said
    assert f"label them: agentflow eval label {folder / 'classify.jsonl'}" in said
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert sorted(files) == ["classify.jsonl", "respond.jsonl", "tool_call.jsonl"]
    classify = folder / "classify.jsonl"
    assert load_cases(classify) == []  # nothing counts before a reviewer looked
    umask = os.umask(0o022)
    os.umask(umask)
    assert classify.stat().st_mode & 0o777 == 0o666 & ~umask  # a file for the repository

    again = cli("eval", "capture", str(graph_file), "--database", store_url, "--thread", "t1")
    assert "classify: 0 new cases" in again and "(2 already there)" in again
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == files

    edited = {"intent": "shipping", "sentiment": "neutral"}
    done = cli("eval", "label", str(classify), input=f"a\ne\n{json.dumps(edited)}\nr\n")
    assert "Where is order 1042? Write to [EMAIL]" in done
    assert 'proposed: {"intent": "order_status", "sentiment": "neutral"}' in done
    assert "1 accepted, 1 edited, 1 rejected, 0 skipped; 0 left to review" in done
    rows = [json.loads(line) for line in classify.read_text().splitlines()]
    assert [row["review"] for row in rows] == ["accepted", "edited", "rejected"]
    assert rows[1]["expected"] == edited
    assert rows[0]["expected"] == {"intent": "order_status", "sentiment": "neutral"}

    cases = load_cases(classify)
    assert [case.name for case in cases] == [rows[0]["name"], rows[1]["name"]]
    assert cases[1].expected_output == edited
    assert cases[1].inputs == {"message": AGAIN, "negative_turns": 0}
    listed = cli("eval", "label", str(classify), "--list")
    assert listed.splitlines() == [
        "unreviewed: 0",
        "accepted: 1",
        "edited: 1",
        "rejected: 1",
        "cases that count: 2",
    ]


def unreviewed(path: Path, count: int) -> None:
    rows = [
        {"name": f"cap-{i}", "message": f"m{i}", "expected": {"intent": "other"}}
        | {"review": "unreviewed", "source": {"thread": "t", "tier": "tools"}}
        for i in range(count)
    ]
    hand_written = {"name": "by-hand", "message": "hi", "expected": {"intent": "other"}}
    text = "\n".join(json.dumps(row) for row in [hand_written, *rows])
    path.write_text(text + "\n")


def test_every_decision_is_saved_at_once_and_bad_answers_are_asked_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cases.jsonl"
    unreviewed(path, 4)
    path.chmod(0o640)
    before = path.read_text().splitlines()
    # An unknown answer, then JSON that does not parse, are asked again; the input
    # then ends (a reviewer's Ctrl-D) after two decisions: both are in the file.
    said = cli("eval", "label", str(path), input='x\na\ne\n{"intent": \n"other"\n')
    assert "answer a, e, r, s or q" in said and "not JSON" in said
    assert "1 accepted, 1 edited, 0 rejected, 0 skipped; 2 left to review" in said
    after = path.read_text().splitlines()
    assert after[0] == before[0]  # the hand-written line, byte for byte
    assert [json.loads(line).get("review") for line in after] == [
        None,
        "accepted",
        "edited",
        "unreviewed",
        "unreviewed",
    ]
    assert json.loads(after[2])["expected"] == "other"
    assert after[3:] == before[3:]
    assert path.stat().st_mode & 0o777 == 0o640  # rewritten, its permissions kept

    said = cli("eval", "label", str(path), input="s\nq\n")
    assert "0 accepted, 0 edited, 0 rejected, 1 skipped; 2 left to review" in said
    assert path.read_text().splitlines() == after
    assert "written by hand: 1" in cli("eval", "label", str(path), "--list")
    assert [case.name for case in load_cases(path)] == ["by-hand", "cap-0", "cap-1"]


def test_a_decision_is_in_the_file_before_the_next_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cases.jsonl"
    unreviewed(path, 2)
    answers = iter(["a"])

    def ask(prompt: str) -> str | None:
        try:
            return next(answers)
        except StopIteration:
            raise KeyboardInterrupt from None  # the reviewer's Ctrl-C at the second case

    monkeypatch.setattr(evals_capture_cli, "_ask", ask)
    result = runner.invoke(app, ["eval", "label", str(path)])
    assert result.exit_code == 130  # as a shell reports Ctrl-C
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row.get("review") for row in rows] == [None, "accepted", "unreviewed"]


def test_load_cases_refuses_an_unknown_review_state(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    path.write_text('{"name": "a", "review": "acepted"}\n')
    with pytest.raises(ConfigError, match="line 1: review is one of unreviewed, accepted"):
        load_cases(path)


def errors(tmp_path: Path) -> list[tuple[list[str], str]]:
    graph_file = "tests/server/scripted_support.py"
    plain = tmp_path / "plain.sqlite"
    sqlite3.connect(plain).close()
    bad_review = tmp_path / "bad.jsonl"
    bad_review.write_text('{"name": "a", "review": "maybe"}\n')
    capture = ["eval", "capture", graph_file, "--database"]
    return [
        ([*capture, "mysql://db/x"], "has an unknown scheme 'mysql'"),
        ([*capture, f"sqlite:///{tmp_path / 'none.sqlite'}"], "no thread database at"),
        ([*capture, f"sqlite:///{plain}"], "cannot list the threads"),
        ([*capture, f"sqlite:///{plain}", "--thread", "nope"], "no thread 'nope'"),
        ([*capture, f"sqlite:///{plain}", "--kinds", "plan"], "kind 'plan' has no suite"),
        (["eval", "label", str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
        (["eval", "label", str(bad_review)], "line 1: review is one of"),
    ]


def test_user_errors_are_one_line(tmp_path: Path) -> None:
    for args, message in errors(tmp_path):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
