"""The tool-calling loop behind `AgentGraph.agent`: a model node and a tool node.

The loop is two LangGraph nodes, so the model's proposed calls are checkpointed before
any tool runs: an approval interrupt in the tool node resumes without asking the model
again, and nothing with side effects runs before the interrupt.

```text
         +-----------+  tool calls   +-----------------+
  ---->  |  {name}   | ------------> |  {name}.tools   |
         |  (model)  | <------------ | approve? run    |
         +-----------+               +-----------------+
               | final answer                 | the tool choice function ends the play
               v                              v
          next node  <-------------------------
```

A tool choice function that returns None after the last tool of its play takes the turn
out of the loop from the tools node: no model step that would only return nothing.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from agentflow._faults import crash_point
from agentflow.exceptions import ConfigError, StepLimitExceeded, ToolError
from agentflow.hitl import (
    TIMED_OUT,
    ApprovalDecision,
    ProposedCall,
    arguments_digest,
    ask_approval,
)
from agentflow.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    UserMessage,
)
from agentflow.models.base import ModelRequest, ModelSettings, ToolChoice
from agentflow.step import StepContext, describe_error
from agentflow.tools import RunContext, Tool, ToolOutcome

__all__ = ["AgentLoop", "SystemPrompt", "pending_calls"]

SystemPrompt = (
    Callable[[Any], str | Awaitable[str | None] | None]
    | Callable[[Any, StepContext[Any]], str | Awaitable[str | None] | None]
)
"""A function of the state, or of the state and the step's context, returning the system
prompt (sync or async); None leaves the request without one."""


def pending_calls(messages: Sequence[Message]) -> list[ToolCall]:
    """Return the tool calls of the last message, if it is an assistant's."""
    last = messages[-1] if messages else None
    return last.tool_calls if isinstance(last, AssistantMessage) else []


def _turn(messages: Sequence[Message]) -> Sequence[Message]:
    """Return the messages since the last user message (the agent's current turn)."""
    for index in range(len(messages) - 1, -1, -1):
        if isinstance(messages[index], UserMessage):
            return messages[index + 1 :]
    return messages


def _failures_in_a_row(messages: Sequence[Message], tool: str) -> int:
    """Count the tool's consecutive error results at the end of this turn."""
    count = 0
    for message in reversed(_turn(messages)):
        if isinstance(message, ToolResultMessage) and message.name == tool:
            if not message.is_error:
                break
            count += 1
    return count


def _error(call: ToolCall, content: str) -> ToolResultMessage:
    return ToolResultMessage(tool_call_id=call.id, name=call.name, content=content, is_error=True)


@dataclass(kw_only=True)
class AgentLoop:
    """A tool-calling agent: the model proposes calls, the tools run, until a final answer."""

    name: str
    tools: dict[str, Tool[Any]]
    max_steps: int
    """How many rounds of tool calls one turn may take before `StepLimitExceeded`."""
    system: str | SystemPrompt | None
    """The system prompt: a constant, or a function returning it for each request."""
    settings: ModelSettings
    tool_choice: ToolChoice | Callable[[Any, int], ToolChoice | None] = "auto"
    """Each request's tool choice, or a function of the state and the round returning it,
    or None to end the turn without asking the model (see `AgentGraph.agent`)."""
    _system_takes_context: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        system = self.system
        if system is not None and not isinstance(system, str):
            if not callable(system):
                raise ConfigError(
                    f"system must be a str or a function of the state, not {system!r}",
                    key=f"agent {self.name!r}",
                )
            # As for graph nodes: a second parameter is the StepContext.
            self._system_takes_context = len(inspect.signature(system).parameters) >= 2

    @property
    def tools_node(self) -> str:
        return f"{self.name}.tools"

    def _rounds(self, state: dict[str, Any]) -> int:
        """The rounds of tool calls in this turn so far."""
        turn = _turn(state.get("messages", []))
        return sum(1 for m in turn if isinstance(m, AssistantMessage) and m.tool_calls)

    def played_out(self, state: dict[str, Any]) -> bool:
        """Whether the turn's tool choice function ends the loop after these tool results
        (so the model is not asked again), within `max_steps`."""
        if not callable(self.tool_choice):
            return False
        rounds = self._rounds(state)
        return rounds < self.max_steps and self.tool_choice(state, rounds) is None

    async def model_step(self, state: dict[str, Any], ctx: StepContext[Any]) -> dict[str, Any]:
        """Ask the routed model for the next move; a high-stakes tool call is re-decided."""
        history: list[Message] = list(state.get("messages", []))
        rounds = self._rounds(state)
        if rounds >= self.max_steps:
            raise StepLimitExceeded(
                f"agent {self.name!r} made {rounds} rounds of tool calls without a final answer",
                node=self.name,
                max_steps=self.max_steps,
            )
        choice = self.tool_choice(state, rounds) if callable(self.tool_choice) else self.tool_choice
        if choice is None:
            return {}  # no tools to play this turn; the graph's next node answers
        if choice not in ("auto", "required", "none") and choice not in self.tools:
            raise ConfigError(
                f"tool_choice chose {choice!r}, which is not one of its tools",
                key=f"agent {self.name!r}",
            )
        system = await self._system_prompt(state, ctx)
        if system is not None:
            history.insert(0, SystemMessage(content=system))
        req = ModelRequest(
            messages=history,
            tools=[t.spec for t in self.tools.values()],
            tool_choice=choice,
            settings=self.settings,
        )
        response, _ = await ctx.request(req)
        flagged = [c.name for c in response.message.tool_calls if self._high_stakes(c, ctx)]
        if flagged and not ctx.high_stakes and ctx.router.policy.high_stakes is not None:
            why = f"high-stakes tool call {', '.join(flagged)}"
            response, _ = await ctx.request(req, high_stakes=True, why=why)
        return {"messages": [response.message]}

    async def _system_prompt(self, state: dict[str, Any], ctx: StepContext[Any]) -> str | None:
        system = self.system
        if system is None or isinstance(system, str):
            return system
        prompt: Callable[..., Any] = system
        text = prompt(state, ctx) if self._system_takes_context else prompt(state)
        if inspect.isawaitable(text):
            text = await text
        if text is not None and not isinstance(text, str):
            raise ConfigError(
                f"the system prompt function returned {type(text).__name__}, not a str",
                key=f"agent {self.name!r}",
            )
        return text

    def _high_stakes(self, call: ToolCall, ctx: StepContext[Any]) -> bool:
        tool = self.tools.get(call.name)
        if tool is None or tool.high_stakes is False:
            return False
        try:
            arguments = tool.validate(call.arguments)
        except ValidationError:
            return False  # invalid calls never run; the tool node reports them to the model
        return tool.is_high_stakes(arguments, self._run_context(call, ctx))

    def _run_context(self, call: ToolCall, ctx: StepContext[Any]) -> RunContext[Any]:
        """The context the tool node gives this call (its predicates see the same one)."""
        return RunContext(
            deps=ctx.deps,
            run_id=ctx.run_id,
            thread_id=ctx.thread_id,
            node=self.tools_node,
            tool_call_id=call.id,
        )

    async def tools_step(self, state: dict[str, Any], ctx: StepContext[Any]) -> dict[str, Any]:
        """Run the calls the model proposed, after approval where a tool requires it."""
        history: list[Message] = state.get("messages", [])
        calls = pending_calls(history)
        decisions = self._approvals(calls, ctx)
        results: list[ToolResultMessage] = []
        for call in calls:
            # Earlier results of this round count too: six invalid calls in one round are
            # six failures in a row.
            seen = [*history, *results]
            results.append(await self._run_one(call, decisions.get(call.id), seen, ctx))
        return {"messages": results}

    def _approvals(
        self, calls: Sequence[ToolCall], ctx: StepContext[Any]
    ) -> dict[str, ApprovalDecision]:
        gated = []
        for call in calls:
            tool = self.tools.get(call.name)
            if tool is None or tool.requires_approval is False:
                continue
            try:
                arguments = tool.validate(call.arguments)
            except ValidationError:
                continue
            if tool.needs_approval(arguments, self._run_context(call, ctx)):
                digest = arguments_digest(call.name, call.arguments)
                gated.append(
                    ProposedCall(
                        id=call.id, name=call.name, arguments=call.arguments, digest=digest
                    )
                )
        return ask_approval(self.tools_node, gated, self._check_edit) if gated else {}

    def _check_edit(self, call: ProposedCall, arguments: dict[str, Any]) -> str | None:
        try:
            self.tools[call.name].validate(arguments)
        except ValidationError as exc:
            return describe_error(exc)
        return None

    async def _run_one(
        self,
        call: ToolCall,
        decision: ApprovalDecision | None,
        history: Sequence[Message],
        ctx: StepContext[Any],
    ) -> ToolResultMessage:
        tool = self.tools.get(call.name)
        if tool is None:
            return _error(
                call, f"There is no tool {call.name!r}. Available: {', '.join(self.tools)}."
            )
        if decision is not None and decision.action == "timeout":
            return _error(call, TIMED_OUT)
        if decision is not None and decision.action == "reject":
            comment = f": {decision.comment}" if decision.comment else "."
            return _error(call, f"A human reviewer rejected this call{comment}")
        if decision is not None and decision.action == "edit":
            call = replace(call, arguments=decision.arguments)
        run_ctx = self._run_context(call, ctx)
        if tool.side_effects and ctx.journal is not None:
            outcome = await self._run_once(tool, call, run_ctx, ctx)
        else:
            outcome = await ctx.run_tool(tool, call, run_ctx)
        self._check_retries(tool, outcome, history)
        return outcome.message

    async def _run_once(
        self, tool: Tool[Any], call: ToolCall, run_ctx: RunContext[Any], ctx: StepContext[Any]
    ) -> ToolOutcome:
        """Run a side-effecting call at most once per idempotency key, journaled.

        A call the journal has as done is not run again: its recorded result is replayed.
        One it has as started but not done (the process died during it) runs again with
        the same idempotency key, which the tool passes on so the effect happens once.
        """
        journal = ctx.journal
        key = run_ctx.idempotency_key
        # Only called with a journal; the context carries the call's id, so it has a key.
        assert journal is not None and key is not None
        entry = await journal.begin(key, tool.name, arguments_digest(call.name, call.arguments))
        if entry.state == "done":
            return ToolOutcome.replayed(call, entry)
        crash_point("journal.begun")
        outcome = await ctx.run_tool(tool, call, run_ctx)
        crash_point("tool.returned")  # the effect happened; the journal does not know yet
        await journal.finish(key, outcome.message.content, outcome.message.is_error)
        crash_point("journal.finished")
        return outcome

    def _check_retries(
        self, tool: Tool[Any], outcome: ToolOutcome, history: Sequence[Message]
    ) -> None:
        """Raise `ToolError` once a call is the tool's `retries + 1`-th failure in a row."""
        if outcome.retryable_error and _failures_in_a_row(history, tool.name) >= tool.retries:
            raise ToolError(
                f"the model called {tool.name!r} wrongly {tool.retries + 1} times in a row; "
                f"last error: {outcome.message.content}",
                tool=tool.name,
            )


def route_after_model(
    loop: AgentLoop, exit_path: Callable[[Any], Any]
) -> Callable[[dict[str, Any]], Any]:
    """Return the edge function after the model node: to the tools, or out of the loop."""

    def route(state: dict[str, Any]) -> Any:
        if pending_calls(state.get("messages", [])):
            return loop.tools_node
        return exit_path(state)

    return route


def route_after_tools(
    loop: AgentLoop, exit_path: Callable[[Any], Any]
) -> Callable[[dict[str, Any]], Any]:
    """Return the edge function after the tools node: back to the model, or out of the
    loop when the turn's tool choice function says the play is over. Leaving here rather
    than from a model step that returns nothing saves a superstep, and its checkpoint,
    on every played turn."""

    def route(state: dict[str, Any]) -> Any:
        return exit_path(state) if loop.played_out(state) else loop.name

    return route
