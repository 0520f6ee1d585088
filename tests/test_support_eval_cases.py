"""The support graph's evaluation suites (`graphs/evals/*.jsonl`, one file per step kind):
every case is well formed, and the graph's own code says its bar can be met.

- classify: the labels are values `Triage` accepts, every intent is covered;
- tool_call: the expected call is the intent's play's first tool, with arguments its
  schema accepts (a `null` free-text argument is graded by keywords instead);
- respond: the results are what the tools return (the read-only tools are rerun on the
  demo shop), `facts_from` reads them, and a reply `respond` renders from them can say
  every `must_say`, never says a `must_not_say`, and opens apologetically exactly when
  the case says so.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, cast, get_args

import pytest
from pydantic import ValidationError

from agentflow import (
    AssistantMessage,
    Message,
    RunContext,
    StepContext,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentflow.tools import Tool
from graphs.support import PLAYS, Intent, SupportState, Triage, respond
from graphs.support_replies import _READERS, SORRY, Fact, ReplyChoice, facts_from
from tools.db import SupportDB
from tools.seed import seed
from tools.support import SUPPORT_TOOLS, SupportContext

EVALS = Path(__file__).resolve().parent.parent / "graphs" / "evals"
KINDS = ("classify", "tool_call", "respond")
MIN_CASES = 100
"""Cases each kind's suite holds at least."""
MIN_PER_INTENT = 10
"""Classify cases each intent has at least."""
SHOP_TODAY = date(2025, 3, 3)
"""The demo shop's today (`tools/README.md`): the records' dates are relative to it."""
SLUG = r"[a-z0-9]+(-[a-z0-9]+)*"
"""A case's name: a short lowercase slug."""
LIKE = 0.7
"""Two messages sharing this share of their words are near-duplicates."""
FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "classify": ({"name", "message", "expected"}, set()),
    "tool_call": ({"name", "message", "intent", "expected"}, {"customer_email"}),
    "respond": ({"name", "message", "intent", "sentiment", "results", "expected"}, set()),
}
"""Each kind's required and optional keys."""
TOOLS: dict[str, Tool[Any]] = {t.name: t for t in SUPPORT_TOOLS}
INTENTS: tuple[str, ...] = get_args(Intent)
SPENT = {"refunded_usd"}
"""Record fields a conversation's earlier refunds change, so they may differ from the
freshly seeded shop's."""


@functools.cache
def cases(kind: str) -> list[dict[str, Any]]:
    """A suite's cases, one JSON object a line (a line that does not parse is named)."""
    found: list[dict[str, Any]] = []
    lines = (EVALS / f"{kind}.jsonl").read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            found.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{kind}.jsonl:{number}: {exc}") from exc
    return found


def ids(kind: str) -> list[str]:
    return [case["name"] for case in cases(kind)]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> SupportContext:
    url = f"sqlite:///{tmp_path_factory.mktemp('shop') / 'shop.sqlite'}"
    seed(url, today=SHOP_TODAY)
    return SupportContext(db=SupportDB(url))


# -- every kind ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_line_is_one_case_with_the_kinds_fields(kind: str) -> None:
    required, optional = FIELDS[kind]
    lines = (EVALS / f"{kind}.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= MIN_CASES, f"{kind}: {len(lines)} cases"
    for number, line in enumerate(lines, start=1):
        case = json.loads(line)
        assert isinstance(case, dict), f"{kind}.jsonl:{number}"
        keys = set(case)
        assert required <= keys <= required | optional, f"{kind}.jsonl:{number}: {keys}"
        assert re.fullmatch(SLUG, case["name"]), f"{kind}.jsonl:{number}: {case['name']!r}"
        assert isinstance(case["message"], str) and case["message"].strip()


@pytest.mark.parametrize("kind", KINDS)
def test_names_are_unique(kind: str) -> None:
    repeated = [name for name, n in Counter(ids(kind)).items() if n > 1]
    assert not repeated


def test_no_two_messages_are_the_same_or_nearly() -> None:
    messages = [(f"{kind}/{c['name']}", c["message"]) for kind in KINDS for c in cases(kind)]
    words = {name: frozenset(re.findall(r"[a-z0-9']+", text.lower())) for name, text in messages}
    seen: dict[frozenset[str], str] = {}
    for name, text in messages:
        assert words[name] not in seen, f"{name} repeats {seen[words[name]]}: {text!r}"
        seen[words[name]] = name
    for (a, wa), (b, wb) in itertools.combinations(words.items(), 2):
        assert len(wa & wb) / len(wa | wb) < LIKE, f"{a} and {b} are near-duplicates"


# -- classify -----------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("classify"), ids=ids("classify"))
def test_classify_labels_are_triage_values(case: dict[str, Any]) -> None:
    expected = case["expected"]
    assert set(expected) == {"intent", "sentiment"}
    triage = Triage.model_validate(expected)
    assert (triage.intent, triage.sentiment) == (expected["intent"], expected["sentiment"])


def test_classify_covers_every_intent() -> None:
    counts = Counter(case["expected"]["intent"] for case in cases("classify"))
    short = {intent: counts[intent] for intent in INTENTS if counts[intent] < MIN_PER_INTENT}
    assert not short, f"fewer than {MIN_PER_INTENT} cases: {short}"


# -- tool_call ----------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("tool_call"), ids=ids("tool_call"))
def test_tool_call_expects_the_plays_first_tool_with_valid_arguments(
    case: dict[str, Any],
) -> None:
    assert case["intent"] in PLAYS, f"{case['intent']!r} has no play: resolve never runs"
    expected = case["expected"]
    assert expected["tool"] == PLAYS[case["intent"]][0]
    tool = TOOLS[expected["tool"]]
    arguments: dict[str, Any] = expected["arguments"]
    free = [param for param, value in arguments.items() if value is None]
    if free:  # free text (a search query): graded by the words it must contain
        keywords = expected["keywords"]
        assert set(expected) == {"tool", "arguments", "keywords"}
        assert keywords and all(isinstance(k, str) and k.strip() for k in keywords)
        for param in free:
            assert tool.parameters["properties"][param]["type"] == "string", param
        arguments = {**arguments, **dict.fromkeys(free, " ".join(keywords))}
    else:
        assert set(expected) == {"tool", "arguments"}
    validated = tool.validate(arguments)
    given = {param: validated[param] for param in arguments}
    assert given == arguments and all(
        type(given[param]) is type(value) for param, value in arguments.items()
    ), f"the arguments are not already of the tool's types: {arguments} -> {given}"
    for param, value in expected["arguments"].items():
        if isinstance(value, str):  # the customer's words (an address), as they wrote them
            assert value in case["message"], param
    assert "@" in case.get("customer_email", "@"), "an email address, when the channel knows it"


def about_a_customers_order(kind: str) -> list[dict[str, Any]]:
    return [
        case
        for case in cases(kind)
        if "customer_email" in case and "order_id" in case["expected"]["arguments"]
    ]


@pytest.mark.parametrize(
    "case",
    about_a_customers_order("tool_call"),
    ids=[case["name"] for case in about_a_customers_order("tool_call")],
)
def test_tool_call_customers_ask_about_their_own_orders(
    case: dict[str, Any], shop: SupportContext
) -> None:
    """A conversation bound to its customer sees only their orders: a case that names the
    customer asks about one of theirs (or about one nobody has)."""
    email, order_id = case["customer_email"], case["expected"]["arguments"]["order_id"]
    if shop.db.find_order(order_id) is not None:
        assert shop.db.find_order(order_id, customer_email=email) is not None, email


# -- respond ------------------------------------------------------------------------


def content(result: dict[str, Any]) -> str:
    """A result as the tool's message carries it: text as is, a record as compact JSON."""
    value = result["result"]
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def turn(case: dict[str, Any]) -> list[Message]:
    """The turn as the resolve agent leaves it: the customer's message, then one round per
    result (the model's call, the tool's result)."""
    messages: list[Message] = [UserMessage(content=case["message"])]
    for number, result in enumerate(case["results"]):
        call = ToolCall(id=f"call-{number}", name=result["tool"], arguments=result["arguments"])
        messages.append(AssistantMessage(tool_calls=[call]))
        messages.append(
            ToolResultMessage(
                tool_call_id=call.id,
                name=call.name,
                content=content(result),
                is_error=result["is_error"],
            )
        )
    return messages


@dataclass(kw_only=True)
class Chooser:
    """Stands in for the respond step's model: picks the first opening its grammar allows,
    the given fact keys and a closing, and remembers the openings it was allowed."""

    keys: list[str]
    openings: tuple[str, ...] = field(default=())

    async def llm(self, prompt: str, *, output: type[ReplyChoice], system: str) -> ReplyChoice:
        self.openings = get_args(output.model_fields["opening"].annotation)
        closing = get_args(output.model_fields["closing"].annotation)[0]
        return output.model_validate(
            {"opening": self.openings[0], "facts": self.keys, "closing": closing}
        )


def needed_keys(facts: list[Fact], must_say: list[str]) -> list[str]:
    """The optional facts a reply must pick so that it says everything in `must_say`."""
    keys: list[str] = []
    for text in must_say:
        saying = [f for f in facts if text in f.text]
        assert saying, f"no fact says {text!r}: {[f.text for f in facts]}"
        if not any(f.outcome for f in saying):
            keys.append(saying[0].key)
    return list(dict.fromkeys(keys))


@pytest.mark.parametrize("case", cases("respond"), ids=ids("respond"))
async def test_respond_results_are_what_the_tools_return(
    case: dict[str, Any], shop: SupportContext
) -> None:
    assert case["intent"] in PLAYS, f"{case['intent']!r} has no play: respond never runs"
    assert [r["tool"] for r in case["results"]] == list(PLAYS[case["intent"]])
    for number, result in enumerate(case["results"]):
        assert set(result) == {"tool", "arguments", "result", "is_error"}
        tool = TOOLS[result["tool"]]
        call = ToolCall(id=f"call-{number}", name=tool.name, arguments=result["arguments"])
        ctx = RunContext(deps=shop, run_id="eval", thread_id="eval", tool_call_id=call.id)
        value = result["result"]
        assert not result["is_error"] or isinstance(value, str), "an error is a message"
        try:
            arguments = tool.validate(result["arguments"])
        except ValidationError:  # the model's call was invalid: the tool's own refusal
            outcome = await tool.run(call, ctx)
            assert result["is_error"] and value == outcome.message.content
            continue
        if result["is_error"]:
            continue  # refused, rejected or timed out: a message, read by `facts_from`
        if not tool.side_effects:  # reads the shop or the help centre: ask it again
            if tool.sandbox == "none":
                fresh = (await tool.run(call, ctx)).message.content
            else:
                fresh = json.dumps(tool.function(**arguments))
            assert_same(value, fresh)
            continue
        reader, _ = _READERS[tool.name]  # a side effect's record, as the tool serialises it
        assert isinstance(value, dict)
        record = cast("dict[str, Any]", value)
        assert reader.dump_python(reader.validate_python(record), mode="json") == record
        shared = set(record) & set(arguments)  # what the call asked is what it did
        assert {k: record[k] for k in shared} == {k: arguments[k] for k in shared}


def assert_same(value: Any, fresh: str) -> None:
    if isinstance(value, str):
        assert value == fresh
        return
    again = json.loads(fresh)
    if isinstance(value, dict) and isinstance(again, dict):
        value = {k: v for k, v in value.items() if k not in SPENT}
        again = {k: v for k, v in again.items() if k not in SPENT}
    assert value == again


@pytest.mark.parametrize("case", cases("respond"), ids=ids("respond"))
async def test_respond_can_meet_the_bar(case: dict[str, Any]) -> None:
    triage = Triage(intent=case["intent"], sentiment=case["sentiment"])
    expected = case["expected"]
    assert set(expected) == {"must_say", "must_not_say", "apologetic"}
    assert expected["must_say"], "a case says what the reply must contain"
    messages = turn(case)
    facts = facts_from(messages)
    for number, result in enumerate(case["results"]):
        if not result["is_error"] and not isinstance(result["result"], str):
            read = facts_from(messages[1 + 2 * number : 3 + 2 * number])
            problems = [f.text for f in read if f.key.endswith("_problem")]
            assert not problems, f"facts_from did not read the record: {problems}"
    for text in expected["must_not_say"]:
        assert not any(text in f.text for f in facts), f"a fact says {text!r}"
    chooser = Chooser(keys=needed_keys(facts, expected["must_say"]))
    state = SupportState(messages=messages, triage=triage)
    update = await respond(state, cast("StepContext[SupportContext]", chooser))
    [reply] = update["messages"]
    assert all(text in reply.content for text in expected["must_say"]), reply.content
    assert not any(text in reply.content for text in expected["must_not_say"]), reply.content
    assert (set(chooser.openings) == set(SORRY)) is expected["apologetic"], chooser.openings
