"""Wilson intervals and the recommender: a tier whose lower bound misses the bar is never
picked, whatever it costs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.evals.stats import Candidate, percentile, recommend, wilson_interval


@pytest.mark.parametrize(
    ("passed", "total", "low", "high"),
    [
        (100, 100, 0.9630, 1.0),  # n / (n + z^2) at p = 1
        (0, 10, 0.0, 0.2775),
        (81, 263, 0.2553, 0.3662),  # Wilson (1927) as tabulated by Newcombe (1998), case 1
        (15, 148, 0.0624, 0.1605),  # Newcombe (1998), case 2
    ],
)
def test_wilson_interval_matches_published_values(
    passed: int, total: int, low: float, high: float
) -> None:
    got_low, got_high = wilson_interval(passed, total)
    assert got_low == pytest.approx(low, abs=5e-4)
    assert got_high == pytest.approx(high, abs=5e-4)


def test_a_bar_of_095_needs_73_cases_all_passing() -> None:
    assert wilson_interval(72, 72)[0] < 0.95 <= wilson_interval(73, 73)[0]


@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_the_interval_holds_the_observed_rate(counts: tuple[int, int]) -> None:
    passed, total = counts
    low, high = wilson_interval(passed, total)
    rate = passed / total if total else 0.5
    assert 0.0 <= low <= rate <= high <= 1.0


candidates = st.lists(
    st.builds(
        Candidate,
        tier=st.text("abcdefgh", min_size=1, max_size=6),
        low=st.floats(0, 1),
        cost_per_case=st.none() | st.floats(0, 1),
        complete=st.booleans(),
        p50_s=st.none() | st.floats(0, 10),
    ),
    max_size=8,
    unique_by=lambda candidate: candidate.tier,
)


@given(candidates, st.floats(0.01, 1))
def test_the_recommender_never_picks_a_tier_whose_lower_bound_misses_the_bar(
    tiers: list[Candidate], bar: float
) -> None:
    chosen = recommend("classify", bar, tiers)
    eligible = [c for c in tiers if c.complete and c.low >= bar and c.cost_per_case is not None]
    if not eligible:
        assert chosen.tier is None
        assert "no tier clears" in chosen.reason
        return
    picked = next(c for c in eligible if c.tier == chosen.tier)
    assert picked.low >= bar
    assert picked.cost_per_case == min(c.cost_per_case or 0.0 for c in eligible)


def test_a_cheaper_tier_below_the_bar_loses_to_a_dearer_one_above_it() -> None:
    chosen = recommend(
        "classify",
        0.9,
        [
            Candidate(tier="tiny", low=0.89, cost_per_case=0.0001),
            Candidate(tier="glm", low=0.93, cost_per_case=0.001),
            Candidate(tier="frontier", low=0.97, cost_per_case=0.01),
            Candidate(tier="cheap-but-partial", low=0.99, cost_per_case=0.00001, complete=False),
            Candidate(tier="unpriced", low=0.99, cost_per_case=None),
        ],
    )
    assert chosen.tier == "glm"
    assert "tiny: lower bound 0.890 < bar 0.9" in chosen.rejected
    assert "cheap-but-partial: not every case ran (budget)" in chosen.rejected
    assert "unpriced: unpriced, so its cost is unknown" in chosen.rejected


def test_percentile_interpolates() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
