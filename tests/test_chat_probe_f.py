"""Probe F: chat as people use chat tools (a streamer, repeatable sampling, a memory guard)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli.loading import bundled_demo_path, load


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


class Recording:
    """transformers' streamer protocol: ``put(ids)`` and ``end()``."""

    def __init__(self):
        self.puts, self.ends = [], 0

    def put(self, value):
        self.puts.append(value)

    def end(self):
        self.ends += 1


def test_conversation_ask_feeds_a_transformers_streamer(demo):
    """``Conversation.ask(q, streamer=TextStreamer(tok))`` was a TypeError while the pipeline's caption
    took one: it is fed the same way (the prompt's ids, each new id, then ``end()``, also on failure)
    and the answer is the one asked without it."""
    from showo2_cli.chat import Conversation
    from showo2_cli.errors import UsageError

    image = np.full((32, 32, 3), 90, np.uint8)
    plain = Conversation(demo)
    plain.attach(image)
    want = [plain.ask("What color is it?"), plain.ask("What shape is it?")]
    conv = Conversation(demo)
    conv.attach(image)
    conv.ask("What color is it?")
    recording = Recording()
    assert conv.ask("What shape is it?", streamer=recording) == want[1]
    prompt, *new = recording.puts
    assert prompt.shape == (1, conv.turns[-1].prompt_tokens) and prompt.dtype == torch.long
    assert all(t.shape == (1,) for t in new) and recording.ends == 1
    assert demo.tokenizer.decode(torch.cat(new), skip_special_tokens=True).strip() == want[1]

    failing = Recording()
    with pytest.raises(UsageError, match="empty question"):
        conv.ask("  ", streamer=failing)
    assert failing.ends == 1 and failing.puts == [] and len(conv.turns) == 2
    with pytest.raises(TypeError, match="streamer must have put"):
        conv.ask("Why?", streamer=print)
