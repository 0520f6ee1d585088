"""Set up the OpenTelemetry SDK for agentflow: OTLP, a readable console tree, or nothing.

agentflow's tracing hooks only speak the OpenTelemetry API; this module is for programs that
do not set OpenTelemetry up themselves (the `agentflow` CLI, scripts, the server). It
imports the SDK, and `configure` the exporters it needs, so `import agentflow` (which
does not import this module) stays cheap.

```python
from agentflow.otel import configure

telemetry = configure()          # OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_* decide
...
telemetry.shutdown()             # flush what is left
```

Which exporter: the argument, else `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`),
else `otlp`. OTLP goes over HTTP/protobuf unless `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or
`OTEL_EXPORTER_OTLP_PROTOCOL` says `grpc`; the endpoint, headers and timeouts are the
exporters' own `OTEL_EXPORTER_OTLP_*` variables. Metrics follow `OTEL_METRICS_EXPORTER`,
and the GenAI events (captured content, failed model calls) `OTEL_LOGS_EXPORTER`; each
goes where the traces go when that is OTLP, else nowhere.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TextIO

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from agentflow import _genai as genai
from agentflow import tracing
from agentflow.exceptions import ConfigError

__all__ = ["Telemetry", "configure", "render_tree"]

ExporterName = Literal["otlp", "console", "none"]
_NAMES: tuple[ExporterName, ...] = ("otlp", "console", "none")
_INSTALL = 'pip install "agentflow[otlp]"'


@dataclass(kw_only=True)
class Telemetry:
    """The providers `configure` set up; `shutdown()` exports what is left."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider | None
    logger_provider: LoggerProvider | None = None

    def force_flush(self) -> None:
        """Export every finished span, the events and the metrics collected so far."""
        self.tracer_provider.force_flush()
        if self.logger_provider is not None:
            self.logger_provider.force_flush()
        if self.meter_provider is not None:
            self.meter_provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop the exporters; agentflow goes back to the global providers.

        agentflow lets go of these providers first, and asks the global ones for nothing
        until its next span: a provider that is shut down gives out no meter.
        """
        tracing.use_providers()
        self.tracer_provider.shutdown()
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def configure(
    traces: ExporterName | SpanExporter | None = None,
    *,
    metrics_to: ExporterName | MetricReader | None = None,
    events_to: ExporterName | LogRecordExporter | None = None,
    batch: bool = True,
    set_global: bool = True,
    out: TextIO | None = None,
) -> Telemetry:
    """Send agentflow's spans and metrics somewhere.

    Args:
        traces: `otlp`, `console` (a readable tree of each run, printed when it ends),
            `none`, or any SDK `SpanExporter`. Default: `OTEL_TRACES_EXPORTER`, else `otlp`.
        metrics_to: `otlp`, `console`, `none`, or an SDK `MetricReader`. Default:
            `OTEL_METRICS_EXPORTER`, else `otlp` when the traces go over OTLP.
        events_to: Where the GenAI events go (log records): `otlp`, `none`, or an SDK
            `LogRecordExporter`. Default: `OTEL_LOGS_EXPORTER`, else `otlp` when the
            traces go over OTLP (`console` prints each record as JSON).
        batch: Export spans in batches from a background thread (a `SpanExporter`
            argument only; OTLP always batches, the console tree never does).
        set_global: Also make these the process's global providers, so other
            instrumentation (httpx, FastAPI) joins the same traces, unless an SDK
            provider is installed already.
        out: Where the console tree goes (stdout by default).

    Raises:
        ConfigError: An unknown exporter or protocol, an unknown
            `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`, or the OTLP extra is
            missing.
    """
    genai.capture_mode()  # a bad content setting fails before any provider is made
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "agentflow")})
    tracer_provider = TracerProvider(resource=resource)
    chosen = traces if traces is not None else _from_env("OTEL_TRACES_EXPORTER", "otlp")
    if chosen == "otlp":
        tracer_provider.add_span_processor(BatchSpanProcessor(_otlp_span_exporter()))
    elif chosen == "console":
        tracer_provider.add_span_processor(SimpleSpanProcessor(TreePrinter(out or sys.stdout)))
    elif not isinstance(chosen, str):
        processor = BatchSpanProcessor if batch else SimpleSpanProcessor
        tracer_provider.add_span_processor(processor(chosen))
    default_metrics = "otlp" if chosen == "otlp" else "none"
    reader = _metric_reader(
        metrics_to
        if metrics_to is not None
        else _from_env("OTEL_METRICS_EXPORTER", default_metrics)
    )
    meter_provider: MeterProvider | None = None
    if reader is not None:
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = _logger_provider(
        resource,
        events_to if events_to is not None else _from_env("OTEL_LOGS_EXPORTER", default_metrics),
    )
    if set_global and isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
        if logger_provider is not None:
            _logs.set_logger_provider(logger_provider)
    tracing.use_providers(tracer_provider, meter_provider, logger_provider)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
    )


def _logger_provider(
    resource: Resource, chosen: ExporterName | LogRecordExporter
) -> LoggerProvider | None:
    if chosen == "none":
        return None
    exporter: LogRecordExporter
    if chosen == "console":
        from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

        exporter = ConsoleLogRecordExporter()
    elif chosen == "otlp":
        exporter = _otlp_log_exporter()
    else:
        exporter = chosen
    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def _otlp_log_exporter() -> LogRecordExporter:
    try:
        if _protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        else:
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    except ImportError as exc:
        raise ConfigError(f"the OTLP exporter is not installed: {_INSTALL}") from exc
    return OTLPLogExporter()


def _from_env(variable: str, default: ExporterName) -> ExporterName:
    value = os.environ.get(variable, "").strip().lower() or default
    for name in _NAMES:
        if value == name:
            return name
    raise ConfigError(f"must be one of {', '.join(_NAMES)}, not {value!r}", key=variable)


def _protocol() -> str:
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if value := os.environ.get(variable, "").strip():
            if value not in ("http/protobuf", "grpc"):
                raise ConfigError(f"must be http/protobuf or grpc, not {value!r}", key=variable)
            return value
    return "http/protobuf"


def _otlp_span_exporter() -> SpanExporter:
    try:
        if _protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(f"the OTLP exporter is not installed: {_INSTALL}") from exc
    return OTLPSpanExporter()


def _metric_reader(chosen: ExporterName | MetricReader) -> MetricReader | None:
    if not isinstance(chosen, str):
        return chosen
    if chosen == "none":
        return None
    exporter: MetricExporter = ConsoleMetricExporter()
    if chosen == "otlp":
        try:
            if _protocol() == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter,
                )
        except ImportError as exc:
            raise ConfigError(f"the OTLP exporter is not installed: {_INSTALL}") from exc
        exporter = OTLPMetricExporter()
    return PeriodicExportingMetricReader(exporter)


# -- the console tree -----------------------------------------------------------------------


class TreePrinter(SpanExporter):
    """Print each finished trace as an indented tree, one line per span.

    Spans end before their parents, so a trace is complete once its root arrives.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._pending: dict[int, list[ReadableSpan]] = {}

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            trace_id = span.context.trace_id if span.context else 0
            self._pending.setdefault(trace_id, []).append(span)
            if span.parent is None or span.parent.is_remote:
                self.out.write(render_tree(self._pending.pop(trace_id)))
                self.out.flush()
        return SpanExportResult.SUCCESS


def render_tree(spans: Sequence[ReadableSpan]) -> str:
    """Render the spans of one trace as an indented tree, children in start order."""
    ids = {s.context.span_id for s in spans if s.context}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└─ " if last else "├─ ")
        lines.append(f"{prefix}{branch}{_describe(span)}")
        below = prefix + ("" if root else ("   " if last else "│  "))
        for link in span.links:
            lines.append(f"{below}   ↪ resumes trace {link.context.trace_id:032x}")
        for event in span.events:
            if event.name == tracing.INTERRUPT_EVENT:
                attrs = event.attributes or {}
                kind = attrs.get(tracing.INTERRUPT_TYPE, "interrupt")
                lines.append(f"{below}   ⏸ paused: {kind} {attrs.get(tracing.INTERRUPT_ID, '')}")
        kids = sorted(children.get(span.context.span_id if span.context else 0, []), key=_start)
        for index, child in enumerate(kids):
            walk(child, below, index == len(kids) - 1, False)

    for root in sorted(children.get(None, []), key=_start):
        walk(root, "", True, True)
    return "\n".join(lines) + "\n"


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _describe(span: ReadableSpan) -> str:
    a = span.attributes or {}
    ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
    parts = [span.name]
    if genai.CONVERSATION_ID in a and a.get(genai.OPERATION) == "invoke_agent":
        parts.append(f"thread={a[genai.CONVERSATION_ID]}")
    if a.get(tracing.RESUMED):
        parts.append("resumed")
    if tracing.ROUTE_TIER in a and genai.OPERATION not in a:
        parts.append(f"tier={a[tracing.ROUTE_TIER]} ({a.get(tracing.ROUTE_REASON, '')})")
    if genai.INPUT_TOKENS in a:
        parts.append(f"tokens={a[genai.INPUT_TOKENS]}/{a.get(genai.OUTPUT_TOKENS, 0)}")
    elif tracing.NODE_INPUT_TOKENS in a:
        parts.append(f"tokens={a[tracing.NODE_INPUT_TOKENS]}/{a.get(tracing.NODE_OUTPUT_TOKENS)}")
    if tracing.COST in a:
        parts.append(f"${float(a[tracing.COST]):.6f}")  # type: ignore[arg-type]
    elif a.get(tracing.UNPRICED):
        parts.append("unpriced")
    if tracing.SANDBOX_KIND in a:
        where = a.get(tracing.CONTAINER_ID) or a[tracing.SANDBOX_KIND]
        warm = {True: " warm", False: " cold"}.get(a.get(tracing.POOL_HIT))  # type: ignore[arg-type]
        parts.append(f"sandbox={where}{warm or ''} exit={a.get(tracing.EXIT_CODE)}")
    if genai.ERROR_TYPE in a:
        parts.append(f"error={a[genai.ERROR_TYPE]}")
    parts.append(f"{ms:.1f} ms")
    return "  ".join(str(p) for p in parts)
