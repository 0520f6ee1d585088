"""ctx.llm: routing, the validation-retry loop, fallbacks, the PII boundary and budgets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel, Field

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    AssistantMessage,
    BudgetExceeded,
    Choice,
    ConfigError,
    FunctionModel,
    JsonSchema,
    ModelError,
    ModelResponse,
    ModelSettings,
    OutputValidationError,
    PolicyViolation,
    Regex,
    Router,
    RoutingPolicy,
    ScriptedModel,
    StepContext,
    Tier,
    Usage,
    UserMessage,
    run_usage,
)
from agentflow.models.base import DEFAULT_PROFILE, ModelProfile, output_spec
from agentflow.models.openai import OpenAIModel
from tests.helpers import CHEAP, single_node_graph, three_tiers
from tests.loopback import loopback


class Triage(BaseModel):
    intent: str
    urgent: bool


async def ask(ctx: StepContext[Any], **kwargs: Any) -> dict[str, Any]:
    return {"answer": await ctx.llm("where is my order?", **kwargs)}


async def ask_about(text: str, ctx: StepContext[Any]) -> dict[str, Any]:
    return {"answer": await ctx.llm(text)}


class AnswerState(AgentState, total=False):
    answer: Any


async def run_one(router: Router, body: Any, **graph_kwargs: Any) -> dict[str, Any]:
    graph = single_node_graph(router, body, state=AnswerState, **graph_kwargs)
    return await graph.compile().ainvoke({"messages": []})


async def test_text_step_routes_by_kind_and_records_cost() -> None:
    tools, planning, frontier = (
        ScriptedModel(["ships Thursday"]),
        ScriptedModel([]),
        ScriptedModel([]),
    )
    result = await run_one(three_tiers(tools, planning, frontier), lambda s, ctx: ask(ctx))
    assert result["answer"] == "ships Thursday"
    [record] = result["steps"]
    assert (record.node, record.kind, record.tier) == ("step", "respond", "tools")
    assert record.reason == "kind respond -> tools"
    assert record.fallback_chain == ("planning",)
    # 1e-6 USD per token on the cheap tier, tokens estimated by the scripted model
    assert record.cost_usd == pytest.approx(record.usage.total_tokens * 1e-6)
    assert record.est_cost_usd is not None and record.est_cost_usd >= record.cost_usd
    assert planning.requests == [] and frontier.requests == []


async def test_structured_output_is_constrained_and_validated() -> None:
    tools = ScriptedModel([Triage(intent="order_status", urgent=True)])
    result = await run_one(
        three_tiers(tools, ScriptedModel([]), ScriptedModel([])),
        lambda s, ctx: ask(ctx, output=Triage),
    )
    assert result["answer"] == Triage(intent="order_status", urgent=True)
    sent = tools.requests[0].output
    assert isinstance(sent, JsonSchema)
    assert sent.schema["properties"].keys() == {"intent", "urgent"}


async def test_invalid_output_is_retried_with_the_validation_error() -> None:
    tools = ScriptedModel(['{"intent": "refund"}', '{"intent": "refund", "urgent": false}'])
    result = await run_one(
        three_tiers(tools, ScriptedModel([]), ScriptedModel([])),
        lambda s, ctx: ask(ctx, output=Triage),
    )
    assert result["answer"] == Triage(intent="refund", urgent=False)
    retry = tools.requests[1].messages
    assert retry[-2] == AssistantMessage(content='{"intent": "refund"}')
    assert isinstance(retry[-1], UserMessage)
    assert "urgent: Field required" in retry[-1].content
    assert "errors.pydantic.dev" not in retry[-1].content
    assert [r.attempt for r in result["steps"]] == [1, 2]
    assert result["steps"][1].reason.endswith("retry 1: invalid output: urgent: Field required")


class Span(BaseModel):
    pages: str = Field(pattern=r"^\d+ - \d+$")


async def test_the_retry_reason_keeps_the_error_text_on_one_line() -> None:
    """Each error's leading bullet goes, a dash inside the message stays."""
    tools = ScriptedModel(['{"pages": "1-2"}', '{"pages": "1 - 2"}'])
    result = await run_one(
        three_tiers(tools, ScriptedModel([]), ScriptedModel([])),
        lambda s, ctx: ask(ctx, output=Span),
    )
    assert result["answer"] == Span(pages="1 - 2")
    reason = result["steps"][1].reason
    assert reason.endswith(
        "retry 1: invalid output: pages: String should match pattern '^\\d+ - \\d+$'"
    )


async def test_exhausted_retries_fall_back_to_the_next_tier() -> None:
    tools = ScriptedModel(["not json", "still not", "nope"])
    planning = ScriptedModel([Triage(intent="refund", urgent=False)])
    result = await run_one(
        three_tiers(tools, planning, ScriptedModel([])), lambda s, ctx: ask(ctx, output=Triage)
    )
    assert result["answer"].intent == "refund"
    assert [r.tier for r in result["steps"]] == ["tools"] * 3 + ["planning"]
    assert "fell back to planning" in result["steps"][-1].reason


NEEDS_A = {
    "title": "Needs A",
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
}


def openai_answer(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "deepseek-chat",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }


async def test_a_dict_schema_is_validated_on_the_client_retried_then_fallen_back() -> None:
    """A `json_object`-mode provider only promises some JSON: wrong shapes are caught here."""
    json_object_only = ModelProfile({**DEFAULT_PROFILE, "json_schema": False})
    planning = ScriptedModel(['{"a": "ok"}'])
    with loopback() as server:
        for content in ['{"b": "x"}', "[1, 2, 3]", '{"a": 5}']:
            server.reply(openai_answer(content))
        cheap = OpenAIModel(
            "deepseek-chat", base_url=f"{server.url}/v1", api_key="k", profile=json_object_only
        )
        async with cheap:
            result = await run_one(
                three_tiers(cheap, planning, ScriptedModel([])),
                lambda s, ctx: ask(ctx, output=NEEDS_A),
            )
        bodies = [r.json for r in server.requests]
    assert result["answer"] == {"a": "ok"}
    assert [b["response_format"] for b in bodies] == [{"type": "json_object"}] * 3
    assert "at $: 'a' is a required property" in bodies[1]["messages"][-2]["content"]
    assert "at $: [1, 2, 3] is not of type 'object'" in bodies[2]["messages"][-2]["content"]
    assert [r.tier for r in result["steps"]] == ["tools"] * 3 + ["planning"]
    assert result["steps"][-1].reason.startswith("kind respond -> tools; fell back to planning")


async def test_a_dict_schema_output_that_never_validates_raises_the_typed_error() -> None:
    tools = ScriptedModel(['{"a": 1}', "[]"])
    planning = ScriptedModel(['{"b": 2}', '{"a": null}'])
    with pytest.raises(OutputValidationError) as caught:
        await run_one(
            three_tiers(tools, planning, ScriptedModel([])),
            lambda s, ctx: ask(ctx, output=NEEDS_A, retries=1),
        )
    assert caught.value.raw == '{"a": null}'
    assert "at $['a']: None is not of type 'string'" in caught.value.errors


def test_an_invalid_dict_schema_is_refused_when_the_spec_is_built() -> None:
    with pytest.raises(ValueError, match=r"output schema 'output': not a valid JSON Schema: "):
        output_spec({"type": "objekt"})


async def test_output_validation_error_carries_the_raw_output() -> None:
    tools = ScriptedModel(["bad"] * 2)
    planning = ScriptedModel(["worse"] * 2)
    with pytest.raises(OutputValidationError) as caught:
        await run_one(
            three_tiers(tools, planning, ScriptedModel([])),
            lambda s, ctx: ask(ctx, output=Triage, retries=1),
        )
    assert caught.value.raw == "worse"
    assert caught.value.attempts == 2


async def test_model_error_fails_over_but_never_escalates_to_the_frontier() -> None:
    tools = ScriptedModel([ModelError("503 from gpu-glm", status=503)])
    planning = ScriptedModel([ModelError("connection refused")])
    frontier = ScriptedModel(["expensive answer"])
    with pytest.raises(ModelError, match="connection refused") as caught:
        await run_one(three_tiers(tools, planning, frontier), lambda s, ctx: ask(ctx))
    assert len(tools.requests) == 1 and len(planning.requests) == 1
    assert frontier.requests == []
    assert "earlier failures: tools: 503 from gpu-glm" in caught.value.__notes__


async def test_fallback_records_why() -> None:
    tools = ScriptedModel([ModelError("503 from gpu-glm", status=503)])
    planning = ScriptedModel(["from planning"])
    result = await run_one(three_tiers(tools, planning, ScriptedModel([])), lambda s, ctx: ask(ctx))
    assert result["answer"] == "from planning"
    [record] = result["steps"]
    assert record.tier == "planning"
    assert "fell back to planning: 503 from gpu-glm" in record.reason


async def test_high_stakes_step_goes_to_the_frontier_with_pii_redacted() -> None:
    frontier = ScriptedModel(["approved"])

    async def body(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        return {"answer": await ctx.llm("Refund jane.doe@example.com, card 4111 1111 1111 1111")}

    result = await run_one(
        three_tiers(ScriptedModel([]), ScriptedModel([]), frontier), body, high_stakes=True
    )
    sent = frontier.requests[0].messages[0].content
    assert "jane.doe@example.com" not in sent and "4111" not in sent
    assert "[EMAIL]" in sent and "[CARD]" in sent
    [record] = result["steps"]
    assert record.tier == "frontier"
    assert record.reason == "high-stakes step -> frontier"
    assert record.pii_redacted == {"email": 1, "card": 1}


async def test_high_stakes_predicate_over_state() -> None:
    frontier = ScriptedModel(["frontier"])
    tools = ScriptedModel(["cheap"])
    result = await run_one(
        three_tiers(tools, ScriptedModel([]), frontier),
        lambda s, ctx: ask(ctx),
        high_stakes=lambda state: len(state["messages"]) > 5,
    )
    assert result["answer"] == "cheap"
    assert frontier.requests == []


async def test_pii_block_refuses_before_sending() -> None:
    frontier = ScriptedModel(["never"])
    with pytest.raises(PolicyViolation, match="email") as caught:
        await run_one(
            three_tiers(ScriptedModel([]), ScriptedModel([]), frontier, pii="block"),
            lambda s, ctx: ask_about("mail me at a@b.co", ctx),
            high_stakes=True,
        )
    assert caught.value.rule == "pii"
    assert frontier.requests == []


async def test_self_hosted_tiers_see_the_original_text() -> None:
    tools = ScriptedModel(["ok"])

    async def body(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        return {"answer": await ctx.llm("mail me at a@b.co")}

    await run_one(three_tiers(tools, ScriptedModel([]), ScriptedModel([])), body)
    assert tools.requests[0].messages[0].content == "mail me at a@b.co"


async def test_budget_stops_the_run_before_the_call_that_would_exceed_it() -> None:
    # each call really uses 400 tokens ($0.0004 on the cheap tier); before each call the
    # router estimates the prompt (5 tokens) plus max_tokens=500, i.e. $0.000505
    reply = ModelResponse(
        message=AssistantMessage(content="a"), usage=Usage(input_tokens=100, output_tokens=300)
    )
    tools = ScriptedModel([reply], cycle=True)
    router = three_tiers(tools, ScriptedModel([]), ScriptedModel([]), budget_usd_per_run=0.0015)
    settings = ModelSettings(max_tokens=500)
    with pytest.raises(BudgetExceeded) as caught:
        await run_one(router, lambda s, ctx: ask(ctx, settings=settings), names=list("abcde"))
    assert caught.value.unit == "usd"
    # $0.0012 spent after three calls; the fourth would reach $0.001705 > $0.0015: not sent
    assert len(tools.requests) == 3
    assert caught.value.spent == pytest.approx(0.0012)
    assert caught.value.estimate == pytest.approx(0.000505)


async def test_token_budget() -> None:
    tools = ScriptedModel(["a"], cycle=True)
    router = three_tiers(tools, ScriptedModel([]), ScriptedModel([]), budget_tokens_per_run=1010)
    with pytest.raises(BudgetExceeded) as caught:
        await run_one(
            router,
            lambda s, ctx: ask(ctx, settings=ModelSettings(max_tokens=1000)),
            names=("one", "two"),
        )
    assert caught.value.unit == "tokens"
    # the first call used 6 tokens; 6 + 5 (prompt) + 1000 (max_tokens) > 1010
    assert len(tools.requests) == 1
    assert caught.value.spent == 6


R1, R2 = uuid.UUID(int=1), uuid.UUID(int=2)


def run_config(run_id: uuid.UUID) -> RunnableConfig:
    return {"configurable": {"thread_id": "t1"}, "run_id": run_id}


async def test_budget_is_per_run() -> None:
    tools = ScriptedModel(["a"], cycle=True)
    router = three_tiers(tools, ScriptedModel([]), ScriptedModel([]), budget_tokens_per_run=1010)
    graph = single_node_graph(
        router, lambda s, ctx: ask(ctx, settings=ModelSettings(max_tokens=1000)), state=AnswerState
    )
    app = graph.compile(checkpointer=InMemorySaver())
    hello = {"messages": [UserMessage(content="hi")]}
    await app.ainvoke(hello, run_config(R1))
    state = await app.ainvoke(hello, run_config(R2))
    assert len(state["steps"]) == 2
    assert run_usage(state, run_id=str(R2)).total.calls == 1
    with pytest.raises(BudgetExceeded):  # same run id again: its budget is spent
        await app.ainvoke(hello, run_config(R2))


async def test_unpriced_tier_is_reported_unpriced_never_zero() -> None:
    router = Router(
        tiers=[Tier(name="mystery", model=ScriptedModel(["hi"]), self_hosted=True)],
        policy=RoutingPolicy(kinds={"respond": "mystery"}, budget_usd_per_run=0.01),
    )
    result = await run_one(router, lambda s, ctx: ask(ctx))
    [record] = result["steps"]
    assert record.cost_usd is None and record.est_cost_usd is None
    usage = run_usage(result)
    assert usage.total.unpriced_calls == 1
    assert usage.total.cost_label() == "unpriced"


async def test_regex_and_choice_outputs() -> None:
    tools = ScriptedModel(["A-12", "maybe", "yes"])
    router = Router(
        tiers=[Tier(name="t", model=tools, price=CHEAP, self_hosted=True)],
        policy=RoutingPolicy(kinds={"respond": "t"}),
    )

    async def body(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        code = await ctx.llm("code?", output=Regex(pattern=r"[A-Z]-\d+"))
        yes = await ctx.llm("ok?", output=Choice(options=["yes", "no"]))
        return {"answer": (code, yes)}

    result = await run_one(router, body)
    assert result["answer"] == ("A-12", "yes")
    assert "not one of" in tools.requests[2].messages[-1].content


async def test_node_without_kind_cannot_call_a_model() -> None:
    with pytest.raises(ConfigError, match="has no kind"):
        await run_one(
            three_tiers(ScriptedModel([]), ScriptedModel([]), ScriptedModel([])),
            lambda s, ctx: ask(ctx),
            kind=None,
        )


async def test_reported_usage_and_latency_are_kept() -> None:
    response = ModelResponse(
        message=AssistantMessage(content="hi"),
        usage=Usage(input_tokens=100, output_tokens=10, cached_tokens=60),
        model="glm-4.6",
        latency_s=0.25,
    )
    result = await run_one(
        three_tiers(ScriptedModel([response]), ScriptedModel([]), ScriptedModel([])),
        lambda s, ctx: ask(ctx),
    )
    [record] = result["steps"]
    assert (record.model, record.latency_s, record.usage.cached_tokens) == ("glm-4.6", 0.25, 60)
    assert record.cost_usd == pytest.approx(110e-6)


# -- budgets across a run's nodes: parallel branches, nodes that raise ---------------------

PAID = ModelSettings(max_tokens=100)
"""With the one-token prompt "go", each call is estimated at 1 + 100 = 101 tokens ($0.000101
on the cheap tier), and the test models below use exactly that."""


def hundred_and_one(req: Any) -> ModelResponse:
    return ModelResponse(
        message=AssistantMessage(content="ok"), usage=Usage(input_tokens=1, output_tokens=100)
    )


def fanned_out(router: Router, names: Sequence[str]) -> Any:
    """A graph whose nodes all start from START (one superstep, run concurrently)."""
    graph: AgentGraph[Any] = AgentGraph("fan", router=router)

    async def step(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("go", settings=PAID)
        return {}

    for name in names:
        graph.node(step, name=name, kind="respond")
        graph.edge(START, name).edge(name, END)
    return graph.compile()


@pytest.mark.parametrize(
    ("unit", "budget"),
    [("tokens", {"budget_tokens_per_run": 250}), ("usd", {"budget_usd_per_run": 0.00025})],
)
async def test_parallel_branches_cannot_together_pass_the_budget(
    unit: str, budget: dict[str, Any]
) -> None:
    """Three branches of 101 tokens against 250: two fit, the third is refused. (Each used
    to check the same spend, 0, so all three ran: 303 tokens.) The first call's answer
    waits until the second has arrived, so the refusal counts a call still in flight."""
    second_arrived = asyncio.Event()
    answered: list[int] = []

    async def answer(req: Any) -> ModelResponse:
        if len(model.requests) >= 2:
            second_arrived.set()
        await second_arrived.wait()
        response = hundred_and_one(req)
        answered.append(response.usage.total_tokens)
        return response

    model = FunctionModel(answer)
    app = fanned_out(three_tiers(model, model, model, **budget), ["a", "b", "c"])
    with pytest.raises(BudgetExceeded) as caught:
        await app.ainvoke({"messages": []})
    assert caught.value.unit == unit
    assert len(model.requests) == 2, "the third call was never sent"
    assert sum(answered) <= 250
    refused = caught.value
    if unit == "tokens":
        assert (refused.spent + refused.reserved, refused.estimate) == (202, 101)
    else:
        assert refused.spent + refused.reserved == pytest.approx(0.000202)


async def test_parallel_branches_within_the_budget_all_run() -> None:
    model = FunctionModel(hundred_and_one)
    app = fanned_out(three_tiers(model, model, model, budget_tokens_per_run=303), "abc")
    state = await app.ainvoke({"messages": []})
    assert run_usage(state).total.total_tokens == 303


class Flaky:
    """Raises after its node's paid call the first time it runs."""

    def __init__(self) -> None:
        self.raised = False

    async def __call__(self, state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
        await ctx.llm("go", settings=PAID)
        if not self.raised:
            self.raised = True
            raise RuntimeError("the node fails after its call was paid for")
        return {}


async def test_a_node_that_raises_after_a_paid_call_still_spent_it() -> None:
    """The raising node's step record is lost with its state update, so the resumed run's
    state shows no spend; its call still counts: 101 + 101 > 150, the retry is refused."""
    model = FunctionModel(hundred_and_one)
    router = three_tiers(model, model, model, budget_tokens_per_run=150)
    app = single_node_graph(router, Flaky()).compile(checkpointer=InMemorySaver())
    config = run_config(R1)
    with pytest.raises(RuntimeError, match="paid for"):
        await app.ainvoke({"messages": []}, config)
    assert (await app.aget_state(config)).values.get("steps", []) == []
    with pytest.raises(BudgetExceeded) as caught:
        await app.ainvoke(None, config)  # resume: the node runs again
    assert (caught.value.spent, caught.value.estimate) == (101, 101)
    assert len(model.requests) == 1

    # Another run of the thread has a budget of its own.
    state = await app.ainvoke({"messages": []}, run_config(R2))
    assert run_usage(state, run_id=str(R2)).total.total_tokens == 101


async def test_without_a_run_id_the_thread_is_the_run_and_remembers_the_lost_spend() -> None:
    model = FunctionModel(hundred_and_one)
    router = three_tiers(model, model, model, budget_tokens_per_run=150)
    app = single_node_graph(router, Flaky()).compile(checkpointer=InMemorySaver())
    config: RunnableConfig = {"configurable": {"thread_id": "t"}}
    with pytest.raises(RuntimeError):
        await app.ainvoke({"messages": []}, config)
    with pytest.raises(BudgetExceeded):  # a new turn of the same thread
        await app.ainvoke({"messages": []}, config)


async def test_after_a_restart_only_the_states_records_count() -> None:
    """A new router (a restarted process) has an empty ledger: the call of the node that
    raised, never recorded in the state, is forgotten (101 + 101 fit in 250 where
    101 + 101 + 101 would not); the state's records still count."""
    model = FunctionModel(hundred_and_one)
    budget = {"budget_tokens_per_run": 250}
    saver = InMemorySaver()
    graph = single_node_graph(three_tiers(model, model, model, **budget), Flaky(), names="ab")
    config = run_config(R1)
    with pytest.raises(RuntimeError):
        await graph.compile(checkpointer=saver).ainvoke({"messages": []}, config)
    restarted = graph.compile(router=three_tiers(model, model, model, **budget), checkpointer=saver)
    state = await restarted.ainvoke(None, config)
    assert run_usage(state, run_id=str(R1)).total.total_tokens == 202
    assert len(model.requests) == 3
    with pytest.raises(BudgetExceeded) as caught:  # the state's 202 + 101 > 250
        await restarted.ainvoke({"messages": []}, config)
    assert caught.value.spent == 202


async def ask_go(state: Any, ctx: StepContext[Any]) -> dict[str, Any]:
    await ctx.llm("go", settings=PAID)
    return {}


async def test_a_failed_call_gives_its_reservation_back() -> None:
    """The tools tier fails; the fallback's call is held against the budget alone (with
    the failed call's 101 still held, 202 > 150 would refuse it)."""
    planning = FunctionModel(hundred_and_one)
    router = three_tiers(
        ScriptedModel([ModelError("down", status=503)]),
        planning,
        ScriptedModel([]),
        budget_tokens_per_run=150,
    )
    state = await single_node_graph(router, ask_go).compile().ainvoke({"messages": []})
    assert [s.tier for s in state["steps"]] == ["planning"]


async def test_invocations_without_a_thread_or_run_id_do_not_share_a_budget() -> None:
    """Each such invocation is a run: two at once both fit, and a failed one's spend does
    not follow the next."""
    model = FunctionModel(hundred_and_one)
    router = three_tiers(model, model, model, budget_tokens_per_run=150)
    app = single_node_graph(router, ask_go).compile()
    results = await asyncio.gather(*(app.ainvoke({"messages": []}) for _ in range(3)))
    assert [run_usage(r).total.total_tokens for r in results] == [101, 101, 101]
    flaky = single_node_graph(router, Flaky()).compile()
    with pytest.raises(RuntimeError):
        await flaky.ainvoke({"messages": []})
    await flaky.ainvoke({"messages": []})
