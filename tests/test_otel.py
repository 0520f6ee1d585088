"""`agentflow.otel`: real OTLP exporters (HTTP and gRPC) into receivers on 127.0.0.1 that
decode the protobuf, the console tree, and the environment variables that choose them."""

from __future__ import annotations

import gc
import io
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from langgraph.types import Command
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as ProtoLogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric as ProtoMetric
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from typer.testing import CliRunner

from agentflow import ConfigError, ScriptedModel, UserMessage
from agentflow.cli import app
from agentflow.otel import configure
from agentflow.sandbox import Sandboxes
from tests.helpers import three_tiers
from tests.test_tracing import APPROVE_REFUND, ask_once, scripted_support

ROOT = Path(__file__).resolve().parent.parent


class Received:
    """What a receiver decoded: spans, metrics and log records, the service name they came
    from, and the schema URL of each instrumentation scope (by scope name)."""

    def __init__(self) -> None:
        self.spans: list[ProtoSpan] = []
        self.services: set[str] = set()
        self.metrics: set[str] = set()
        self.metric_data: list[ProtoMetric] = []
        self.logs: list[ProtoLogRecord] = []
        self.schema_urls: dict[str, set[str]] = {}
        self.lock = threading.Lock()

    def _scope(self, scoped: Any) -> None:
        self.schema_urls.setdefault(scoped.scope.name, set()).add(scoped.schema_url)

    def add_traces(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self.services.add(attribute.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    self._scope(scope_spans)
                    self.spans.extend(scope_spans.spans)

    def add_metrics(self, request: ExportMetricsServiceRequest) -> None:
        with self.lock:
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    self._scope(scope_metrics)
                    self.metrics.update(m.name for m in scope_metrics.metrics)
                    self.metric_data.extend(scope_metrics.metrics)

    def add_logs(self, request: ExportLogsServiceRequest) -> None:
        with self.lock:
            for resource_logs in request.resource_logs:
                for scope_logs in resource_logs.scope_logs:
                    self._scope(scope_logs)
                    self.logs.extend(scope_logs.log_records)


@pytest.fixture
def http_receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP receiver: POST /v1/traces, /v1/metrics and /v1/logs, protobuf bodies."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert self.headers["Content-Type"] == "application/x-protobuf"
            if self.path == "/v1/traces":
                received.add_traces(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
            elif self.path == "/v1/metrics":
                received.add_metrics(ExportMetricsServiceRequest.FromString(body))
                answer = ExportMetricsServiceResponse().SerializeToString()
            elif self.path == "/v1/logs":
                received.add_logs(ExportLogsServiceRequest.FromString(body))
                answer = ExportLogsServiceResponse().SerializeToString()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[str, Received]]:
    """An OTLP/gRPC receiver for traces."""
    received = Received()

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> ExportTraceServiceResponse:
            received.add_traces(request)
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{port}", received
    server.stop(grace=None)


async def run_once() -> None:
    router = three_tiers(
        ScriptedModel(["fine"], name="glm-test"), ScriptedModel([]), ScriptedModel([])
    )
    await ask_once(router)


def assert_one_trace(received: Received) -> None:
    names = sorted(s.name for s in received.spans)
    assert names == ["chat glm-test", "invoke_agent test", "step"]
    by_name = {s.name: s for s in received.spans}
    run, node, chat = by_name["invoke_agent test"], by_name["step"], by_name["chat glm-test"]
    assert len({s.trace_id for s in received.spans}) == 1
    assert node.parent_span_id == run.span_id and chat.parent_span_id == node.span_id
    assert chat.kind == ProtoSpan.SPAN_KIND_CLIENT
    attributes = {a.key: a.value for a in chat.attributes}
    assert attributes["gen_ai.request.model"].string_value == "glm-test"
    assert attributes["agentflow.route.tier"].string_value == "tools"
    assert attributes["gen_ai.usage.output_tokens"].int_value > 0
    assert attributes["agentflow.cost.usd"].double_value > 0


async def test_spans_and_metrics_reach_an_otlp_http_receiver(
    http_receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, received = http_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "support-bot")
    telemetry = configure("otlp", set_global=False)
    try:
        await run_once()
    finally:
        telemetry.shutdown()  # flushes the batch and the metrics
    assert_one_trace(received)
    assert received.services == {"support-bot"}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= received.metrics
    assert "agentflow.cost.usd" in received.metrics


async def test_spans_reach_an_otlp_grpc_receiver(
    grpc_receiver: tuple[str, Received], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, received = grpc_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    telemetry = configure(metrics_to="none", set_global=False)  # the exporter from the env
    try:
        await run_once()
    finally:
        telemetry.shutdown()
    assert_one_trace(received)
    assert received.services == {"agentflow"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "agentflow"
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=120,
    )


def test_cli_trace_console_prints_the_run_as_a_tree() -> None:
    result = cli(
        "run",
        "examples/quickstart.py",
        "-m",
        "where is my order 1042?",
        "--trace",
        "console",
        env={},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    root = next(i for i, line in enumerate(lines) if line.startswith("invoke_agent quickstart"))
    tree = lines[root : root + 12]
    assert any(line.startswith("├─ triage  tier=tools") for line in tree)
    assert any("└─ chat " in line and "tokens=" in line and "$" in line for line in tree)
    assert any("execute_tool lookup_order" in line for line in tree)


def test_cli_trace_otlp_sends_the_run_to_the_collector(
    http_receiver: tuple[str, Received],
) -> None:
    endpoint, received = http_receiver
    result = cli(
        "run",
        "examples/quickstart.py",
        "-m",
        "where is my order 1042?",
        env={"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
    )
    assert result.returncode == 0, result.stderr
    names = {s.name for s in received.spans}
    assert {"invoke_agent quickstart", "triage", "execute_tool lookup_order"} <= names
    assert len({s.trace_id for s in received.spans}) == 1
    assert "gen_ai.client.token.usage" in received.metrics
    # Shutting down must not ask the shut-down MeterProvider for a meter (it warned).
    assert "MeterProvider" not in result.stderr, result.stderr
    assert result.stderr.strip() == ""


def test_cli_capture_content_true_records_structured_events(
    http_receiver: tuple[str, Received],
) -> None:
    """`true`, the boolean older instrumentations read, captures content on spans and as
    log-based events; it used to abort the run before it started."""
    endpoint, received = http_receiver
    result = cli(
        "run",
        "examples/quickstart.py",
        "-m",
        "where is my order 1042?",
        "--trace",
        "otlp",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        },
    )
    assert result.returncode == 0, result.stderr
    assert "never awaited" not in result.stderr
    events = [
        r for r in received.logs if r.event_name == "gen_ai.client.inference.operation.details"
    ]
    chats = [s for s in received.spans if s.name.startswith("chat ")]
    assert len(events) == len(chats) >= 3
    attributes = {a.key: a.value for a in events[0].attributes}
    first = attributes["gen_ai.input.messages"].array_value.values[0].kvlist_value
    assert {kv.key: kv.value.string_value for kv in first.values}["role"] == "user"
    on_span = {a.key: a.value for a in chats[0].attributes}
    assert on_span["gen_ai.input.messages"].WhichOneof("value") == "array_value"


def test_cli_a_bad_capture_setting_fails_in_one_line() -> None:
    """In process, where the run's coroutine, made before the exporters, was left never
    awaited (a RuntimeWarning, an error under pytest) when setting them up failed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(
            app,
            ["run", str(ROOT / "examples/quickstart.py"), "-m", "hi", "--trace", "console"],
            env={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "everything"},
        )
        status, output = result.exit_code, result.output
        del result  # its traceback holds the frames that hold the coroutine
        gc.collect()
    assert status == 1
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT: must be one of" in output
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_cli_rejects_an_unknown_exporter_in_one_line() -> None:
    result = cli("run", "examples/quickstart.py", "-m", "hi", "--trace", "jaeger", env={})
    assert result.returncode == 1
    assert result.stderr.strip() == "error: --trace must be console, otlp or none, not 'jaeger'"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER: must be one of otlp, console"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "must be http/protobuf or grpc"),
        ("OTEL_METRICS_EXPORTER", "prometheus", "OTEL_METRICS_EXPORTER: must be one of"),
    ],
)
def test_bad_otel_variables_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=message):
        configure(set_global=False)


async def test_the_console_tree_shows_routes_pauses_and_resumes(sandboxes: Sandboxes) -> None:
    out = io.StringIO()
    telemetry = configure("console", metrics_to="none", set_global=False, out=out)
    compiled = scripted_support(sandboxes)
    config: Any = {"configurable": {"thread_id": "t9"}}
    try:
        await compiled.ainvoke({"messages": [UserMessage(content="refund 7")]}, config)
        await compiled.ainvoke(Command(resume=APPROVE_REFUND), config)
    finally:
        telemetry.shutdown()
    first, second = out.getvalue().split("invoke_agent support")[1:]
    assert first.startswith("  thread=t9  ")
    assert "   ⏸ paused: approval " in first
    assert "├─ triage  tier=tools (kind classify -> tools; retry 1: invalid output" in first
    assert "│  ├─ chat kimi-test  error=503  " in first
    assert "sandbox=" in first and " exit=0  " in first
    assert second.startswith("  thread=t9  resumed  ")
    assert "   ↪ resumes trace " in second
    assert "execute_tool issue_refund" in second
