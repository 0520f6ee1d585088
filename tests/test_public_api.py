"""The public API is pinned: a change to it is a deliberate change to this test."""

from __future__ import annotations

import subprocess
import sys

import agentflow

PUBLIC = [
    "END", "START", "AgentGraph", "AgentState", "AgentflowConfig", "AgentflowError",
    "ApprovalDecision", "AssistantMessage", "BudgetExceeded", "Choice", "CircuitBreaker",
    "CircuitOpen", "ConfigError", "Ebnf", "FallbackModel", "FunctionModel", "GpuPrice",
    "HostError", "HumanTurn", "JsonSchema", "McpServer", "Message", "Model", "ModelError",
    "ModelProfile",
    "ModelRequest", "ModelResponse", "ModelSettings", "OutputSpec", "OutputValidationError",
    "PolicyViolation", "Price", "ProposedCall", "Regex", "Reply", "RetryPolicy",
    "RouteDecision", "Router", "RoutingPolicy", "RunContext", "RunUsage", "SandboxError",
    "ScriptedModel", "StepContext", "StepLimitExceeded", "StepRecord", "StreamDelta",
    "StreamInterrupted", "SystemMessage", "Tier", "TokenPrice", "Tool", "ToolCall",
    "ToolCallParseError", "ToolError", "ToolResultMessage", "ToolRetry", "ToolSpec", "Usage",
    "UsageTotals", "UserMessage", "__version__", "arguments_digest", "ask_approval", "hand_off",
    "host", "infer_model", "load_config", "output_spec", "run_usage", "tool", "tools_from_mcp",
]  # fmt: skip


def test_all_is_pinned_and_sorted() -> None:
    assert agentflow.__all__ == PUBLIC
    for name in PUBLIC:
        assert hasattr(agentflow, name), name


def test_import_is_light() -> None:
    code = (
        "import sys, agentflow; "
        "heavy = [m for m in ('torch', 'transformers', 'docker', 'xgrammar', 'grpc', "
        "'agentflow.otel', 'opentelemetry.sdk.metrics', 'opentelemetry.exporter.otlp') "
        "if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
