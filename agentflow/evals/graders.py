"""Graders: pydantic_evals evaluators that pass or fail one case and say why.

Each returns an `EvaluationReason` whose value is True or False; a failed case's reason
is what `agentflow eval` prints beside its input and output. Expected outputs are plain
data (what a JSONL file holds): a pydantic output is compared through `model_dump`.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_evals.evaluators import EvaluationReason, Evaluator, EvaluatorContext

from agentflow.messages import AssistantMessage, ToolCall

__all__ = [
    "ExactMatch",
    "FieldsMatch",
    "LLMJudge",
    "NumericTolerance",
    "Predicate",
    "SchemaValid",
    "ToolCallMatch",
    "as_data",
]

Judge = Callable[[str, type[BaseModel], str], Awaitable[Any]]
"""Asks a judging tier: `(prompt, verdict type, tier) -> the verdict`."""

JUDGE: ContextVar[Judge | None] = ContextVar("agentflow_eval_judge", default=None)
"""Set by the runner while a suite runs: how `LLMJudge` reaches its tier."""


def as_data(value: Any) -> Any:
    """`value` as JSON-like data: pydantic models dumped, tuples as lists."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {key: as_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [as_data(item) for item in value]
    return value


def _verdict(failures: Sequence[str]) -> EvaluationReason:
    return EvaluationReason(value=not failures, reason="; ".join(failures) or None)


@dataclass(repr=False)
class ExactMatch(Evaluator[Any, Any, Any]):
    """The output equals the expected output (compared as data)."""

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        got, wanted = as_data(ctx.output), as_data(ctx.expected_output)
        return _verdict([] if got == wanted else [f"got {got!r}, expected {wanted!r}"])


@dataclass(repr=False)
class FieldsMatch(Evaluator[Any, Any, Any]):
    """The named fields of the output equal the expected output's (all fields if none
    are named); fields the expected output leaves out are not compared."""

    fields: tuple[str, ...] = ()

    def __init__(self, *fields: str) -> None:
        self.fields = fields

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        got, wanted = as_data(ctx.output), as_data(ctx.expected_output)
        if not isinstance(got, dict) or not isinstance(wanted, dict):
            return _verdict([f"cannot compare fields of {got!r} with {wanted!r}"])
        names = self.fields or tuple(wanted)
        failures = [
            f"{name}: got {got.get(name)!r}, expected {wanted[name]!r}"
            for name in names
            if name in wanted and got.get(name) != wanted[name]
        ]
        return _verdict(failures)


@dataclass(repr=False)
class SchemaValid(Evaluator[Any, Any, Any]):
    """The output validates as `schema` (a pydantic type, or any type pydantic reads)."""

    schema: Any

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        try:
            TypeAdapter(self.schema).validate_python(as_data(ctx.output))
        except ValidationError as exc:
            errors = exc.errors()[0]
            where = ".".join(str(part) for part in errors["loc"]) or "output"
            return _verdict([f"{where}: {errors['msg']}"])
        return _verdict([])


@dataclass(repr=False)
class NumericTolerance(Evaluator[Any, Any, Any]):
    """The output (or its field `field`) is within `abs_tol` or `rel_tol` of the expected."""

    field: str | None = None
    abs_tol: float = 0.0
    rel_tol: float = 0.0

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        got, wanted = as_data(ctx.output), as_data(ctx.expected_output)
        if self.field is not None:
            got = got.get(self.field) if isinstance(got, dict) else None
            wanted = wanted.get(self.field) if isinstance(wanted, dict) else None
        if not isinstance(got, int | float) or not isinstance(wanted, int | float):
            return _verdict([f"not numbers: got {got!r}, expected {wanted!r}"])
        close = math.isclose(got, wanted, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        return _verdict([] if close else [f"got {got}, expected {wanted} (within {self._tol})"])

    @property
    def _tol(self) -> str:
        return " or ".join(
            part
            for part in (f"±{self.abs_tol:g}" if self.abs_tol else "", f"{self.rel_tol:.1%}")
            if part and part != "0.0%"
        )


@dataclass(repr=False)
class Predicate(Evaluator[Any, Any, Any]):
    """`check(output)` holds: e.g. `Predicate(lambda t: t.confidence >= 0.5, "confident")`.

    `check` may also take the case's inputs and expected output as its second and third
    arguments, and may return a string: the reason it failed (empty when it holds).
    """

    check: Callable[..., bool | str]
    description: str

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        given = (ctx.output, ctx.inputs, ctx.expected_output)
        held = self.check(*given[: _arity(self.check)])
        if isinstance(held, str):
            return _verdict([f"{self.description}: {held}"] if held else [])
        return _verdict([] if held else [f"{self.description} does not hold"])


@dataclass(repr=False)
class ToolCallMatch(Evaluator[Any, Any, Any]):
    """The first tool call made is the expected one, arguments included.

    The expected output is `{"tool": NAME, "arguments": {...}, "keywords": [...]}`. An
    argument expected as None may take any value (free text); `keywords` must then each
    appear, case-insensitively, in the call's string arguments.
    """

    arguments: bool = True
    """Compare arguments too; False checks only which tool was called."""

    def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        calls = _calls(ctx.output)
        wanted = as_data(ctx.expected_output) or {}
        if not calls:
            return _verdict([f"no tool call; expected {wanted.get('tool')!r}"])
        call = calls[0]
        if call.name != wanted.get("tool"):
            return _verdict([f"called {call.name!r}, expected {wanted.get('tool')!r}"])
        if not self.arguments:
            return _verdict([])
        got = as_data(call.arguments)
        failures = [
            f"{name}: got {got.get(name)!r}, expected {value!r}"
            for name, value in (wanted.get("arguments") or {}).items()
            if value is not None and not _same(got.get(name), value)
        ]
        extra = set(got) - set(wanted.get("arguments") or {})
        failures += [f"{name}: not expected, got {got[name]!r}" for name in sorted(extra)]
        text = " ".join(str(v) for v in got.values() if isinstance(v, str)).lower()
        missing = [word for word in wanted.get("keywords") or () if word.lower() not in text]
        if missing:
            failures.append(f"arguments lack {', '.join(map(repr, missing))}")
        return _verdict(failures)


def _arity(function: Callable[..., Any]) -> int:
    """How many of (output, inputs, expected) `function` takes."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return 3
    return min(3, max(1, sum(p.default is p.empty for p in parameters)))


def _calls(output: Any) -> list[ToolCall]:
    if isinstance(output, AssistantMessage):
        return list(output.tool_calls)
    if isinstance(output, ToolCall):
        return [output]
    if isinstance(output, list | tuple):
        return [item for item in output if isinstance(item, ToolCall)]
    return []


def _same(got: Any, wanted: Any) -> bool:
    """Equal as data, whitespace and case aside for strings (`"12 Main St"` is
    `"12 main st "`), and `1042` equal to `"1042"`."""
    if isinstance(got, str) and isinstance(wanted, str):
        return " ".join(got.lower().split()) == " ".join(wanted.lower().split())
    if isinstance(got, int | float | str) and isinstance(wanted, int | float | str):
        return str(got).strip() == str(wanted).strip()
    return got == wanted


class Verdict(BaseModel):
    """What the judge says about one output."""

    reason: str = Field(max_length=400)
    """One or two sentences, before the verdict, so the verdict follows from them."""
    passed: bool


@dataclass(repr=False)
class LLMJudge(Evaluator[Any, Any, Any]):
    """A stronger tier grades the output against a rubric.

    The judge tier is named by `tier` and reached through the router the eval runs with,
    so its calls pass the PII boundary and are priced; their cost is reported as the
    judge's, apart from the tier under test.
    """

    rubric: str
    tier: str
    include_inputs: bool = True
    include_expected: bool = True

    async def evaluate(self, ctx: EvaluatorContext[Any, Any, Any]) -> EvaluationReason:
        judge = JUDGE.get()
        if judge is None:
            raise RuntimeError("LLMJudge runs inside `agentflow eval` (no judge is set)")
        parts = [f"Rubric:\n{self.rubric}"]
        if self.include_inputs:
            parts.append(f"Input:\n{_dump(ctx.inputs)}")
        if self.include_expected and ctx.expected_output is not None:
            parts.append(f"Expected:\n{_dump(ctx.expected_output)}")
        parts.append(f"Output to grade:\n{_dump(ctx.output)}")
        verdict = await judge("\n\n".join(parts), Verdict, self.tier)
        return EvaluationReason(value=verdict.passed, reason=f"judge: {verdict.reason}")


def _dump(value: Any) -> str:
    data = as_data(value)
    return data if isinstance(data, str) else json.dumps(data, default=str, ensure_ascii=False)
