"""The one error tree of agentflow.

```text
AgentflowError
├── ConfigError              user misconfiguration: names the file, the key and the reason
├── ModelError               a model endpoint failed (status, body)
│   ├── CircuitOpen          an endpoint failed too often; calls wait for its cool-down
│   ├── StreamInterrupted    a stream broke after text was delivered (emitted text kept)
│   └── ToolCallParseError   a model wrote tool-call text that cannot be parsed (raw kept)
├── OutputValidationError    a model's output failed validation after every retry (raw output kept)
├── ToolError                a tool could not be run, or a model kept calling it wrongly
├── SandboxError             a sandbox could not run a tool
│   ├── SandboxTimeout       the call ran past its deadline and was killed
│   ├── SandboxResourceError the call went over its memory, process or output limit
│   └── SandboxUnavailable   no sandbox to run in (no Docker daemon, no image)
├── BudgetExceeded           a call would take a run past its USD or token budget
├── PolicyViolation          a routing rule or the PII boundary refused a call
├── StepLimitExceeded        an agent loop used up its `max_steps`
├── StoreError               the database under the review queue or tool journal failed (url kept)
├── ReviewQueueError         a review-queue action does not fit the item's state (item id kept)
│   ├── ReviewItemNotFound   no item has that id
│   ├── AlreadyClaimed       another reviewer holds the item
│   ├── NotClaimed           releasing an item that nobody holds
│   ├── ReviewItemClosed     the item is already resolved or expired
│   ├── DecisionNotStorable  a decision the thread's checkpoint cannot hold; item unchanged
│   └── EscalationPending    the thread waits for a person; it takes no new message yet
├── ThreadBusy               another run of the thread is in progress; post again later
└── ToolJournalError         a tool journal entry is missing or does not match (key kept)
    └── JournalDigestMismatch the same tool-call key came back with other arguments
```

Errors carry data and never log. Callers translate third-party exceptions into these
at one choke point with `raise ... from exc`.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = [
    "AgentflowError",
    "AlreadyClaimed",
    "BudgetExceeded",
    "CircuitOpen",
    "ConfigError",
    "DecisionNotStorable",
    "EscalationPending",
    "JournalDigestMismatch",
    "ModelError",
    "NotClaimed",
    "OutputValidationError",
    "PolicyViolation",
    "ReviewItemClosed",
    "ReviewItemNotFound",
    "ReviewQueueError",
    "SandboxError",
    "SandboxResourceError",
    "SandboxTimeout",
    "SandboxUnavailable",
    "StepLimitExceeded",
    "StoreError",
    "StreamInterrupted",
    "ThreadBusy",
    "ToolCallParseError",
    "ToolError",
    "ToolJournalError",
]


class AgentflowError(Exception):
    """Base class of every error agentflow raises on purpose."""


class ConfigError(AgentflowError):
    """A configuration value is missing or wrong.

    The message always reads `FILE: KEY: REASON` so the user can go straight to the fix.
    """

    def __init__(self, reason: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(": ".join(part for part in (file, key, reason) if part))


class ModelError(AgentflowError):
    """A model endpoint answered with an error, or did not answer at all."""

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        body: Any = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        self.model = model
        self.status = status
        """The HTTP status, or None when there was no answer (connect error, timeout)."""
        self.body = body
        self.transient = transient
        """True when the same request may succeed if sent again (timeouts, 408, 429, 5xx)."""
        self.retry_after = retry_after
        """Seconds the server asked us to wait (`Retry-After`), when it said."""
        super().__init__(message)


class CircuitOpen(ModelError):
    """An endpoint failed too often in a row; calls are refused until its cool-down ends."""


class StreamInterrupted(ModelError):
    """A stream failed after text was already handed out, so it cannot fail over silently."""

    def __init__(self, message: str, *, emitted: str, model: str = "") -> None:
        self.emitted = emitted
        """The text delivered before the failure."""
        super().__init__(message, model=model)


class ToolCallParseError(ModelError):
    """A model's raw tool-call text is garbled: markers without a parseable call inside.

    A `ModelError`, so a fallback tier gets the step, as with any broken response.
    """

    def __init__(self, message: str, *, raw: str, format: str, model: str = "") -> None:
        self.raw = raw
        self.format = format
        super().__init__(message, model=model, body=raw)


class OutputValidationError(AgentflowError):
    """A model's output did not validate, even after the retries it was allowed."""

    def __init__(self, message: str, *, raw: str, errors: str, attempts: int) -> None:
        self.raw = raw
        self.errors = errors
        self.attempts = attempts
        super().__init__(message)


class ToolError(AgentflowError):
    """A tool failed in a way the model cannot fix by calling it again."""

    def __init__(self, message: str, *, tool: str) -> None:
        self.tool = tool
        super().__init__(message)


class SandboxError(AgentflowError):
    """A sandbox could not run a tool (no engine, no image, killed, ...)."""


class SandboxTimeout(SandboxError):
    """A sandboxed call ran past its deadline; it was killed and its sandbox discarded."""


class SandboxResourceError(SandboxError):
    """A sandboxed call went over a limit and was stopped."""

    def __init__(self, message: str, *, resource: str) -> None:
        self.resource = resource
        """`memory`, `processes` or `output`."""
        super().__init__(message)


class SandboxUnavailable(SandboxError):
    """There is nothing to run the call in: no Docker daemon, no image, no such backend."""


class BudgetExceeded(AgentflowError):
    """A model call would take the run past its budget; the call was not made."""

    def __init__(
        self,
        *,
        unit: Literal["usd", "tokens"],
        limit: float,
        spent: float,
        estimate: float,
        reserved: float = 0.0,
    ) -> None:
        self.unit = unit
        self.limit = limit
        self.spent = spent
        """What the run's calls have used (settled)."""
        self.estimate = estimate
        self.reserved = reserved
        """What the run's calls in flight (in parallel nodes) hold, by their estimates."""
        amount = (lambda v: f"${v:.6f}") if unit == "usd" else (lambda v: f"{v:,.0f} tokens")
        held = f" (+ {amount(reserved)} held by calls in flight)" if reserved else ""
        super().__init__(
            f"run budget of {amount(limit)} would be exceeded: spent {amount(spent)}{held}, "
            f"next call estimated at {amount(estimate)}"
        )


class PolicyViolation(AgentflowError):
    """A routing rule or the PII boundary refused to send a request."""

    def __init__(self, message: str, *, rule: str, tier: str | None = None) -> None:
        self.rule = rule
        self.tier = tier
        super().__init__(message)


class StepLimitExceeded(AgentflowError):
    """An agent loop reached its `max_steps` without a final answer."""

    def __init__(self, message: str, *, node: str, max_steps: int) -> None:
        self.node = node
        self.max_steps = max_steps
        super().__init__(message)


class StoreError(AgentflowError):
    """The database under the review queue or the tool journal failed or cannot be reached."""

    def __init__(self, message: str, *, url: str) -> None:
        self.url = url
        """The store's URL, password removed."""
        super().__init__(message)


class ReviewQueueError(AgentflowError):
    """A review-queue action does not fit the item as it stands."""

    def __init__(self, message: str, *, item_id: str, status: str | None = None) -> None:
        self.item_id = item_id
        self.status = status
        """The item's status when the action was refused (None: there is no such item)."""
        super().__init__(message)


class ReviewItemNotFound(ReviewQueueError):
    """No review item has that id."""

    def __init__(self, *, item_id: str) -> None:
        super().__init__(f"no review item {item_id!r}", item_id=item_id)


class AlreadyClaimed(ReviewQueueError):
    """Another reviewer holds the item, so this one may not claim, release or resolve it."""

    def __init__(self, *, item_id: str, assignee: str, by: str, action: str) -> None:
        self.assignee = assignee
        """Who holds the item."""
        self.by = by
        """Who tried to act on it."""
        super().__init__(
            f"cannot {action} review item {item_id!r} as {by!r}: it is claimed by {assignee!r}",
            item_id=item_id,
            status="claimed",
        )


class NotClaimed(ReviewQueueError):
    """Releasing an item that nobody holds."""

    def __init__(self, *, item_id: str, by: str) -> None:
        self.by = by
        super().__init__(
            f"cannot release review item {item_id!r} as {by!r}: it is not claimed",
            item_id=item_id,
            status="pending",
        )


class ReviewItemClosed(ReviewQueueError):
    """The item is already resolved or expired; nothing more can happen to it."""

    def __init__(self, *, item_id: str, status: str, action: str) -> None:
        super().__init__(
            f"cannot {action} review item {item_id!r}: it is already {status}",
            item_id=item_id,
            status=status,
        )


class DecisionNotStorable(ReviewQueueError):
    """A decision cannot be saved with the thread's checkpoint (e.g. an integer wider than
    64 bits, a lone surrogate, nesting too deep), so the item was left as it was."""

    def __init__(self, *, item_id: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"the decision for review item {item_id!r} cannot be stored: {reason}",
            item_id=item_id,
        )


class EscalationPending(ReviewQueueError):
    """The thread waits for a person on an escalation; it takes no new message until then."""

    def __init__(self, *, thread_id: str, item_id: str, status: str) -> None:
        self.thread_id = thread_id
        super().__init__(
            f"thread {thread_id!r} waits for a person on escalation {item_id!r} ({status}); "
            "post again once it is resolved",
            item_id=item_id,
            status=status,
        )


class ThreadBusy(AgentflowError):
    """Another run of the thread is in progress (here or in another server process)."""

    def __init__(self, *, thread_id: str) -> None:
        self.thread_id = thread_id
        super().__init__(
            f"thread {thread_id!r} is running a turn already; post again once it has answered"
        )


class ToolJournalError(AgentflowError):
    """A tool journal entry is missing, or a call's result does not match the one recorded."""

    def __init__(self, message: str, *, key: str) -> None:
        self.key = key
        """The tool call's idempotency key."""
        super().__init__(message)


class JournalDigestMismatch(ToolJournalError):
    """The same tool-call key came back with other arguments than the journal recorded."""

    def __init__(self, *, key: str, tool: str, recorded: str, given: str) -> None:
        self.tool = tool
        self.recorded = recorded
        """The arguments digest the journal holds."""
        self.given = given
        """The arguments digest of this call."""
        super().__init__(
            f"tool call {key!r} ({tool!r}) was journaled with arguments digest {recorded!r} "
            f"but came back with {given!r}: same call id, different arguments",
            key=key,
        )
