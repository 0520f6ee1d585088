"""Running suites on tiers, with scripted tiers of known accuracy: figures, failed cases
with their reasons, invalid outputs, budgets, judges, and no fallbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from agentflow import AgentGraph, AgentState, StepContext, tool
from agentflow.costs import GpuPrice, TokenPrice
from agentflow.evals import (
    Case,
    EvalSettings,
    FieldsMatch,
    LLMJudge,
    Suite,
    ToolCallMatch,
    evaluate_suite,
    evaluate_suites,
)
from agentflow.evals.report import build_report, routing_change
from agentflow.exceptions import ConfigError, ModelError
from agentflow.messages import ToolCall, UserMessage
from agentflow.models.base import ModelRequest
from agentflow.models.test import FunctionModel
from agentflow.routing import Router, RoutingPolicy, Tier


class Label(BaseModel):
    label: Literal["fruit", "other"]


def truth(text: str) -> str:
    return "fruit" if any(word in text for word in ("apple", "pear", "plum")) else "other"


def labeller(wrong: set[int] | None = None, *, garbage: bool = False) -> FunctionModel:
    """Labels right, except on the cases numbered in `wrong`; or answers non-JSON."""

    def answer(req: ModelRequest) -> str:
        text = str(req.messages[-1].content)
        if garbage:
            return "I think it is a fruit"
        label = truth(text)
        number = int(text.split("#")[1])
        if wrong and number in wrong:
            label = "other" if label == "fruit" else "fruit"
        return json.dumps({"label": label})

    return FunctionModel(answer)


CASES = [
    Case(
        name=f"case-{i}",
        inputs={"text": f"{['an apple', 'a stone', 'a pear', 'a car'][i % 4]} #{i}"},
        expected_output={"label": "fruit" if i % 2 == 0 else "other"},
    )
    for i in range(100)
]

graph: AgentGraph[Any] = AgentGraph("labels", state=AgentState)


@graph.node(kind="classify")
async def label(state: dict[str, Any], ctx: StepContext[Any]) -> dict[str, Any]:
    return {"label": await ctx.llm(state["text"], output=Label)}


SUITE = Suite(
    kind="classify",
    node="label",
    cases=CASES,
    state=dict,
    output=lambda update: update["label"],
    graders=[FieldsMatch("label")],
    bar="accuracy >= 0.9",
)
CHEAP = GpuPrice(gpu_hour_usd=0.36, tokens_per_s=1000)  # $1e-7 per token
MID = GpuPrice(gpu_hour_usd=3.6, tokens_per_s=1000)  # $1e-6 per token
FRONTIER = TokenPrice(input=3.0, output=15.0)


def router(**tiers: Any) -> Router:
    made = [Tier(name=name, model=model, price=price) for name, (model, price) in tiers.items()]
    for tier in made:
        tier.self_hosted = True
    policy = RoutingPolicy(kinds={"classify": made[-1].name}, fallbacks={})
    return Router(made, policy)


async def test_each_tier_is_measured_and_the_cheapest_clearing_the_bar_is_recommended() -> None:
    tiers = router(
        tiny=(labeller(wrong=set(range(0, 100, 7))), CHEAP),  # 15 wrong: 0.85
        mid=(labeller(wrong={3}), MID),  # 1 wrong: 0.99, lower bound 0.946
        frontier=(labeller(), FRONTIER),
    )
    results = await evaluate_suites(graph, [SUITE], list(tiers.tiers), tiers, EvalSettings())
    by_tier = {r.tier: r for r in results}
    assert [by_tier[t].passed for t in ("tiny", "mid", "frontier")] == [85, 99, 100]
    assert by_tier["mid"].accuracy_interval[0] == pytest.approx(0.9455, abs=1e-3)
    assert by_tier["tiny"].meets_bar is False
    # Cost from the calls' token counts and the tiers' prices.
    mid = by_tier["mid"]
    tokens = sum(case.tokens for case in mid.cases)
    assert mid.cost_per_case == pytest.approx(tokens * 1e-6 / 100)
    assert (by_tier["frontier"].cost_per_case or 0) > 10 * (mid.cost_per_case or 0)
    report = build_report("labels", results, {"classify": "frontier"})
    assert report.recommendations["classify"].tier == "mid"
    assert report.changes() == {"classify": "mid"}


async def test_a_failed_case_shows_its_input_output_and_the_graders_reason() -> None:
    tiers = router(tiny=(labeller(wrong={2}), CHEAP))
    result = await evaluate_suite(graph, SUITE, "tiny", tiers, EvalSettings())
    failed = [case for case in result.cases if not case.passed]
    assert [case.name for case in failed] == ["case-2"]
    case = failed[0]
    assert case.inputs == {"text": "a pear #2"}
    assert case.output == Label(label="other")
    assert case.reasons == ["FieldsMatch: label: got 'other', expected 'fruit'"]
    assert case.valid


async def test_an_invalid_output_fails_the_case_and_the_validity_rate() -> None:
    tiers = router(broken=(labeller(garbage=True), CHEAP))
    result = await evaluate_suite(graph, SUITE, "broken", tiers, EvalSettings())
    assert result.passed == 0
    assert result.validity == 0.0
    first = result.cases[0]
    assert first.output is None
    assert first.reasons[0].startswith("OutputValidationError: ")
    assert first.calls == 3  # the first answer and its two retries, all priced
    assert first.cost_usd is not None and first.cost_usd > 0


async def test_a_tier_under_test_never_falls_back() -> None:
    def down(req: ModelRequest) -> str:
        raise ModelError("connection refused", model="down", transient=True)

    tiers = router(frontier=(labeller(), FRONTIER), down=(FunctionModel(down), CHEAP))
    tiers.policy.fallbacks = {"down": ["frontier"]}
    result = await evaluate_suite(graph, SUITE, "down", tiers, EvalSettings())
    assert result.passed == 0
    assert result.cases[0].reasons == ["ModelError: connection refused"]


async def test_the_eval_budget_stops_cases_and_an_incomplete_tier_is_not_recommended() -> None:
    tiers = router(cheap=(labeller(), CHEAP), frontier=(labeller(), FRONTIER))
    settings = EvalSettings(budget_usd=0.002, concurrency=1)
    results = await evaluate_suites(graph, [SUITE], ["cheap", "frontier"], tiers, settings)
    spent = sum((case.cost_usd or 0) for r in results for case in r.cases)
    assert spent <= 0.002
    frontier = next(r for r in results if r.tier == "frontier")
    assert not frontier.complete
    skipped = [case for case in frontier.cases if case.skipped]
    assert skipped and skipped[0].reasons[0].startswith("not run: ")
    report = build_report("labels", results, {"classify": "frontier"})
    assert "frontier: not every case ran (budget)" in report.recommendations["classify"].rejected


async def test_the_policys_run_budget_applies_to_each_case() -> None:
    tiers = router(frontier=(labeller(), FRONTIER))
    tiers.policy.budget_usd_per_run = 1e-9
    result = await evaluate_suite(graph, SUITE, "frontier", tiers, EvalSettings())
    assert all(case.skipped for case in result.cases)
    assert result.cost_per_case is None and not result.complete


async def test_an_llm_judge_grades_on_its_own_tier_and_its_cost_is_kept_apart() -> None:
    asked: list[str] = []

    def judge(req: ModelRequest) -> str:
        prompt = str(req.messages[-1].content)
        asked.append(prompt)
        passed = '{"label": "fruit"}' in prompt.split("Output to grade:")[1]
        reason = "it names a fruit" if passed else "no fruit"
        return json.dumps({"reason": reason, "passed": passed})

    tiers = router(judge=(FunctionModel(judge), FRONTIER), cheap=(labeller(), CHEAP))
    suite = Suite(
        kind="classify",
        node="label",
        cases=CASES[:4],
        state=dict,
        output=lambda update: update["label"],
        graders=[LLMJudge(rubric="Pass when the label is fruit.", tier="judge")],
        bar="accuracy >= 0.5",
    )
    result = await evaluate_suite(graph, suite, "cheap", tiers, EvalSettings())
    assert [case.passed for case in result.cases] == [True, False, True, False]
    assert result.cases[1].reasons == ["LLMJudge: judge: no fruit"]
    assert all("Rubric:\nPass when the label is fruit." in prompt for prompt in asked)
    assert all(case.judge_cost_usd > 0 for case in result.cases)
    own = sum(case.cost_usd or 0 for case in result.cases)
    assert own < sum(case.judge_cost_usd for case in result.cases)  # judge at frontier prices


@tool
def lookup_order(order_id: int) -> str:
    """Look an order up."""
    raise AssertionError("an eval of the tool choice never runs the tool")


async def test_tool_choice_is_graded_on_the_agents_call_without_running_the_tool() -> None:
    agent: AgentGraph[Any] = AgentGraph("agent", state=AgentState)
    agent.agent("resolve", tools=[lookup_order])

    def caller(req: ModelRequest) -> ToolCall:
        number = int(str(req.messages[-1].content).split()[-1])
        order_id = number + 1 if number == 7 else number  # one wrong argument
        return ToolCall(id="c1", name="lookup_order", arguments={"order_id": order_id})

    tiers = router(glm=(FunctionModel(caller), CHEAP))
    tiers.policy.kinds = {"tool_call": "glm"}
    suite = Suite(
        kind="tool_call",
        node="resolve",
        cases=[
            Case(
                name=f"order-{n}",
                inputs=f"where is order {n}",
                expected_output={"tool": "lookup_order", "arguments": {"order_id": n}},
            )
            for n in range(5, 10)
        ],
        state=lambda text: {"messages": [UserMessage(content=text)]},
        output=lambda update: update["messages"][0],
        graders=[ToolCallMatch()],
        bar="accuracy >= 0.5",
    )
    result = await evaluate_suite(agent, suite, "glm", tiers, EvalSettings())
    assert [case.passed for case in result.cases] == [True, True, False, True, True]
    assert result.cases[2].reasons == ["ToolCallMatch: order_id: got 8, expected 7"]


async def test_a_suite_whose_node_has_another_kind_is_a_config_error() -> None:
    wrong = Suite(
        kind="respond",
        node="label",
        cases=CASES[:1],
        state=dict,
        graders=[FieldsMatch()],
        bar="accuracy >= 0.5",
    )
    tiers = router(cheap=(labeller(), CHEAP))
    with pytest.raises(ConfigError, match="whose kind is 'classify', not 'respond'"):
        await evaluate_suites(graph, [wrong], ["cheap"], tiers, EvalSettings())


def test_the_routing_change_keeps_the_files_comments_and_shows_a_diff(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    path.write_text(
        '[tiers.a]\nmodel = "local:"\n\n[routing]\n# triage is cheap\n'
        'classify = "frontier"  # for now\nrespond = "a"\n'
    )
    change = routing_change(path, {"classify": "a"})
    assert '# triage is cheap\nclassify = "a"  # for now\nrespond = "a"\n' in change.text
    assert '-classify = "frontier"  # for now\n+classify = "a"  # for now\n' in change.diff
    assert path.read_text().count("frontier") == 1  # nothing written
