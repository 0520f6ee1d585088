"""Routing by measurement on the support suites: what the routed configuration costs as a
share of running every step on the frontier tier, with every kind's bar met.

Every suite of `graphs/support_evals.py` (classify, tool_call, respond; >= 120 labelled
cases each) runs on every candidate tier through `agentflow.evals`, exactly as
`agentflow eval` does; each kind is routed to the cheapest tier whose lower 95 % Wilson
bound clears its bar, and the routed cost is compared with the frontier tier's cost for
the same cases.

The candidate tiers, and which figures are real:

- `embedded`: Gemma 3 270M (the `local:` engine on this CPU), **measured**: its answers
  are graded and its token counts are real. It is priced as machine time: a $0.10/h
  two-core host at the tokens per second it sustained in this run.
- `embedded-fewshot`: the same model with eight labelled triage examples (not eval
  cases) added to the triage prompt; **measured** likewise, on the classify suite only
  (the examples change no other prompt).
- `qwen-8b`, `glm`, `frontier`: **scripted** stand-ins with stated accuracies (95 %,
  98 %, 99.5 % of cases answered right, the wrong ones chosen by a hash of the case), as
  no such model runs on this machine. Their token counts are estimated from the real
  prompts (4 characters a token) and priced as agentflow.toml's production comments say:
  Qwen3-8B on one H100 ($3/h at 10,000 tokens/s), GLM-4.6 on a node of H200s ($16/h at
  2,500 tokens/s), Claude Sonnet 4.5 ($3 in / $15 out per million tokens). `frontier`
  is the high-stakes tier: the baseline, never routed to by kind.

    python -m bench.routing --json [--limit N] [--scripted-only]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, get_args

from agentflow.costs import GpuPrice, TokenPrice
from agentflow.evals import EvalSettings, TierResult, evaluate_suite
from agentflow.evals.report import build_report
from agentflow.messages import SystemMessage, ToolCall, UserMessage
from agentflow.models.base import Model, ModelRequest, ModelResponse
from agentflow.models.test import FunctionModel
from agentflow.routing import Router, RoutingPolicy, Tier
from graphs.support import TRIAGE_PROMPT, Intent, graph
from graphs.support_evals import SUITES
from graphs.support_replies import GLAD, SORRY

CPU_HOUR_USD = 0.10
TARGET_SHARE = 0.15
STATED = {"qwen-8b": 0.95, "glm": 0.98, "frontier": 0.995}
PRICES = {
    "qwen-8b": GpuPrice(gpu_hour_usd=3.0, tokens_per_s=10_000),
    "glm": GpuPrice(gpu_hour_usd=16.0, tokens_per_s=2_500),
    "frontier": TokenPrice(input=3.0, output=15.0),
}
FEW_SHOT = """
Examples:
"where's my parcel, order 2211?" -> intent order_status, sentiment neutral
"do you ship to Norway and how long does it take?" -> intent shipping
"I want my money back for the broken lamp" -> intent refund, sentiment negative
"please send order 3300 to 5 Elm Road, Leeds instead" -> intent address_change
"is the blue kettle dishwasher safe?" -> intent product_question
"my lawyer will hear about this data breach" -> intent legal, sentiment negative
"can I talk to a real human please" -> intent human
"love the new mugs, thanks!" -> intent other, sentiment positive
"""


class FewShot(Model):
    """The wrapped model, with labelled examples appended to the triage prompt."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.name = f"{inner.name}+fewshot"
        self.provider = inner.provider
        self.profile = inner.profile

    async def request(self, req: ModelRequest) -> ModelResponse:
        first = req.messages[0] if req.messages else None
        if isinstance(first, SystemMessage) and first.content == TRIAGE_PROMPT:
            system = SystemMessage(content=TRIAGE_PROMPT + FEW_SHOT)
            req = ModelRequest(
                messages=[system, *req.messages[1:]],
                tools=req.tools,
                tool_choice=req.tool_choice,
                output=req.output,
                settings=req.settings,
            )
        return await self.inner.request(req)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass(kw_only=True, frozen=True)
class _Known:
    kind: str
    name: str
    expected: Any
    inputs: Any


def _index() -> dict[str, _Known]:
    """Each case by the customer's message, which every request of it carries."""
    known: dict[str, _Known] = {}
    for suite in SUITES:
        for case in suite.cases:
            message = case.inputs["message"]
            known[f"{suite.kind}:{message}"] = _Known(
                kind=suite.kind,
                name=case.name or "",
                expected=case.expected_output,
                inputs=case.inputs,
            )
    return known


def _right(tier: str, name: str) -> bool:
    """Whether the scripted `tier` answers case `name` right: a stated share of cases."""
    digest = hashlib.sha256(f"{tier}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < STATED[tier]


def scripted(tier: str, known: dict[str, _Known]) -> FunctionModel:
    """A model that knows every case's label and answers right at the stated rate."""

    def answer(req: ModelRequest) -> Any:
        if req.tools:
            message = next(m.content for m in req.messages if isinstance(m, UserMessage))
            case = known[f"tool_call:{message}"]
            return _tool_call(case, _right(tier, case.name))
        text = str(req.messages[-1].content)
        if text.startswith("Customer: "):
            message = text.removeprefix("Customer: ").split("\nThe reply says:")[0]
            case = known[f"respond:{message}"]
            return _reply(case, text, _right(tier, case.name))
        case = known[f"classify:{text}"]
        return _triage(case, _right(tier, case.name))

    return FunctionModel(answer, name=tier)


INTENTS = list(get_args(Intent))


def _triage(case: _Known, right: bool) -> str:
    intent = case.expected["intent"]
    if not right:
        intent = INTENTS[(INTENTS.index(intent) + 3) % len(INTENTS)]
    sentiment = case.expected.get("sentiment", "neutral")
    return json.dumps({"intent": intent, "sentiment": sentiment, "confidence": 0.9})


def _tool_call(case: _Known, right: bool) -> ToolCall:
    expected = case.expected
    arguments = dict(expected["arguments"])
    for key, value in arguments.items():
        if value is None:  # free text: the keywords a good query holds
            arguments[key] = " ".join(expected.get("keywords", ())) if right else "help"
        elif not right and isinstance(value, int):
            arguments[key] = value + 1
        elif not right and isinstance(value, str):
            arguments[key] = value[:-1]
    return ToolCall(id="call-1", name=expected["tool"], arguments=arguments)


def _reply(case: _Known, prompt: str, right: bool) -> str:
    expected = case.expected
    optional = re.findall(r"^- (\w+): (.*)$", prompt.split("Facts you may add, by key:")[1], re.M)
    keys = [key for key, text in optional if any(s in text for s in expected["must_say"])]
    opening = SORRY[0] if expected["apologetic"] else GLAD[0]
    closing = "Is there anything else I can help with?"
    return json.dumps({"opening": opening, "facts": keys if right else [], "closing": closing})


async def _calibrate(model: Model) -> float:
    """Tokens per second the embedded model sustains on triage-sized requests."""
    tokens, started = 0, time.perf_counter()
    for text in ("where is my order 1042?", "I want a refund for order 1187, it broke"):
        req = ModelRequest(
            messages=[SystemMessage(content=TRIAGE_PROMPT), UserMessage(content=text)]
        )
        response = await model.request(req)
        tokens += response.usage.input_tokens + response.usage.output_tokens
    return tokens / (time.perf_counter() - started)


async def measure(*, limit: int | None, scripted_only: bool) -> dict[str, Any]:
    known = _index()
    suites = SUITES
    if limit is not None:
        suites = [_first(suite, limit) for suite in SUITES]
    tiers = [Tier(name=name, model=scripted(name, known), price=PRICES[name]) for name in STATED]
    tokens_per_s = None
    if not scripted_only:
        from agentflow.models.local import LocalModel

        embedded = LocalModel()
        tokens_per_s = await _calibrate(embedded)
        price = GpuPrice(gpu_hour_usd=CPU_HOUR_USD, tokens_per_s=tokens_per_s)
        tiers += [
            Tier(name="embedded", model=embedded, price=price, self_hosted=True),
            Tier(name="embedded-fewshot", model=FewShot(embedded), price=price, self_hosted=True),
        ]
    for tier in tiers:
        tier.self_hosted = True  # nothing leaves: the scripted tiers answer in process
    kinds = {suite.kind: "glm" for suite in suites}
    router = Router(tiers, RoutingPolicy(kinds=kinds, high_stakes="frontier"))
    started = time.perf_counter()
    settings = EvalSettings(concurrency=4)
    runs = [
        evaluate_suite(graph, suite, tier.name, router, settings)
        for suite in suites
        for tier in tiers
        # the examples only change the triage prompt: other kinds would repeat `embedded`
        if tier.name != "embedded-fewshot" or suite.kind == "classify"
    ]
    results = list(await asyncio.gather(*runs))
    report = build_report("graphs/support.py", results, kinds, reserved="frontier")
    return _figures(report.recommendations, results, tokens_per_s, time.perf_counter() - started)


def _first(suite: Any, limit: int) -> Any:
    from dataclasses import replace

    return replace(suite, cases=list(suite.cases)[:limit])


def _figures(
    recommendations: dict[str, Any],
    results: list[TierResult],
    tokens_per_s: float | None,
    seconds: float,
) -> dict[str, Any]:
    by = {(r.kind, r.tier): r for r in results}
    routed = frontier = 0.0
    met = 0
    rows = []
    for kind, recommendation in recommendations.items():
        base = by[(kind, "frontier")]
        cases = len(base.cases)
        frontier += (base.cost_per_case or 0.0) * cases
        chosen = recommendation.tier
        if chosen is not None:
            met += 1
            routed += (by[(kind, chosen)].cost_per_case or 0.0) * cases
        else:  # a kind no routable tier clears stays on the frontier tier
            routed += (base.cost_per_case or 0.0) * cases
        rows += [
            {
                "kind": kind,
                "tier": r.tier,
                "measured": r.tier.startswith("embedded"),
                "accuracy": round(r.accuracy, 4),
                "accuracy_low": round(r.accuracy_interval[0], 4),
                "validity": round(r.validity, 4),
                "cost_per_case_usd": r.cost_per_case,
                "p50_s": r.latency(50),
                "chosen": r.tier == chosen,
            }
            for r in results
            if r.kind == kind
        ]
    return {
        "routed_cost_share": round(routed / frontier, 4) if frontier else None,
        "kinds_meeting_bar": met,
        "kinds_total": len(recommendations),
        "cases": sum(len(r.cases) for r in results if r.tier == "frontier"),
        "routes": {kind: rec.tier for kind, rec in recommendations.items()},
        "target_share": TARGET_SHARE,
        "embedded_tokens_per_s": None if tokens_per_s is None else round(tokens_per_s, 1),
        "seconds": round(seconds, 1),
        "tiers": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    parser.add_argument("--limit", type=int, help="Only the first N cases of each suite.")
    parser.add_argument("--scripted-only", action="store_true", help="Skip the embedded tiers.")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(limit=args.limit, scripted_only=args.scripted_only))
    if args.json:
        print(json.dumps(figures))
        return
    for key, value in figures.items():
        if key != "tiers":
            print(f"{key}: {value}")
    for row in figures["tiers"]:
        print(json.dumps(row), file=sys.stdout)


if __name__ == "__main__":
    main()
