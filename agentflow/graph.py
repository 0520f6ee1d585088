"""Author agent graphs in Python; compile them to LangGraph.

```python
graph = AgentGraph("support", state=SupportState)

@graph.node(kind="classify")
async def triage(state: SupportState, ctx: StepContext) -> dict:
    return {"triage": await ctx.llm(state["messages"], output=Triage)}

graph.agent("resolve", kind="tool_call", tools=[lookup_order], max_steps=6)
graph.edge(START, "triage").edge("triage", "resolve").edge("resolve", END)
app = graph.compile(router=router)        # wraps LangGraph's CompiledStateGraph
```

`compile()` returns a `CompiledGraph`: LangGraph's own compiled graph (its `graph`),
wrapped so that each run is a trace; streaming, checkpointers and the state APIs work
unchanged. agentflow adds what LangGraph does not know: every model call is routed to a
tier, guarded, budgeted, validated and recorded in the `steps` channel.
"""

from __future__ import annotations

import importlib
import inspect
import operator
import typing
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Generic,
    NotRequired,
    Required,
    TypedDict,
    TypeVar,
)

from langgraph.channels.base import BaseChannel
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import ExecutionInfo, Runtime, get_runtime
from langgraph.types import Checkpointer, Command

from agentflow.agent import AgentLoop, SystemPrompt, route_after_model, route_after_tools
from agentflow.compiled import INVOCATION_KEY, CompiledGraph, node_span
from agentflow.config import load_config
from agentflow.costs import RunUsage, StepRecord, new_call_id
from agentflow.exceptions import ConfigError
from agentflow.messages import Message
from agentflow.models.base import ModelSettings, ToolChoice
from agentflow.routing import Router
from agentflow.sandbox import Sandboxes
from agentflow.serde import allow_types, state_types
from agentflow.step import PrefixTracker, StepContext
from agentflow.tools import Tool

if TYPE_CHECKING:
    from agentflow.evals.suite import Suite
    from agentflow.journal import ToolJournal

__all__ = ["END", "START", "AgentGraph", "AgentState", "CompiledGraph", "run_usage"]

DepsT = TypeVar("DepsT")
NodeFn = Callable[..., Awaitable[Any] | Any]
HighStakes = bool | Callable[[Any], bool]


class AgentState(TypedDict, total=False):
    """The state every agentflow graph carries; extend it with your own keys."""

    messages: Required[Annotated[list[Message], operator.add]]
    """The conversation, appended to by every node that speaks."""
    steps: Annotated[list[StepRecord], operator.add]
    """One record per model call: node, tier, reason, tokens, cost."""


def run_usage(state: dict[str, Any] | Any, *, run_id: str | None = None) -> RunUsage:
    """Return tokens and USD per tier and per node, from a graph's state or result.

    With `run_id`, only that run's calls count; without, every call in the state.
    """
    return RunUsage.from_steps(state.get("steps", []), run_id=run_id)


def _run_keys(info: ExecutionInfo | None, configurable: dict[str, Any]) -> tuple[str, str]:
    """A node's run id (what its step records carry) and its run's key in the router's
    spend ledger, from its LangGraph execution info and configurable.

    A run is one invocation when the caller names it (`config={"run_id": uuid}`, the
    LangChain convention LangGraph also uses to recognise re-entry); otherwise the whole
    thread counts as one run. In the ledger, a run without either is its invocation (all
    of whose nodes are the run: without a thread nothing outlives it).
    """
    if info is not None and info.run_id:
        return info.run_id, f"run:{info.run_id}"
    if info is not None and info.thread_id:
        return info.thread_id, f"thread:{info.thread_id}"
    invocation = configurable.get(INVOCATION_KEY) or new_call_id()
    return "run", f"invocation:{invocation}"


@dataclass(kw_only=True)
class _Node:
    name: str
    function: NodeFn
    kind: str | None
    high_stakes: HighStakes
    takes_context: bool


@dataclass(kw_only=True)
class _Branch:
    path: Callable[..., Any]
    targets: dict[Hashable, str] | list[str] | None


@dataclass(kw_only=True)
class _Edges:
    static: list[tuple[str, str]] = field(default_factory=list)
    branches: list[tuple[str, _Branch]] = field(default_factory=list)


class AgentGraph(Generic[DepsT]):
    """A graph of routed steps, built on LangGraph's `StateGraph`.

    Args:
        name: The graph's name (also the compiled graph's name).
        state: The state schema: `AgentState` or a TypedDict extending it.
        context: The type of the run context passed as `context=` when invoking; nodes
            see it as `ctx.deps`, tools as `RunContext.deps`.
        router: Tiers and routing policy. Without one, `compile()` loads agentflow.toml.
        allowed_types: Classes the state holds where its annotations do not name them
            (under `Any`), for checkpoints to revive. The classes the annotations name
            (`triage: Triage`, `list[Ticket]`, their fields' types) and agentflow's own
            are allowed without being listed.
    """

    def __init__(
        self,
        name: str,
        *,
        state: type[Any] = AgentState,
        context: type[DepsT] | None = None,
        router: Router | None = None,
        allowed_types: Sequence[type] = (),
    ) -> None:
        self.name = name
        self.state = state
        self.context = context
        self.router = router
        self.allowed_types = tuple(allowed_types)
        self._nodes: dict[str, _Node] = {}
        self._agents: dict[str, AgentLoop] = {}
        self._edges = _Edges()
        self._suites: list[Suite | str] = []

    def node(
        self,
        function: NodeFn | None = None,
        /,
        *,
        name: str | None = None,
        kind: str | None = None,
        high_stakes: HighStakes = False,
    ) -> Any:
        """Add a Python node: `fn(state)` or `fn(state, ctx)`, returning a state update.

        Args:
            name: Node name; defaults to the function's name.
            kind: The step kind (`classify`, `extract`, `plan`, ...) that picks the tier
                for `ctx.llm` calls. A node without a kind cannot call a model.
            high_stakes: True, or a predicate over the state, to route this node's calls
                to the high-stakes tier.
        """

        def add(fn: NodeFn) -> NodeFn:
            node_name = name or fn.__name__
            self._check_new(node_name)
            params = inspect.signature(fn).parameters
            self._nodes[node_name] = _Node(
                name=node_name,
                function=fn,
                kind=kind,
                high_stakes=high_stakes,
                takes_context=len(params) >= 2,
            )
            return fn

        return add if function is None else add(function)

    def agent(
        self,
        name: str,
        *,
        tools: Sequence[Tool[Any]],
        kind: str = "tool_call",
        max_steps: int = 8,
        system: str | SystemPrompt | None = None,
        high_stakes: HighStakes = False,
        settings: ModelSettings | None = None,
        tool_choice: ToolChoice | Callable[[Any, int], ToolChoice | None] = "auto",
    ) -> AgentGraph[DepsT]:
        """Add a tool-calling agent: it calls tools until it gives a final answer.

        Edges from `name` leave the loop once the model answers without tool calls.

        Args:
            system: The system prompt, or a function of the state (or of the state and
                the `StepContext`), sync or async, returning it for each request: e.g.
                the customer's plan and language. A constant string keeps every request
                of a run starting with the same bytes (what a prefix cache reuses); so does
                a function that returns the same text throughout a run.
            tool_choice: What each request may do: `"auto"`, `"required"` (call some
                tool), `"none"` (answer in text) or a tool's name (call that one), all
                grammar-enforced on SGLang and the local engine; or a function of the state
                and the turn's round (0 for its first request, 1 after the first tool
                results, ...) returning one, or None to leave the loop without asking the
                model again (its last tool results are the turn's outcome, for a later
                node to put into words). Playing a known intent's tools in order this way
                is cheaper and surer than hoping a small model picks them.
        """
        self._check_new(name)
        if max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {max_steps}", key=name)
        by_name = {t.name: t for t in tools}
        if len(by_name) != len(tools):
            raise ConfigError("two tools share a name", key=f"agent {name!r}")
        loop = AgentLoop(
            name=name,
            tools=by_name,
            max_steps=max_steps,
            system=system,
            settings=settings or ModelSettings(),
            tool_choice=tool_choice,
        )
        self._agents[name] = loop
        self._nodes[name] = _Node(
            name=name,
            function=loop.model_step,
            kind=kind,
            high_stakes=high_stakes,
            takes_context=True,
        )
        self._nodes[loop.tools_node] = _Node(
            name=loop.tools_node,
            function=loop.tools_step,
            kind=None,
            high_stakes=False,
            takes_context=True,
        )
        return self

    def evals(self, *suites: Suite | str) -> AgentGraph[DepsT]:
        """Attach eval suites (`agentflow.evals.Suite`), or `"module:attribute"` paths to a
        list of them, imported only when `agentflow eval` asks (so serving the graph never
        loads its cases)."""
        self._suites.extend(suites)
        return self

    def suites(self) -> list[Suite]:
        """The graph's eval suites, importing those given as paths.

        Raises:
            ConfigError: A path cannot be imported or does not hold suites.
        """
        from agentflow.evals.suite import Suite

        found: list[Suite] = []
        for entry in self._suites:
            if not isinstance(entry, str):
                found.append(entry)
                continue
            module, _, attribute = entry.partition(":")
            try:
                value = getattr(importlib.import_module(module), attribute or "SUITES")
            except (ImportError, AttributeError) as exc:
                raise ConfigError(
                    f"cannot import eval suites {entry!r}: {exc}", key=f"graph {self.name!r}"
                ) from exc
            values = value if isinstance(value, list | tuple) else [value]
            if not all(isinstance(suite, Suite) for suite in values):
                raise ConfigError(f"{entry!r} holds no Suites", key=f"graph {self.name!r}")
            found.extend(values)
        return found

    def node_kind(self, name: str) -> str | None:
        """The step kind of node `name`.

        Raises:
            ConfigError: There is no such node.
        """
        return self._node(name).kind

    async def call_node(self, name: str, state: dict[str, Any], ctx: StepContext[DepsT]) -> Any:
        """Run node `name`'s function once on `state` with `ctx`, outside any run: what an
        eval does to measure one step. Its state update is returned, not applied."""
        node = self._node(name)
        result = node.function(state, ctx) if node.takes_context else node.function(state)
        return await result if inspect.isawaitable(result) else result

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            raise ConfigError(
                f"no node named {name!r} (nodes: {', '.join(self._nodes)})",
                key=f"graph {self.name!r}",
            )
        return node

    def edge(self, source: str, target: str) -> AgentGraph[DepsT]:
        """Go from `source` to `target` (use `START` and `END` for the ends)."""
        self._edges.static.append((source, target))
        return self

    def branch(
        self,
        source: str,
        path: Callable[..., Any],
        targets: dict[Hashable, str] | list[str] | None = None,
    ) -> AgentGraph[DepsT]:
        """After `source`, go where `path(state)` says (a node name, or a key of `targets`)."""
        self._edges.branches.append((source, _Branch(path=path, targets=targets)))
        return self

    @property
    def tools(self) -> list[Tool[Any]]:
        """Every tool of the graph's agents, each once, in the order they were added."""
        found = {id(t): t for loop in self._agents.values() for t in loop.tools.values()}
        return list(found.values())

    def _check_new(self, name: str) -> None:
        if name in self._nodes or name in (START, END):
            raise ConfigError(f"a node named {name!r} already exists", key=f"graph {self.name!r}")

    def compile(
        self,
        *,
        router: Router | None = None,
        checkpointer: Checkpointer = None,
        config_file: str | Path | None = None,
        journal: ToolJournal | None = None,
        sandbox: Sandboxes | None = None,
    ) -> CompiledGraph:
        """Check every node's kind against the routing policy and build the LangGraph graph.

        Args:
            router: Overrides the graph's router.
            checkpointer: Any LangGraph checkpointer (in-memory, SQLite, PostgreSQL). The
                compiled graph uses a copy whose serializer revives agentflow's types, the
                state's and `allowed_types`, and blocks other classes, with or without
                `LANGGRAPH_STRICT_MSGPACK` (see `agentflow.serde.allow_types`).
            config_file: Path of the agentflow.toml to load when there is no router.
            journal: Journals side-effecting tool calls so a resumed run never repeats
                one (`agentflow.journal.open_journal(url)`); keep it next to the
                checkpointer's data. With a journal, runs default to
                `durability="sync"`: each step's checkpoint is written before the
                next step starts.
            sandbox: Where the graph's sandboxed tools run; whoever made it closes it
                (`await sandboxes.aclose()` removes the warm containers). Without one the
                compiled graph makes its own, as `app.sandboxes`: unisolated runs only
                if the agentflow.toml read for the router allows them.

        Raises:
            ConfigError: An unknown kind, a state without `messages`/`steps`, a bad edge.
        """
        config = None
        router = router or self.router
        if router is None:
            config = load_config(config_file)
            router = Router.from_config(config)
        self._check_state()
        router.check_kinds({n.name: n.kind for n in self._nodes.values() if n.kind is not None})
        builder: StateGraph[Any, Any, Any, Any] = StateGraph(
            self.state, context_schema=self.context
        )
        prefixes = PrefixTracker()
        if sandbox is None:
            unisolated = config is not None and config.sandbox.allow_unisolated
            sandbox = Sandboxes(allow_unisolated=unisolated)
        routes = self._routes(builder)
        for node in self._nodes.values():
            route = routes.get(node.name)
            runner = self._runner(node, router, prefixes, journal, sandbox, route)
            builder.add_node(node.name, runner, destinations=route.targets if route else None)
        self._add_edges(builder, set(routes))
        checkpointer = allow_types(checkpointer, [*state_types(self.state), *self.allowed_types])
        try:
            compiled = builder.compile(checkpointer=checkpointer, name=self.name)
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"graph {self.name!r}") from exc
        # A journal replays a call by its id, so the checkpoint holding the call must be
        # on disk before the tool runs: "sync", not LangGraph's default "async", which
        # may still be writing it when a crash comes.
        durability = "sync" if journal is not None else None
        return CompiledGraph(compiled, sandboxes=sandbox, durability=durability)

    def _check_state(self) -> None:
        """The state has `messages` and `steps`, each appended to (`operator.add`): a
        run's messages and step records are the newest ones (the thread service, the
        spend ledger), so a reducer that replaced, merged or reordered them (LangGraph's
        `add_messages`, which also wants LangChain messages) would misreport both."""
        hints = typing.get_type_hints(self.state, include_extras=True)
        missing = [key for key in _APPENDED if key not in hints]
        if missing:
            raise ConfigError(
                f"state schema {self.state.__name__} lacks {', '.join(missing)}; "
                "extend agentflow.AgentState",
                key=f"graph {self.name!r}",
            )
        for key in _APPENDED:
            hint = hints[key]
            if typing.get_origin(hint) in (Required, NotRequired):
                hint = typing.get_args(hint)[0]
            reducers = getattr(hint, "__metadata__", ())
            if operator.add not in reducers:
                found = ", ".join(map(_reducer_name, reducers)) or "none"
                raise ConfigError(
                    f"state schema {self.state.__name__}: {key} must be appended to, "
                    f"Annotated[list[...], operator.add] as in agentflow.AgentState "
                    f"(reducer: {found})",
                    key=f"graph {self.name!r}",
                )

    def _add_edges(self, builder: StateGraph[Any, Any, Any, Any], routed: set[str]) -> None:
        for source, target in self._edges.static:
            if source not in self._agents:
                builder.add_edge(source, target)
        for source, branch in self._edges.branches:
            if source not in routed:  # START's
                builder.add_conditional_edges(source, branch.path, branch.targets)
        for loop in self._agents.values():  # the rest of a loop's routes: `_routes`
            if not callable(loop.tool_choice):
                builder.add_edge(loop.tools_node, loop.name)

    def _routes(self, builder: StateGraph[Any, Any, Any, Any]) -> dict[str, _Route]:
        """Where nodes with branches go next, decided by the nodes themselves.

        A conditional edge costs LangGraph a copy of every channel of the state to show
        its function the node's writes (about 3 % of a support turn's CPU each). The node
        knows what it wrote, so it names where it goes (`Command(goto=...)`), asking the
        branch's function of the state with its update applied by the state's own
        channels: a node's branches; an agent loop's model node to its tools or out of
        the loop, and its tools node (with a tool choice function) back or out.
        """
        everywhere = [*self._nodes, END]  # an agent loop's tools node is one of them
        paths: dict[str, list[_Branch]] = {}
        for source, branch in self._edges.branches:
            paths.setdefault(source, []).append(branch)
        channels = builder.channels
        routes: dict[str, _Route] = {}
        for source, branches in paths.items():
            if source in self._nodes and source not in self._agents:
                drawn = [_targets(b.targets) for b in branches]
                targets = None if None in drawn else [t for ts in drawn if ts for t in ts]
                path = _all_of([_resolve(b) for b in branches])
                routes[source] = _Route(path, _leads(targets, everywhere), channels)
        exits: dict[str, list[str]] = {}
        for source, target in self._edges.static:
            if source in self._agents:
                exits.setdefault(source, []).append(target)
        for name, loop in self._agents.items():
            last = paths.get(name, [None])[-1]
            exit_path, targets = _loop_exit(last, exits.get(name) or [END])
            after_model = route_after_model(loop, exit_path)
            to_tools = None if targets is None else [loop.tools_node, *targets]
            routes[name] = _Route(after_model, _leads(to_tools, everywhere), channels)
            if callable(loop.tool_choice):
                after_tools = route_after_tools(loop, exit_path)
                back = None if targets is None else [name, *targets]
                routes[loop.tools_node] = _Route(after_tools, _leads(back, everywhere), channels)
        return routes

    def _runner(
        self,
        node: _Node,
        router: Router,
        prefixes: PrefixTracker,
        journal: ToolJournal | None,
        sandboxes: Sandboxes,
        route: _Route | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        function, takes_context, stakes = node.function, node.takes_context, node.high_stakes
        coroutine = inspect.iscoroutinefunction(function)

        async def run(state: dict[str, Any]) -> Any:
            # Read from the context LangGraph runs each node in (it always sets both), not
            # asked for as parameters, which LangGraph would look up for every call.
            configurable = get_config()["configurable"]  # pyright: ignore[reportTypedDictNotRequiredAccess]
            runtime: Runtime[Any] = get_runtime()
            run_id, key = _run_keys(runtime.execution_info, configurable)
            spend = router.spend.open(key, state.get("steps", ()), run_id=run_id)
            try:
                ctx = object.__new__(StepContext)  # see StepContext._record on why so
                ctx.__init__(
                    node=node.name,
                    kind=node.kind,
                    high_stakes=stakes(state) if callable(stakes) else stakes,
                    deps=runtime.context,
                    run_id=run_id,
                    thread_id=configurable.get("thread_id"),
                    router=router,
                    spend=spend,
                    prefixes=prefixes,
                    journal=journal,
                    sandboxes=sandboxes,
                )
                span = node_span(node.name, node.kind, configurable, ctx.records, router.pii)
                if span is None:
                    result = function(state, ctx) if takes_context else function(state)
                    if coroutine or inspect.isawaitable(result):
                        result = await result
                else:
                    with span:
                        result = function(state, ctx) if takes_context else function(state)
                        if coroutine or inspect.isawaitable(result):
                            result = await result
            finally:
                spend.close()
            result = _with_records(result, ctx.records)
            return result if route is None else await route.command(state, result)

        run.__name__ = node.name
        return run


_APPENDED = ("messages", "steps")
"""The state keys agentflow appends to and reads the newest of."""


def _reducer_name(reducer: object) -> str:
    return getattr(reducer, "__name__", None) or repr(reducer)


def _with_records(result: Any, records: list[StepRecord]) -> Any:
    """A node's result with its step records added to its `steps` (`records` is the
    node's own list, so it is handed over, not copied)."""
    if not records:
        return result
    if isinstance(result, dict):
        steps = result.get("steps")
        return {**result, "steps": [*steps, *records] if steps else records}
    if result is None:
        return {"steps": records}
    if isinstance(result, Command):
        update = dict(result.update or {})  # type: ignore[arg-type]
        update["steps"] = [*update.get("steps", []), *records]
        return Command(graph=result.graph, update=update, resume=result.resume, goto=result.goto)
    raise TypeError(f"a node must return a dict, None or a Command, not {type(result).__name__}")


@dataclass(frozen=True)
class _Route:
    """A node's way on: `path` of the state with the node's update applied."""

    path: Callable[[dict[str, Any]], Any]
    targets: tuple[str, ...]
    """Where it may go, for drawing the graph."""
    channels: dict[str, BaseChannel]
    """The state's channels (empty), which apply an update as LangGraph does."""

    async def command(self, state: dict[str, Any], result: Any) -> Any:
        """The node's result (with its step records), going where the path says it leads
        as well as wherever the node's own `Command` goes."""
        if isinstance(result, Command):
            if result.graph is not None:  # to the parent graph: nothing here runs next
                return result
            update, goto = result.update, _listed(result.goto)
        else:
            update, goto = result, []
        after = dict(state)
        for key, value in (update or {}).items():
            empty = self.channels[key]
            channel = empty.from_checkpoint(state[key]) if key in state else empty.copy()
            channel.update([value])
            after[key] = channel.get()
        leads = self.path(after)
        if inspect.isawaitable(leads):
            leads = await leads
        return Command(update=update, goto=[*goto, *_listed(leads)])


def _listed(goto: Any) -> list[Any]:
    return list(goto) if isinstance(goto, list | tuple) else [goto]


def _all_of(paths: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    """One path going where each of `paths` goes (each may be async)."""
    if len(paths) == 1:
        return paths[0]

    async def path(state: Any) -> list[Any]:
        leads: list[Any] = []
        for each in paths:
            lead = each(state)
            leads += _listed(await lead if inspect.isawaitable(lead) else lead)
        return leads

    return path


def _leads(targets: list[str] | None, everywhere: list[str]) -> tuple[str, ...]:
    """The nodes drawn as a route's ends: its targets, or any node when it names none."""
    return tuple(dict.fromkeys(everywhere if targets is None else targets))


def _loop_exit(
    branch: _Branch | None, static: list[str]
) -> tuple[Callable[[Any], Any], list[str] | None]:
    """Where an agent loop goes when it is done, and the nodes that can be (None: any):
    its branch, else its static edges (END without either)."""
    if branch is not None:
        return _resolve(branch), _targets(branch.targets)
    exit_to: str | list[str] = static[0] if len(static) == 1 else static
    return (lambda _: exit_to), static


def _targets(targets: dict[Hashable, str] | list[str] | None) -> list[str] | None:
    if targets is None:
        return None
    return list(targets.values()) if isinstance(targets, dict) else list(targets)


def _resolve(branch: _Branch) -> Callable[[Any], Any]:
    if not isinstance(branch.targets, dict):
        return branch.path
    mapping = branch.targets

    def path(state: Any) -> Any:
        key = branch.path(state)
        return [mapping[k] for k in key] if isinstance(key, list) else mapping[key]

    return path
