"""Probe L (speed of the morning's changes): the request body is read under one timer, not a
timed wait (a task) per chunk, and its time limits are unchanged."""

from __future__ import annotations

import asyncio
import json

import pytest

from showo2_cli.serve import ApiError
from showo2_cli.serve.body import BODY_MIN_RATE, read_json


class Body:
    """A request whose body comes in ``chunks``, ``pause`` seconds before each."""

    def __init__(self, chunks: list[bytes], pause: float = 0.0):
        self.chunks, self.pause, self.headers = chunks, pause, {}

    async def stream(self):
        for chunk in self.chunks:
            if self.pause:
                await asyncio.sleep(self.pause)
            yield chunk


def read_counting_tasks(request, timeout: float = 15.0) -> tuple[dict, int]:
    """read_json's result and the asyncio tasks it made on the way."""
    made = []

    async def run():
        loop = asyncio.get_running_loop()

        def factory(loop, coro, **kwargs):
            made.append(coro)
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
        try:
            return await read_json(request, 8 << 20, timeout)
        finally:
            loop.set_task_factory(None)

    return asyncio.run(run()), len(made)


def test_a_large_body_is_read_without_a_task_per_chunk():
    """A 6 MiB upload comes in about a hundred chunks: a timed wait each (a task, a timer) was
    ~2% of the request's time on the server."""
    raw = json.dumps({"data": "x" * (2 << 20)}).encode()
    chunks = [raw[i:i + 65536] for i in range(0, len(raw), 65536)]
    body, tasks = read_counting_tasks(Body(chunks))
    assert len(body["data"]) == 2 << 20 and len(chunks) > 30
    assert tasks == 0


def test_the_body_time_limits_are_unchanged():
    """timeout seconds for the first bytes, one more second for each BODY_MIN_RATE bytes that came."""
    with pytest.raises(ApiError) as e:  # nothing within the timeout
        read_counting_tasks(Body([b"{}"], pause=0.3), timeout=0.1)
    assert (e.value.status, e.value.code) == (408, "request_timeout") and "0 bytes" in e.value.message
    # past the timeout, but each chunk buys the time the minimum rate gives it: read whole
    piece = b" " * (BODY_MIN_RATE // 10)  # 0.1 s of grace each
    body, _ = read_counting_tasks(Body([b"{"] + [piece] * 6 + [b"}"], pause=0.05), timeout=0.2)
    assert body == {}
    with pytest.raises(ApiError) as e:  # a trickle slower than the rate: cut off
        read_counting_tasks(Body([b"{"] + [b" "] * 40 + [b"}"], pause=0.05), timeout=0.2)
    assert e.value.status == 408 and "came too slowly" in e.value.message
