"""An eval's report: the figures per kind and tier, the tier each kind should route to,
and the change to agentflow.toml's [routing] table that would make it so."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError

from agentflow.evals.results import CaseResult, TierResult
from agentflow.evals.stats import Recommendation, recommend
from agentflow.evals.suite import Bar
from agentflow.exceptions import ConfigError

__all__ = ["EvalReport", "RoutingChange", "build_report", "routing_change"]


@dataclass(kw_only=True)
class EvalReport:
    """Everything one `agentflow eval` measured and concluded."""

    graph: str
    results: list[TierResult]
    recommendations: dict[str, Recommendation]
    """Kind -> the tier it should route to (None: no routable tier clears its bar)."""
    routes: dict[str, str]
    """Kind -> the tier it routes to now."""
    reserved: str | None = None
    """The high-stakes tier: measured as the baseline, never routed to by kind."""
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def by_kind(self) -> dict[str, list[TierResult]]:
        kinds: dict[str, list[TierResult]] = {}
        for result in self.results:
            kinds.setdefault(result.kind, []).append(result)
        return kinds

    def changes(self) -> dict[str, str]:
        """Kind -> recommended tier, where it differs from the route now."""
        return {
            kind: rec.tier
            for kind, rec in self.recommendations.items()
            if rec.tier is not None and self.routes.get(kind) != rec.tier
        }

    def to_json(self, *, cases: bool = True) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "created_at": self.created_at,
            "reserved": self.reserved,
            "routes": self.routes,
            "recommendations": {
                kind: {"tier": rec.tier, "reason": rec.reason, "rejected": list(rec.rejected)}
                for kind, rec in self.recommendations.items()
            },
            "results": [
                {
                    **result.summary(),
                    **({"cases": [c.to_json() for c in result.cases]} if cases else {}),
                }
                for result in self.results
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EvalReport:
        """Read what `to_json()` wrote (with its cases)."""
        results = [
            TierResult(
                suite=row["suite"],
                kind=row["kind"],
                tier=row["tier"],
                model=row["model"],
                bar=Bar.parse(row["bar"]),
                confidence=row.get("confidence", 0.95),
                cases=[CaseResult(**case) for case in row.get("cases", [])],
            )
            for row in data["results"]
        ]
        recommendations = {
            kind: Recommendation(
                kind=kind, tier=rec["tier"], reason=rec["reason"], rejected=tuple(rec["rejected"])
            )
            for kind, rec in data["recommendations"].items()
        }
        return cls(
            graph=data["graph"],
            results=results,
            recommendations=recommendations,
            routes=data["routes"],
            reserved=data.get("reserved"),
            created_at=data["created_at"],
        )

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=1, default=str, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")


def build_report(
    graph: str,
    results: Sequence[TierResult],
    routes: Mapping[str, str],
    *,
    reserved: str | None = None,
) -> EvalReport:
    """Recommend a tier per kind from `results` (one suite per kind).

    The reserved high-stakes tier is never recommended: kinds may not route to it.
    """
    recommendations: dict[str, Recommendation] = {}
    kinds: dict[str, list[TierResult]] = {}
    for result in results:
        kinds.setdefault(result.kind, []).append(result)
    for kind, measured in kinds.items():
        candidates = [r.candidate() for r in measured if r.tier != reserved]
        recommendation = recommend(kind, measured[0].bar.at_least, candidates)
        if reserved is not None and any(r.tier == reserved for r in measured):
            note = f"{reserved}: reserved for high-stakes steps (the baseline)"
            recommendation = Recommendation(
                kind=kind,
                tier=recommendation.tier,
                reason=recommendation.reason,
                rejected=(*recommendation.rejected, note),
            )
        recommendations[kind] = recommendation
    return EvalReport(
        graph=graph,
        results=list(results),
        recommendations=recommendations,
        routes=dict(routes),
        reserved=reserved,
    )


@dataclass(kw_only=True, frozen=True)
class RoutingChange:
    """agentflow.toml with the recommended routes, and the diff from the file as it is."""

    path: Path
    text: str
    diff: str


def routing_change(path: Path, changes: Mapping[str, str]) -> RoutingChange:
    """Set `[routing] KIND = "TIER"` for each change, keeping the file's comments and
    layout (tomlkit), and return the new text with its unified diff.

    Raises:
        ConfigError: The file cannot be read or has no [routing] table.
    """
    try:
        old = path.read_text(encoding="utf-8")
        document = tomlkit.parse(old)
    except (OSError, ParseError) as exc:
        raise ConfigError(f"cannot update the routing table: {exc}", file=str(path)) from exc
    routing = document.get("routing")
    if not isinstance(routing, Mapping):
        raise ConfigError("no [routing] table to update", file=str(path), key="routing")
    for kind, tier in changes.items():
        routing[kind] = tier  # type: ignore[index]
    new = tomlkit.dumps(document)
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{path} (now)",
            tofile=f"{path} (recommended)",
        )
    )
    return RoutingChange(path=path, text=new, diff=diff)
