"""An eval suite: the cases one step kind is measured on, how each is graded, and the
quality bar a tier must clear to serve the kind."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic_evals import Case
from pydantic_evals.evaluators import Evaluator

from agentflow.evals.case_files import CaseFile
from agentflow.evals.graders import as_data
from agentflow.exceptions import ConfigError

__all__ = ["Bar", "Case", "Suite", "load_cases"]

Metric = Literal["accuracy", "validity"]
_BAR = re.compile(r"^\s*(?P<metric>\w+)\s*>=\s*(?P<value>[0-9.]+)\s*$")


@dataclass(kw_only=True, frozen=True)
class Bar:
    """What a tier must reach on a suite: the lower confidence bound of `metric` (the
    share of cases passing every grader, or of cases with a valid output) >= `at_least`."""

    metric: Metric = "accuracy"
    at_least: float

    @classmethod
    def parse(cls, text: str) -> Bar:
        """Read `"accuracy >= 0.95"` or `"validity >= 0.99"`."""
        match = _BAR.match(text)
        metric = match["metric"] if match else ""
        if match is None or metric not in ("accuracy", "validity"):
            raise ConfigError(f"a bar reads 'accuracy >= 0.95' or 'validity >= 0.99', not {text!r}")
        value = float(match["value"])
        if not 0 < value <= 1:
            raise ConfigError(f"a bar is a share between 0 and 1, not {value}")
        return cls(metric="accuracy" if metric == "accuracy" else "validity", at_least=value)

    def __str__(self) -> str:
        return f"{self.metric} >= {self.at_least:g}"


@dataclass(kw_only=True)
class Suite:
    """The cases a step kind is measured on, run through one node of the graph.

    ```python
    Suite(
        kind="classify",
        node="triage",
        cases=load_cases("graphs/evals/classify.jsonl"),
        state=lambda inputs: {"messages": [UserMessage(content=inputs["message"])]},
        output=lambda update: update["triage"],
        graders=[FieldsMatch("intent")],
        bar="accuracy >= 0.95",
    )
    ```

    Each case runs the node once, as the graph would with that state, on the tier under
    test (no fallbacks, no high-stakes re-decision), and the graders judge `output`.
    """

    kind: str
    """The routing key the suite measures (`classify`, `tool_call`, ...)."""
    node: str
    """The graph node each case runs; its kind must be `kind`."""
    cases: Sequence[Case[Any, Any, Any]]
    state: Callable[[Any], dict[str, Any]]
    """A case's inputs -> the state the node is given."""
    graders: Sequence[Evaluator[Any, Any, Any]]
    bar: Bar | str
    output: Callable[[Any], Any] = field(default=lambda update: update)
    """The node's return value -> what the graders see."""
    deps: Callable[[], Any] | None = None
    """Builds the context (`ctx.deps`) the node needs, if any."""
    name: str = ""
    """Defaults to the kind."""
    capture: Callable[[Any], Any] | None = None
    """A state the node ran on -> the case's inputs (the inverse of `state`), for
    `agentflow eval capture` to make cases of recorded runs; None from it leaves that run
    out (one the inputs cannot describe). Without it, the suite's runs are not captured."""
    label: Callable[[Any], Any] | None = None
    """The node's return value -> the expected output a reviewer starts from, as JSON
    data (default: `output` applied, as data)."""

    def __post_init__(self) -> None:
        self.name = self.name or self.kind
        if isinstance(self.bar, str):
            self.bar = Bar.parse(self.bar)
        names = [case.name for case in self.cases]
        if len(set(names)) != len(names) or None in names:
            raise ConfigError(f"suite {self.name!r}: every case needs a unique name")

    @property
    def quality_bar(self) -> Bar:
        assert isinstance(self.bar, Bar)  # parsed in __post_init__
        return self.bar

    def proposed_label(self, update: Any) -> Any:
        """The expected output a captured run proposes: `label(update)`, else the graded
        output as data."""
        if self.label is not None:
            return self.label(update)
        return as_data(self.output(update))


def load_cases(
    path: str | Path,
    *,
    inputs: Callable[[dict[str, Any]], Any] | None = None,
    expected: str = "expected",
) -> list[Case[Any, Any, Any]]:
    """Read cases from a JSONL file: one object per line with a `name`, the expected
    output under `expected`, and the rest as the inputs (or `inputs(row)`).

    Captured rows (`agentflow eval capture`) count once a reviewer has labelled them: a
    row whose `review` is `unreviewed` or `rejected` is left out, and the `review` and
    `source` keys are never inputs.

    Raises:
        ConfigError: The file cannot be read, or a line is not a JSON object with a name
            and a known review state (names the file and line).
    """
    cases: list[Case[Any, Any, Any]] = []
    for row in CaseFile.read(Path(path)).rows:
        if row is None or row.get("review") in ("unreviewed", "rejected"):
            continue
        row.pop("review", None)
        row.pop("source", None)
        wanted = row.pop(expected, None)
        name = row.pop("name")
        cases.append(Case(name=name, inputs=inputs(row) if inputs else row, expected_output=wanted))
    return cases
