"""Grammar-constrained decoding on the embedded model: speed, validity, compile and load times.

Over extraction prompts (a support message -> a `Ticket` JSON object) and tool-call
prompts (pick one of three tools and fill its arguments), the model answers the same
prompt, which describes the schema, twice: constrained (the schema or the forced call
compiled by xgrammar) and unconstrained. Validity is checked the same way for both: the
whole answer must validate with pydantic. Speeds are decode speeds (after the first
token), so a prompt's prefill does not count.

    python -m bench.decoding --json [--prompts 50] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from agentflow import ModelRequest, UserMessage, output_spec, tool
from agentflow.models._engine import Engine, Generation
from agentflow.models.local import TRANSCRIPT_STOPS, LocalModel, constraint, render_prompt

MAX_TOKENS = 96
DEFAULTS = LocalModel()  # not loaded: only its sampling defaults are used


class Ticket(BaseModel):
    intent: Literal["order_status", "refund", "cancel", "address_change", "other"]
    order_id: int | None
    urgent: bool


@tool
def lookup_order(order_id: int) -> str:
    """Look up an order by its number.

    Args:
        order_id: The order number.
    """
    return ""


@tool
def issue_refund(order_id: int, amount: float) -> str:
    """Refund part or all of an order.

    Args:
        order_id: The order number.
        amount: USD to refund.
    """
    return ""


@tool
def create_ticket(subject: str, priority: Literal["low", "high"]) -> str:
    """Open a ticket for a human agent.

    Args:
        subject: One line describing the problem.
        priority: How urgent it is.
    """
    return ""


TOOLS = {t.name: t for t in (lookup_order, issue_refund, create_ticket)}

ASKS = [
    "Where is my order {n}?",
    "I want a refund for order {n}, it arrived broken.",
    "Please cancel order {n} right now!",
    "Change the delivery address of order {n} to 5 Elm Street.",
    "My package {n} is late again, this is unacceptable.",
    "Can I get my money back? Order number {n}.",
    "Has order {n} shipped yet?",
    "Do you sell gift cards?",
    "Order {n} has the wrong size, I need to return it.",
    "I was charged twice for order {n}.",
]
NUMBERS = [1042, 77, 5531, 908, 31337]


def prompts(count: int) -> list[tuple[str, str]]:
    """Return (kind, text) pairs: 60% extraction, 40% tool calls."""
    texts = [ask.format(n=n) for n, ask in itertools.product(NUMBERS, ASKS)]
    kinds = ["extract", "extract", "extract", "tool", "tool"]
    return [(kinds[i % len(kinds)], texts[i % len(texts)]) for i in range(count)]


def case(engine: Engine, kind: str, text: str) -> tuple[str, Any]:
    """Return the prompt (the same in both modes) and the grammar of the constrained mode."""
    if kind == "extract":
        schema = json.dumps(Ticket.model_json_schema())
        ask = f"Extract the ticket from this message as JSON matching {schema}. Message: {text}"
        req = ModelRequest(messages=[UserMessage(content=ask)], output=output_spec(Ticket))
    else:
        specs = [t.spec for t in TOOLS.values()]
        described = json.dumps([{"name": s.name, "parameters": s.parameters} for s in specs])
        ask = (
            f"Tools: {described}\nCall one tool for this message, answering only with JSON "
            f'{{"name": <tool>, "arguments": {{...}}}}. Message: {text}'
        )
        req = ModelRequest(messages=[UserMessage(content=ask)], tools=specs, tool_choice="required")
    prompt, _ = render_prompt(engine.tokenizer, ModelRequest(messages=req.messages))
    return prompt, constraint(engine, req)


def valid(kind: str, text: str) -> bool:
    """Whether the whole answer validates: a Ticket, or a call of a tool with valid arguments."""
    try:
        if kind == "extract":
            Ticket.model_validate_json(text)
            return True
        call = json.loads(text)
        TOOLS[call["name"]].validate(call["arguments"])
        return True
    except (ValidationError, ValueError, KeyError, TypeError):
        return False


def decode(engine: Engine, count: int) -> dict[str, float]:
    """Validity of both modes, and decode speed over equal token counts.

    An unconstrained answer usually runs longer than a constrained one, and a longer
    sequence decodes slower, so speeds compare the constrained answers with an
    unconstrained run of exactly as many tokens from the same prompt.
    """
    cases = [(kind, *case(engine, kind, text)) for kind, text in prompts(count)]

    def run(prompt: str, **options: Any) -> Generation:
        return engine.generate(
            prompt,
            repetition_penalty=DEFAULTS.repetition_penalty,
            frequency_penalty=DEFAULTS.frequency_penalty,
            **options,
        )

    speed = {"constrained": [0, 0.0], "unconstrained": [0, 0.0]}
    valid_count = {"constrained": 0, "unconstrained": 0}
    for kind, prompt, grammar in cases:
        constrained = run(prompt, grammar=grammar, max_tokens=MAX_TOKENS)
        free = run(prompt, max_tokens=MAX_TOKENS, stop=TRANSCRIPT_STOPS)
        valid_count["constrained"] += valid(kind, constrained.text.strip())
        valid_count["unconstrained"] += valid(kind, free.text.strip())
        same_length = run(prompt, max_tokens=len(constrained.token_ids), ignore_stop=True)
        for label, generation in (("constrained", constrained), ("unconstrained", same_length)):
            # Decode speed: the tokens after the first, over the time after the first.
            speed[label][0] += len(generation.token_ids) - 1
            speed[label][1] += generation.latency_s - generation.prefill_s
    figures: dict[str, float] = {}
    for label in ("unconstrained", "constrained"):
        figures[f"{label}_tok_s"] = round(speed[label][0] / speed[label][1], 2)
        figures[f"valid_rate_{label}"] = round(valid_count[label] / len(cases), 3)
    figures["overhead_pct"] = round(
        (figures["unconstrained_tok_s"] / figures["constrained_tok_s"] - 1) * 100, 1
    )
    return figures


def compile_times(engine: Engine, rounds: int = 20) -> dict[str, float]:
    cold, cached = [], []
    for i in range(rounds):
        # A schema the compiler has never seen: a fresh property name defeats every cache.
        schema = {**Ticket.model_json_schema(), "title": f"Ticket{i}{time.time_ns()}"}
        schema["properties"] = {
            **schema["properties"],
            f"note_{time.time_ns()}": {"type": "string"},
        }
        source = json.dumps(schema, sort_keys=True)
        started = time.perf_counter()
        engine.grammar("json_schema", source)
        cold.append(time.perf_counter() - started)
        started = time.perf_counter()
        engine.grammar("json_schema", source)
        cached.append(time.perf_counter() - started)
    return {
        "compile_ms_cold": round(sorted(cold)[len(cold) // 2] * 1000, 3),
        "compile_ms_cached": round(sorted(cached)[len(cached) // 2] * 1000, 4),
    }


def second_load_s(device: str | None) -> float:
    """Wall time of a new process that imports the engine and loads the (cached) model."""
    code = f"from agentflow.models._engine import Engine; Engine(device={device!r})"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return round(time.perf_counter() - started, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description="constrained decoding on the embedded model")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    engine = Engine(device=args.device)  # a first load converts and caches on a fresh machine
    result: dict[str, Any] = {"device": engine.device, "prompts": args.prompts}
    result.update(decode(engine, args.prompts))
    result.update(compile_times(engine))
    result["second_load_s"] = second_load_s(args.device)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")


if __name__ == "__main__":
    main()
