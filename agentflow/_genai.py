"""The OpenTelemetry GenAI semantic conventions (v1.41) as agentflow records them.

The names (from `opentelemetry-semantic-conventions`, never typed by hand where the
package has them), the tracer, meter and logger agentflow uses (each with the v1.41
schema URL), the content-capture setting, and the pieces every span kind shares: the
conversation of the run, errors and exceptions, and the log-based events.

The hooks (`agentflow.compiled`, `agentflow.models.instrumented`, `agentflow.tracing`) build
the spans out of these; this module holds no span logic.
"""

from __future__ import annotations

import os
import traceback
from contextvars import ContextVar
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry._logs import SeverityNumber, get_logger
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import (
    error_attributes,
    exception_attributes,
    server_attributes,
)
from opentelemetry.semconv.schemas import Schemas
from opentelemetry.trace import Span, Status, StatusCode

from agentflow._recorded import redact
from agentflow.exceptions import ConfigError, ModelError

if TYPE_CHECKING:
    from opentelemetry._logs import LoggerProvider
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from opentelemetry.util.types import AnyValue

    from agentflow.models.base import Model

# -- names ----------------------------------------------------------------------------------
SCOPE = "agentflow"
SCHEMA_URL: Final = Schemas.V1_41_0.value
"""The conventions' schema URL, on the tracer, the meter and the logger."""
OPERATION = gen_ai.GEN_AI_OPERATION_NAME
PROVIDER = gen_ai.GEN_AI_PROVIDER_NAME
AGENT_NAME = gen_ai.GEN_AI_AGENT_NAME
CONVERSATION_ID = gen_ai.GEN_AI_CONVERSATION_ID
REQUEST_MODEL = gen_ai.GEN_AI_REQUEST_MODEL
REQUEST_MAX_TOKENS = gen_ai.GEN_AI_REQUEST_MAX_TOKENS
REQUEST_TEMPERATURE = gen_ai.GEN_AI_REQUEST_TEMPERATURE
REQUEST_SEED = gen_ai.GEN_AI_REQUEST_SEED
OUTPUT_TYPE = gen_ai.GEN_AI_OUTPUT_TYPE
RESPONSE_ID = gen_ai.GEN_AI_RESPONSE_ID
RESPONSE_MODEL = gen_ai.GEN_AI_RESPONSE_MODEL
FINISH_REASONS = gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
INPUT_TOKENS = gen_ai.GEN_AI_USAGE_INPUT_TOKENS
OUTPUT_TOKENS = gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
CACHE_READ_TOKENS = gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
INPUT_MESSAGES = gen_ai.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES = gen_ai.GEN_AI_OUTPUT_MESSAGES
SYSTEM_INSTRUCTIONS = gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS
TOOL_NAME = gen_ai.GEN_AI_TOOL_NAME
TOOL_CALL_ID = gen_ai.GEN_AI_TOOL_CALL_ID
TOOL_TYPE = gen_ai.GEN_AI_TOOL_TYPE
TOOL_DESCRIPTION = gen_ai.GEN_AI_TOOL_DESCRIPTION
TOOL_ARGUMENTS = gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS
TOOL_RESULT = gen_ai.GEN_AI_TOOL_CALL_RESULT
TOKEN_TYPE = gen_ai.GEN_AI_TOKEN_TYPE
SERVER_ADDRESS = server_attributes.SERVER_ADDRESS
SERVER_PORT = server_attributes.SERVER_PORT
ERROR_TYPE = error_attributes.ERROR_TYPE
EXCEPTION_TYPE = exception_attributes.EXCEPTION_TYPE
EXCEPTION_MESSAGE = exception_attributes.EXCEPTION_MESSAGE
EXCEPTION_STACKTRACE = exception_attributes.EXCEPTION_STACKTRACE
TOKEN_USAGE_METRIC = gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE
DURATION_METRIC = gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION
# Event names: the package names no events, so these two are the spec's own strings
# (v1.41 docs/gen-ai/gen-ai-events.md and gen-ai-exceptions.md).
CONTENT_EVENT = "gen_ai.client.inference.operation.details"
EXCEPTION_EVENT = "gen_ai.client.operation.exception"
# The conventions' recommended buckets: powers of 4 for tokens, doubling seconds.
TOKEN_BUCKETS = tuple(4.0**n for n in range(14))
DURATION_BUCKETS = tuple(0.01 * 2**n for n in range(14))
AGENT_PROVIDER = "agentflow"
"""`gen_ai.provider.name` of a run's `invoke_agent` span: an agentflow graph is an agent
running in this process whose steps may each go to a different provider, so the agent's
provider is agentflow itself; each `chat` span names the provider it actually called."""

CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
_CAPTURE_MODES: dict[str, CaptureMode] = {
    "NO_CONTENT": "NO_CONTENT",
    "SPAN_ONLY": "SPAN_ONLY",
    "EVENT_ONLY": "EVENT_ONLY",
    "SPAN_AND_EVENT": "SPAN_AND_EVENT",
    # The boolean of the instrumentations that predate the modes: `true` turned content
    # on wherever they recorded it, so it means everywhere here.
    "TRUE": "SPAN_AND_EVENT",
    "FALSE": "NO_CONTENT",
}

conversation: ContextVar[str | None] = ContextVar("agentflow_conversation", default=None)
"""Set inside a traced node: the run's thread id, put on every GenAI span of the run."""


def capture_mode() -> CaptureMode:
    """Read `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (NO_CONTENT when unset).

    `true` means `SPAN_AND_EVENT` and `false` `NO_CONTENT`, case aside.

    Raises:
        ConfigError: The variable holds something else.
    """
    value = os.environ.get(CAPTURE_VARIABLE, "").strip().upper() or "NO_CONTENT"
    mode = _CAPTURE_MODES.get(value)
    if mode is None:
        expected = ", ".join([*list(_CAPTURE_MODES)[:4], "true", "false"])
        raise ConfigError(f"must be one of {expected}, not {value!r}", key=CAPTURE_VARIABLE)
    return mode


class Instruments:
    """The tracer, logger, metric instruments and content setting in use."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        logger_provider: LoggerProvider | None = None,
    ) -> None:
        try:
            release = version("agentflow")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            release = ""
        self.tracer = trace.get_tracer(SCOPE, release, tracer_provider, schema_url=SCHEMA_URL)
        self.logger = get_logger(SCOPE, release, logger_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(SCOPE, release, meter_provider, schema_url=SCHEMA_URL)
        self.tokens = meter.create_histogram(
            TOKEN_USAGE_METRIC,
            unit="{token}",
            description="Tokens used per model call, by token type",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            DURATION_METRIC,
            unit="s",
            description="Duration of model calls",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.cost = meter.create_counter(
            "agentflow.cost.usd",
            unit="USD",
            description="Listed or GPU-time cost of model calls, by tier",
        )
        self.shadow = meter.create_counter(
            "agentflow.shadow.comparisons",
            unit="{comparison}",
            description="Shadowed steps by kind, serving and candidate tier, and verdict",
        )
        self.capture = capture_mode()
        self.spans = self.capture in ("SPAN_ONLY", "SPAN_AND_EVENT")
        self.events = self.capture in ("EVENT_ONLY", "SPAN_AND_EVENT")
        self.explicit = tracer_provider is not None or meter_provider is not None

    @property
    def active(self) -> bool:
        """False while no SDK is configured anywhere: then agentflow skips its hooks whole."""
        return (
            self.explicit
            or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
            or type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider"
        )


_instruments: Instruments | None = None
_providers: tuple[Any, Any, Any] = (None, None, None)


def instruments() -> Instruments:
    """The instruments in use: the global OpenTelemetry providers' unless `use_providers`.

    Made on first use, not when providers are chosen: going back to the global providers
    after shutting agentflow's down must not ask a shut-down provider for a meter.
    """
    global _instruments
    if _instruments is None:
        _instruments = Instruments(*_providers)
    return _instruments


def use_providers(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    logger_provider: LoggerProvider | None = None,
) -> None:
    """Send agentflow's spans, metrics and events to these providers (None: the global ones).

    Also re-reads `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`.

    Raises:
        ConfigError: The capture variable holds an unknown value.
    """
    global _instruments, _providers
    _providers = (tracer_provider, meter_provider, logger_provider)
    _instruments = None
    if tracer_provider is not None or meter_provider is not None:
        instruments()  # a bad capture setting fails here, not in the middle of a run


# -- what every span kind shares ------------------------------------------------------------


def conversation_attributes() -> dict[str, AnyValue]:
    """`gen_ai.conversation.id` of the run in progress, if it has a thread."""
    thread = conversation.get()
    return {CONVERSATION_ID: thread} if thread else {}


def server_of(base_url: str | None) -> dict[str, AnyValue]:
    """`server.address` and `server.port` of an HTTP endpoint (none for other models)."""
    if not isinstance(base_url, str):
        return {}
    parts = urlsplit(base_url)
    if not parts.hostname:
        return {}
    return {
        SERVER_ADDRESS: parts.hostname,
        SERVER_PORT: parts.port or (443 if parts.scheme == "https" else 80),
    }


def model_attributes(model: Model) -> dict[str, AnyValue]:
    """The sampling-relevant attributes of a call to `model`.

    `gen_ai.request.model` only when the name is known: an `sglang:` tier named without a
    model learns it from the server on its first call (the conventions' "if available").
    """
    attributes: dict[str, AnyValue] = {
        OPERATION: "chat",
        PROVIDER: model.provider_name or "_OTHER",
    }
    if model.name:
        attributes[REQUEST_MODEL] = model.name
    attributes.update(server_of(getattr(model, "base_url", None)))
    return attributes


def error_type(exc: BaseException) -> str:
    """`error.type`: the provider's HTTP status for a `ModelError`, else the class name."""
    if isinstance(exc, ModelError) and exc.status is not None:
        return str(exc.status)
    return type(exc).__qualname__


def _exception_attributes(exc: BaseException) -> dict[str, AnyValue]:
    """What an exception event may hold: its type, and its message and stack redacted."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        EXCEPTION_TYPE: f"{type(exc).__module__}.{type(exc).__qualname__}",
        EXCEPTION_MESSAGE: redact(str(exc))[:1000],
        EXCEPTION_STACKTRACE: redact(stack),
    }


def fail(span: Span, exc: BaseException) -> dict[str, AnyValue]:
    """Record a failure on a span: `error.type`, the exception (redacted), ERROR status.

    Returns the exception's attributes as recorded, for its event (`emit_exception`).
    """
    details = _exception_attributes(exc)
    span.set_attribute(ERROR_TYPE, error_type(exc))
    span.record_exception(exc, attributes=details)
    span.set_status(Status(StatusCode.ERROR, str(details[EXCEPTION_MESSAGE])))
    return details


def emit_exception(
    ins: Instruments, span: Span, exc: BaseException, details: dict[str, AnyValue]
) -> None:
    """The `gen_ai.client.operation.exception` event of a failed model call (WARN), with
    the exception's attributes `fail` recorded."""
    ins.logger.emit(
        context=trace.set_span_in_context(span),
        event_name=EXCEPTION_EVENT,
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        attributes={ERROR_TYPE: error_type(exc), **details},
    )


def emit_content(ins: Instruments, span: Span, attributes: dict[str, AnyValue]) -> None:
    """The `gen_ai.client.inference.operation.details` event: a log record, in the call's
    span context, whose message attributes are structured values, not JSON text."""
    ins.logger.emit(
        context=trace.set_span_in_context(span),
        event_name=CONTENT_EVENT,
        severity_number=SeverityNumber.INFO,
        attributes=attributes,
    )
