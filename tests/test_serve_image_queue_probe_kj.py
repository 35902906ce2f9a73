"""Probe KJ: ``serve --parallel``: an image request waiting for another image's end (one generation
at a time, probe KB) waits in the queue, not in a ``--parallel`` slot, so a chat behind it takes a
free slot and is answered meanwhile; the images keep their order and their pixels."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from showo2_cli.decoding_batch import DecodingBatch
from showo2_cli.dialogue import Cancelled  # noqa: F401  (the workers' first import, made here: seconds)


def until(cond, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while not cond() and time.time() < deadline:
        time.sleep(0.005)
    return cond()


class Jobs:
    """A worker's jobs that run until released (giving the model's turn back meanwhile, as an image
    between its steps or an answer waiting for the step), recording the order they start in."""

    def __init__(self, worker):
        self.worker, self.loop = worker, asyncio.new_event_loop()
        self.started: list[str] = []
        self.gates: dict[str, threading.Event] = {}

    def job(self, name: str, generation: bool):
        from showo2_cli.serve import Job

        gate = self.gates[name] = threading.Event()

        def fn(job):
            self.started.append(name)
            batch = self.worker.batch
            while not gate.is_set() and not job.cancel.is_set():
                if batch is None:
                    gate.wait(0.01)
                else:
                    with batch.lock:
                        batch.lock.wait(0.01)
            return name

        job = Job(fn, self.loop)
        job.generation = generation  # (set so, the old sources ran these tests: their Job had no such argument)
        return job

    def submit(self, name: str, generation: bool = False):
        job = self.job(name, generation)
        self.worker.submit(job)
        return job

    def close(self):
        for gate in self.gates.values():
            gate.set()
        self.worker.stop(30)
        self.loop.close()


@pytest.fixture
def make():
    made = []

    def make(parallel=3, max_queue=8, budget=512, batched=True):
        from showo2_cli.serve import Worker

        worker = Worker(max_queue, parallel, DecodingBatch(None, prompt_budget=budget) if batched else None)
        worker.start()
        made.append(Jobs(worker))
        return made[-1]

    yield make
    for jobs in made:
        jobs.close()


def test_a_chat_behind_waiting_images_takes_a_free_slot_and_the_images_keep_their_order(make):
    """``--parallel 3``: three image requests then a chat. The first image runs, the two others
    wait in the queue (before: each took a slot, and the chat waited for one); the chat runs at once;
    each image starts when the one before it ends, in the order they came."""
    jobs = make()
    for name in ("image0", "image1", "image2"):
        jobs.submit(name, generation=True)
    jobs.submit("chat")
    assert until(lambda: "chat" in jobs.started)
    time.sleep(0.1)
    assert jobs.started == ["image0", "chat"]
    assert len(jobs.worker.jobs) == 2 and jobs.worker.waiting == 2
    jobs.gates["chat"].set()
    jobs.gates["image0"].set()
    assert until(lambda: len(jobs.started) == 3)
    time.sleep(0.1)
    assert jobs.started == ["image0", "chat", "image1"] and jobs.worker.waiting == 1
    jobs.gates["image1"].set()
    assert until(lambda: len(jobs.started) == 4)
    assert jobs.started == ["image0", "chat", "image1", "image2"]


def test_a_cancelled_waiting_image_leaves_the_queue_at_once(make):
    """An image waiting behind another, its client gone: out of the queue at once, never run (before:
    it held a slot until the image before it ended); the image after it runs next."""
    jobs = make()
    jobs.submit("image0", generation=True)
    assert until(lambda: jobs.started == ["image0"])
    gone = jobs.submit("image1", generation=True)
    jobs.submit("image2", generation=True)
    time.sleep(0.1)
    jobs.worker.cancel(gone)
    assert jobs.worker.waiting == 1 and jobs.worker.counts["cancelled"] == 1
    jobs.gates["image0"].set()
    assert until(lambda: len(jobs.started) == 2)
    time.sleep(0.1)
    assert jobs.started == ["image0", "image2"]


def test_the_queue_bound_counts_waiting_images_as_before(make):
    """``--parallel 3 --max-queue 1``: four requests in (running or waiting) and the fifth refused
    (429), as before; the chat among them runs while two images wait."""
    from showo2_cli.serve import QueueFull

    jobs = make(max_queue=1)
    for name in ("image0", "image1", "image2"):
        jobs.submit(name, generation=True)
    jobs.submit("chat")
    with pytest.raises(QueueFull):
        jobs.submit("chat2")
    assert until(lambda: "chat" in jobs.started)
    assert jobs.worker.counts["rejected"] == 1


@pytest.mark.parametrize("parallel,budget,batched", [(3, 0, True), (1, 512, False)])
def test_a_zero_budget_and_one_slot_keep_the_images_in_their_slots(make, parallel, budget, batched):
    """``--max-num-batched-tokens 0`` (an image runs whole) and ``--parallel 1`` (no batch): the jobs
    are taken in their order as before, an image into a slot whatever runs."""
    jobs = make(parallel=parallel, budget=budget, batched=batched)
    for name in ("image0", "image1", "image2"):
        jobs.submit(name, generation=True)
    jobs.submit("chat")
    expected = ["image0", "image1", "image2"][:parallel]
    assert until(lambda: len(jobs.started) == parallel)
    time.sleep(0.1)
    assert jobs.started == expected and jobs.worker.waiting == 4 - parallel
    for name in ("image0", "image1", "image2", "chat"):
        jobs.gates[name].set()
    assert until(lambda: len(jobs.started) == 4)
    if parallel == 1:
        assert jobs.started == ["image0", "image1", "image2", "chat"]


# ---- served, the demo ------------------------------------------------------------------------------------

STEPS = 12


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import load

    return load("demo")


def test_served_images_in_a_crowd_are_t2i_s_in_order_and_a_chat_is_answered_meanwhile(demo, tmp_path):
    """``serve --parallel 3``: three image requests at once (seeds 5, 6, 7), then a chat: the chat ends
    before the first image (before: it waited for a slot, the first image's end), the images end in
    their order, and each is the image sent alone (and the middle one ``showo2 t2i``'s with the same options)."""
    import base64
    import io

    import httpx
    from PIL import Image

    from conftest import serving
    from showo2_cli.cli import main

    prompt = "a red circle on a blue square"
    ended: dict = {}
    got: dict = {}
    steps = {5: 40, 6: STEPS, 7: STEPS}  # (the first long enough for the chat to end within it)

    def pixels(seed: int, key=None) -> None:
        r = httpx.post(url + "/v1/images/generations", json={"prompt": prompt, "steps": steps[seed], "seed": seed},
                       timeout=120)
        assert r.status_code == 200, r.text
        got[key or seed] = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))))
        ended[key or seed] = time.perf_counter()

    def in_server() -> int:
        health = httpx.get(url + "/health").json()
        return sum(health[k] for k in ("running_jobs", "queued", "completed", "failed", "cancelled"))

    def chat() -> None:
        r = httpx.post(url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "Name a shape."}], "max_tokens": 2,
            "logit_bias": {str(demo.tokens.end): -100}}, timeout=120)
        assert r.status_code == 200, r.text
        ended["chat"] = time.perf_counter()

    with serving(demo, parallel=3) as url:
        for seed in (5, 6, 7):
            pixels(seed, ("alone", seed))
        assert until(lambda: httpx.get(url + "/health").json()["running_jobs"] == 0)
        before = in_server()
        senders = []
        for seed in (5, 6, 7):
            senders.append(threading.Thread(target=pixels, args=(seed,)))
            senders[-1].start()
            assert until(lambda n=len(senders): in_server() - before >= n)  # (the server sees them in this order)
        chat()
        for s in senders:
            s.join(120)
    assert ended["chat"] < ended[5] < ended[6] < ended[7]
    for seed in (5, 6, 7):
        assert np.array_equal(got[seed], got[("alone", seed)])
    out = tmp_path / "t2i.png"  # (one of them: the others' seeds change nothing in how they are made)
    assert main(["t2i", prompt, "--model", "demo", "--steps", str(STEPS), "--seed", "6", "-o", str(out), "--quiet"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), got[6])
