"""Small builders shared by the tests: routers over test doubles, one-node graphs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    GpuPrice,
    Model,
    Router,
    RoutingPolicy,
    StepContext,
    Tier,
    TokenPrice,
)

CHEAP = GpuPrice(gpu_hour_usd=3.6, tokens_per_s=1000)  # $1e-6 per token
FRONTIER = TokenPrice(input=3.0, output=15.0)


if TYPE_CHECKING:
    from agentflow.sandbox import Sandboxes


def three_tiers(tools: Model, planning: Model, frontier: Model, **policy: Any) -> Router:
    """Tools and planning self-hosted, frontier hosted; the DESIGN.md routing table."""
    return Router(
        tiers=[
            Tier(name="tools", model=tools, price=CHEAP, self_hosted=True),
            Tier(name="planning", model=planning, price=CHEAP, self_hosted=True),
            Tier(name="frontier", model=frontier, price=FRONTIER, self_hosted=False),
        ],
        policy=RoutingPolicy(
            kinds={
                "tool_call": "tools",
                "classify": "tools",
                "respond": "tools",
                "plan": "planning",
            },
            high_stakes="frontier",
            fallbacks={"tools": ["planning", "frontier"], "planning": ["tools"]},
            **policy,
        ),
    )


def single_node_graph(
    router: Router,
    body: Any,
    *,
    kind: str | None = "respond",
    high_stakes: Any = False,
    state: type[Any] = AgentState,
    names: Sequence[str] = ("step",),
) -> AgentGraph[Any]:
    """A graph of `names` in a row, each running `body(state, ctx)`."""
    graph: AgentGraph[Any] = AgentGraph("test", state=state, router=router)

    async def step(state: Any, ctx: StepContext[Any]) -> Any:
        return await body(state, ctx)

    for name in names:
        graph.node(step, name=name, kind=kind, high_stakes=high_stakes)
    for source, target in zip([START, *names], [*names, END], strict=True):
        graph.edge(source, target)
    return graph


SANDBOXES: list[Sandboxes] = []
"""The running test's sandboxes, while its `sandboxes` fixture (tests/conftest.py) is up."""


def running_sandboxes() -> Sandboxes:
    """The running test's sandboxes, for helpers that run sandboxed tools (the test asks
    for the `sandboxes` fixture, e.g. with `pytestmark = usefixtures("sandboxes")`)."""
    assert SANDBOXES, "the test does not use the `sandboxes` fixture"
    return SANDBOXES[-1]
