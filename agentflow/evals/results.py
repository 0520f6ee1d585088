"""What an eval measured: each case's outcome, and per suite and tier the figures a
routing decision rests on (quality with its interval, validity, cost, latency)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from agentflow.evals.graders import as_data
from agentflow.evals.stats import Candidate, percentile, wilson_interval
from agentflow.evals.suite import Bar

__all__ = ["CaseResult", "TierResult"]


@dataclass(kw_only=True)
class CaseResult:
    """One case on one tier."""

    name: str
    inputs: Any
    expected: Any
    output: Any
    """What the graders saw; None when the node raised."""
    valid: bool
    """The tier gave a valid output (it did not fail its output schema every retry)."""
    passed: bool
    """Every grader passed."""
    skipped: bool
    """Not run: it would have passed the eval's budget."""
    reasons: list[str]
    """Why it failed: each failed grader's reason, or the error."""
    cost_usd: float | None
    """Of the tier's calls, from their real token counts; None when the tier is unpriced."""
    judge_cost_usd: float = 0.0
    tokens: int
    latency_s: float
    calls: int
    """Model calls the node made (retries included)."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(inputs=as_data(self.inputs), expected=as_data(self.expected))
        data["output"] = as_data(self.output)
        return data


@dataclass(kw_only=True)
class TierResult:
    """One suite on one tier."""

    suite: str
    kind: str
    tier: str
    model: str
    bar: Bar
    confidence: float
    cases: list[CaseResult]

    @property
    def ran(self) -> list[CaseResult]:
        return [case for case in self.cases if not case.skipped]

    @property
    def complete(self) -> bool:
        return bool(self.cases) and len(self.ran) == len(self.cases)

    @property
    def passed(self) -> int:
        return sum(case.passed for case in self.ran)

    @property
    def accuracy(self) -> float:
        return self.passed / len(self.ran) if self.ran else 0.0

    @property
    def accuracy_interval(self) -> tuple[float, float]:
        return wilson_interval(self.passed, len(self.ran), self.confidence)

    @property
    def validity(self) -> float:
        return sum(case.valid for case in self.ran) / len(self.ran) if self.ran else 0.0

    @property
    def validity_interval(self) -> tuple[float, float]:
        valid = sum(case.valid for case in self.ran)
        return wilson_interval(valid, len(self.ran), self.confidence)

    @property
    def low(self) -> float:
        """The lower bound of the bar's metric."""
        interval = (
            self.accuracy_interval if self.bar.metric == "accuracy" else self.validity_interval
        )
        return interval[0]

    @property
    def meets_bar(self) -> bool:
        return self.complete and self.low >= self.bar.at_least

    @property
    def cost_per_case(self) -> float | None:
        """Mean USD per case on the tier (judges excluded); None when unpriced."""
        costs = [case.cost_usd for case in self.ran]
        if not costs or any(cost is None for cost in costs):
            return None
        return sum(cost or 0.0 for cost in costs) / len(costs)

    @property
    def tokens_per_case(self) -> float:
        return sum(case.tokens for case in self.ran) / len(self.ran) if self.ran else 0.0

    def latency(self, q: float) -> float | None:
        return percentile([case.latency_s for case in self.ran], q)

    def candidate(self) -> Candidate:
        return Candidate(
            tier=self.tier,
            low=self.low,
            cost_per_case=self.cost_per_case,
            complete=self.complete,
            p50_s=self.latency(50),
        )

    def summary(self) -> dict[str, Any]:
        """The figures, as `agentflow eval --json` writes them."""
        low, high = self.accuracy_interval
        return {
            "suite": self.suite,
            "kind": self.kind,
            "tier": self.tier,
            "model": self.model,
            "bar": str(self.bar),
            "confidence": self.confidence,
            "cases": len(self.cases),
            "ran": len(self.ran),
            "passed": self.passed,
            "accuracy": round(self.accuracy, 4),
            "accuracy_low": round(low, 4),
            "accuracy_high": round(high, 4),
            "validity": round(self.validity, 4),
            "meets_bar": self.meets_bar,
            "cost_per_case_usd": self.cost_per_case,
            "tokens_per_case": round(self.tokens_per_case, 1),
            "p50_s": self.latency(50),
            "p95_s": self.latency(95),
            "judge_cost_usd": sum(case.judge_cost_usd for case in self.cases),
        }
