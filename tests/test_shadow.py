"""Shadow mode: sampled live steps also go to a candidate tier in the background, graded
for agreement, and never change, delay or charge the reply."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from pydantic import BaseModel
from typer.testing import CliRunner

from agentflow import AgentGraph, AgentState, StepContext, tracing
from agentflow.cli import app
from agentflow.config import load_config
from agentflow.costs import GpuPrice, TokenPrice
from agentflow.exceptions import ConfigError, ModelError
from agentflow.messages import UserMessage
from agentflow.models.base import ModelRequest
from agentflow.models.test import FunctionModel
from agentflow.routing import Router, RoutingPolicy, Tier
from agentflow.shadow import ShadowPolicy


class Label(BaseModel):
    label: Literal["fruit", "other"]


class LabelState(AgentState, total=False):
    label: Label


def labeller(*, wrong_on: str = "") -> FunctionModel:
    def answer(req: ModelRequest) -> str:
        text = str(req.messages[-1].content)
        label = "fruit" if "apple" in text or "pear" in text else "other"
        if wrong_on and wrong_on in text:
            label = "other" if label == "fruit" else "fruit"
        return json.dumps({"label": label})

    return FunctionModel(answer)


def build(candidate: Any, tmp_path: Path, *, hosted: bool = False) -> tuple[Any, Router]:
    tiers = [
        Tier(name="big", model=labeller(), price=TokenPrice(input=3.0, output=15.0)),
        Tier(name="small", model=candidate, price=GpuPrice(gpu_hour_usd=1.0, tokens_per_s=1000)),
    ]
    tiers[0].self_hosted = True
    tiers[1].self_hosted = not hosted
    shadow = ShadowPolicy(kinds={"classify": "small"}, sample=1.0, log=tmp_path / "shadow.jsonl")
    router = Router(tiers, RoutingPolicy(kinds={"classify": "big"}, shadow=shadow))
    graph: AgentGraph[Any] = AgentGraph("labels", state=LabelState, router=router)

    @graph.node(kind="classify")
    async def label(state: dict[str, Any], ctx: StepContext[Any]) -> dict[str, Any]:
        text = state["messages"][-1].content
        return {"label": await ctx.llm(text, output=Label)}

    graph.edge("__start__", "label").edge("label", "__end__")
    return graph.compile(), router


def records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "shadow.jsonl").read_text().splitlines()]


async def ask(compiled: Any, text: str) -> dict[str, Any]:
    return await compiled.ainvoke({"messages": [UserMessage(content=text)]})


async def test_sampled_steps_are_compared_and_the_replies_are_the_serving_tiers(
    tmp_path: Path,
) -> None:
    compiled, router = build(labeller(wrong_on="pear"), tmp_path)
    texts = ["an apple", "a pear", "a stone"]
    states = [await ask(compiled, text) for text in texts]
    await router.aclose()  # drains the comparisons in flight
    assert [s["label"].label for s in states] == ["fruit", "fruit", "other"]
    assert all([step.tier for step in s["steps"]] == ["big"] for s in states)  # none of small
    rows = records(tmp_path)
    assert [(r["serving_tier"], r["candidate_tier"], r["agree"]) for r in rows] == [
        ("big", "small", True),
        ("big", "small", False),
        ("big", "small", True),
    ]
    assert all(r["candidate_cost_usd"] < r["serving_cost_usd"] for r in rows)


async def test_the_reply_does_not_wait_for_a_slow_candidate(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def slow(req: ModelRequest) -> str:
        await release.wait()
        return json.dumps({"label": "fruit"})

    compiled, router = build(FunctionModel(slow), tmp_path)
    async with asyncio.timeout(60):  # a reply that waited for the candidate would hang here
        state = await ask(compiled, "an apple")
    assert state["label"].label == "fruit"
    assert router.shadows is not None and len(router.shadows.pending) == 1  # still asking
    assert not (tmp_path / "shadow.jsonl").exists()
    release.set()
    await router.aclose()
    assert [r["agree"] for r in records(tmp_path)] == [True]


async def test_a_failing_candidate_is_recorded_and_the_reply_is_unchanged(tmp_path: Path) -> None:
    def down(req: ModelRequest) -> str:
        raise ModelError("503 from gpu-small", model="small", status=503)

    compiled, router = build(FunctionModel(down), tmp_path)
    state = await ask(compiled, "an apple")
    await router.aclose()
    assert state["label"].label == "fruit"
    [row] = records(tmp_path)
    assert row["agree"] is None
    assert row["error"] == "ModelError: 503 from gpu-small"


async def test_a_hosted_candidate_gets_the_request_through_its_pii_boundary(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    def hosted(req: ModelRequest) -> str:
        seen.append(str(req.messages[-1].content))
        return json.dumps({"label": "fruit"})

    compiled, router = build(FunctionModel(hosted), tmp_path, hosted=True)
    await ask(compiled, "an apple for ada@example.com")
    await router.aclose()
    assert seen == ["an apple for [EMAIL]"]


async def test_comparisons_are_counted_as_a_metric(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    tracing.use_providers(meter_provider=meters)
    try:
        compiled, router = build(labeller(wrong_on="pear"), tmp_path)
        for text in ("an apple", "a pear"):
            await ask(compiled, text)
        await router.aclose()
        data = reader.get_metrics_data()
        assert data is not None
        points = {
            (point.attributes or {})["agentflow.shadow.verdict"]: getattr(point, "value", None)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == "agentflow.shadow.comparisons"
            for point in metric.data.data_points
        }
        assert points == {"agree": 1, "disagree": 1}
    finally:
        tracing.use_providers()
        meters.shutdown()


def test_shadow_config_names_its_tier_and_catches_a_misspelt_key(tmp_path: Path) -> None:
    path = tmp_path / "agentflow.toml"
    base = '[tiers.a]\nmodel = "local:"\nself_hosted = true\n[routing]\nclassify = "a"\n'
    path.write_text(base + '[shadow]\nclassify = "nope"\n')
    with pytest.raises(ConfigError) as info:
        Router.from_config(load_config(path, env={}))
    assert (info.value.file, info.value.key) == (str(path), "shadow.classify")
    path.write_text(base + '[shadow]\nsampel = 0.1\nclassify = "a"\n')
    with pytest.raises(ConfigError, match="did you mean 'sample'"):
        load_config(path, env={})


def test_shadow_report_prints_agreement_per_kind_and_tier(tmp_path: Path) -> None:
    log = tmp_path / "shadow.jsonl"
    row = {"kind": "classify", "node": "triage", "serving_tier": "big", "candidate_tier": "small"}
    lines = [
        {**row, "agree": i % 10 != 0, "serving_cost_usd": 0.001, "candidate_cost_usd": 0.0001}
        for i in range(50)
    ]
    lines.append({**row, "agree": None, "error": "ModelError: 503"})
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "shadow-report", "--log", str(log), "--json"])
    assert result.exit_code == 0, result.output
    [figures] = json.loads(result.output)
    assert figures["compared"] == 50 and figures["sampled"] == 51 and figures["errors"] == 1
    assert figures["agreement"] == 0.9
    assert figures["agreement_low"] == pytest.approx(0.7864, abs=1e-4)
    assert figures["cost_share"] == 0.1
    missing = runner.invoke(app, ["eval", "shadow-report", "--log", str(tmp_path / "no")])
    assert missing.exit_code == 1 and "no shadow log at" in missing.output
