"""Probe JF: ``serve --parallel``'s chunked prefill: a long prompt runs in chunks of the batch's
budget (``--max-num-batched-tokens``), the answers being decoded taking one step after each chunk,
instead of stalling for the whole prompt."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from showo2_cli.decoding_batch import CURRENT, DecodingBatch
from showo2_cli.errors import UsageError


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import load

    return load("demo")


LENGTH, BLOCK = 1300, (200, 300)  # a long prompt whose bidirectional block crosses a multiple of 128


def long_prompt(net, seed: int = 0):
    from showo2_cli.modeling.attention import omni_attention_mask

    gen = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, LENGTH, net.spec.hidden_size, generator=gen) * 0.5
    return embeds, omni_attention_mask(torch.tensor([[list(BLOCK)]]), LENGTH)


CHOSEN = []  # a moment per token an answer of :func:`running` chose (its stream's piece)


def running(demo, k: int, tokens: int = 48):
    """An answer being decoded meanwhile (the end token banned: ``tokens`` long), its token ids."""
    from conftest import RecordingStreamer
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import TextSampling

    class Chosen(RecordingStreamer):
        def put(self, value):
            if value.dim() == 1:  # (the prompt's ids come first, as a row)
                CHOSEN.append(time.perf_counter())

    conv = Conversation(demo)
    sampling = TextSampling(tokens, logit_bias={demo.tokens.end: -100.0},
                            **({"temperature": 0.9, "seed": 5} if k % 2 else {}))
    conv.ask(["Name a shape.", "What is a red circle?"][k % 2], sampling, streamer=Chosen())
    return conv.turns[-1].answer_ids


def beside(batch: DecodingBatch, rows, job):
    """``rows`` (callables) decoding in ``batch`` before ``job`` starts (the worker's way, each on
    its own thread): (the rows' results, ``job``'s result, every error)."""
    out, errors = [None] * (len(rows) + 1), [None] * (len(rows) + 1)

    def run(k, fn):
        CURRENT.set(batch)
        try:
            with batch.turn():
                out[k] = fn()
        except BaseException as e:
            errors[k] = e

    threads = [threading.Thread(target=run, args=(k, fn)) for k, fn in enumerate(rows)]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(batch.rows) < len(rows) and time.time() < deadline:
        time.sleep(0.005)
    assert len(batch.rows) == len(rows)
    last = threading.Thread(target=run, args=(len(rows), job), name="prompt")
    last.start()
    for t in threads + [last]:
        t.join(300)
    return out[:-1], out[-1], errors


def spy_prompt(monkeypatch, net, batch):
    """Record each chunk of the prompt of ``beside``'s job (or of this thread) as (start, end, batch
    steps run so far, tokens the answers of :func:`running` chose so far)."""
    real, calls, here = net.llm, [], threading.current_thread()

    def llm(embeds, mask, **kw):
        thread = threading.current_thread()
        if embeds.shape[1] > 1 and (thread is here or thread.name == "prompt"):
            end = mask.shape[-1]
            calls.append((end - embeds.shape[1], end, batch.steps, len(CHOSEN)))
        return real(embeds, mask, **kw)

    monkeypatch.setattr(net, "llm", llm)
    return calls


@pytest.mark.parametrize("budget", [128, 512])
def test_a_long_prompt_runs_in_chunks_between_the_answers_steps(demo, monkeypatch, budget):
    """A 1300-position prompt arriving while two answers decode runs in chunks of the budget (128:
    the block from 200 to 500 whole in one), one batched step of the answers after each. Its
    logits are the one-pass prompt's to float rounding (512, the default, is the CPU's own chunk:
    the same bits) and its greedy answer, and theirs, equal each alone."""
    from showo2_cli.dialogue import TextSampling
    from showo2_cli.text_decoding import generate

    net = demo.network
    embeds, mask = long_prompt(net)
    opts = TextSampling(6)
    alone = generate(net, embeds, mask, opts, keep_logits=True)
    rows_alone = [running(demo, k) for k in (0, 1)]
    batch = DecodingBatch(net, prompt_budget=budget)
    calls = spy_prompt(monkeypatch, net, batch)
    rows, got, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)],
                               lambda: generate(net, embeds, mask, opts, keep_logits=True))
    assert errors == [None] * 3
    chunks = [(s, e) for s, e, *_ in calls]
    if budget == 128:
        assert chunks[:2] == [(0, 128), (128, 512)] and chunks[-1] == (1280, 1300) and len(chunks) == 9
    else:
        assert chunks == [(0, 512), (512, 1024), (1024, 1300)]
    assert all(b[0] == a[1] for a, b in zip(chunks, chunks[1:], strict=False))
    assert all(not (BLOCK[0] < s < sum(BLOCK)) for s, _ in chunks)  # no chunk starts inside the block
    steps = [n for _, _, n, _ in calls]
    assert [b - a for a, b in zip(steps, steps[1:], strict=False)] == [1] * (len(chunks) - 1)  # one step a chunk
    chosen = [n for *_, n in calls]  # and each answer chose its token (its stream's piece) before the next chunk
    assert all(b - a >= 2 for a, b in zip(chosen, chosen[1:], strict=False))
    first = float((got.step_logits[0] - alone.step_logits[0]).abs().max())  # the prompt's own logits
    assert first == 0 if budget == 512 else first < 1e-4
    diff = max(float((a - b).abs().max()) for a, b in zip(got.step_logits, alone.step_logits, strict=True))
    assert diff < 1e-4  # the later steps in the batch: float rounding
    assert got.token_ids == alone.token_ids and rows == rows_alone
    assert batch.rows == [] and batch.cache is None


def test_a_zero_budget_runs_the_prompt_whole_while_the_answers_wait(demo, monkeypatch):
    """``max_num_batched_tokens=0``: the prompt as before (no step of the answers while it runs)."""
    from showo2_cli.dialogue import TextSampling
    from showo2_cli.text_decoding import generate

    net = demo.network
    embeds, mask = long_prompt(net, seed=1)
    batch = DecodingBatch(net, prompt_budget=0)
    calls = spy_prompt(monkeypatch, net, batch)
    _, got, errors = beside(batch, [lambda: running(demo, 0)], lambda: generate(net, embeds, mask, TextSampling(3)))
    assert errors == [None] * 2 and len(got.token_ids) == 3
    assert len({n for _, _, n, _ in calls}) == 1  # every chunk at the same step count


@pytest.mark.parametrize("in_batch", [False, True])
def test_a_prompt_alone_runs_as_before_bit_for_bit(demo, monkeypatch, in_batch):
    """``--parallel 1`` (no batch) and a request alone in a ``--parallel`` server's batch: the same
    chunks as before (512, the CPU's), and every logit the same bits as the one-pass prompt."""
    from showo2_cli.dialogue import TextSampling
    from showo2_cli.text_decoding import generate

    net = demo.network
    embeds, mask = long_prompt(net, seed=2)
    opts = TextSampling(4, temperature=0.8, seed=3)
    batch = DecodingBatch(net, prompt_budget=64)
    calls = spy_prompt(monkeypatch, net, batch)
    if in_batch:
        CURRENT.set(batch)
    try:
        got = generate(net, embeds, mask, opts, keep_logits=True)
    finally:
        CURRENT.set(None)
    assert [(s, e) for s, e, *_ in calls] == [(0, 512), (512, 1024), (1024, 1300)]
    monkeypatch.undo()
    with torch.no_grad():
        import showo2_cli.text_decoding as T

        monkeypatch.setattr(T, "prompt_chunks", lambda m, chunk=512: [(0, m.shape[-1])])
        want = generate(net, embeds, mask, opts, keep_logits=True)
    assert got.token_ids == want.token_ids
    assert all(torch.equal(a, b) for a, b in zip(got.step_logits, want.step_logits, strict=True))


def test_a_request_cancelled_mid_prompt_stops_there_and_the_batch_goes_on(demo, monkeypatch):
    """A client that leaves while its long prompt runs: the prompt stops at the next chunk
    (Cancelled, not the rest of the prompt), the answers decoding meanwhile are whole and equal
    alone, and the batch serves the next request."""
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import Cancelled, TextSampling

    rows_alone = [running(demo, k) for k in (0, 1)]
    batch = DecodingBatch(demo.network, prompt_budget=128)
    calls = spy_prompt(monkeypatch, demo.network, batch)
    cancel = threading.Event()
    real_step = batch.let_step

    def let_step():  # the client leaves while the prompt's second chunk is about to run
        cancel.set()
        real_step()

    monkeypatch.setattr(batch, "let_step", let_step)
    question = " ".join(["Tell me about shapes and colors and sizes."] * 80)

    def long_job():
        return Conversation(demo).ask(question, TextSampling(4), cancel=cancel)

    rows, got, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)], long_job)
    assert errors[:2] == [None, None] and isinstance(errors[2], Cancelled)
    assert rows == rows_alone
    assert [(s, e) for s, e, *_ in calls] == [(0, 128)]  # its first chunk only, of a prompt of over 700
    assert batch.rows == [] and batch.cache is None
    monkeypatch.undo()
    assert beside(batch, [lambda: running(demo, 0)], lambda: running(demo, 1))[0] == rows_alone[:1]


def test_a_failing_prompt_chunk_fails_its_request_only(demo, monkeypatch):
    """A chunk that fails (out of memory, say) mid-prompt fails that request; the answers decoding
    meanwhile go on, equal alone, and the batch is left empty and whole."""
    from showo2_cli.dialogue import TextSampling
    from showo2_cli.text_decoding import generate

    net = demo.network
    embeds, mask = long_prompt(net, seed=4)
    rows_alone = [running(demo, k) for k in (0, 1)]
    batch = DecodingBatch(net, prompt_budget=128)
    real = net.llm

    def llm(x, m, **kw):
        if x.shape[1] > 1 and m.shape[-1] > 600:
            raise RuntimeError("out of memory")
        return real(x, m, **kw)

    monkeypatch.setattr(net, "llm", llm)
    rows, _, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)],
                             lambda: generate(net, embeds, mask, TextSampling(3)))
    assert errors[:2] == [None, None] and str(errors[2]) == "out of memory"
    assert rows == rows_alone and batch.rows == [] and batch.cache is None


def test_a_failing_step_between_chunks_is_the_answers_error_not_the_prompts(demo, monkeypatch):
    """The answers' batched step fails while a prompt lets it run: they hear the error, the batch
    empties, and the prompt goes on to its answer (its one alone)."""
    from showo2_cli.dialogue import TextSampling
    from showo2_cli.text_decoding import generate

    net = demo.network
    embeds, mask = long_prompt(net, seed=5)
    alone = generate(net, embeds, mask, TextSampling(4))
    batch = DecodingBatch(net, prompt_budget=128)
    real, prompting = net.llm, {"on": False}

    def llm(x, m, **kw):
        if x.shape[1] > 1 and m.shape[-1] > 1000:
            prompting["on"] = True  # the long prompt has run a while
        if x.shape[0] > 1 and prompting["on"]:
            raise RuntimeError("boom")
        return real(x, m, **kw)

    monkeypatch.setattr(net, "llm", llm)
    _, got, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)],
                            lambda: generate(net, embeds, mask, TextSampling(4)))
    assert [str(e) for e in errors[:2]] == ["boom", "boom"] and errors[2] is None
    assert got.token_ids == alone.token_ids and batch.rows == []


def test_the_budget_is_checked_in_python_and_on_the_command_line(monkeypatch, capsys):
    from showo2_cli.cli import common, main
    from showo2_cli.serve import ServerConfig, create_app

    for bad in (-1, 1_000_001, True, 64.0):
        with pytest.raises(UsageError, match="max_num_batched_tokens must be"):
            create_app(None, ServerConfig(max_num_batched_tokens=bad))
    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["serve", "--port", "0", "--max-num-batched-tokens", "-1"]) == 2
    assert capsys.readouterr().err == "showo2: error: --max-num-batched-tokens must be between 0 and 1000000, got -1\n"


def test_a_video_question_lets_the_answers_step_between_its_frames(demo, media_dir, monkeypatch):
    """A video asked about while answers decode: one step of theirs before each frame's encoding
    (then its prompt's chunks); the video's answer and theirs equal each alone."""
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import TextSampling

    video = media_dir / "video1.mp4"

    def question():
        conv = Conversation(demo)
        conv.attach(video)
        return conv.ask("What happens?", TextSampling(5))

    alone, rows_alone = question(), [running(demo, k) for k in (0, 1)]
    batch = DecodingBatch(demo.network)
    vae = demo.require_vae()
    real, seen = vae.encode, []

    def encode(*args, **kwargs):
        seen.append(batch.steps)
        return real(*args, **kwargs)

    monkeypatch.setattr(vae, "encode", encode)
    rows, got, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)], question)
    assert errors == [None] * 3 and got == alone and rows == rows_alone
    assert len(seen) == demo.spec.und_video_frames  # (the demo's 4 frames)
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False)) and seen[0] > 0
