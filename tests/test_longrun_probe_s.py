"""Long-running use (probe S): what a resident model, a long chat or a busy server keeps between calls.

In-process tests on the bundled demo model: memory held for turns that left a chat's context,
per-request state of the server back to its rest after every path.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from showo2_cli.loading import bundled_demo_path, load


@pytest.fixture(scope="module")
def demo():
    return load(bundled_demo_path())


def _held(turns) -> list[list[str]]:
    """Each turn's media as the device its tokens are on ('meta': let go)."""
    return [[m.tokens.device.type for m in t.media] for t in turns]


def test_a_long_chat_lets_go_of_the_media_of_turns_that_left_the_context(demo):
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import TextSampling

    colours = [(200, 20, 20), (20, 200, 20), (20, 20, 200)]
    conv = Conversation(demo, max_context=160)
    short = TextSampling(max_new_tokens=4)
    for i in range(9):
        conv.attach(Image.new("RGB", (64, 64), colours[i % 3]))
        conv.ask(f"question {i}?", short)
    start = conv._start
    assert 3 <= start < 9  # turns left the context
    # every medium of a turn out of the context is let go (none is carried: later turns have media);
    # those in the context keep their tokens
    assert _held(conv.turns[:start]) == [["meta"]] * start
    assert _held(conv.turns[start:]) == [["cpu"]] * (9 - start)
    transcript = conv.to_json()["turns"]
    assert [t["media"][0]["tokens"] for t in transcript] == [17] * 9  # still described: time token + 16
    assert conv.turns[0].media[0].tokens.shape == conv.turns[-1].media[0].tokens.shape
    conv.ask("and now?", short)  # the context goes on without the released ones
    assert len(conv.turns) == 10
    # an app that restores the turns into a new, larger conversation: those let go stay out of it
    gone = conv._start
    assert _held(conv.turns[:gone]) == [["meta"]] * gone
    restored = Conversation(demo, max_context=4096)
    restored.turns.extend(conv.turns)
    restored.ask("and then?", short)
    in_context = [t["in_context"] for t in restored.to_json()["turns"]]
    assert in_context == [False] * gone + [True] * (11 - gone)


def test_the_medium_carried_from_a_dropped_turn_keeps_its_tokens(demo):
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import TextSampling

    conv = Conversation(demo, max_context=72)
    short = TextSampling(max_new_tokens=4)
    conv.attach(np.full((64, 64, 3), (200, 20, 20), np.uint8))
    answers = [conv.ask("What color is the shape?", short) for _ in range(4)]
    assert answers == ["red"] * 4  # the first turn left the context at the third, its image stayed
    assert conv._start == 2 and conv._carried[0] is conv.turns[0].media[0]
    assert _held(conv.turns) == [["cpu"], [], [], []]
    # a turn with an image of its own: the carried one is not needed any more and is let go
    conv.attach(np.full((64, 64, 3), (20, 200, 20), np.uint8))
    assert conv.ask("What color is the shape?", short) == "green"
    assert conv._start == 3 and not conv._carried
    assert _held(conv.turns) == [["meta"], [], [], [], ["cpu"]]
    # that turn leaves in its turn and its image is carried: it keeps its tokens and is still seen
    answers = [conv.ask("What color is the shape?", short) for _ in range(3)]
    assert answers == ["green"] * 3 and conv._start > 4 and conv._carried
    assert _held(conv.turns)[4] == ["cpu"] and conv._carried[0] is conv.turns[4].media[0]


class _Payload:
    """Stands for what a request brings and what its job makes (uploads, images): weakly referable."""

    def __init__(self, size: int):
        self.data = bytearray(size)


@pytest.mark.parametrize("fails", [False, True])
def test_an_idle_server_worker_keeps_nothing_of_the_last_request(fails):
    import asyncio
    import gc
    import time
    import weakref

    from showo2_cli.serve.worker import Job, Worker

    refs = []

    async def one_request() -> str:
        upload = _Payload(1 << 20)

        def fn(job):
            made = _Payload(1 << 20)
            refs.extend([weakref.ref(upload), weakref.ref(made), weakref.ref(job)])
            if fails:
                raise ValueError("bad input")
            return made

        job = Job(fn, asyncio.get_running_loop())
        worker.submit(job)
        kind, value = await job.events.get()
        return kind

    worker = Worker(max_queue=2)
    worker.start()
    try:
        assert asyncio.run(one_request()) == ("error" if fails else "done")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the worker is soon back to waiting, holding nothing
            gc.collect()
            if all(r() is None for r in refs):
                break
            time.sleep(0.02)
        assert len(refs) == 3 and [r() for r in refs] == [None, None, None]
        assert worker.counts["failed" if fails else "completed"] == 1 and worker.waiting == 0
    finally:
        worker.stop(5)
