"""Messages, usage arithmetic and output specs."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from agentflow import (
    AssistantMessage,
    Choice,
    Ebnf,
    JsonSchema,
    Regex,
    ToolCall,
    Usage,
    UserMessage,
    output_spec,
)
from agentflow.messages import estimate_tokens, message_text


class Refund(BaseModel):
    order_id: int
    amount: float


def test_usage_adds_up() -> None:
    total = Usage(input_tokens=10, output_tokens=2, cached_tokens=4) + Usage(input_tokens=1)
    assert total == Usage(input_tokens=11, output_tokens=2, cached_tokens=4)
    assert total.total_tokens == 13


def test_message_text_includes_tool_calls() -> None:
    call = ToolCall(id="c", name="refund", arguments={"amount": 5})
    assert message_text(AssistantMessage(tool_calls=[call])) == "refund({'amount': 5})"
    assert message_text(AssistantMessage(content="ok", tool_calls=[call])).startswith("ok refund")
    assert message_text(UserMessage(content="hi")) == "hi"
    assert estimate_tokens("") == 0 and estimate_tokens("abcde") == 2


def test_output_spec_from_a_pydantic_type_validates_into_it() -> None:
    spec = output_spec(Refund)
    assert isinstance(spec, JsonSchema) and spec.name == "Refund"
    assert spec.schema["required"] == ["order_id", "amount"]
    assert spec.parse('{"order_id": 1, "amount": 2.5}') == Refund(order_id=1, amount=2.5)
    with pytest.raises(ValueError, match="amount"):
        spec.parse('{"order_id": 1}')


def test_output_spec_from_a_dict_parses_json() -> None:
    spec = output_spec({"title": "Thing", "type": "object"})
    assert isinstance(spec, JsonSchema) and spec.name == "Thing"
    assert spec.parse('{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError, match="not valid JSON"):
        spec.parse("{")
    assert output_spec(spec) is spec
    assert isinstance(output_spec(list[int]), JsonSchema)


def test_regex_choice_and_ebnf_specs() -> None:
    assert Regex(pattern=r"\d{4}").parse("1042") == "1042"
    with pytest.raises(ValueError, match="does not match"):
        Regex(pattern=r"\d{4}").parse("10423")
    assert Choice(options=["yes", "no"]).parse(" yes\n") == "yes"
    with pytest.raises(ValueError, match="not one of"):
        Choice(options=["yes", "no"]).parse("maybe")
    assert Ebnf(grammar='root ::= "a"').parse("a") == "a"
