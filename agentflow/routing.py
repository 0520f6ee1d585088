"""Tiers, the routing policy, and the router that picks a tier for every step.

The rules the router enforces:

- a step's `kind` picks its tier; a kind without a tier is a `ConfigError`;
- the high-stakes ("frontier") tier serves only steps flagged high-stakes: no kind may
  map to it, and a fallback never escalates a step that is not flagged;
- before a request leaves for a tier with `self_hosted=False`, the PII boundary redacts
  or blocks personal data (`policy.pii`);
- a tier whose model is a hosted API (`anthropic:`, or `openai:` at a public host) is
  not self-hosted, whatever its flag says: `self_hosted=True` on one is a `ConfigError`
  unless `trust_self_hosted=True` vouches for it, which is logged as a warning;
- budgets stop a run before a call would exceed them: each call's estimate is reserved
  in the run's ledger before it is sent (so parallel nodes cannot together pass a
  budget) and replaced by what it used once answered; unpriced tiers are reported as
  unpriced, never as $0.

A tier that is not self-hosted and has no price takes its model's published API price
from `agentflow/prices.toml`; a tier that still has no price is logged once, as a warning,
when the router is built.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agentflow.costs import (
    Reservation,
    RunSpend,
    SpendLedger,
    UsageTotals,
    estimate_cost_usd,
)
from agentflow.exceptions import BudgetExceeded, ConfigError, PolicyViolation
from agentflow.messages import Message, estimate_tokens, message_text, prompt_tokens
from agentflow.models.base import Model
from agentflow.pii import PiiDetector, PiiScanner
from agentflow.presidio import PresidioDetector
from agentflow.shadow import ShadowPolicy, Shadows
from agentflow.tiers import Tier, configured_price, model_label

if TYPE_CHECKING:
    from agentflow.config import AgentflowConfig

__all__ = ["Attempt", "Plan", "RouteDecision", "Router", "RoutingPolicy", "Tier"]

_PII_MODES = ("redact", "block", "allow")

_log = logging.getLogger("agentflow")


def _shadow_policy(config: AgentflowConfig) -> ShadowPolicy | None:
    shadow = config.shadow
    if shadow is None or not shadow.kinds:
        return None
    log = Path(shadow.log) if shadow.log else None
    return ShadowPolicy(kinds=dict(shadow.kinds), sample=shadow.sample, log=log)


def _configured_detector(config: AgentflowConfig, name: str) -> PiiScanner | str:
    """`"presidio"` built from `[policy.presidio]`; other names are imported later."""
    if name != "presidio":
        return name
    settings = config.policy.presidio
    try:
        return PresidioDetector(settings.model, entities=settings.entities)
    except ConfigError as exc:
        origin = config.origin(exc.key) if exc.key else config.source
        raise ConfigError(exc.reason, file=origin, key=exc.key) from exc


@dataclass(kw_only=True)
class RoutingPolicy:
    """Which tier serves which step kind, and the rules every call must pass."""

    kinds: dict[str, str]
    """Step kind -> tier name, e.g. `{"plan": "planning", "tool_call": "tools"}`."""
    high_stakes: str | None = None
    """The tier reserved for steps flagged high-stakes (the frontier tier)."""
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    """Tier -> tiers to try, in order, when it fails."""
    pii: Literal["redact", "block", "allow"] = "redact"
    """What happens to personal data in a request bound for a tier that is not self-hosted."""
    pii_patterns: dict[str, str] = field(default_factory=dict)
    """Extra PII kinds: name -> regular expression."""
    pii_detectors: list[PiiScanner | str] = field(default_factory=list)
    """Extra PII detectors (a name or address finder): callables, `"presidio"` (see
    `agentflow.presidio`), or `"module:function"` import paths to one, called with each
    text and returning `PiiFinding`s."""
    budget_usd_per_run: float | None = None
    budget_tokens_per_run: int | None = None
    shadow: ShadowPolicy | None = None
    """A sample of some kinds' steps also sent to a candidate tier (`agentflow.shadow`)."""


@dataclass(kw_only=True, frozen=True)
class RouteDecision:
    """Where one step goes and why; recorded with the step."""

    node: str
    kind: str
    tier: str
    reason: str
    high_stakes: bool
    fallback_chain: tuple[str, ...]
    """Tiers to try after `tier`, in order, already filtered."""
    skipped: tuple[str, ...] = ()
    """Notes on fallbacks left out, e.g. "frontier: reserved for high-stakes steps"."""
    est_input_tokens: int = 0
    est_cost_usd: float | None = None
    """Estimated cost of the call on `tier` (prompt estimate + max_tokens); None if unpriced."""


@dataclass(kw_only=True, slots=True)  # not frozen: one is built per call, on the hot path
class Attempt:
    """One call about to leave for a tier: what to send, what the PII boundary redacted,
    and the budget held for it (see `Router.attempt`)."""

    tier: Tier
    model: Model
    """The tier's model, resolved."""
    messages: list[Message]
    """The request past the PII boundary, then the tier's retry exchange."""
    pii_redacted: dict[str, int]
    """Findings redacted, by kind; empty when there were none or the tier is self-hosted."""
    held: Reservation
    """The call's estimate, held against the run's budget until it is settled or released."""


@dataclass(kw_only=True, frozen=True)
class Plan:
    """Where a step of one kind goes: `choose`'s decision before the prompt is known,
    cached per (kind, high-stakes flag)."""

    kind: str
    tier: str
    reason: str
    fallback_chain: tuple[str, ...]
    """Tiers to try after `tier`, in order, already filtered."""
    skipped: tuple[str, ...]
    """Notes on fallbacks left out, e.g. "frontier: reserved for high-stakes steps"."""


class Router:
    """Pick a tier for each step, apply the PII boundary, and enforce run budgets.

    Args:
        tiers: The tiers, with unique names.
        policy: Routes and rules; every tier it names must be in `tiers`.
        source: The config file the router came from, named in errors.

    Raises:
        ConfigError: The policy names an unknown tier, maps a kind to the high-stakes
            tier, has a budget that is not positive, or a tier name is used twice.
    """

    def __init__(
        self, tiers: Sequence[Tier], policy: RoutingPolicy, *, source: str | None = None
    ) -> None:
        self.source = source
        self.policy = policy
        self.tiers: dict[str, Tier] = {}
        self.spend = SpendLedger()
        """What each run has spent and holds reserved in this process, for budgets."""
        self._plans: dict[tuple[str, bool], Plan] = {}
        shared: dict[str, Model] = {}
        for tier in tiers:
            tier._shared = shared
            if tier.name in self.tiers:
                raise ConfigError(
                    f"duplicate tier name {tier.name!r}", file=source, key=f"tiers.{tier.name}"
                )
            self.tiers[tier.name] = tier
            if tier.price is None:
                _log.warning(
                    "tier %r (%s) has no price; its calls are reported as unpriced",
                    tier.name,
                    model_label(tier.model),
                )
        self._check_routes()
        self._check_policy()
        self.pii = PiiDetector.from_policy(policy.pii_patterns, policy.pii_detectors, source=source)
        self.shadows: Shadows | None = None
        """Where sampled steps go to their candidate tier, when `policy.shadow` says."""
        if policy.shadow is not None:
            for kind, tier in policy.shadow.kinds.items():
                self._check_tier(tier, f"shadow.{kind}")
            self.shadows = Shadows(router=self, policy=policy.shadow)

    @classmethod
    def from_config(
        cls, config: AgentflowConfig, *, models: Mapping[str, Model] | None = None
    ) -> Router:
        """Build a router from a loaded config.

        Args:
            config: The validated config.
            models: Models that replace the model of the tiers they are keyed by, which is
                how graphs are tested with `ScriptedModel` while keeping prices and routes.

        Raises:
            ConfigError: `models` names a tier the config does not have, or the routes
                are inconsistent.
        """
        overrides = dict(models or {})
        for name in overrides:
            if name not in config.tiers:
                raise ConfigError(
                    f"a model override names unknown tier {name!r} "
                    f"(tiers: {', '.join(config.tiers)})",
                    file=config.source,
                    key=f"tiers.{name}",
                )
        tiers = [
            Tier(
                name=name,
                model=overrides.get(name, tier.model),
                price=configured_price(tier),
                self_hosted=tier.self_hosted,
                trust_self_hosted=tier.trust_self_hosted,
                source=config.origin(f"tiers.{name}.model"),
            )
            for name, tier in config.tiers.items()
        ]
        routing, policy = config.routing, config.policy
        rules = RoutingPolicy(
            kinds=dict(routing.kinds),
            high_stakes=routing.high_stakes,
            fallbacks={tier: list(chain) for tier, chain in routing.fallbacks.items()},
            pii=policy.pii,
            pii_patterns=dict(policy.pii_patterns),
            pii_detectors=[_configured_detector(config, name) for name in policy.pii_detectors],
            budget_usd_per_run=policy.budget_usd_per_run,
            budget_tokens_per_run=policy.budget_tokens_per_run,
            shadow=_shadow_policy(config),
        )
        try:
            return cls(tiers, rules, source=config.source)
        except ConfigError as exc:
            origin = config.origin(exc.key) if exc.key else config.source
            if origin == config.source:
                raise
            # The offending value came from an environment override: name the variable.
            raise ConfigError(exc.reason, file=origin, key=exc.key) from exc

    def _check_tier(self, name: str, key: str) -> None:
        if name not in self.tiers:
            raise ConfigError(
                f"unknown tier {name!r} (tiers: {', '.join(self.tiers)})", file=self.source, key=key
            )

    def _check_routes(self) -> None:
        policy = self.policy
        if policy.high_stakes is not None:
            self._check_tier(policy.high_stakes, "routing.high_stakes")
        for kind, tier in policy.kinds.items():
            self._check_tier(tier, f"routing.{kind}")
            if tier == policy.high_stakes:
                raise ConfigError(
                    f"tier {tier!r} is reserved for high-stakes steps (routing.high_stakes); "
                    f"map kind {kind!r} to another tier and flag the steps that need "
                    f"{tier!r} with high_stakes",
                    file=self.source,
                    key=f"routing.{kind}",
                )
        for tier, chain in policy.fallbacks.items():
            self._check_tier(tier, f"routing.fallbacks.{tier}")
            for fallback in chain:
                self._check_tier(fallback, f"routing.fallbacks.{tier}")

    def _check_policy(self) -> None:
        policy = self.policy
        if policy.pii not in _PII_MODES:
            raise ConfigError(
                f"must be one of {', '.join(_PII_MODES)}, got {policy.pii!r}",
                file=self.source,
                key="policy.pii",
            )
        for key, budget in (
            ("budget_usd_per_run", policy.budget_usd_per_run),
            ("budget_tokens_per_run", policy.budget_tokens_per_run),
        ):
            if budget is not None and not budget > 0:
                raise ConfigError(
                    f"must be > 0, got {budget!r}", file=self.source, key=f"policy.{key}"
                )

    def check_kind(self, kind: str, *, node: str) -> None:
        """Raise `ConfigError` if no tier serves `kind`, with the closest kind that one does."""
        if kind not in self.policy.kinds:
            known = ", ".join(self.policy.kinds) or "none"
            close = difflib.get_close_matches(kind, self.policy.kinds, n=1)
            fix = f"did you mean {close[0]!r}? Or add" if close else "add"
            raise ConfigError(
                f"node {node!r} has kind {kind!r}, which no tier serves (kinds: {known}); "
                f'{fix} `{kind} = "<tier>"` under [routing]',
                file=self.source,
                key=f"routing.{kind}",
            )

    def check_kinds(self, kinds: Mapping[str, str]) -> None:
        """Raise `ConfigError` if no tier serves the kind of one of a graph's nodes.

        Graphs call this when compiling, with each node's kind. A [routing] key that no
        node uses and that is close to a kind no tier serves is taken for that kind
        misspelt, and the error names it. An unused key alone is no error: a config may
        serve several graphs, and kinds are the graphs' own.

        Args:
            kinds: Node name -> its kind.
        """
        unused = [kind for kind in self.policy.kinds if kind not in kinds.values()]
        for node, kind in kinds.items():
            if kind in self.policy.kinds:
                continue
            close = difflib.get_close_matches(kind, unused, n=1)
            if close:
                raise ConfigError(
                    f"no node has kind {close[0]!r}; did you mean {kind!r}? "
                    f"(node {node!r} has kind {kind!r}, which no tier serves)",
                    file=self.source,
                    key=f"routing.{close[0]}",
                )
            self.check_kind(kind, node=node)

    def choose(
        self,
        *,
        node: str,
        kind: str,
        high_stakes: bool,
        messages: Sequence[Message],
        max_tokens: int,
    ) -> RouteDecision:
        """Pick the tier for one step, its fallbacks, and the estimated cost.

        A step flagged high-stakes goes to the high-stakes tier when one is configured;
        every other step goes to its kind's tier. Fallbacks are the tier's direct list,
        without the tier itself and, unless the step is high-stakes, without the
        high-stakes tier (noted in `skipped`).

        Raises:
            ConfigError: No tier serves `kind`.
        """
        plan = self.plan(kind, high_stakes, node=node)
        est_input = prompt_tokens(messages)
        return RouteDecision(
            node=node,
            kind=kind,
            tier=plan.tier,
            reason=plan.reason,
            high_stakes=high_stakes,
            fallback_chain=plan.fallback_chain,
            skipped=plan.skipped,
            est_input_tokens=est_input,
            est_cost_usd=estimate_cost_usd(est_input, max_tokens, self.tiers[plan.tier].price),
        )

    def plan(self, kind: str, high_stakes: bool, *, node: str) -> Plan:
        """`choose`'s decision before the prompt is known (cached per kind and flag): what
        a step's calls read, without a `RouteDecision` built per call.

        Raises:
            ConfigError: No tier serves `kind`.
        """
        plan = self._plans.get((kind, high_stakes))
        if plan is None:
            self.check_kind(kind, node=node)
            plan = self._plans[(kind, high_stakes)] = self._plan(kind, high_stakes)
        return plan

    def _plan(self, kind: str, high_stakes: bool) -> Plan:
        reserved = self.policy.high_stakes
        if high_stakes and reserved is not None:
            tier, reason = reserved, f"high-stakes step -> {reserved}"
        else:
            tier = self.policy.kinds[kind]
            reason = f"kind {kind} -> {tier}"
            if high_stakes:
                reason += " (step is high-stakes, but no routing.high_stakes tier is configured)"
        chain: list[str] = []
        skipped: list[str] = []
        for fallback in self.policy.fallbacks.get(tier, []):
            if fallback == tier or fallback in chain:
                continue
            if fallback == reserved and not high_stakes:
                skipped.append(f"{fallback}: reserved for high-stakes steps")
                continue
            chain.append(fallback)
        return Plan(
            kind=kind, tier=tier, reason=reason, fallback_chain=tuple(chain), skipped=tuple(skipped)
        )

    def attempt(
        self,
        tier: str,
        messages: Sequence[Message],
        *,
        est_input_tokens: int,
        max_tokens: int,
        spend: RunSpend,
        retry: Sequence[Message] = (),
    ) -> Attempt:
        """Ready one call to `tier`: the PII boundary, then the budget check and hold.

        Args:
            tier: The name of the tier the call goes to.
            messages: The request as routed; `est_input_tokens` estimates it (see
                `RouteDecision.est_input_tokens`) and is recounted if PII is redacted.
            max_tokens: The call's output limit, counted in the estimate.
            spend: The run's spend, which the estimate is checked against and held in.
            retry: The tier's invalid answers so far and the corrections asked of it, sent
                after the request. They came from the tier and from validating its
                answers, not from the request's data, so the boundary leaves them alone.

        Raises:
            PolicyViolation: See `boundary`.
            BudgetExceeded: The call would exceed the run's USD or token budget, counting
                what the run's calls in flight hold as spent (see `check_budget`).
            ConfigError: The tier's model spec cannot be resolved.
        """
        target = self.tiers[tier]
        sent, redacted = self.boundary(target, messages)
        model = target.get_model()
        if redacted:  # the redacted text is what is sent, so it is what is estimated
            est_input_tokens = prompt_tokens(sent)
        if retry:
            est_input_tokens += sum(estimate_tokens(message_text(m)) for m in retry)
            sent = [*sent, *retry]
        # The budget check and the hold are one step (no await between), so no other node
        # of the run (a task of the same event loop) can check in between: nodes running
        # in parallel cannot together pass the budget.
        estimate = estimate_cost_usd(est_input_tokens, max_tokens, target.price)
        held = spend.hold(est_input_tokens + max_tokens, estimate, self._check)
        attempt = object.__new__(Attempt)  # see StepContext._record on why so
        attempt.__init__(tier=target, model=model, messages=sent, pii_redacted=redacted, held=held)
        return attempt

    def boundary(
        self, tier: Tier, messages: Sequence[Message]
    ) -> tuple[list[Message], dict[str, int]]:
        """Apply the PII boundary to a request bound for `tier`.

        Requests to self-hosted tiers, and every request under `pii = "allow"`, pass
        unchanged. Otherwise every message is scanned (`PiiDetector.redact_messages`:
        content, reasoning, tool results, and tool-call arguments as data). Messages
        without PII are returned as the same objects.

        Returns:
            The messages to send and the counts of redacted findings by kind.

        Raises:
            PolicyViolation: `pii = "block"` and personal data was found; the message
                names the kinds found, never the values.
        """
        if tier.self_hosted or self.policy.pii == "allow":
            return messages if isinstance(messages, list) else list(messages), {}
        result, counts = self.pii.redact_messages(messages)
        if counts and self.policy.pii == "block":
            found_kinds = ", ".join(f"{kind} x{count}" for kind, count in sorted(counts.items()))
            raise PolicyViolation(
                f"request to tier {tier.name!r} (not self-hosted) contains personal data "
                f"({found_kinds}) and policy.pii is 'block'",
                rule="pii",
                tier=tier.name,
            )
        return result, counts

    def check_budget(
        self, decision_tier: Tier, *, est_input_tokens: int, max_tokens: int, spent: UsageTotals
    ) -> float | None:
        """Refuse a call that would take the run past its budget.

        The estimate is the cost of `est_input_tokens` prompt tokens and `max_tokens`
        output tokens on the tier. An unpriced tier cannot be checked against a USD
        budget, so it passes that check (its calls are reported as unpriced, never $0);
        the token budget still applies. `spent.cost_usd` counts priced calls only.

        Returns:
            The USD estimate of the call, or None when the tier is unpriced.

        Raises:
            BudgetExceeded: The call would exceed the run's USD or token budget.
        """
        estimate = estimate_cost_usd(est_input_tokens, max_tokens, decision_tier.price)
        self._check(estimate, est_input_tokens + max_tokens, spent.cost_usd, spent.total_tokens)
        return estimate

    def _check(
        self,
        estimate: float | None,
        tokens: int,
        spent_usd: float,
        spent_tokens: int,
        reserved_usd: float = 0.0,
        reserved_tokens: int = 0,
    ) -> None:
        usd_budget = self.policy.budget_usd_per_run
        if (
            usd_budget is not None
            and estimate is not None
            and spent_usd + reserved_usd + estimate > usd_budget
        ):
            raise BudgetExceeded(
                unit="usd",
                limit=usd_budget,
                spent=spent_usd,
                estimate=estimate,
                reserved=reserved_usd,
            )
        token_budget = self.policy.budget_tokens_per_run
        if token_budget is not None and spent_tokens + reserved_tokens + tokens > token_budget:
            raise BudgetExceeded(
                unit="tokens",
                limit=token_budget,
                spent=spent_tokens,
                estimate=tokens,
                reserved=reserved_tokens,
            )

    def pinned(
        self,
        kind: str,
        tier: str,
        *,
        budget_usd: float | None = None,
        spend: SpendLedger | None = None,
    ) -> Router:
        """A router that sends `kind` to `tier` alone: no fallbacks and no high-stakes
        re-decision, with the same tiers, prices and PII boundary. Evals measure a tier so.

        Args:
            budget_usd: Replaces the policy's USD budget per run.
            spend: The ledger its runs' spend is kept in (a new one by default).
        """
        self._check_tier(tier, f"routing.{kind}")
        router = copy.copy(self)
        router.policy = dataclasses.replace(
            self.policy,
            kinds={kind: tier},
            high_stakes=None,
            fallbacks={},
            budget_usd_per_run=self.policy.budget_usd_per_run if budget_usd is None else budget_usd,
        )
        router._plans = {}
        router.spend = spend or SpendLedger()
        router.shadows = None  # a measured tier is measured alone
        return router

    async def aclose(self) -> None:
        """Close the models the tiers built from their specs (their HTTP clients); models
        given as objects belong to whoever made them."""
        if self.shadows is not None:
            await self.shadows.drain()
        built = {id(m): m for t in self.tiers.values() if (m := t.built_model) is not None}
        for model in built.values():
            await model.aclose()

    def routes(self) -> list[tuple[str, str, str]]:
        """Return `(kind, tier, model)` rows, kinds first, then `("high_stakes", tier, model)`."""
        rows = [(kind, tier, self.model_label(tier)) for kind, tier in self.policy.kinds.items()]
        if self.policy.high_stakes is not None:
            tier = self.policy.high_stakes
            rows.append(("high_stakes", tier, self.model_label(tier)))
        return rows

    def model_label(self, tier: str) -> str:
        return model_label(self.tiers[tier].model)
