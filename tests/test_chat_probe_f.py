"""Probe F: chat as people use chat tools (a streamer, repeatable sampling, a memory guard)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import RecordingStreamer
from showo2_cli.loading import bundled_demo_path, load


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


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
    recording = RecordingStreamer()
    assert conv.ask("What shape is it?", streamer=recording) == want[1]
    prompt, *new = recording.puts
    assert prompt.shape == (1, conv.turns[-1].prompt_tokens) and prompt.dtype == torch.long
    assert all(t.shape == (1,) for t in new) and recording.ends == 1
    assert demo.tokenizer.decode(torch.cat(new), skip_special_tokens=True).strip() == want[1]

    failing = RecordingStreamer()
    with pytest.raises(UsageError, match="empty question"):
        conv.ask("  ", streamer=failing)
    assert failing.ends == 1 and failing.puts == [] and len(conv.turns) == 2
    with pytest.raises(TypeError, match="streamer must have put"):
        conv.ask("Why?", streamer=print)


def test_sampled_answers_record_their_seed_and_repeat(demo):
    """A sampled chat without a seed drew its tokens from torch's global generator and its transcript
    kept neither temperature nor seed: nothing repeated it. Each generated turn now records its
    sampling (the seed drawn included), and that record repeats the answer."""
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import TextSampling

    image = np.full((32, 32, 3), 90, np.uint8)
    hot = TextSampling(max_new_tokens=12, temperature=50.0)
    conv = Conversation(demo)
    conv.attach(image)
    answers = [conv.ask("What color is it?", hot), conv.ask("What shape is it?", hot)]
    records = [t["sampling"] for t in conv.to_json()["turns"]]
    assert [r["temperature"] for r in records] == [50.0, 50.0] and all(isinstance(r["seed"], int) for r in records)
    again = Conversation(demo)
    again.attach(image)
    fields = {k: v for k, v in records[0].items() if k not in ("stop_strings", "logit_bias")}
    assert again.ask("What color is it?", TextSampling(**fields)) == answers[0]
    assert again.ask("What shape is it?", TextSampling(**{**fields, "seed": records[1]["seed"]})) == answers[1]
    assert again.turns[1].sampling == records[1]
    other = Conversation(demo)
    other.attach(image)
    assert other.ask("What color is it?", TextSampling(**{**fields, "seed": fields["seed"] + 1})) != answers[0]
    conv.add_turn("Given?", "yes")
    assert conv.to_json()["turns"][-1]["sampling"] is None  # given, not generated


def test_chat_command_prints_the_seed_it_draws(demo, tmp_path):
    """``showo2 chat --temperature 0.8`` printed no seed (caption prints ``seed N``): the chat could not
    be repeated. It now draws one seed for the chat, says it, and /save records it."""
    import json

    from typer.testing import CliRunner

    from showo2_cli.cli import app

    out = tmp_path / "chat.json"
    result = CliRunner().invoke(app, ["chat", "--model", "demo", "--temperature", "0.8", "--max-new-tokens", "4"],
                                input=f"hi\n/save {out}\n")
    assert result.exit_code == 0, result.output
    seeds = [line.split()[1] for line in result.stderr.splitlines() if line.startswith("seed ")]
    assert len(seeds) == 1
    assert json.loads(out.read_text())["turns"][0]["sampling"]["seed"] == int(seeds[0])


def test_a_chat_that_outgrows_memory_is_refused_and_goes_on(demo):
    """Chat prompts grow with every turn, and their forward with the prompt's square, yet only video
    questions were checked against the memory limit: a long chat on a large model ran out of memory
    (killed, the session lost). A question whose prompt and answer would not fit is now refused
    (``ResourceError``, exit class 6) before anything is allocated, and the chat is as it was."""
    from showo2_cli.chat import Conversation
    from showo2_cli.errors import ResourceError
    from showo2_cli.options import CaptionOptions
    from showo2_cli.pipelines.understand import answer_memory_gb

    image = np.full((32, 32, 3), 90, np.uint8)
    conv = Conversation(demo, options=CaptionOptions(max_new_tokens=4, max_memory_gb=0.02))
    conv.attach(image)
    assert conv.ask("What color is it?")
    long = " ".join(["red"] * 1500)
    with pytest.raises(ResourceError, match=r"a conversation of \d+ prompt tokens needs about .* --max-memory; "
                                            "shorten the conversation"):
        conv.ask(long)
    assert len(conv.turns) == 1 and conv.notices == []
    conv.attach(image)
    assert conv.ask("What shape is it?") and len(conv.turns) == 2 and not conv.pending
    # the estimate grows with the prompt's square, and its answer's KV cache
    assert answer_memory_gb(demo, 2000, 0) > 3 * answer_memory_gb(demo, 1000, 0)
    assert answer_memory_gb(demo, 1000, 100) > answer_memory_gb(demo, 1000, 0)


def test_an_image_caption_is_checked_against_the_memory_limit(demo):
    """``caption`` checked a video's sequence against ``max_memory_gb`` but never an image question's
    prompt, however long the question: now both are."""
    from showo2_cli import api
    from showo2_cli.errors import ResourceError

    image = np.full((32, 32, 3), 90, np.uint8)
    question = " ".join(["red"] * 1500)
    with pytest.raises(ResourceError, match=r"answering a prompt of \d+ tokens needs about"):
        api.caption(demo, image, api.CaptionOptions(questions=[question], max_new_tokens=2, max_memory_gb=0.02))
    assert api.caption(demo, image, api.CaptionOptions(questions=["What?"], max_new_tokens=2,
                                                       max_memory_gb=0.02)).answers[0]


def test_a_context_budget_past_the_models_positions_is_said(demo):
    """``chat --max-context 20000`` on a model of 8192 positions answered a 9000-token prompt without
    a word: prompts past the position range are allowed (RoPE runs on) but now noticed once."""
    from showo2_cli.chat import Conversation, context_budget

    said = []
    Conversation(demo, max_context=context_budget(demo), on_notice=said.append)
    assert said == []
    conv = Conversation(demo, max_context=context_budget(demo) + 1, on_notice=said.append)
    assert len(said) == 1 and f"past the model's position range of {context_budget(demo)}" in said[0]
    assert conv.notices == said


def test_running_out_of_memory_mid_chat_is_said_as_such(demo):
    """torch's allocators raise RuntimeError (CPU "can't allocate memory", CUDA's OutOfMemoryError):
    mid-chat that was "internal error: RuntimeError: ... (run with --debug for the traceback)", a
    bug report for what the rest of the CLI calls "out of memory". The chat still goes on."""
    import io

    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession

    conv = Conversation(demo)
    err = io.StringIO()
    session = ChatSession(conv, out=io.StringIO(), err=err)

    def boom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 256000000000 bytes. Error code 12 (Cannot allocate memory)")

    conv.ask, ask = boom, conv.ask
    assert session.handle("What color?")
    conv.ask = ask
    assert err.getvalue().startswith("showo2: error: out of memory (") and "internal error" not in err.getvalue()
    assert session.handle("What color?") and len(conv.turns) == 1
