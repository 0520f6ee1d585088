"""Shadow mode: a sample of live steps is also sent to a cheaper candidate tier, in the
background, and its answer is graded for agreement with the serving tier's. The reply
never waits for it or sees it.

```toml
[shadow]
sample = 0.05                 # share of each kind's live steps also sent
classify = "small"            # kind -> the candidate tier
tool_call = "small"
log = ".agentflow/shadow.jsonl"
```

Agreement is equality as data: parsed outputs for structured steps, the calls (name and
arguments) for tool calls, the whitespace-normalised text otherwise. Each comparison is
a line in `log` (read by `agentflow eval shadow-report`) and a point of the
`agentflow.shadow.comparisons` counter. Candidate calls pass the PII boundary of their
tier, are priced, and are kept out of the run's budget and records.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentflow.costs import SpendLedger, cost_usd
from agentflow.models.base import ModelRequest, ModelResponse

if TYPE_CHECKING:
    from agentflow.routing import Router

__all__ = ["ShadowPolicy", "ShadowRecord", "Shadows", "agree"]

_log = logging.getLogger("agentflow")


@dataclass(kw_only=True)
class ShadowPolicy:
    """Which kinds are shadowed, on which candidate tier, how often."""

    kinds: dict[str, str]
    """Kind -> the candidate tier its sampled steps are also sent to."""
    sample: float = 0.05
    """The share of each shadowed kind's steps that is sent."""
    log: Path | None = None
    """Where each comparison is appended as a JSON line (None: only the metric)."""


@dataclass(kw_only=True)
class ShadowRecord:
    """One sampled step: what the serving tier and the candidate answered, compared."""

    at: str
    kind: str
    node: str
    serving_tier: str
    candidate_tier: str
    agree: bool | None
    """None when the candidate gave no comparable answer (see `error`)."""
    error: str | None = None
    serving_latency_s: float | None = None
    candidate_latency_s: float | None = None
    serving_cost_usd: float | None = None
    candidate_cost_usd: float | None = None


def agree(req: ModelRequest, serving: tuple[ModelResponse, Any], candidate: ModelResponse) -> bool:
    """Whether the candidate's answer equals the serving tier's (see the module docstring).

    Raises:
        ValueError: The candidate's answer does not parse as the requested output.
    """
    response, value = serving
    if req.output is not None:
        return _data(req.output.parse(candidate.message.content)) == _data(value)
    if req.tools:
        calls = [(c.name, c.arguments) for c in response.message.tool_calls]
        return calls == [(c.name, c.arguments) for c in candidate.message.tool_calls]
    return " ".join(response.message.content.split()) == " ".join(candidate.message.content.split())


def _data(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


@dataclass(kw_only=True)
class Shadows:
    """Sends sampled steps to their candidate tier in the background (see the module)."""

    router: Router
    policy: ShadowPolicy
    rng: random.Random = field(default_factory=random.Random)
    pending: set[asyncio.Task[None]] = field(default_factory=set[asyncio.Task[None]])
    _ledger: SpendLedger = field(default_factory=SpendLedger)

    def maybe_send(
        self,
        *,
        kind: str,
        node: str,
        served: str,
        req: ModelRequest,
        result: tuple[ModelResponse, Any],
        serving_cost_usd: float | None,
    ) -> None:
        """Start the candidate's call for a sampled step; return at once."""
        candidate = self.policy.kinds.get(kind)
        if candidate is None or candidate == served or self.rng.random() >= self.policy.sample:
            return
        record = ShadowRecord(
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            kind=kind,
            node=node,
            serving_tier=served,
            candidate_tier=candidate,
            agree=None,
            serving_latency_s=result[0].latency_s,
            serving_cost_usd=serving_cost_usd,
        )
        task = asyncio.create_task(self._compare(record, req, result))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def drain(self) -> None:
        """Wait for the comparisons in flight (at shutdown)."""
        while self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)

    async def _compare(
        self, record: ShadowRecord, req: ModelRequest, result: tuple[ModelResponse, Any]
    ) -> None:
        try:
            response = await self._ask(record, req)
            record.agree = agree(req, result, response)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the candidate's failure is a finding, never the reply's
            record.error = f"{type(exc).__name__}: {exc}"
        self._report(record)

    async def _ask(self, record: ShadowRecord, req: ModelRequest) -> ModelResponse:
        run_id = f"shadow-{uuid.uuid4()}"
        spend = self._ledger.open(run_id, (), run_id=run_id)
        try:
            call = self.router.attempt(
                record.candidate_tier,
                req.messages,
                est_input_tokens=0,
                max_tokens=req.settings.max_tokens,
                spend=spend,
            )
            started = time.perf_counter()
            try:
                response = await call.model.request(replace(req, messages=call.messages))
            except BaseException:
                spend.release(call.held)
                raise
            cost = cost_usd(response.usage, self.router.tiers[record.candidate_tier].price)
            spend.settle(call.held, response.usage, cost)
            record.candidate_latency_s = response.latency_s or time.perf_counter() - started
            record.candidate_cost_usd = cost
            return response
        finally:
            spend.close()

    def _report(self, record: ShadowRecord) -> None:
        from agentflow.tracing import instruments

        verdict = "error" if record.agree is None else "agree" if record.agree else "disagree"
        instruments().shadow.add(
            1,
            {
                "agentflow.kind": record.kind,
                "agentflow.tier": record.serving_tier,
                "agentflow.shadow.tier": record.candidate_tier,
                "agentflow.shadow.verdict": verdict,
            },
        )
        if self.policy.log is None:
            return
        try:
            self.policy.log.parent.mkdir(parents=True, exist_ok=True)
            with self.policy.log.open("a", encoding="utf-8") as log:  # one short line: atomic
                log.write(json.dumps(asdict(record)) + "\n")
        except OSError as exc:
            _log.warning("cannot write the shadow log %s: %s", self.policy.log, exc)
