"""Measure each step kind on each tier, so routing sends it to the cheapest tier that
clears its quality bar (`agentflow eval`).

A `Suite` holds a kind's cases (pydantic_evals `Case`s), the graders that pass or fail
each (`FieldsMatch`, `ExactMatch`, `SchemaValid`, `ToolCallMatch`, `NumericTolerance`,
`Predicate`, `LLMJudge`) and the bar (`"accuracy >= 0.95"`), checked against the lower
bound of the Wilson interval of the pass rate. Needs the evals extra:
`pip install 'agentflow[evals]'`.
"""

from agentflow.evals.graders import (
    ExactMatch,
    FieldsMatch,
    LLMJudge,
    NumericTolerance,
    Predicate,
    SchemaValid,
    ToolCallMatch,
)
from agentflow.evals.results import CaseResult, TierResult
from agentflow.evals.runner import EvalSettings, evaluate_suite, evaluate_suites
from agentflow.evals.stats import Recommendation, recommend, wilson_interval
from agentflow.evals.suite import Bar, Case, Suite, load_cases

__all__ = [
    "Bar",
    "Case",
    "CaseResult",
    "EvalSettings",
    "ExactMatch",
    "FieldsMatch",
    "LLMJudge",
    "NumericTolerance",
    "Predicate",
    "Recommendation",
    "SchemaValid",
    "Suite",
    "TierResult",
    "ToolCallMatch",
    "evaluate_suite",
    "evaluate_suites",
    "load_cases",
    "recommend",
    "wilson_interval",
]
