"""Prices, call costs, and cost accounting: unpriced is never $0."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.costs import (
    GpuPrice,
    RunUsage,
    SpendLedger,
    StepRecord,
    TokenPrice,
    UsageTotals,
    cost_usd,
    estimate_cost_usd,
)
from agentflow.exceptions import ConfigError
from agentflow.messages import Usage

SONNET = TokenPrice(input=3.0, output=15.0, cached_input=0.3)
GLM = GpuPrice(gpu_hour_usd=3.6, tokens_per_s=1000)  # $0.000001 per token


def step(
    *, run_id: str = "r1", node: str = "answer", tier: str = "tools", cost: float | None = 0.5
) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        node=node,
        kind="respond",
        tier=tier,
        model="glm-4.6",
        reason="kind respond -> tools",
        usage=Usage(input_tokens=100, output_tokens=20, cached_tokens=10),
        cost_usd=cost,
    )


def test_token_price_charges_input_output_and_cached_input_separately() -> None:
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=500_000)
    # 500k uncached at $3/M + 500k cached at $0.3/M + 1M output at $15/M
    assert cost_usd(usage, SONNET) == pytest.approx(1.5 + 0.15 + 15.0)


def test_cached_input_defaults_to_the_input_price() -> None:
    price = TokenPrice(input=2.0, output=10.0)
    usage = Usage(input_tokens=1_000_000, cached_tokens=400_000)
    assert cost_usd(usage, price) == pytest.approx(2.0)


def test_gpu_price_charges_every_token_at_gpu_time_over_throughput() -> None:
    usage = Usage(input_tokens=700, output_tokens=300, cached_tokens=200)
    assert cost_usd(usage, GLM) == pytest.approx(1000 * 3.6 / 3600 / 1000)
    assert GLM.usd_per_token == pytest.approx(1e-6)


def test_unpriced_is_none_never_zero() -> None:
    assert cost_usd(Usage(input_tokens=10, output_tokens=10), None) is None
    assert estimate_cost_usd(10, 10, None) is None


def test_estimate_assumes_no_cache_hits() -> None:
    assert estimate_cost_usd(1_000_000, 0, SONNET) == pytest.approx(3.0)
    assert estimate_cost_usd(1000, 1000, GLM) == pytest.approx(0.002)


@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_token_cost_is_linear_and_non_negative(
    inputs: int, outputs: int, price_in: float, price_out: float
) -> None:
    price = TokenPrice(input=price_in, output=price_out)
    cost = estimate_cost_usd(inputs, outputs, price)
    assert cost is not None
    assert cost >= 0
    assert cost == pytest.approx((inputs * price_in + outputs * price_out) / 1e6)


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: TokenPrice(input=-1.0, output=1.0), "price.input"),
        (lambda: TokenPrice(input=1.0, output=-1.0), "price.output"),
        (lambda: TokenPrice(input=1.0, output=1.0, cached_input=-0.1), "price.cached_input"),
        (lambda: GpuPrice(gpu_hour_usd=-2.0, tokens_per_s=100), "price.gpu_hour_usd"),
        (lambda: GpuPrice(gpu_hour_usd=2.0, tokens_per_s=0), "price.tokens_per_s"),
    ],
)
def test_invalid_prices_are_config_errors(build: Callable[[], object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    assert info.value.key == key


def test_totals_count_priced_and_unpriced_calls_apart() -> None:
    totals = UsageTotals()
    totals.add(Usage(input_tokens=100, output_tokens=50, cached_tokens=30), 0.25)
    totals.add(Usage(input_tokens=10, output_tokens=5), None)
    assert (totals.calls, totals.unpriced_calls) == (2, 1)
    assert (totals.input_tokens, totals.output_tokens, totals.cached_tokens) == (110, 55, 30)
    assert totals.total_tokens == 165
    assert totals.cost_usd == pytest.approx(0.25)
    assert not totals.priced


def test_cost_label_formats() -> None:
    assert UsageTotals().cost_label() == "$0.000000"
    priced = UsageTotals()
    priced.add(Usage(input_tokens=1), 0.000123)
    assert priced.priced
    assert priced.cost_label() == "$0.000123"
    unpriced = UsageTotals()
    unpriced.add(Usage(input_tokens=1), None)
    assert unpriced.cost_label() == "unpriced"
    priced.add(Usage(input_tokens=1), None)
    assert priced.cost_label() == "$0.000123 + unpriced"


def test_run_usage_sums_by_tier_and_node() -> None:
    steps = [
        step(node="classify", tier="tools", cost=0.1),
        step(node="answer", tier="tools", cost=0.2),
        step(node="answer", tier="frontier", cost=None),
    ]
    usage = RunUsage.from_steps(steps)
    assert usage.total.calls == 3
    assert usage.total.cost_usd == pytest.approx(0.3)
    assert usage.total.cost_label() == "$0.300000 + unpriced"
    assert usage.by_tier["tools"].calls == 2
    assert usage.by_tier["tools"].priced
    assert usage.by_tier["frontier"].cost_label() == "unpriced"
    assert usage.by_node["answer"].calls == 2
    assert usage.by_node["classify"].cost_usd == pytest.approx(0.1)
    assert usage.total.input_tokens == 300


def test_run_usage_keeps_only_the_given_run() -> None:
    steps = [step(run_id="r1", cost=0.1), step(run_id="r2", cost=0.4), step(run_id="r1", cost=0.2)]
    usage = RunUsage.from_steps(steps, run_id="r1")
    assert usage.total.calls == 2
    assert usage.total.cost_usd == pytest.approx(0.3)
    assert RunUsage.from_steps(steps).total.calls == 3
    assert RunUsage.from_steps([]).total.calls == 0


def test_step_record_defaults() -> None:
    record = step()
    assert record.attempt == 1
    assert record.fallback_chain == ()
    assert record.pii_redacted == {}
    assert record.est_cost_usd is None


def paid(ledger: SpendLedger, key: str, tokens: int = 120) -> StepRecord:
    """Make one call of `tokens` in run `key`; return its record as a node would keep it."""
    spend = ledger.open(key, [], run_id="r1")
    held = spend.hold(tokens, None)
    spend.settle(held, Usage(input_tokens=tokens), None)
    spend.close()
    record = step(cost=None)
    record.usage, record.call_id = Usage(input_tokens=tokens), held.call_id
    return record


def test_the_ledger_counts_a_call_once_whether_or_not_the_state_holds_its_record() -> None:
    ledger = SpendLedger()
    record = paid(ledger, "run")
    assert ledger.open("run", [record], run_id="r1").tokens == 120  # a later node's state
    assert ledger.open("run", [], run_id="r1").tokens == 120  # its node raised: still spent
    # a record the ledger never settled (another process, before a restart) adds to it
    assert ledger.open("run", [record, step()], run_id="r1").tokens == 240
    assert ledger.open("other", [], run_id="r1").tokens == 0


def test_the_ledger_forgets_idle_runs_beyond_its_size_never_running_ones() -> None:
    ledger = SpendLedger(max_runs=1)
    paid(ledger, "a")
    running = ledger.open("b", [], run_id="r1")
    running.settle(running.hold(5, None), Usage(input_tokens=5), None)
    reopened = ledger.open("a", [], run_id="r1")
    assert reopened.tokens == 0, "a was idle: forgotten"
    assert ledger.open("b", [], run_id="r1").tokens == 5, "b has a node running: kept"
    reopened.settle(reopened.hold(7, None), Usage(input_tokens=7), None)
    assert ledger.open("a", [], run_id="r1").tokens == 7, "opening a run never forgets it"


def test_the_ledger_reads_a_grown_state_from_where_it_stopped_and_any_other_state_whole() -> None:
    ledger = SpendLedger()
    mine = paid(ledger, "run")
    elsewhere = [step(), step()]  # records this process never settled: 120 tokens each
    assert ledger.open("run", [mine, elsewhere[0]], run_id="r1").tokens == 240
    grown = [mine, elsewhere[0], elsewhere[1]]
    assert ledger.open("run", grown, run_id="r1").tokens == 360
    # a fork of the thread: as long, but another last record (a copy, as a checkpoint
    # read back gives): read whole, so nothing is counted twice or missed
    other = step()
    other.usage = Usage(input_tokens=1)
    fork = [mine, elsewhere[0], other]
    assert ledger.open("run", fork, run_id="r1").tokens == 120 + 120 + 1
    assert ledger.open("run", grown[:1], run_id="r1").tokens == 120, "a shorter state"
    assert ledger.open("run", grown, run_id="other").tokens == 120, "another run's records"
