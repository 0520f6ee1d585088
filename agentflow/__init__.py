"""agentflow: agent graphs where every step runs on the cheapest tier that clears its bar.

The public API is everything in `__all__`; a test pins it.
"""

from importlib.metadata import PackageNotFoundError, version

from agentflow.config import AgentflowConfig, load_config
from agentflow.costs import GpuPrice, Price, RunUsage, StepRecord, TokenPrice, UsageTotals
from agentflow.exceptions import (
    AgentflowError,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    ModelError,
    OutputValidationError,
    PolicyViolation,
    SandboxError,
    StepLimitExceeded,
    StreamInterrupted,
    ToolCallParseError,
    ToolError,
)
from agentflow.graph import END, START, AgentGraph, AgentState, run_usage
from agentflow.hitl import (
    ApprovalDecision,
    HumanTurn,
    ProposedCall,
    arguments_digest,
    ask_approval,
    hand_off,
)
from agentflow.mcp import McpServer, tools_from_mcp
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from agentflow.models import infer_model
from agentflow.models.base import (
    Choice,
    Ebnf,
    JsonSchema,
    Model,
    ModelProfile,
    ModelRequest,
    ModelResponse,
    ModelSettings,
    OutputSpec,
    Regex,
    StreamDelta,
    ToolSpec,
    output_spec,
)
from agentflow.models.fallback import CircuitBreaker, FallbackModel, RetryPolicy
from agentflow.models.test import FunctionModel, Reply, ScriptedModel
from agentflow.routing import RouteDecision, Router, RoutingPolicy, Tier
from agentflow.step import StepContext
from agentflow.tools import HostError, RunContext, Tool, ToolRetry, host, tool

try:
    __version__ = version("agentflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "END",
    "START",
    "AgentGraph",
    "AgentState",
    "AgentflowConfig",
    "AgentflowError",
    "ApprovalDecision",
    "AssistantMessage",
    "BudgetExceeded",
    "Choice",
    "CircuitBreaker",
    "CircuitOpen",
    "ConfigError",
    "Ebnf",
    "FallbackModel",
    "FunctionModel",
    "GpuPrice",
    "HostError",
    "HumanTurn",
    "JsonSchema",
    "McpServer",
    "Message",
    "Model",
    "ModelError",
    "ModelProfile",
    "ModelRequest",
    "ModelResponse",
    "ModelSettings",
    "OutputSpec",
    "OutputValidationError",
    "PolicyViolation",
    "Price",
    "ProposedCall",
    "Regex",
    "Reply",
    "RetryPolicy",
    "RouteDecision",
    "Router",
    "RoutingPolicy",
    "RunContext",
    "RunUsage",
    "SandboxError",
    "ScriptedModel",
    "StepContext",
    "StepLimitExceeded",
    "StepRecord",
    "StreamDelta",
    "StreamInterrupted",
    "SystemMessage",
    "Tier",
    "TokenPrice",
    "Tool",
    "ToolCall",
    "ToolCallParseError",
    "ToolError",
    "ToolResultMessage",
    "ToolRetry",
    "ToolSpec",
    "Usage",
    "UsageTotals",
    "UserMessage",
    "__version__",
    "arguments_digest",
    "ask_approval",
    "hand_off",
    "host",
    "infer_model",
    "load_config",
    "output_spec",
    "run_usage",
    "tool",
    "tools_from_mcp",
]
