"""Run suites on tiers: each case runs its node once on the tier under test, priced from
the call's real token counts, and is graded; pydantic_evals runs the cases concurrently.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic_evals import Dataset
from pydantic_evals.lifecycle import CaseLifecycle
from pydantic_evals.reporting import EvaluationReport

from agentflow.costs import RunUsage, SpendLedger, StepRecord
from agentflow.evals.graders import JUDGE, Judge
from agentflow.evals.results import CaseResult, TierResult
from agentflow.evals.suite import Suite
from agentflow.exceptions import (
    BudgetExceeded,
    ConfigError,
    ModelError,
    OutputValidationError,
    PolicyViolation,
)
from agentflow.graph import AgentGraph
from agentflow.routing import Router
from agentflow.step import StepContext, describe_error

__all__ = ["EvalSettings", "evaluate_suite", "evaluate_suites"]

_CASE: ContextVar[str] = ContextVar("agentflow_eval_case", default="")


@dataclass(kw_only=True)
class EvalSettings:
    """How an eval runs."""

    confidence: float = 0.95
    """Of the quality intervals the bars are checked against."""
    concurrency: int = 4
    """Cases in flight per suite and tier."""
    budget_usd: float | None = None
    """All cases of the eval together, on every tier, may spend at most this; a case that
    would pass it is not run and its tier is reported as incomplete. Without it, the
    config's per-run budgets apply to each case, as to a run."""


@dataclass(kw_only=True)
class _Spent:
    """What one case's calls used, kept even when the node raised."""

    records: list[StepRecord] = field(default_factory=list[StepRecord])
    error: str | None = None
    valid: bool = True
    skipped: bool = False
    latency_s: float = 0.0
    judge_cost_usd: float = 0.0


class _Track(CaseLifecycle[Any, Any, Any]):
    """Names the running case, so the task can file what it spent under it."""

    async def setup(self) -> None:
        _CASE.set(self.case.name or "")


async def evaluate_suite(
    graph: AgentGraph[Any],
    suite: Suite,
    tier: str,
    router: Router,
    settings: EvalSettings,
    *,
    ledger: _Ledger | None = None,
    on_case: Callable[[], None] = lambda: None,
) -> TierResult:
    """Run every case of `suite` on `tier` and grade it.

    Args:
        router: The eval's router: `tier` and any judge's tier are among its tiers.
        ledger: Where the eval's spend is kept (one per eval, for `budget_usd`).
        on_case: Called after each case (a progress bar's advance).
    """
    if tier not in router.tiers:
        raise ConfigError(f"no tier named {tier!r} (tiers: {', '.join(router.tiers)})")
    ledger = ledger or _Ledger(settings)
    pinned = ledger.router(router, suite.kind, tier)
    deps = suite.deps() if suite.deps is not None else None
    spent: dict[str, _Spent] = {}

    async def task(inputs: Any) -> Any:
        case = spent.setdefault(_CASE.get(), _Spent())
        ctx = ledger.context(pinned, suite.node, suite.kind, deps, case.records)
        started = time.perf_counter()
        try:
            update = await graph.call_node(suite.node, suite.state(inputs), ctx)
            return suite.output(update)
        except BudgetExceeded as exc:
            case.skipped, case.error = True, f"not run: {exc}"
            raise
        except (OutputValidationError, PolicyViolation, ModelError) as exc:
            case.valid = not isinstance(exc, OutputValidationError)
            case.error = f"{type(exc).__name__}: {describe_error(exc)}"
            raise
        finally:
            case.latency_s = time.perf_counter() - started
            ctx.spend.close()
            on_case()

    token = JUDGE.set(_judge(router, ledger, spent))
    try:
        dataset = Dataset(name=suite.name, cases=list(suite.cases), evaluators=list(suite.graders))
        report = await dataset.evaluate(
            task,
            name=f"{suite.name}@{tier}",
            max_concurrency=settings.concurrency,
            progress=False,
            lifecycle=_Track,
        )
    finally:
        JUDGE.reset(token)
    model = router.tiers[tier].model
    return TierResult(
        suite=suite.name,
        kind=suite.kind,
        tier=tier,
        model=model if isinstance(model, str) else repr(model),
        bar=suite.quality_bar,
        confidence=settings.confidence,
        cases=_results(report, spent, suite),
    )


def _results(
    report: EvaluationReport[Any, Any, Any], spent: dict[str, _Spent], suite: Suite
) -> list[CaseResult]:
    results: list[CaseResult] = []
    for case in report.cases:
        used = spent.get(case.name, _Spent())
        reasons = [
            f"{name}: {result.reason or 'failed'}"
            for name, result in case.assertions.items()
            if not result.value
        ]
        reasons += [f"{f.name}: grader failed: {f.error_message}" for f in case.evaluator_failures]
        results.append(_result(case.name, case.inputs, case.expected_output, case.output, used))
        results[-1].passed = not reasons
        results[-1].reasons = reasons
    for failure in report.failures:
        used = spent.get(failure.name, _Spent())
        result = _result(failure.name, failure.inputs, failure.expected_output, None, used)
        result.reasons = [used.error or failure.error_message]
        results.append(result)
    order = {case.name: index for index, case in enumerate(suite.cases)}
    return sorted(results, key=lambda r: order.get(r.name, len(order)))


def _result(name: str, inputs: Any, expected: Any, output: Any, used: _Spent) -> CaseResult:
    usage = RunUsage.from_steps(used.records).total
    return CaseResult(
        name=name,
        inputs=inputs,
        expected=expected,
        output=output,
        valid=used.valid,
        passed=False,
        skipped=used.skipped,
        reasons=[],
        cost_usd=usage.cost_usd if usage.priced else None,
        tokens=usage.total_tokens,
        latency_s=used.latency_s,
        calls=usage.calls,
        judge_cost_usd=used.judge_cost_usd,
    )


class _Ledger:
    """One eval's spend: with `budget_usd`, every case and judge call of the eval shares
    one run's ledger, so the budget caps the whole eval as it caps a run."""

    def __init__(self, settings: EvalSettings) -> None:
        self.budget_usd = settings.budget_usd
        self.spend = SpendLedger()
        self.key = f"eval:{uuid.uuid4()}"

    def router(self, router: Router, kind: str, tier: str) -> Router:
        return router.pinned(kind, tier, budget_usd=self.budget_usd, spend=self.spend)

    def context(
        self, router: Router, node: str, kind: str, deps: Any, records: list[StepRecord]
    ) -> StepContext[Any]:
        run_id = str(uuid.uuid4())
        key = self.key if self.budget_usd is not None else run_id
        return StepContext(
            node=node,
            kind=kind,
            high_stakes=False,
            deps=deps,
            run_id=run_id,
            thread_id=None,
            router=router,
            spend=router.spend.open(key, (), run_id=run_id),
            records=records,
        )


def _judge(router: Router, ledger: _Ledger, spent: dict[str, _Spent]) -> Judge:
    """How the suite's LLM judges reach their tier; their cost is filed with the case."""

    async def ask(prompt: str, verdict: type[BaseModel], tier: str) -> Any:
        pinned = ledger.router(router, "judge", tier)
        records: list[StepRecord] = []
        ctx = ledger.context(pinned, "judge", "judge", None, records)
        try:
            return await ctx.llm(prompt, output=verdict)
        finally:
            ctx.spend.close()
            case = spent.setdefault(_CASE.get(), _Spent())
            case.judge_cost_usd += RunUsage.from_steps(records).total.cost_usd

    return ask


async def evaluate_suites(
    graph: AgentGraph[Any],
    suites: Sequence[Suite],
    tiers: Sequence[str],
    router: Router,
    settings: EvalSettings,
    *,
    on_case: Callable[[Suite, str], None] = lambda suite, tier: None,
) -> list[TierResult]:
    """Run every suite on every tier, all at once; results in suite, then tier order."""
    for suite in suites:
        kind = graph.node_kind(suite.node)
        if kind != suite.kind:
            raise ConfigError(
                f"suite {suite.name!r} runs node {suite.node!r}, whose kind is {kind!r}, "
                f"not {suite.kind!r}"
            )
    ledger = _Ledger(settings)
    runs = [
        evaluate_suite(
            graph,
            suite,
            tier,
            router,
            settings,
            ledger=ledger,
            on_case=lambda s=suite, t=tier: on_case(s, t),
        )
        for suite in suites
        for tier in tiers
    ]
    return list(await asyncio.gather(*runs))
