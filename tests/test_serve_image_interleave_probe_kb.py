"""Probe KB: ``serve --parallel``: an image generation no longer stops every answer. Between two of
its sampler's steps the requests waiting for their turn have it (their prompts run) and the answers
being decoded take one step; the image is the same pixels as alone (and as ``showo2 t2i``'s)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from showo2_cli.decoding_batch import CURRENT, DecodingBatch
from test_serve_chunked_prefill_probe_jf import beside, running

STEPS = 12  # the image's steps (the demo: ~0.1 s each)


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import load

    return load("demo")


def image(demo, on_step=None, progress=None, seed: int = 3):
    """An image of the demo (64x64, ``STEPS`` steps), as a server's image job makes it: its pixels."""
    from showo2_cli.options import GenerateOptions
    from showo2_cli.pipelines import text_to_image

    out = text_to_image(demo, ["a red circle on a blue square"], GenerateOptions(seed=seed, steps=STEPS),
                        on_step=on_step, progress=progress)
    return out[0].frames


def test_the_answers_take_one_step_between_two_steps_of_an_image(demo):
    """Two answers decoding when an image starts: one batched step of theirs after each of its
    steps (before, none until it ended); the image and the answers are each what they are alone."""
    alone, rows_alone = image(demo), [running(demo, k) for k in (0, 1)]
    batch = DecodingBatch(demo.network)
    seen = []
    rows, got, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)],
                               lambda: image(demo, on_step=lambda i, n, t, x: seen.append(batch.steps)))
    assert errors == [None] * 3
    assert np.array_equal(got, alone) and rows == rows_alone
    assert len(seen) == STEPS - 1 and [b - a for a, b in zip(seen, seen[1:], strict=False)] == [1] * (STEPS - 2)


def test_a_zero_budget_runs_the_image_whole_while_the_answers_wait(demo):
    """``--max-num-batched-tokens 0`` (nothing shares the model's turn): the answers take no step
    during the image, as before."""
    batch = DecodingBatch(demo.network, prompt_budget=0)
    seen = []
    rows, got, errors = beside(batch, [lambda k=k: running(demo, k, tokens=8) for k in (0, 1)],
                               lambda: image(demo, on_step=lambda i, n, t, x: seen.append(batch.steps)))
    assert errors == [None] * 3
    assert len(set(seen)) == 1


def test_a_request_arriving_during_an_image_is_answered_before_it_ends(demo):
    """No answer decoding; a chat arrives at the image's step 2: its prompt runs at the next step
    and its answer decodes beside the image, ending before the image's last step (before: it waited
    for the whole image). Both are what they are alone."""
    from showo2_cli.chat import Conversation
    from showo2_cli.dialogue import TextSampling

    def chat():
        conv = Conversation(demo)
        return conv.ask("Name a shape.", TextSampling(6, logit_bias={demo.tokens.end: -100.0})), conv.turns[-1].answer_ids

    alone, chat_alone = image(demo), chat()
    batch = DecodingBatch(demo.network)
    state = {"step": 0, "answered_at": None, "rows_at": {}}
    out, errors = {}, []

    def in_batch(name, fn):
        CURRENT.set(batch)
        try:
            with batch.turn():
                out[name] = fn()
                if name == "chat":
                    state["answered_at"] = state["step"]
        except BaseException as e:
            errors.append(e)

    asker = threading.Thread(target=in_batch, args=("chat", chat))

    def on_step(i, n, t, x):
        state["step"] = i
        state["rows_at"][i] = len(batch.rows)
        if i == 2:
            asker.start()
            deadline = time.time() + 30
            while batch.queued < 1 and time.time() < deadline:  # the chat waits for its turn
                time.sleep(0.001)

    painter = threading.Thread(target=in_batch, args=("image", lambda: image(demo, on_step=on_step)))
    painter.start()
    painter.join(300)
    asker.join(300)
    assert errors == []
    assert np.array_equal(out["image"], alone) and out["chat"] == chat_alone
    assert state["rows_at"][3] == 1  # its prompt ran before step 3 ended, its answer in the batch
    assert state["answered_at"] is not None and state["answered_at"] < STEPS - 1


def test_two_images_run_one_after_the_other_beside_the_answers(demo):
    """Two image requests while an answer decodes: the second's steps all come after the first's
    (interleaved, each would end as late as the last), the answer stepping between every step."""
    alone = [image(demo, seed=s) for s in (3, 4)]
    batch = DecodingBatch(demo.network)
    order, out, errors = [], {}, []

    def job(seed):
        def run():
            return image(demo, seed=seed, on_step=lambda i, n, t, x: order.append(seed))
        return run

    def second():  # the second image waits for its turn behind the first
        CURRENT.set(batch)
        try:
            with batch.turn():
                out[4] = job(4)()
        except BaseException as e:
            errors.append(e)

    def first():
        out[3] = job(3)()
        return out[3]

    started = []

    def first_then_second():
        thread = threading.Thread(target=second)
        started.append(thread)
        thread.start()
        deadline = time.time() + 30
        while batch.queued < 1 and time.time() < deadline:  # the second waits for its turn
            time.sleep(0.001)
        return first()

    rows, _, errs = beside(batch, [lambda: running(demo, 0, tokens=64)], first_then_second)
    started[0].join(300)
    assert errs == [None, None] and errors == []
    assert np.array_equal(out[3], alone[0]) and np.array_equal(out[4], alone[1])
    assert order == [3] * (STEPS - 1) + [4] * (STEPS - 1)


def test_an_image_stopped_between_steps_lets_the_next_image_and_the_answers_go_on(demo):
    """A client gone during an image: it stops at the next step (its progress raises), the
    answers decoding beside it end as alone, and the next image of the batch runs whole."""
    from showo2_cli.dialogue import Cancelled

    rows_alone, alone = [running(demo, k) for k in (0, 1)], image(demo)
    batch = DecodingBatch(demo.network)
    steps = []

    def progress(phase, done, total):
        if phase == "denoising":
            steps.append(done)
            if done == 3:
                raise Cancelled("cancelled")

    def stopped_then_next():
        with pytest.raises(Cancelled):
            image(demo, progress=progress)
        return image(demo)

    rows, got, errors = beside(batch, [lambda k=k: running(demo, k) for k in (0, 1)], stopped_then_next)
    assert errors == [None] * 3
    assert steps == [1, 2, 3] and rows == rows_alone and np.array_equal(got, alone)
    assert batch.generating is None


def test_a_served_image_is_the_same_with_answers_decoding_beside_it_and_as_t2i(demo, tmp_path):
    """``serve --parallel 3``: the image of a request sent alone, the same sent while two streamed
    answers decode, and ``showo2 t2i`` with the same options: the same pixels."""
    import base64
    import io
    import json

    import httpx
    from PIL import Image

    from conftest import run_in_thread
    from showo2_cli.cli import main
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    prompt, seed = "a red circle on a blue square", 5
    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(demo, ServerConfig(parallel=3), sock, log_level="error")
    thread = run_in_thread(srv, sock)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"
    request = {"prompt": prompt, "steps": STEPS, "seed": seed}

    def pixels() -> np.ndarray:
        r = httpx.post(url + "/v1/images/generations", json=request, timeout=120)
        assert r.status_code == 200, r.text
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))))

    pieces: list[list[float]] = [[], []]

    def streamed(k: int) -> None:
        body = {"messages": [{"role": "user", "content": "Name a shape."}], "max_tokens": 40, "stream": True,
                "logit_bias": {str(demo.tokens.end): -100}}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    pieces[k].append(time.perf_counter())

    try:
        alone = pixels()
        streams = [threading.Thread(target=streamed, args=(k,)) for k in (0, 1)]
        for s in streams:
            s.start()
        deadline = time.time() + 60
        while not all(pieces) and time.time() < deadline:
            time.sleep(0.01)
        beside_answers = pixels()
        for s in streams:
            s.join(120)
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()
    out = tmp_path / "t2i.png"
    assert main(["t2i", prompt, "--model", "demo", "--steps", str(STEPS), "--seed", str(seed), "-o", str(out),
                 "--quiet"]) == 0
    assert np.array_equal(beside_answers, alone)
    assert np.array_equal(np.asarray(Image.open(out)), alone)
    assert all(len(p) > 1 for p in pieces)
