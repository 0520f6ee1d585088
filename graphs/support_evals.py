"""The support graph's eval suites: triage (classify), the resolve agent's first tool
call (tool_call) and the grounded reply (respond), >= 100 labelled cases each in
`graphs/evals/*.jsonl`. `agentflow eval graphs/support.py` runs them on every tier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentflow import AssistantMessage, ToolCall, UserMessage
from agentflow.evals import FieldsMatch, Predicate, Suite, ToolCallMatch, load_cases
from agentflow.messages import Message, ToolResultMessage
from graphs.support import Triage
from graphs.support_replies import SORRY

CASES = Path(__file__).parent / "evals"


def _asked(inputs: dict[str, Any]) -> list[Message]:
    return [UserMessage(content=inputs["message"])]


def triage_state(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"messages": _asked(inputs), "negative_turns": inputs.get("negative_turns", 0)}


def resolve_state(inputs: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {
        "messages": _asked(inputs),
        "triage": Triage(intent=inputs["intent"], confidence=0.9),
    }
    if inputs.get("customer_email"):
        state["customer_email"] = inputs["customer_email"]
    return state


def respond_state(inputs: dict[str, Any]) -> dict[str, Any]:
    """The turn as the agent loop leaves it: the customer's message, then each tool call
    with its result."""
    messages = _asked(inputs)
    for index, step in enumerate(inputs["results"]):
        call = ToolCall(id=f"call-{index}", name=step["tool"], arguments=step["arguments"])
        result = step["result"]
        content = result if isinstance(result, str) else json.dumps(result)
        messages += [
            AssistantMessage(tool_calls=[call]),
            ToolResultMessage(
                tool_call_id=call.id,
                name=call.name,
                content=content,
                is_error=step.get("is_error", False),
            ),
        ]
    triage = Triage(intent=inputs["intent"], sentiment=inputs["sentiment"], confidence=0.9)
    return {"messages": messages, "triage": triage}


def grounded(reply: str, inputs: dict[str, Any], expected: dict[str, Any]) -> str:
    """Why `reply` is not grounded in the turn's results ("" when it is): what it must say
    (dates and amounts exactly as the tools returned them), what it must not (addresses,
    emails, other orders), and whether it opens with an apology when it should."""
    problems = [f"does not say {text!r}" for text in expected["must_say"] if text not in reply]
    problems += [f"says {text!r}" for text in expected.get("must_not_say", ()) if text in reply]
    apologises = reply.startswith(SORRY)
    if apologises != expected["apologetic"]:
        problems.append("apologises" if apologises else "does not apologise")
    return "; ".join(problems)


SUITES = [
    Suite(
        kind="classify",
        node="triage",
        cases=load_cases(CASES / "classify.jsonl"),
        state=triage_state,
        output=lambda update: update["triage"],
        graders=[FieldsMatch("intent")],
        bar="accuracy >= 0.9",
    ),
    Suite(
        kind="tool_call",
        node="resolve",
        cases=load_cases(CASES / "tool_call.jsonl"),
        state=resolve_state,
        output=lambda update: update["messages"][0],
        graders=[ToolCallMatch()],
        bar="accuracy >= 0.9",
    ),
    Suite(
        kind="respond",
        node="respond",
        cases=load_cases(CASES / "respond.jsonl"),
        state=respond_state,
        output=lambda update: update["messages"][0].content,
        graders=[Predicate(grounded, "grounded")],
        bar="accuracy >= 0.9",
    ),
]
