"""The HTTP server's Prometheus metrics, written in the text exposition format.

Counters live in the process (a restart starts them at zero, which Prometheus' `rate()`
expects); the escalation gauge is read from the review queue at each scrape, so every
replica reports the same, shared queue.

```text
agentflow_turns_total{source="message"|"resolve"}           counter
agentflow_model_calls_total{tier}                           counter
agentflow_model_tokens_total{tier, direction="input"|"output"}  counter
agentflow_model_cost_usd_total{tier}                        counter (priced calls only)
agentflow_model_unpriced_calls_total{tier}                  counter
agentflow_escalations{status}                               gauge
agentflow_http_requests_total{method, route, status}        counter
```
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agentflow.costs import StepRecord
from agentflow.queue import ReviewStatus

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, labels: _Labels, value: float) -> str:
    inner = ",".join(f'{key}="{_escape(text)}"' for key, text in labels)
    shown = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{inner}}} {shown}" if inner else f"{name} {shown}"


@dataclass(kw_only=True)
class _Family:
    """One metric: its help text, type and samples by label set."""

    name: str
    help: str
    kind: str
    """`counter` or `gauge`."""
    samples: dict[_Labels, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, value: float, **labels: str) -> None:
        self.samples[tuple(sorted(labels.items()))] += value

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} {self.kind}"
        for labels, value in sorted(self.samples.items()):
            yield _sample(self.name, labels, value)


class ServerMetrics:
    """What the server counts: turns, model calls and cost by tier, HTTP requests."""

    def __init__(self) -> None:
        self.turns = _Family(
            name="agentflow_turns_total", help="Graph runs (turns) completed.", kind="counter"
        )
        self.model_calls = _Family(
            name="agentflow_model_calls_total", help="Model calls by tier.", kind="counter"
        )
        self.tokens = _Family(
            name="agentflow_model_tokens_total", help="Model tokens by tier.", kind="counter"
        )
        self.cost = _Family(
            name="agentflow_model_cost_usd_total",
            help="Cost of priced model calls by tier, in USD.",
            kind="counter",
        )
        self.unpriced = _Family(
            name="agentflow_model_unpriced_calls_total",
            help="Model calls on unpriced tiers (not in the cost counter).",
            kind="counter",
        )
        self.http = _Family(
            name="agentflow_http_requests_total",
            help="HTTP requests by method, route template and status.",
            kind="counter",
        )
        # Present from the first scrape, so dashboards and alerts see zero, not nothing.
        for source in ("message", "resolve"):
            self.turns.add(0, source=source)

    def record_turn(self, steps: Iterable[StepRecord], *, source: str) -> None:
        """Count one completed turn and its model calls."""
        self.turns.add(1, source=source)
        for step in steps:
            self.model_calls.add(1, tier=step.tier)
            self.tokens.add(step.usage.input_tokens, tier=step.tier, direction="input")
            self.tokens.add(step.usage.output_tokens, tier=step.tier, direction="output")
            if step.cost_usd is None:
                self.unpriced.add(1, tier=step.tier)
            else:
                self.cost.add(step.cost_usd, tier=step.tier)

    def record_request(self, *, method: str, route: str, status: int) -> None:
        """Count one HTTP request by its route template (never the raw path: ids would
        make every thread a time series of its own)."""
        self.http.add(1, method=method, route=route, status=str(status))

    def render(self, escalations: Mapping[ReviewStatus, int]) -> str:
        """Every metric in the text exposition format; `escalations`: items by status."""
        gauge = _Family(name="agentflow_escalations", help="Review items by status.", kind="gauge")
        for status, count in escalations.items():
            gauge.add(count, status=status)
        families = (
            self.turns,
            self.model_calls,
            self.tokens,
            self.cost,
            self.unpriced,
            gauge,
            self.http,
        )
        return "\n".join(line for family in families for line in family.render()) + "\n"
