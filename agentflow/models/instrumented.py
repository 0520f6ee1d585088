"""The `chat {model}` span and the model-call metrics: a `Model` wrapper (see `agentflow.tracing`).

Each routed call in a traced node goes through an `InstrumentedModel`: a CLIENT span with
the conventions' request, response and usage attributes, and four metric points
(`gen_ai.client.operation.duration`, `gen_ai.client.token.usage` for input and output,
and `agentflow.cost.usd`), recorded together when the call ends. The attribute sets of the
points are made once per model (and response model), not once per call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from weakref import WeakKeyDictionary

from langgraph.errors import GraphBubbleUp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from agentflow import _genai as genai
from agentflow._genai import conversation, instruments
from agentflow._recorded import chat_content, redactor
from agentflow.costs import cost_usd
from agentflow.models.base import JsonSchema, Model, ModelRequest, ModelResponse
from agentflow.tracing import ATTEMPT, COST, ROUTE_REASON, ROUTE_TIER, UNPRICED

if TYPE_CHECKING:
    from opentelemetry.util.types import AnyValue

    from agentflow.routing import Tier

__all__ = ["InstrumentedModel", "instrument"]

Attributes = dict[str, "AnyValue"]


def instrument(model: Model, *, tier: Tier, attempt: int, reason: str) -> Model:
    """The model wrapped in an `InstrumentedModel` inside a traced node; as is elsewhere."""
    if redactor.get() is None:
        return model
    return InstrumentedModel(model, tier=tier, attempt=attempt, reason=reason)


class InstrumentedModel(Model):
    """Wrap one routed call to a tier's model in a `chat {model}` span and its metrics.

    The span is `chat` alone while the model's name is unknown (an `sglang:` tier named
    without one, before its first answer): the conventions' name without the model.

    Args:
        model: The tier's model.
        tier: The tier, for its name and price.
        attempt: 1, or 1 + the validation retries made on this tier before this call.
        reason: Why the call went to this tier.
    """

    def __init__(self, model: Model, *, tier: Tier, attempt: int = 1, reason: str = "") -> None:
        self.model = model
        self.name = model.name
        self.provider = model.provider
        self.profile = model.profile
        self.tier = tier
        self.attempt = attempt
        self.reason = reason

    @property
    def provider_name(self) -> str:
        return self.model.provider_name

    async def request(self, req: ModelRequest) -> ModelResponse:
        ins = instruments()
        points = _points_of(self.model)
        span = ins.tracer.start_span(
            points.span_name, kind=SpanKind.CLIENT, attributes=self._request_attributes(req, points)
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        started = time.perf_counter()
        try:
            response = await self.model.request(req)
        except BaseException as exc:
            self._failed(ins, span, exc, points.measured, time.perf_counter() - started)
            raise
        finally:
            otel_context.detach(token)
        self._record(ins, span, req, response, points, time.perf_counter() - started)
        span.end()
        return response

    def _request_attributes(self, req: ModelRequest, points: _Points) -> Attributes:
        settings = req.settings
        attributes: Attributes = {
            **points.measured,
            ROUTE_TIER: self.tier.name,
            ATTEMPT: self.attempt,
            genai.OUTPUT_TYPE: "json" if isinstance(req.output, JsonSchema) else "text",
            genai.REQUEST_MAX_TOKENS: settings.max_tokens,
        }
        if thread := conversation.get():
            attributes[genai.CONVERSATION_ID] = thread
        if self.reason:
            attributes[ROUTE_REASON] = self.reason
        if settings.temperature is not None:
            attributes[genai.REQUEST_TEMPERATURE] = settings.temperature
        if settings.seed is not None:
            attributes[genai.REQUEST_SEED] = settings.seed
        return attributes

    def _failed(
        self,
        ins: genai.Instruments,
        span: Span,
        exc: BaseException,
        measured: Attributes,
        duration_s: float,
    ) -> None:
        if not isinstance(exc, GraphBubbleUp | GeneratorExit):
            genai.emit_exception(ins, span, exc, genai.fail(span, exc))
        ins.duration.record(duration_s, {**measured, genai.ERROR_TYPE: genai.error_type(exc)})
        span.end()

    def _record(
        self,
        ins: genai.Instruments,
        span: Span,
        req: ModelRequest,
        response: ModelResponse,
        points: _Points,
        duration_s: float,
    ) -> None:
        """Record the call's four metric points, then its response on its span."""
        usage = response.usage
        cost = cost_usd(usage, self.tier.price)
        response_model = response.model or self.model.name
        duration, input_tokens, output_tokens = points.by_response_model(response_model)
        ins.duration.record(duration_s, duration)
        ins.tokens.record(usage.input_tokens, input_tokens)
        ins.tokens.record(usage.output_tokens, output_tokens)
        if cost is not None:
            ins.cost.add(cost, points.costed(self.tier.name))
        if not span.is_recording():
            return
        attributes: Attributes = {
            genai.FINISH_REASONS: (response.finish_reason or "stop",),
            genai.INPUT_TOKENS: usage.input_tokens,
            genai.OUTPUT_TOKENS: usage.output_tokens,
            genai.CACHE_READ_TOKENS: usage.cached_tokens,
        }
        if response_model:
            attributes[genai.RESPONSE_MODEL] = response_model
        if response.id:
            attributes[genai.RESPONSE_ID] = response.id
        if cost is None:
            attributes[UNPRICED] = True
        else:
            attributes[COST] = cost
        span.set_attributes(attributes)
        if ins.capture != "NO_CONTENT":
            _capture(ins, span, req, response, points.measured)

    async def aclose(self) -> None:
        await self.model.aclose()


class _Points:
    """The span name and the metric points' attribute sets of calls to one model.

    Made once per model (while its name stays the same), so a call builds no dict for its
    points: the SDK is handed the same attribute sets every time.
    """

    __slots__ = ("_by_response_model", "_costed", "measured", "name", "span_name")

    _KEPT = 32
    """How many response models or tiers are kept (a server names few; never unbounded)."""

    def __init__(self, model: Model) -> None:
        self.name = model.name
        self.span_name = f"chat {model.name}" if model.name else "chat"
        self.measured = genai.model_attributes(model)
        """The sampling-relevant attributes, what every metric point of a call carries."""
        self._by_response_model: dict[str, tuple[Attributes, Attributes, Attributes]] = {}
        self._costed: dict[str, Attributes] = {}

    def by_response_model(self, response_model: str) -> tuple[Attributes, Attributes, Attributes]:
        """The duration's, input tokens' and output tokens' attributes of a call answered
        by `response_model`."""
        found = self._by_response_model.get(response_model)
        if found is None:
            base = {**self.measured}
            if response_model:
                base[genai.RESPONSE_MODEL] = response_model
            found = (
                base,
                {**base, genai.TOKEN_TYPE: "input"},
                {**base, genai.TOKEN_TYPE: "output"},
            )
            if len(self._by_response_model) < self._KEPT:
                self._by_response_model[response_model] = found
        return found

    def costed(self, tier: str) -> Attributes:
        """The cost point's attributes of a call on `tier`."""
        found: Attributes | None = self._costed.get(tier)
        if found is None:
            found = {ROUTE_TIER: tier, **({genai.REQUEST_MODEL: self.name} if self.name else {})}
            if len(self._costed) < self._KEPT:
                self._costed[tier] = found
        return found


_POINTS: WeakKeyDictionary[Model, _Points] = WeakKeyDictionary()


def _points_of(model: Model) -> _Points:
    """The model's `_Points`, made again once its name changes (an `sglang:` tier learns
    it from the server's first answer)."""
    found = _POINTS.get(model)
    if found is None or found.name != model.name:
        found = _POINTS[model] = _Points(model)
    return found


def _capture(
    ins: genai.Instruments,
    span: Span,
    req: ModelRequest,
    response: ModelResponse,
    measured: Attributes,
) -> None:
    inputs, outputs, system = chat_content(req.messages, response)
    content: Attributes = {genai.INPUT_MESSAGES: inputs, genai.OUTPUT_MESSAGES: outputs}
    if system is not None:
        content[genai.SYSTEM_INSTRUCTIONS] = system
    if ins.spans:
        span.set_attributes(content)
    if ins.events:
        described: Attributes = {
            **measured,
            **genai.conversation_attributes(),
            genai.FINISH_REASONS: [response.finish_reason or "stop"],
            genai.INPUT_TOKENS: response.usage.input_tokens,
            genai.OUTPUT_TOKENS: response.usage.output_tokens,
            **({genai.RESPONSE_MODEL: response.model} if response.model else {}),
            **({genai.RESPONSE_ID: response.id} if response.id else {}),
        }
        genai.emit_content(ins, span, {**described, **content})
