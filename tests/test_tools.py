"""Tests for agentflow.tools: schema from signature + docstring, validation, calling."""

import asyncio
import dataclasses
import datetime
import functools
import json
import threading
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from langgraph.errors import GraphInterrupt
from pydantic import BaseModel, Field, ValidationError

from agentflow.exceptions import BudgetExceeded, ConfigError, ToolError
from agentflow.messages import ToolCall
from agentflow.models.base import ToolSpec
from agentflow.tools import RunContext, Tool, ToolOutcome, ToolRetry, tool


class Item(BaseModel):
    sku: str
    quantity: int = 1


class Order(BaseModel):
    order_id: str
    items: list[Item]


@dataclasses.dataclass
class Shop:
    name: str


@dataclasses.dataclass
class Receipt:
    total: float
    day: datetime.date


def ctx(**changes: Any) -> RunContext[Any]:
    return dataclasses.replace(RunContext(deps=Shop(name="acme"), run_id="run-1"), **changes)


def call_of(arguments: Any, *, name: str = "t", call_id: str = "call-1") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


@tool
def lookup_order(order_id: str, include_items: bool = False) -> dict[str, Any]:
    """Look up an order by its id.

    Returns the order's status.

    Args:
        order_id: The order id, e.g. `A-1042`. Continuation lines
            belong to the same entry.
        include_items (bool): Whether to list the items too.

    Returns:
        The order as a dict.

    Raises:
        KeyError: when the order does not exist.
    """
    return {"order_id": order_id, "include_items": include_items}


@tool(requires_approval=True, side_effects=True, timeout_s=5, retries=4)
async def place_order(order: Order, context: "RunContext[Shop]", note: str = "") -> str:
    """Place an order.

    Args:
        order: The order to place.
        note: A note for the warehouse.
    """
    return f"{context.deps.name}:{order.order_id}:{len(order.items)}:{note}"


# -- RunContext --------------------------------------------------------------------------


def test_idempotency_key_uses_the_thread_when_there_is_one() -> None:
    assert ctx(thread_id="th", tool_call_id="c1").idempotency_key == "th:c1"


def test_idempotency_key_falls_back_to_the_run_id() -> None:
    assert ctx(tool_call_id="c1").idempotency_key == "run-1:c1"


def test_idempotency_key_is_none_outside_a_tool_call() -> None:
    assert ctx(thread_id="th").idempotency_key is None


# -- schema --------------------------------------------------------------------------------


def test_schema_is_a_strict_object_from_hints_and_docstring() -> None:
    assert lookup_order.name == "lookup_order"
    assert lookup_order.description == "Look up an order by its id.\n\nReturns the order's status."
    assert lookup_order.parameters == {
        "type": "object",
        "properties": {
            "order_id": {
                "type": "string",
                "description": "The order id, e.g. `A-1042`. Continuation lines belong to the "
                "same entry.",
            },
            "include_items": {
                "type": "boolean",
                "default": False,
                "description": "Whether to list the items too.",
            },
        },
        "required": ["order_id"],
        "additionalProperties": False,
    }


def test_spec_carries_name_description_and_strict_parameters() -> None:
    assert lookup_order.spec == ToolSpec(
        name="lookup_order",
        description=lookup_order.description,
        parameters=lookup_order.parameters,
        strict=True,
    )


def test_nested_models_go_to_defs_and_the_context_is_hidden() -> None:
    schema = place_order.parameters
    assert list(schema["properties"]) == ["order", "note"]
    assert schema["properties"]["order"]["$ref"] == "#/$defs/Order"
    assert set(schema["$defs"]) == {"Order", "Item"}
    assert schema["required"] == ["order"]
    assert "title" not in schema
    assert place_order.takes_context
    assert not lookup_order.takes_context


def test_tool_without_parameters_still_lists_properties_and_required() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.parameters == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }
    assert ping.description == ""


def test_options_are_kept() -> None:
    assert place_order.requires_approval is True
    assert place_order.side_effects is True
    assert place_order.sandbox == "none"
    assert place_order.timeout_s == 5
    assert place_order.retries == 4
    assert lookup_order.sandbox == "none"
    assert lookup_order.retries == 2
    assert lookup_order.timeout_s is None
    assert repr(lookup_order) == "Tool(name='lookup_order')"


def test_name_and_description_can_be_overridden() -> None:
    def f(x: int) -> int:
        """Docstring summary."""
        return x

    t = tool(name="double-it", description="Double a number.")(f)
    assert (t.name, t.description, t.spec.name) == ("double-it", "Double a number.", "double-it")
    assert t.function is f


def test_docstring_description_wins_over_annotated_and_field_defaults_work() -> None:
    @tool
    def f(
        a: Annotated[int, Field(description="from annotation", ge=0)],
        b: Annotated[int, Field(description="from annotation")],
        c: int = Field(3, le=10, description="from field"),
    ) -> int:
        """Sum.

        Args:
            a: from docstring
        """
        return a + b + c

    props = f.parameters["properties"]
    assert props["a"] == {"type": "integer", "minimum": 0, "description": "from docstring"}
    assert props["b"]["description"] == "from annotation"
    assert props["c"] == {
        "type": "integer",
        "maximum": 10,
        "default": 3,
        "description": "from field",
    }
    assert f.parameters["required"] == ["a", "b"]
    assert f.validate({"a": 1, "b": 2}) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ValidationError):
        f.validate({"a": 1, "b": 2, "c": 11})


def test_docstring_parsing_edge_cases() -> None:
    @tool
    def f(alpha: int, beta: int, gamma: int) -> int:
        """Summary line.

        Arguments:
            alpha:
                On the next line.
            not an entry
                ignored continuation
            beta (int, optional): Beta.

        Free text after the section is not part of it.
            gamma: not an argument entry
        """
        return alpha + beta + gamma

    props = f.parameters["properties"]
    assert props["alpha"]["description"] == "On the next line."
    assert props["beta"]["description"] == "Beta."
    assert "description" not in props["gamma"]
    assert f.description == "Summary line."


def test_parameters_may_use_names_pydantic_reserves() -> None:
    @tool
    def f(json: str, _id: int, model_config: bool = True) -> str:
        return f"{json}{_id}{model_config}"

    assert list(f.parameters["properties"]) == ["json", "_id", "model_config"]
    assert f.validate({"json": "x", "_id": "7"}) == {"json": "x", "_id": 7, "model_config": True}


def test_string_annotations_resolve_at_module_level() -> None:
    assert place_order.parameters["properties"]["note"] == {
        "type": "string",
        "default": "",
        "description": "A note for the warehouse.",
    }


# -- configuration errors --------------------------------------------------------------


def _config_error(function: Callable[..., Any], **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        Tool(function, **options)
    return info.value


def test_unannotated_parameter_is_a_config_error_naming_it() -> None:
    def f(x: int, y) -> int:
        return x

    error = _config_error(f)
    assert error.key == "tool f"
    assert "'y'" in error.reason
    assert "annotation" in error.reason


@pytest.mark.parametrize("kind", ["args", "kwargs"])
def test_variadic_parameters_are_a_config_error(kind: str) -> None:
    def with_args(*args: int) -> None: ...

    def with_kwargs(**kwargs: int) -> None: ...

    error = _config_error(with_args if kind == "args" else with_kwargs)
    assert f"'{kind}'" in error.reason


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dots.not.ok"])
def test_invalid_names_are_a_config_error(name: str) -> None:
    def f() -> None: ...

    assert _config_error(f, name=name).key == f"tool {name}"


def test_lambda_needs_a_name() -> None:
    assert "name=" in _config_error(lambda: None).reason


def test_callable_without_a_name_needs_one() -> None:
    def f(x: int, y: int) -> int:
        return x + y

    assert "name=" in _config_error(functools.partial(f, y=1)).reason
    partial_tool = Tool(functools.partial(f, y=1), name="add_one")
    assert list(partial_tool.parameters["properties"]) == ["x", "y"]
    assert partial_tool.parameters["required"] == ["x"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"sandbox": "vm"}, "sandbox"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": -1.5}, "timeout_s"),
        ({"retries": -1}, "retries"),
        ({"retries": True}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"requires_approval": "yes"}, "requires_approval"),
        ({"high_stakes": 1}, "high_stakes"),
    ],
)
def test_out_of_range_options_are_a_config_error(options: dict[str, Any], fragment: str) -> None:
    def f() -> None: ...

    error = _config_error(f, **options)
    assert fragment in error.reason
    assert error.key == "tool f"


def test_a_side_effecting_tool_must_see_its_idempotency_key() -> None:
    """Exactly once rests on the tool acting once per key: one that cannot see the key
    (no RunContext) would repeat its effect when a crashed call runs again."""

    def send_email(to: str) -> str:
        """Send an email."""
        return to

    error = _config_error(send_email, side_effects=True)
    assert "must take a RunContext and act once per ctx.idempotency_key" in error.reason
    assert error.key == "tool send_email"
    assert tool(send_email).side_effects is False  # reads are fine without a context


def test_a_sandboxed_tool_cannot_take_a_run_context() -> None:
    def f(ctx: RunContext[Any], x: int) -> None: ...

    assert "cannot take a RunContext" in _config_error(f, sandbox="docker").reason


def test_two_context_parameters_are_a_config_error() -> None:
    def f(a: RunContext[Any], b: RunContext[Any]) -> None: ...

    assert "RunContext" in _config_error(f).reason


def test_unresolvable_string_annotation_is_a_config_error() -> None:
    def f(x: "Undefined") -> None: ...  # type: ignore  # noqa: F821

    assert "Undefined" in _config_error(f).reason


def test_annotation_pydantic_cannot_validate_is_a_config_error() -> None:
    class Opaque:
        pass

    def f(x: Opaque) -> None: ...

    assert "arguments model" in _config_error(f).reason


def test_annotation_without_json_schema_is_a_config_error() -> None:
    def f(callback: Callable[[int], int]) -> None: ...

    assert "JSON schema" in _config_error(f).reason


def test_callable_whose_signature_cannot_be_read_is_a_config_error() -> None:
    assert "signature" in _config_error(max).reason


# -- validation and flags ------------------------------------------------------------------


def test_validate_coerces_and_fills_defaults() -> None:
    assert lookup_order.validate({"order_id": "A-1", "include_items": "true"}) == {
        "order_id": "A-1",
        "include_items": True,
    }
    assert lookup_order.validate({"order_id": "A-1"}) == {
        "order_id": "A-1",
        "include_items": False,
    }


def test_validate_returns_nested_models_as_instances() -> None:
    args = place_order.validate({"order": {"order_id": "A-1", "items": [{"sku": "s"}]}})
    assert args["order"] == Order(order_id="A-1", items=[Item(sku="s", quantity=1)])


def test_validate_rejects_unknown_arguments() -> None:
    with pytest.raises(ValidationError):
        lookup_order.validate({"order_id": "A-1", "extra": 1})


def test_flags_and_predicates_see_validated_arguments() -> None:
    seen: list[dict[str, Any]] = []

    def big(args: dict[str, Any]) -> bool:
        seen.append(args)
        return args["amount"] > 100

    @tool(requires_approval=big, high_stakes=lambda args: args["amount"] > 1000)
    def refund(amount: float) -> str:
        return "ok"

    args = refund.validate({"amount": "250"})
    assert refund.needs_approval(args) is True
    assert refund.is_high_stakes(args) is False
    assert refund.needs_approval(refund.validate({"amount": 5})) is False
    assert seen[0] == {"amount": 250.0}
    assert place_order.needs_approval({}) is True
    assert place_order.is_high_stakes({}) is False


def test_predicates_with_two_parameters_also_get_the_run_context() -> None:
    seen: list[RunContext[Any]] = []

    def stakes(ctx: RunContext[dict[str, float]], args: dict[str, Any]) -> bool:
        seen.append(ctx)
        return args["amount"] > ctx.deps["stakes"]

    def default_limit(args: dict[str, Any], limit: float = 100) -> bool:
        return args["amount"] > limit

    @tool(
        requires_approval=lambda ctx, args: args["amount"] > ctx.deps["limit"], high_stakes=stakes
    )
    def refund(amount: float) -> str:
        return "ok"

    ctx = RunContext(deps={"limit": 500.0, "stakes": 200.0}, run_id="r", tool_call_id="c1")
    args = refund.validate({"amount": 250})
    assert refund.needs_approval(args, ctx) is False
    assert refund.is_high_stakes(args, ctx) is True
    assert seen == [ctx]
    with pytest.raises(ToolError, match="requires_approval predicate takes a RunContext"):
        refund.needs_approval(args)
    assert tool(requires_approval=default_limit)(refund.function).needs_approval(args) is True


@pytest.mark.parametrize("predicate", [lambda: True, lambda ctx, args, extra: True])
def test_predicates_take_arguments_or_context_and_arguments(predicate: Any) -> None:
    with pytest.raises(ConfigError, match=r"must take \(arguments\) or \(ctx, arguments\)"):
        tool(high_stakes=predicate)(lookup_order.function)


def test_failing_predicate_is_a_tool_error() -> None:
    @tool(high_stakes=lambda args: args["missing"])
    def f(x: int) -> int:
        return x

    with pytest.raises(ToolError, match="high_stakes predicate") as info:
        f.is_high_stakes({"x": 1})
    assert info.value.tool == "f"
    assert isinstance(info.value.__cause__, KeyError)


# -- call -------------------------------------------------------------------------------------


async def test_sync_tools_run_in_a_worker_thread() -> None:
    @tool
    def where(ctx: RunContext[Shop]) -> int:
        assert ctx.deps.name == "acme"
        return threading.get_ident()

    assert await where.call({}, ctx()) != threading.get_ident()


async def test_async_tools_are_awaited_with_the_context_injected() -> None:
    args = place_order.validate({"order": {"order_id": "A-9", "items": []}, "note": "n"})
    assert await place_order.call(args, ctx()) == "acme:A-9:0:n"


async def test_positional_only_parameters_are_passed_by_position() -> None:
    @tool
    def f(a: int, c: RunContext[Any], /, b: int, *, d: int = 4) -> tuple[Any, ...]:
        return (a, c.run_id, b, d)

    assert list(f.parameters["properties"]) == ["a", "b", "d"]
    assert await f.call(f.validate({"a": 1, "b": 2}), ctx()) == (1, "run-1", 2, 4)


async def test_callable_objects_and_bound_methods_work() -> None:
    class Counter:
        def __init__(self) -> None:
            self.total = 0

        async def __call__(self, n: int) -> int:
            self.total += n
            return self.total

        def add(self, n: int) -> int:
            self.total += n
            return self.total

    counter = Counter()
    by_call = Tool(counter, name="count")
    by_method = tool(counter.add)
    assert by_method.name == "add"
    assert list(by_call.parameters["properties"]) == ["n"]
    assert await by_call.call({"n": 2}, ctx()) == 2
    assert await by_method.call({"n": 3}, ctx()) == 5


async def test_sync_wrapper_returning_a_coroutine_is_awaited() -> None:
    async def inner(x: int) -> int:
        return x * 2

    @functools.wraps(inner)
    def wrapper(x: int) -> Any:
        return inner(x)

    assert await tool(wrapper).call({"x": 21}, ctx()) == 42


async def test_async_tool_past_its_timeout_is_a_tool_error() -> None:
    never = asyncio.Event()

    @tool(timeout_s=0.01)
    async def stuck() -> None:
        await never.wait()

    with pytest.raises(ToolError, match=r"tool 'stuck' timed out after 0.01s") as info:
        await stuck.call({}, ctx())
    assert info.value.tool == "stuck"


async def test_sync_tool_past_its_timeout_is_a_tool_error() -> None:
    release = threading.Event()

    @tool(timeout_s=0.01)
    def stuck() -> None:
        release.wait()

    try:
        with pytest.raises(ToolError, match="timed out"):
            await stuck.call({}, ctx())
    finally:
        release.set()


async def test_timeout_error_raised_by_the_tool_itself_is_not_a_timeout() -> None:
    @tool(timeout_s=60)
    async def flaky() -> None:
        raise TimeoutError("upstream timed out")

    with pytest.raises(TimeoutError, match="upstream"):
        await flaky.call({}, ctx())


# -- run ----------------------------------------------------------------------------------------


async def test_run_returns_strings_as_they_are() -> None:
    args = {"order": {"order_id": "A-1", "items": [{"sku": "s"}]}}
    outcome = await place_order.run(call_of(args, name="place_order"), ctx())
    assert outcome == ToolOutcome(
        message=outcome.message, retryable_error=False, value="acme:A-1:1:"
    )
    assert outcome.message.content == "acme:A-1:1:"
    assert outcome.message.tool_call_id == "call-1"
    assert outcome.message.name == "place_order"
    assert not outcome.message.is_error


async def test_run_serializes_other_values_as_json() -> None:
    @tool
    def receipt(kind: str) -> Any:
        values: dict[str, Any] = {
            "dict": {"a": [1, 2]},
            "model": Item(sku="s"),
            "dataclass": Receipt(total=9.5, day=datetime.date(2025, 1, 2)),
            "none": None,
        }
        return values[kind]

    async def content(kind: str) -> Any:
        return json.loads((await receipt.run(call_of({"kind": kind}), ctx())).message.content)

    assert await content("dict") == {"a": [1, 2]}
    assert await content("model") == {"sku": "s", "quantity": 1}
    assert await content("dataclass") == {"total": 9.5, "day": "2025-01-02"}
    assert await content("none") is None
    outcome = await receipt.run(call_of({"kind": "model"}), ctx())
    assert outcome.value == Item(sku="s")


async def test_run_sets_the_tool_call_id_on_the_context() -> None:
    @tool
    def key(c: RunContext[Any]) -> str | None:
        return c.idempotency_key

    outcome = await key.run(call_of({}, call_id="c-7"), ctx(thread_id="th"))
    assert outcome.value == "th:c-7"
    same = await key.run(call_of({}, call_id="c-8"), ctx(tool_call_id="c-8"))
    assert same.value == "run-1:c-8"


async def test_invalid_arguments_come_back_as_a_retryable_error_naming_each_field() -> None:
    bad = {"order": {"order_id": 5, "items": [{"quantity": "many", "colour": "red"}]}, "x": 1}
    outcome = await place_order.run(call_of(bad), ctx())
    assert outcome.retryable_error
    assert outcome.value is None
    assert outcome.message.is_error
    text = outcome.message.content
    assert text.startswith("The arguments for tool 'place_order' are invalid:")
    assert "- order.order_id: Input should be a valid string (got 5)" in text
    assert "- order.items.0.sku: required, but missing" in text
    assert "- order.items.0.quantity: Input should be a valid integer" in text
    assert "(got 'many')" in text
    assert "- order.items.0.colour:" not in text  # Item allows extra fields (pydantic ignores)
    assert "- x: not a parameter of this tool (parameters: order, note)" in text
    assert text.endswith("Fix these arguments and call the tool again.")


async def test_missing_and_non_object_arguments_are_explained() -> None:
    missing = await lookup_order.run(call_of({}), ctx())
    assert "- order_id: required, but missing" in missing.message.content
    not_object = await lookup_order.run(call_of(["A-1"]), ctx())
    assert "must be a JSON object" in not_object.message.content
    assert not_object.retryable_error


async def test_extra_fields_in_strict_nested_models_and_long_inputs() -> None:
    class Strict(BaseModel, extra="forbid"):
        n: int

    @tool
    def f(s: Strict) -> int:
        return s.n

    outcome = await f.run(call_of({"s": {"n": "x" * 200, "zz": 1}}), ctx())
    assert "- s.zz: not an allowed field here" in outcome.message.content
    assert "(got 'xxxx" in outcome.message.content
    assert "...)" in outcome.message.content
    assert "x" * 100 not in outcome.message.content


async def test_tool_retry_sends_its_message_back() -> None:
    @tool
    def check(order_id: str) -> str:
        if not order_id.startswith("A-"):
            raise ToolRetry("order ids start with 'A-'")
        return "ok"

    outcome = await check.run(call_of({"order_id": "1042"}), ctx())
    assert outcome.retryable_error
    assert outcome.message.is_error
    assert outcome.message.content == "order ids start with 'A-'"
    assert (await check.run(call_of({"order_id": "A-1"}), ctx())).message.content == "ok"


async def test_tool_retry_without_a_message_still_says_something() -> None:
    @tool
    async def again() -> None:
        raise ToolRetry

    outcome = await again.run(call_of({}), ctx())
    assert outcome.retryable_error
    assert outcome.message.content == "tool 'again' asked to be called again"


async def test_other_exceptions_become_tool_errors() -> None:
    @tool
    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ToolError, match=r"tool 'broken' failed: ValueError\('boom'\)") as info:
        await broken.run(call_of({}), ctx())
    assert info.value.tool == "broken"
    assert isinstance(info.value.__cause__, ValueError)


async def test_agentflow_errors_pass_through_unchanged() -> None:
    budget = BudgetExceeded(unit="usd", limit=1.0, spent=1.0, estimate=0.1)

    @tool
    async def spends() -> None:
        raise budget

    with pytest.raises(BudgetExceeded) as info:
        await spends.run(call_of({}), ctx())
    assert info.value is budget


async def test_timeouts_surface_from_run_as_tool_errors() -> None:
    never = asyncio.Event()

    @tool(timeout_s=0.01)
    async def stuck() -> None:
        await never.wait()

    with pytest.raises(ToolError, match="timed out"):
        await stuck.run(call_of({}), ctx())


async def test_langgraph_interrupts_pass_through() -> None:
    @tool
    def ask_human() -> None:
        raise GraphInterrupt(())

    with pytest.raises(GraphInterrupt):
        await ask_human.run(call_of({}), ctx())


async def test_unserializable_return_value_is_a_tool_error() -> None:
    @tool
    def weird() -> object:
        return object()

    with pytest.raises(ToolError, match="not JSON-serializable"):
        await weird.run(call_of({}), ctx())
