"""The support graph's eval suites: triage (classify), the resolve agent's first tool
call (tool_call) and the grounded reply (respond), >= 100 labelled cases each in
`graphs/evals/*.jsonl`. `agentflow eval graphs/support.py` runs them on every tier.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

from agentflow import AssistantMessage, ToolCall, UserMessage
from agentflow.evals import FieldsMatch, Predicate, Suite, ToolCallMatch, load_cases
from agentflow.messages import Message, ToolResultMessage
from graphs.support import UNTRIAGED, SupportState, Triage, last_customer_text, this_turn
from graphs.support_replies import GLAD, SORRY, Closing

CASES = Path(__file__).parent / "evals"

CAPTURED = CASES / "captured"
"""Cases made of recorded runs (`agentflow eval capture graphs/support.py`); those a
reviewer accepted or edited (`agentflow eval label`) count."""


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


def cases(kind: str) -> list[Any]:
    """The kind's hand-written cases, then its reviewed captured ones."""
    captured = CAPTURED / f"{kind}.jsonl"
    found = load_cases(CASES / f"{kind}.jsonl")
    return found + load_cases(captured) if captured.is_file() else found


def triage_inputs(state: SupportState) -> dict[str, Any]:
    """A state triage ran on, as a classify case's inputs (the inverse of `triage_state`)."""
    return {"message": last_customer_text(state), "negative_turns": state.get("negative_turns", 0)}


def triage_label(update: dict[str, Any]) -> dict[str, Any]:
    return update["triage"].model_dump(include={"intent", "sentiment"})


def resolve_inputs(state: SupportState) -> dict[str, Any] | None:
    """A state the resolve agent ran on, as a tool_call case's inputs: only its first
    request of a turn (a later one's inputs would need the turn's calls so far)."""
    if this_turn(state):
        return None
    intent = state.get("triage", UNTRIAGED).intent
    inputs = {"message": last_customer_text(state), "intent": intent}
    email = state.get("customer_email")
    if email:
        inputs["customer_email"] = email
    return inputs


def resolve_label(update: dict[str, Any]) -> dict[str, Any] | None:
    """The first tool call the agent made; None when it answered without one."""
    calls = update["messages"][0].tool_calls
    return {"tool": calls[0].name, "arguments": calls[0].arguments} if calls else None


def respond_inputs(state: SupportState) -> dict[str, Any]:
    """A state respond ran on, as a respond case's inputs: each of the turn's tool calls
    with its result (parsed when it is JSON), as `respond_state` rebuilds them."""
    turn = this_turn(state)
    answers = {m.tool_call_id: m for m in turn if isinstance(m, ToolResultMessage)}
    results: list[dict[str, Any]] = []
    for message in turn:
        for call in message.tool_calls if isinstance(message, AssistantMessage) else ():
            answer = answers.get(call.id)
            if answer is not None:
                results.append(
                    {
                        "tool": call.name,
                        "arguments": call.arguments,
                        "result": _parsed(answer.content),
                        "is_error": answer.is_error,
                    }
                )
    triage = state.get("triage", UNTRIAGED)
    return {
        "message": last_customer_text(state),
        "intent": triage.intent,
        "sentiment": triage.sentiment,
        "results": results,
    }


def _parsed(content: str) -> Any:
    """A result as `respond_state` takes it: JSON parsed, unless it is a string (which
    it would pass on without its quotes)."""
    try:
        value = json.loads(content)
    except json.JSONDecodeError:
        return content
    return content if isinstance(value, str) else value


def respond_label(update: dict[str, Any]) -> dict[str, Any]:
    """What the reply said between its opening and closing as what a reply must say (a
    reviewer narrows it to the facts that matter), apologetic as its opening was."""
    reply: str = update["messages"][0].content
    body = reply
    for opening in (*SORRY, *GLAD):
        body = body.removeprefix(opening)
    for closing in get_args(Closing):
        body = body.removesuffix(closing)
    body = body.strip()
    return {"must_say": [body] if body else [], "apologetic": reply.startswith(SORRY)}


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
        cases=cases("classify"),
        state=triage_state,
        output=lambda update: update["triage"],
        capture=triage_inputs,
        label=triage_label,
        graders=[FieldsMatch("intent")],
        bar="accuracy >= 0.9",
    ),
    Suite(
        kind="tool_call",
        node="resolve",
        cases=cases("tool_call"),
        state=resolve_state,
        output=lambda update: update["messages"][0],
        capture=resolve_inputs,
        label=resolve_label,
        graders=[ToolCallMatch()],
        bar="accuracy >= 0.9",
    ),
    Suite(
        kind="respond",
        node="respond",
        cases=cases("respond"),
        state=respond_state,
        output=lambda update: update["messages"][0].content,
        capture=respond_inputs,
        label=respond_label,
        graders=[Predicate(grounded, "grounded")],
        bar="accuracy >= 0.9",
    ),
]
