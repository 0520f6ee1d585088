"""Server-sent events that stay alive while the producer is busy.

A step on a CPU engine, or an agent turn waiting on a slow tier, can go tens of seconds
without an event; proxies and load balancers close a connection idle for 60 s (nginx's
`proxy_read_timeout`, AWS ALB's idle timeout). Both servers pass their event streams
through `keep_alive`, which sends an SSE comment line (`: keep-alive`) whenever nothing
was sent for `every_s` seconds. Clients skip comment lines by the SSE spec (WHATWG HTML,
"9.2 Server-sent events": a line starting with a colon is ignored), and the `openai`
client's decoder does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

__all__ = ["DEFAULT_KEEPALIVE_S", "KEEPALIVE", "keep_alive"]

DEFAULT_KEEPALIVE_S = 15.0
"""Well under the 60 s idle timeout of common proxies."""
KEEPALIVE = ": keep-alive\n\n"


async def keep_alive(events: AsyncIterator[str], every_s: float) -> AsyncGenerator[str, None]:
    """Yield `events`, and a keep-alive comment after each `every_s` seconds of silence.

    `every_s <= 0` turns the comments off. The next event is awaited in a task of its
    own, so a comment never cancels the producer midway; closing this generator (the
    client went away) cancels that task and closes `events`.
    """
    if every_s <= 0:
        async for event in events:
            yield event
        return
    source = aiter(events)
    pending: asyncio.Task[str] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(source))
            done, _ = await asyncio.wait({pending}, timeout=every_s)
            if not done:
                yield KEEPALIVE
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            finally:
                pending = None
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
