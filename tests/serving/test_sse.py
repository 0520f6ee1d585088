"""`keep_alive`: comments in the silences of an event stream, nothing else changed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agentflow.serving.sse import KEEPALIVE, keep_alive


class Producer:
    """Events that come only when the test says so."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.closed = False

    async def events(self) -> AsyncIterator[str]:
        try:
            yield "data: 1\n\n"
            await self.go.wait()
            yield "data: 2\n\n"
        finally:
            self.closed = True


async def test_silence_gets_comments_and_events_pass_unchanged() -> None:
    producer = Producer()
    seen: list[str] = []
    async for event in keep_alive(producer.events(), 0.001):
        seen.append(event)
        if event == KEEPALIVE:
            producer.go.set()  # the second event comes only after a comment went out
    assert seen[0] == "data: 1\n\n" and seen[-1] == "data: 2\n\n"
    assert set(seen[1:-1]) == {KEEPALIVE} and len(seen) >= 3
    assert producer.closed


async def test_zero_turns_comments_off() -> None:
    producer = Producer()
    producer.go.set()
    assert [e async for e in keep_alive(producer.events(), 0)] == ["data: 1\n\n", "data: 2\n\n"]


async def test_closing_the_stream_stops_the_producer() -> None:
    """A client that leaves while the producer waits: its pending step is cancelled."""
    producer = Producer()
    stream = keep_alive(producer.events(), 0.001)
    assert await anext(stream) == "data: 1\n\n"
    assert await anext(stream) == KEEPALIVE
    await stream.aclose()
    assert producer.closed and not producer.go.is_set()
