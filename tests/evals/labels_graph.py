"""A graph with one eval suite, for `agentflow eval` tests: label a text fruit or other."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from agentflow import AgentGraph, AgentState, StepContext
from agentflow.evals import Case, FieldsMatch, Suite


class Label(BaseModel):
    label: Literal["fruit", "other"]


graph: AgentGraph[Any] = AgentGraph("labels", state=AgentState)


@graph.node(kind="classify")
async def label(state: dict[str, Any], ctx: StepContext[Any]) -> dict[str, Any]:
    return {"label": await ctx.llm(state["text"], output=Label)}


WORDS = ["an apple", "a stone", "a pear", "a car"]
graph.evals(
    Suite(
        kind="classify",
        node="label",
        cases=[
            Case(
                name=f"case-{i}",
                inputs={"text": f"{WORDS[i % 4]} #{i}"},
                expected_output={"label": "fruit" if i % 2 == 0 else "other"},
            )
            for i in range(80)
        ],
        state=dict,
        output=lambda update: update["label"],
        graders=[FieldsMatch("label")],
        bar="accuracy >= 0.9",
    )
)
