"""Prices, the cost of model calls, and cost accounting per run, tier and node.

A price is either per token (hosted APIs) or per GPU-hour at an assumed throughput
(self-hosted tiers). A call on a tier without a price is *unpriced*: its cost is
`None`, never `0.0`, and totals say so (`"$0.000120 + unpriced"`).

Budgets read a `SpendLedger`: what each run has spent and holds reserved for calls in
flight, across all the nodes running it in this process (see `RunSpend`).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeAlias

from agentflow.exceptions import ConfigError
from agentflow.messages import Usage

__all__ = [
    "GpuPrice",
    "Price",
    "Reservation",
    "RunSpend",
    "RunUsage",
    "SpendLedger",
    "StepRecord",
    "TokenPrice",
    "UsageTotals",
    "cost_usd",
    "estimate_cost_usd",
]

_PER_MILLION = 1_000_000

_PROCESS = uuid.uuid4().hex[:16]
_serial = itertools.count(1)


def new_call_id() -> str:
    """Return an id no other call gets, in this process or another (a per-process random
    prefix and a counter: cheaper than a uuid per call)."""
    return f"{_PROCESS}-{next(_serial)}"


@dataclass(kw_only=True, frozen=True)
class TokenPrice:
    """Hosted API pricing, in USD per million tokens."""

    input: float
    """USD per 1M input tokens that were not served from a cache."""
    output: float
    """USD per 1M output tokens."""
    cached_input: float | None = None
    """USD per 1M cached input tokens; None means the same as `input`."""

    def __post_init__(self) -> None:
        for name, value in (
            ("input", self.input),
            ("output", self.output),
            ("cached_input", self.cached_input),
        ):
            if value is not None and value < 0:
                raise ConfigError(f"must be >= 0, got {value!r}", key=f"price.{name}")


@dataclass(kw_only=True, frozen=True)
class GpuPrice:
    """Self-hosted pricing: GPU time at an assumed sustained throughput.

    Every token, prompt or completion, costs `gpu_hour_usd / 3600 / tokens_per_s`.
    """

    gpu_hour_usd: float
    """What one hour of the serving replica costs (all of its GPUs), in USD."""
    tokens_per_s: float
    """Sustained total throughput of the replica: prompt + completion tokens per second."""

    def __post_init__(self) -> None:
        if self.gpu_hour_usd < 0:
            raise ConfigError(f"must be >= 0, got {self.gpu_hour_usd!r}", key="price.gpu_hour_usd")
        if self.tokens_per_s <= 0:
            raise ConfigError(f"must be > 0, got {self.tokens_per_s!r}", key="price.tokens_per_s")

    @cached_property
    def usd_per_token(self) -> float:
        return self.gpu_hour_usd / 3600 / self.tokens_per_s


Price: TypeAlias = TokenPrice | GpuPrice


def cost_usd(usage: Usage, price: Price | None) -> float | None:
    """Return what `usage` cost at `price`, or None when the tier is unpriced."""
    if price is None:
        return None
    if isinstance(price, GpuPrice):
        return usage.total_tokens * price.usd_per_token
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    return (
        (usage.input_tokens - cached) * price.input
        + cached * cached_rate
        + usage.output_tokens * price.output
    ) / _PER_MILLION


def estimate_cost_usd(input_tokens: int, output_tokens: int, price: Price | None) -> float | None:
    """Estimate a call's cost before it is made (no cache hits assumed); None if unpriced."""
    if price is None:
        return None
    if isinstance(price, GpuPrice):
        return (input_tokens + output_tokens) * price.usd_per_token
    return (input_tokens * price.input + output_tokens * price.output) / _PER_MILLION


@dataclass(kw_only=True, slots=True)
class StepRecord:
    """One model call that was made: where it went, why, and what it cost."""

    run_id: str
    node: str
    kind: str
    tier: str
    """The tier that actually answered."""
    model: str
    """The name of the model that answered."""
    reason: str
    """Why this tier: the route decision's reason, plus e.g. "fallback after tools failed: ..."."""
    fallback_chain: tuple[str, ...] = ()
    usage: Usage
    cost_usd: float | None
    """None when the tier is unpriced."""
    est_cost_usd: float | None = None
    """The estimate the budget check used; None when unpriced."""
    latency_s: float = 0.0
    attempt: int = 1
    """1 + the validation retries made on this tier."""
    pii_redacted: dict[str, int] = field(default_factory=dict)
    """Counts by PII kind redacted from the request before this call."""
    prompt_chars: int = 0
    """Size of the request's prompt (system, tool definitions, history), in characters."""
    prefix_chars: int | None = None
    """Characters at the start of this prompt identical to the run's previous request
    (what a prefix cache can reuse); None for a run's first request."""
    call_id: str = ""
    """The call's unique id, by which the run's `SpendLedger` tells the calls a state holds
    from those it does not; empty in records made before calls had ids."""


@dataclass(kw_only=True)
class UsageTotals:
    """Tokens and cost summed over calls; unpriced calls are counted, never valued at $0."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    """Sum over the priced calls only."""
    unpriced_calls: int = 0
    """Calls whose cost is unknown."""
    prompt_chars: int = 0
    """Prompt characters of the calls that followed another call of their run."""
    prefix_chars: int = 0
    """Of those, the characters shared with the previous request's prompt."""

    def add(self, usage: Usage, cost: float | None) -> None:
        """Count one call; `cost` None means the call was unpriced."""
        self.calls += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cached_tokens += usage.cached_tokens
        if cost is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += cost

    def add_step(self, step: StepRecord) -> None:
        """Count one recorded call, its prompt's reuse of the previous one included."""
        self.add(step.usage, step.cost_usd)
        if step.prefix_chars is not None:
            self.prompt_chars += step.prompt_chars
            self.prefix_chars += step.prefix_chars

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def prefix_reuse(self) -> float | None:
        """Shared-prefix characters / prompt characters between consecutive requests of a
        run: how much of each prompt a prefix (radix) cache could serve. None before a
        second request."""
        return self.prefix_chars / self.prompt_chars if self.prompt_chars else None

    @property
    def priced(self) -> bool:
        """True when every call counted had a known cost."""
        return self.unpriced_calls == 0

    def cost_label(self) -> str:
        """Format the cost: `"$0.000123"`, `"unpriced"`, or `"$0.000123 + unpriced"`."""
        if self.priced:
            return f"${self.cost_usd:.6f}"
        if self.unpriced_calls == self.calls:
            return "unpriced"
        return f"${self.cost_usd:.6f} + unpriced"


@dataclass(kw_only=True)
class RunUsage:
    """Usage of a run: in total, per tier that answered, and per graph node."""

    total: UsageTotals = field(default_factory=UsageTotals)
    by_tier: dict[str, UsageTotals] = field(default_factory=dict)
    by_node: dict[str, UsageTotals] = field(default_factory=dict)

    @classmethod
    def from_steps(cls, steps: Iterable[StepRecord], *, run_id: str | None = None) -> RunUsage:
        """Sum step records; with `run_id`, only the steps of that run."""
        usage = cls()
        for step in steps:
            if run_id is not None and step.run_id != run_id:
                continue
            usage.total.add_step(step)
            usage.by_tier.setdefault(step.tier, UsageTotals()).add_step(step)
            usage.by_node.setdefault(step.node, UsageTotals()).add_step(step)
        return usage


@dataclass(kw_only=True, slots=True)
class Reservation:
    """Budget held for one call in flight: its estimate, until settled or released."""

    call_id: str
    tokens: int
    """Prompt estimate + max_tokens."""
    cost_usd: float | None
    """The estimated cost; None on an unpriced tier (nothing held against a USD budget)."""


class _Run:
    """One run's spend in this process, shared by the nodes running it."""

    __slots__ = (
        "cost_usd",
        "nodes",
        "reserved_tokens",
        "reserved_usd",
        "scanned",
        "settled",
        "tokens",
    )

    def __init__(self) -> None:
        self.settled: set[str] = set()
        """The ids of the calls settled here."""
        self.tokens = 0
        self.cost_usd = 0.0
        """What those calls used (tokens) and cost (priced ones)."""
        self.reserved_tokens = 0
        self.reserved_usd = 0.0
        """Sums over the reservations in flight."""
        self.nodes = 0
        """Nodes of the run running now; a run with none may be forgotten."""
        self.scanned: tuple[str, int, StepRecord | None, int, float] = ("", 0, None, 0, 0.0)
        """The last state read (`SpendLedger.open`): run id, how many records, the last
        of them, and the tokens and USD of those not settled here."""

    def state_spend(self, steps: Sequence[StepRecord], run_id: str) -> tuple[int, float]:
        """Tokens and USD of the state's records of `run_id` not settled here.

        A run's records only ever grow at the end, and whether a record was settled here
        never changes once it is in a state (a call is settled before its record exists),
        so a state that extends the last one read is read from where that one ended. A
        different state (a resumed or forked thread) is read whole.
        """
        scanned_run, count, last, tokens, usd = self.scanned
        if scanned_run != run_id or count > len(steps) or (count and steps[count - 1] is not last):
            count, tokens, usd = 0, 0, 0.0
        settled = self.settled
        for step in steps[count:]:
            if step.run_id == run_id and step.call_id not in settled:
                tokens += step.usage.input_tokens + step.usage.output_tokens
                usd += step.cost_usd or 0.0
        self.scanned = (run_id, len(steps), steps[-1] if steps else None, tokens, usd)
        return tokens, usd


class SpendLedger:
    """What each run has spent and holds reserved, in this process, across its nodes.

    A budget check and the reservation it allows are one step (`Router.attempt`), so
    nodes running in parallel cannot together pass a budget: they are tasks of one event
    loop, and nothing awaits between a check and its hold. A call's spend is settled here
    as soon as it is answered, so it counts for the rest of the run even if its node then
    raises and its step record never reaches the state. What survives a restart is the
    state's step records only.

    Args:
        max_runs: How many runs are remembered; beyond it, the oldest runs with no node
            running are forgotten. A forgotten run's budget reads its state's records
            alone, as after a restart.
    """

    def __init__(self, max_runs: int = 1024) -> None:
        self.max_runs = max_runs
        self._runs: dict[str, _Run] = {}
        """Run key -> its spend, oldest first."""
        self._adding = threading.Lock()
        """Guards adding and forgetting runs, for graphs run from several threads."""

    def open(self, key: str, steps: Sequence[StepRecord], *, run_id: str) -> RunSpend:
        """Start a node of a run: its view of the run's spend, given the node's state.

        Args:
            key: The run's key in this process (its run id, thread or invocation).
            steps: The state's step records; those of `run_id` count.
            run_id: The run id the records carry.
        """
        run = self._runs.get(key)
        if run is None:
            with self._adding:
                run = self._runs.setdefault(key, _Run())
                run.nodes += 1  # running before anything is forgotten: never itself
                if len(self._runs) > self.max_runs:
                    self._forget_idle()
        else:
            run.nodes += 1
        # Calls are settled here before their records can reach any state, so the run's
        # sums already count the state's records of them; the state adds the others
        # (made by another process, or before a restart).
        tokens, usd = run.state_spend(steps, run_id)
        return RunSpend(run, tokens, usd)

    def _forget_idle(self) -> None:
        idle = (key for key, run in self._runs.items() if run.nodes == 0)
        for key in list(itertools.islice(idle, len(self._runs) - self.max_runs)):
            del self._runs[key]


BudgetCheck: TypeAlias = Callable[[float | None, int, float, int, float, int], None]
"""Raise if a call's estimate (USD, tokens) would take the run past its budget, given what
it has spent (USD, tokens) and holds for calls in flight (USD, tokens)."""


class RunSpend:
    """One node's view of its run's spend: the state's records of the run, plus the calls
    settled in this process that the node's state does not hold (other nodes' calls in
    flight or just done, calls of nodes that raised), plus the reservations in flight."""

    __slots__ = ("_base_tokens", "_base_usd", "_run")

    def __init__(self, run: _Run, base_tokens: int, base_usd: float) -> None:
        self._run = run
        self._base_tokens = base_tokens
        self._base_usd = base_usd
        """What the state holds beyond the ledger's calls."""

    @property
    def tokens(self) -> int:
        """Tokens the run's calls have used (input + output)."""
        return self._base_tokens + self._run.tokens

    @property
    def cost_usd(self) -> float:
        """What the run's priced calls have cost."""
        return self._base_usd + self._run.cost_usd

    def totals(self) -> tuple[float, int, float, int]:
        """USD and tokens spent, then USD and tokens reserved (one read, for checks)."""
        run = self._run
        return (
            self._base_usd + run.cost_usd,
            self._base_tokens + run.tokens,
            run.reserved_usd,
            run.reserved_tokens,
        )

    def hold(
        self, tokens: int, cost: float | None, check: BudgetCheck | None = None
    ) -> Reservation:
        """Reserve a call's estimate, first checked against the budget by `check` (given
        the estimate, then `totals()`) with no await between."""
        if check is not None:
            check(cost, tokens, *self.totals())
        run = self._run
        run.reserved_tokens += tokens
        run.reserved_usd += cost or 0.0
        held = object.__new__(Reservation)  # see StepContext._record on why so
        held.__init__(call_id=new_call_id(), tokens=tokens, cost_usd=cost)
        return held

    def settle(self, reservation: Reservation, usage: Usage, cost: float | None) -> None:
        """Replace a call's reservation by what it used."""
        run = self._run
        run.reserved_tokens -= reservation.tokens
        run.reserved_usd -= reservation.cost_usd or 0.0
        run.settled.add(reservation.call_id)
        run.tokens += usage.input_tokens + usage.output_tokens
        run.cost_usd += cost or 0.0

    def release(self, reservation: Reservation) -> None:
        """Give back the reservation of a call that failed (no usage to settle)."""
        self._run.reserved_tokens -= reservation.tokens
        self._run.reserved_usd -= reservation.cost_usd or 0.0

    def close(self) -> None:
        """End the node (once): its run may be forgotten when no other node runs it."""
        self._run.nodes -= 1
