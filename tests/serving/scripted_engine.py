"""An engine for the local server that answers from a script, checked by the real grammar.

The server's logic (checks, wire shapes, streams, errors) is tested through it in
milliseconds instead of CPU seconds per answer. It shares the real engine's tokenizer
and xgrammar compiler, and every scripted answer must be one the request's compiled
grammar accepts in full, as constrained decoding guarantees; a script the grammar
refuses fails the request (500), so the tests see what the grammar allows.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, cast

import xgrammar

from agentflow.exceptions import ModelError
from agentflow.models._engine import Engine, Generation
from agentflow.models.local import LocalModel


class ScriptedEngine:
    """Stand-in for `Engine`: `replies` are the generations, in order."""

    def __init__(self, real: Engine) -> None:
        self.real = real
        self.tokenizer = real.tokenizer
        self.context_length = real.context_length
        self.source = real.source
        self.name = real.name
        self.replies: deque[str | tuple[str, str] | Exception] = deque()
        """Text; `(text, "length")` for an answer `max_tokens` cut short; or an error."""
        self.prompts: list[str] = []
        self.gate: threading.Event | None = None
        """When set, a generation waits for it before answering (at most 30 s)."""

    def grammar(self, kind: Any, source: str) -> Any:
        return self.real.grammar(kind, source)

    def encode(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        return self.real.encode(prompt, add_special_tokens=add_special_tokens)

    def generate(self, prompt: str, *, grammar: Any = None, on_text: Any = None, **_: Any) -> Any:
        self.prompts.append(prompt)
        if self.gate is not None:
            assert self.gate.wait(timeout=30), "the test never opened the gate"
        reply = self.replies.popleft()
        if isinstance(reply, Exception):
            raise reply
        reply, finish = reply if isinstance(reply, tuple) else (reply, "stop")
        if grammar is not None:
            matcher = xgrammar.GrammarMatcher(grammar)
            accepted = matcher.accept_string(reply)
            if not (accepted and (finish == "length" or matcher.is_completed())):
                raise ModelError(f"the grammar does not allow {reply!r}", status=500)
        if on_text is not None:
            for start in range(0, len(reply), 8):  # a few pieces, as tokens come
                on_text(reply[start : start + 8])
        return Generation(
            token_ids=list(range(max(1, len(reply) // 4))),
            text=reply,
            prompt_tokens=len(self.encode(prompt)),
            finish_reason=cast(Literal["stop", "length"], finish),
            latency_s=0.001,
            prefill_s=0.0,
        )


def scripted_model(real: LocalModel) -> tuple[LocalModel, ScriptedEngine]:
    """A `LocalModel` named like `real` whose engine is a `ScriptedEngine` over its engine."""
    assert real._engine is not None, "load the real model first"
    engine = ScriptedEngine(real._engine)
    return LocalModel(engine=cast(Engine, engine)), engine


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # readiness: uvicorn sets it once it accepts connections
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
