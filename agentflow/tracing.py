"""OpenTelemetry spans, metrics and events for every run, per the GenAI semantic conventions v1.41.

Every run of a graph is one trace:

```text
invoke_agent {graph}          INTERNAL  gen_ai.agent.name, gen_ai.provider.name=agentflow
└── {node}                    INTERNAL  agentflow.node.kind, agentflow.route.tier/.reason/...
    ├── chat {model}          CLIENT    gen_ai.usage.*, gen_ai.response.*, agentflow.cost.usd
    └── execute_tool {tool}   INTERNAL  gen_ai.tool.*, agentflow.sandbox.* when sandboxed
```

The hooks live next to what they wrap: the run and node spans in `agentflow.compiled`
(the compiled graph is a wrapper around LangGraph's), the `chat` span and the model-call
metrics in `agentflow.models.instrumented` (a `Model` wrapper), and the tool spans here,
with what all of them share: agentflow's attribute names and the providers in use.

Every GenAI span of a run with a thread carries `gen_ai.conversation.id` (the thread id),
and the attributes a sampler may use (operation, provider, model, server) are given when
the span starts. A failure sets `error.type`, records the exception (redacted) and an
ERROR status; a failed model call also emits a `gen_ai.client.operation.exception` event.
An interrupt (an approval, a handoff) is not an error: the run span ends with status
UNSET and an `agentflow.interrupt` event. Each run's W3C trace context goes into the
metadata of the checkpoints it saves, so the run that resumes the thread, in this process
or another one after a restart, starts a new trace linked to the interrupted run.

agentflow speaks only the OpenTelemetry API: until an SDK is configured every span is a
no-op. `agentflow.otel.configure()` (or `agentflow run --trace`) sets one up from the
standard `OTEL_*` variables; an application that sets up OpenTelemetry itself gets
agentflow's spans in its own pipeline.

Message content is recorded only when `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`
asks for it (`SPAN_ONLY`, `EVENT_ONLY`, `SPAN_AND_EVENT`, or `true` for both;
`NO_CONTENT` by default), and then only after the PII detector has redacted it, as
structured values: on the `chat` span, and as a log-based
`gen_ai.client.inference.operation.details` event. Tool secrets are never recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from langgraph.errors import GraphBubbleUp
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentflow import _genai as genai
from agentflow._genai import CaptureMode, capture_mode, instruments, use_providers
from agentflow._recorded import redact, redacted, secret_names, structured

if TYPE_CHECKING:
    from opentelemetry.util.types import AnyValue

    from agentflow.messages import ToolCall
    from agentflow.sandbox import Sandboxes
    from agentflow.sandbox.base import ExecResult
    from agentflow.tools import RunContext, Tool, ToolOutcome

__all__ = [
    "CaptureMode",
    "capture_mode",
    "instruments",
    "record_failure",
    "record_sandbox",
    "run_traced",
    "tool_span",
    "use_providers",
]

# The conventions' names live in `agentflow._genai`; these stay here for benches and tests.
CONTENT_EVENT = genai.CONTENT_EVENT
TOKEN_BUCKETS = genai.TOKEN_BUCKETS
DURATION_BUCKETS = genai.DURATION_BUCKETS
# agentflow's own attribute keys.
NODE_KIND = "agentflow.node.kind"
ROUTE_TIER = "agentflow.route.tier"
ROUTE_REASON = "agentflow.route.reason"
ROUTE_FALLBACK_CHAIN = "agentflow.route.fallback_chain"
ATTEMPT = "agentflow.attempt"
MODEL_CALLS = "agentflow.model.calls"
NODE_INPUT_TOKENS = "agentflow.usage.input_tokens"
NODE_OUTPUT_TOKENS = "agentflow.usage.output_tokens"
COST = "agentflow.cost.usd"
UNPRICED = "agentflow.cost.unpriced"
PII_REDACTED = "agentflow.pii.redacted"
RUN_ID = "agentflow.run.id"
RESUMED = "agentflow.resumed"
INTERRUPT_EVENT = "agentflow.interrupt"
INTERRUPT_ID = "agentflow.interrupt.id"
INTERRUPT_TYPE = "agentflow.interrupt.type"
INTERRUPT_NODE = "agentflow.interrupt.node"
LINK_KIND = "agentflow.link.kind"
TOOL_SANDBOX = "agentflow.tool.sandbox"
SANDBOX_KIND = "agentflow.sandbox.kind"
CONTAINER_ID = "agentflow.sandbox.container.id"
POOL_HIT = "agentflow.sandbox.pool_hit"
EXIT_CODE = "agentflow.sandbox.exit_code"
SANDBOX_DURATION = "agentflow.sandbox.duration_s"


def record_failure(span: Span, exc: BaseException) -> None:
    """Record `exc` on the span (`genai.fail`), unless it is no failure: an interrupt, a
    hand-over to a parent graph, or a consumer that stopped reading a stream early."""
    if isinstance(exc, GraphBubbleUp | GeneratorExit):
        return
    genai.fail(span, exc)


# -- a tool call ----------------------------------------------------------------------------


@contextmanager
def tool_span(tool: Tool[Any], call: ToolCall) -> Iterator[Any]:
    """Run one tool call inside an `execute_tool {name}` span.

    Yields a function to call with the `ToolOutcome`, which records the result.
    """
    ins = instruments()
    if not ins.active:
        yield _ignore
        return
    secret_names.update(tool.secrets)
    attributes: dict[str, AnyValue] = {
        genai.OPERATION: "execute_tool",
        genai.TOOL_NAME: tool.name,
        genai.TOOL_TYPE: "function",
        TOOL_SANDBOX: tool.sandbox,
        **genai.conversation_attributes(),
    }
    if call.id:
        attributes[genai.TOOL_CALL_ID] = call.id
    if tool.description:
        attributes[genai.TOOL_DESCRIPTION] = tool.description
    if ins.spans:
        attributes[genai.TOOL_ARGUMENTS] = redacted(call.arguments)
    span = ins.tracer.start_span(
        f"execute_tool {tool.name}", kind=SpanKind.INTERNAL, attributes=attributes
    )
    token = otel_context.attach(trace.set_span_in_context(span))

    def outcome(result: ToolOutcome) -> None:
        if not span.is_recording():
            return
        if result.retryable_error:
            span.set_attribute(genai.ERROR_TYPE, "tool_retry")
            span.set_status(Status(StatusCode.ERROR, redact(result.message.content)[:1000]))
        elif ins.spans:
            span.set_attribute(genai.TOOL_RESULT, redacted(structured(result.message.content)))

    try:
        yield outcome
    except BaseException as exc:
        record_failure(span, exc)
        raise
    finally:
        otel_context.detach(token)
        span.end()


def _ignore(outcome: ToolOutcome) -> None:
    """What `tool_span` yields while tracing is off."""


async def run_traced(
    tool: Tool[Any], call: ToolCall, ctx: RunContext[Any], sandboxes: Sandboxes | None
) -> ToolOutcome:
    """Run one tool call (`Tool.run`) in its `execute_tool` span, its outcome recorded."""
    with tool_span(tool, call) as record:
        outcome = await tool.run(call, ctx, sandboxes=sandboxes)
        record(outcome)
    return outcome


def record_sandbox(kind: str, result: ExecResult) -> None:
    """Put where and how a sandboxed call ran on the current (`execute_tool`) span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: dict[str, Any] = {
        SANDBOX_KIND: kind,
        EXIT_CODE: result.exit_code,
        SANDBOX_DURATION: result.duration_s,
    }
    if result.container_id is not None:
        attributes[CONTAINER_ID] = result.container_id
    if result.pool_hit is not None:
        attributes[POOL_HIT] = result.pool_hit
    span.set_attributes(attributes)
