"""Probe IG: ``serve --parallel``: the answers of concurrent requests decoded in one batched step
(continuous batching), each as it is alone."""

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


QUESTIONS = ["What is a red circle?", "Hi", "Describe a blue square in a few words please, thank you.",
             "Name a shape.", "What color is the sky on a clear day?", "Count to five."]


def samplings():
    from showo2_cli.dialogue import TextSampling

    return [TextSampling(12),  # greedy, different lengths
            TextSampling(30, temperature=0.9, seed=7),  # seeded draws
            TextSampling(40, temperature=1.2, top_k=20, seed=3, stop_strings=("e",)),  # a stop string
            TextSampling(5),
            TextSampling(25, temperature=0.8, top_p=0.9, seed=11, frequency_penalty=0.5),
            TextSampling(24, json_schema={"type": "object"})]  # structured output


def ask(model, k: int, cancel_after: int | None = None):
    """Request ``k``: (answer, its token ids) as a server's chat job asks it."""
    from showo2_cli.chat import Conversation

    conv = Conversation(model)
    cancel = threading.Event()
    pieces = []

    def on_text(piece):
        pieces.append(piece)
        if cancel_after is not None and len(pieces) >= cancel_after:
            cancel.set()

    answer = conv.ask(QUESTIONS[k], samplings()[k], on_text=on_text, cancel=cancel)
    assert "".join(pieces) == answer  # streamed pieces add up to the answer, in a batch too
    return answer, conv.turns[-1].answer_ids


def together(batch: DecodingBatch, jobs):
    """Run ``jobs`` each on its own thread in ``batch`` (the worker's way), all queued before the
    first starts: (results, errors)."""
    out, errors = [None] * len(jobs), [None] * len(jobs)

    def run(k):
        CURRENT.set(batch)
        try:
            with batch.turn():
                out[k] = jobs[k]()
        except BaseException as e:
            errors[k] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    with batch.turn():
        for t in threads:
            t.start()
        deadline = time.time() + 30
        while batch.queued < len(jobs) and time.time() < deadline:
            time.sleep(0.01)
    for t in threads:
        t.join(120)
    return out, errors


def test_answers_decoded_together_equal_each_alone(demo):
    """Six requests of different lengths and settings (greedy, seeded draws, a stop string, a
    penalty, a JSON schema), decoded together: each answer equals its answer alone, tokens and
    text; the batch did run them together and freed every row."""
    alone = [ask(demo, k) for k in range(len(QUESTIONS))]
    batch = DecodingBatch(demo.network)
    out, errors = together(batch, [lambda k=k: ask(demo, k) for k in range(len(QUESTIONS))])
    assert errors == [None] * len(QUESTIONS)
    assert out == alone
    assert batch.row_steps > 2 * batch.steps  # more than two answers a step on average
    assert batch.rows == [] and batch.cache is None


def test_a_batch_of_one_is_bit_for_bit_the_answer_alone(demo):
    """An answer alone in the batch runs the very call it runs without one: every step's logits
    are the same bits."""
    from showo2_cli.dialogue import TextSampling
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.text_decoding import generate

    net = demo.network
    ids = torch.tensor([[5, 17, 33, 2, 9, 41, 7]])
    embeds = net.showo.model.embed_tokens(ids)
    mask = omni_attention_mask(torch.zeros(1, 1, 2, dtype=torch.long), ids.shape[1])
    opts = TextSampling(10, temperature=0.7, seed=1)
    alone = generate(net, embeds, mask, opts, keep_logits=True)
    batch = DecodingBatch(net)
    (inside,), _ = together(batch, [lambda: generate(net, embeds, mask, opts, keep_logits=True)])
    assert batch.steps == 9 and inside.token_ids == alone.token_ids
    assert all(torch.equal(a, b) for a, b in zip(alone.step_logits, inside.step_logits, strict=True))


def test_a_cancelled_answer_leaves_and_the_others_go_on(demo):
    """A request whose client left (its cancel set after 2 pieces) stops at its next token and
    frees its row; the others still get their answers alone."""
    from showo2_cli.dialogue import Cancelled

    alone = {k: ask(demo, k) for k in (0, 2, 4)}
    batch = DecodingBatch(demo.network)
    out, errors = together(batch, [lambda: ask(demo, 0), lambda: ask(demo, 1, cancel_after=2),
                                   lambda: ask(demo, 2), lambda: ask(demo, 4)])
    assert isinstance(errors[1], Cancelled) and errors[:1] + errors[2:] == [None] * 3
    assert [out[0], out[2], out[3]] == [alone[0], alone[2], alone[4]]
    assert batch.rows == []


def test_an_error_in_the_batched_step_reaches_every_answer_and_the_batch_recovers(demo, monkeypatch):
    """A failing batched call (out of memory, say) fails every answer in it with that error, not a
    hang; the batch is emptied and serves the next requests."""
    net = demo.network
    real = net.llm
    failing = {"on": True}

    def llm(embeds, mask, **kw):
        if failing["on"] and embeds.shape[0] > 1:
            raise RuntimeError("boom")
        return real(embeds, mask, **kw)

    monkeypatch.setattr(net, "llm", llm)
    batch = DecodingBatch(net)
    _, errors = together(batch, [lambda k=k: ask(demo, k) for k in (0, 1, 2)])
    assert [str(e) for e in errors] == ["boom"] * 3
    assert batch.rows == [] and batch.cache is None
    failing["on"] = False
    out, errors = together(batch, [lambda k=k: ask(demo, k) for k in (0, 1)])
    assert errors == [None, None] and out == [ask(demo, 0), ask(demo, 1)]


def test_the_memory_guard_holds_an_answer_back_until_a_row_is_free(demo):
    """A batch whose cache would not fit with one more answer takes it once a row leaves: here
    one at a time, every answer still complete and equal to its answer alone."""
    asked = []

    def fits(rows, width):
        asked.append((rows, width))
        return rows <= 1

    alone = [ask(demo, k) for k in (0, 1, 3)]
    batch = DecodingBatch(demo.network, fits)
    out, errors = together(batch, [lambda k=k: ask(demo, k) for k in (0, 1, 3)])
    assert errors == [None] * 3 and out == alone
    assert batch.steps == batch.row_steps  # never two rows in one step
    assert asked and all(rows == 2 for rows, _ in asked)


def test_the_queue_counts_every_free_slot():
    """``max_queue`` requests wait behind the running ones: with ``parallel`` slots free, as many
    more are taken before a 429."""
    import asyncio

    from showo2_cli.serve import Job, QueueFull, Worker

    loop = asyncio.new_event_loop()
    try:
        worker = Worker(1, parallel=3)  # not started: nothing is taken from the queue
        for _ in range(4):
            worker.submit(Job(lambda job: None, loop))
        with pytest.raises(QueueFull):
            worker.submit(Job(lambda job: None, loop))
    finally:
        loop.close()


def test_parallel_is_checked_in_python_and_on_the_command_line(monkeypatch, capsys):
    from showo2_cli.cli import common, main
    from showo2_cli.serve import ServerConfig, create_app

    for bad in (0, 65, True, 2.0):
        with pytest.raises(UsageError, match="parallel must be"):
            create_app(None, ServerConfig(parallel=bad))
    monkeypatch.setattr(common, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["serve", "--port", "0", "--parallel", "0"]) == 2
    assert capsys.readouterr().err == "showo2: error: --parallel must be between 1 and 64, got 0\n"


@pytest.mark.slow
def test_a_parallel_server_answers_concurrent_clients_as_each_alone(demo):
    """``serve --parallel 4``: eight concurrent requests (streamed and not, greedy and seeded) get
    their answers alone; /health says the slots."""
    import concurrent.futures as cf
    import json

    import httpx

    from conftest import run_in_thread
    from showo2_cli.serve import ServerConfig, bind_socket
    from showo2_cli.serve.app import server_for

    sock = bind_socket("127.0.0.1", 0)
    srv = server_for(demo, ServerConfig(parallel=4), sock, log_level="error")
    thread = run_in_thread(srv, sock)
    host, port = sock.getsockname()[:2]
    url = f"http://{host}:{port}"

    def request(k: int, stream: bool) -> str:
        body = {"messages": [{"role": "user", "content": QUESTIONS[k % 6]}], "max_tokens": 6 + 5 * k,
                "stream": stream, **({"temperature": 0.9, "seed": k} if k % 2 else {})}
        if not stream:
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=120)
            return r.json()["choices"][0]["message"]["content"]
        text = []
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    text += [c["delta"].get("content") or "" for c in json.loads(line[6:])["choices"]]
        return "".join(text)

    try:
        alone = [request(k, False) for k in range(8)]
        with cf.ThreadPoolExecutor(8) as ex:
            out = list(ex.map(lambda k: request(k, k % 3 == 0), range(8)))
        health = httpx.get(url + "/health").json()
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()
    assert out == alone
    assert health["parallel"] == 4 and health["completed"] == 16 and health["running_jobs"] == 0


def test_parallel_answers_refuse_flex_attention(demo, monkeypatch):
    """Flex attention compiles for each shape: a batched step's mask is one column wider every
    step, so ``--parallel`` above 1 with ``--attn flex`` is refused before the server starts."""
    from showo2_cli.serve import ServerConfig, create_app

    monkeypatch.setattr(demo.network, "attn", "flex")
    with pytest.raises(UsageError, match="need attention sdpa or eager"):
        create_app(demo, ServerConfig(parallel=2))
    create_app(demo, ServerConfig(parallel=1))  # one at a time: as before


def test_the_drain_timeout_stops_every_running_job():
    """Worker.abandon (the drain timeout) with ``parallel`` jobs running: each is told to stop and
    answered 503, as the one running job was; the threads end."""
    import asyncio

    from showo2_cli.dialogue import Cancelled
    from showo2_cli.serve import Job, Worker

    loop = asyncio.new_event_loop()
    try:
        worker = Worker(4, parallel=3, batch=DecodingBatch(None))
        started = threading.Semaphore(0)

        def fn(job):
            started.release()
            while not job.cancel.is_set():
                with worker.batch.lock:  # as an answer waiting for the step: the others' turn meanwhile
                    worker.batch.lock.wait(0.01)
            raise Cancelled("cancelled")

        jobs = [Job(fn, loop) for _ in range(3)]
        worker.start()
        for job in jobs:
            worker.submit(job)
        for _ in jobs:
            assert started.acquire(timeout=30)
        assert len(worker.jobs) == 3
        worker.abandon()
        worker.stop(30)
        assert all(job.abandoned and job.cancel.is_set() for job in jobs)
        assert worker.counts["cancelled"] == 3 and worker.jobs == []
    finally:
        loop.close()
