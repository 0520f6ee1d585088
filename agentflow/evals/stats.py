"""The numbers a routing decision rests on: Wilson intervals, latency percentiles, and
the cheapest tier whose lower confidence bound clears a kind's bar."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["Candidate", "Recommendation", "percentile", "recommend", "wilson_interval"]


def wilson_interval(passed: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a pass rate: `(low, high)`, `(0, 1)` with no cases.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 100/100:
    `(0.963, 1.0)` at 95 %, so a bar of 0.95 needs at least 73 cases all passing.
    """
    if not 0 <= passed <= total:
        raise ValueError(f"passed must be within 0..total, got {passed}/{total}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if total == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = passed / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # Exact at the ends: rounding must not put 0/n above 0 or n/n below 1.
    low = 0.0 if passed == 0 else max(0.0, centre - half)
    high = 1.0 if passed == total else min(1.0, centre + half)
    return low, high


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


@dataclass(kw_only=True, frozen=True)
class Candidate:
    """One tier's measured figures for one kind, as the recommender reads them."""

    tier: str
    low: float
    """The lower bound of the quality interval."""
    cost_per_case: float | None
    """Mean USD per case; None when the tier is unpriced."""
    complete: bool = True
    """Every case ran (none was stopped by a budget)."""
    p50_s: float | None = None


@dataclass(kw_only=True, frozen=True)
class Recommendation:
    """The tier a kind should route to, or None when no tier clears its bar."""

    kind: str
    tier: str | None
    reason: str
    rejected: tuple[str, ...] = ()
    """Why each other tier was passed over, one line each."""


def recommend(kind: str, bar: float, candidates: Sequence[Candidate]) -> Recommendation:
    """Pick the cheapest tier whose lower confidence bound is at least `bar`.

    A tier that is unpriced (its cost is unknown) or did not run every case is never
    picked; ties in cost go to the lower median latency, then to the name.
    """
    rejected: list[str] = []
    eligible: list[Candidate] = []
    for candidate in candidates:
        if not candidate.complete:
            rejected.append(f"{candidate.tier}: not every case ran (budget)")
        elif candidate.low < bar:
            rejected.append(f"{candidate.tier}: lower bound {candidate.low:.3f} < bar {bar:g}")
        elif candidate.cost_per_case is None:
            rejected.append(f"{candidate.tier}: unpriced, so its cost is unknown")
        else:
            eligible.append(candidate)
    if not eligible:
        return Recommendation(
            kind=kind, tier=None, reason=f"no tier clears the bar {bar:g}", rejected=tuple(rejected)
        )
    best = min(
        eligible,
        key=lambda c: (c.cost_per_case, math.inf if c.p50_s is None else c.p50_s, c.tier),
    )
    for candidate in eligible:
        if candidate is not best:
            rejected.append(f"{candidate.tier}: clears the bar but costs more")
    return Recommendation(
        kind=kind,
        tier=best.tier,
        reason=(
            f"cheapest tier clearing the bar: lower bound {best.low:.3f} >= {bar:g}, "
            f"${best.cost_per_case:.6f} per case"
        ),
        rejected=tuple(rejected),
    )
