"""The worker threads that own the model: a bounded queue of jobs, cancellation, draining."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import ApiError, shutting_down

try:  # module level: FastAPI resolves the handlers' (string) annotations in these globals
    from fastapi import Request
except ImportError:  # pragma: no cover - serve checks for FastAPI before it gets here
    Request = None

log = logging.getLogger("showo2.serve")


class QueueFull(Exception):
    pass


class Job:
    """One request's work: ``fn(job)`` runs on the worker thread; events flow back to the event loop.
    ``generation``: an image (or video) generation, which runs one at a time (see :class:`Worker`)."""

    def __init__(self, fn: Callable[[Job], Any], loop: asyncio.AbstractEventLoop, generation: bool = False):
        self.fn, self.loop, self.generation = fn, loop, generation
        self.cancel = threading.Event()
        self.events: asyncio.Queue = asyncio.Queue()
        self.started = False
        self.abandoned = False  # stopped by the server's drain timeout, not by its client
        self.look_again = 0.0  # when the request next checks that its client is still there

    def emit(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass


class Worker:
    """The threads owning the model: ``parallel`` jobs at a time (1: one, as a single thread runs
    them), at most ``max_queue`` waiting. With ``parallel`` above 1 the running jobs take turns
    with the model (``batch``'s lock) and their answers decode together
    (:mod:`showo2_cli.decoding_batch`): one batched step for all of them.

    Where the answers also step between an image's sampling steps (the batch's ``prompt_budget``
    above 0), the generations run one at a time (:func:`~showo2_cli.decoding_batch.generation_turn`),
    and a generation job waits for the one running to end in the queue, not in a slot: the jobs
    behind it in the queue that are not generations take the free slots meanwhile; generations keep
    their order. A job is refused when ``parallel + max_queue`` are in (running or waiting), as before."""

    def __init__(self, max_queue: int, parallel: int = 1, batch=None):
        self.max_queue, self.parallel, self.batch = max_queue, parallel, batch
        # generations wait for their turn in the queue (elsewhere each runs whole, or one slot runs all jobs)
        self.generations_queued = batch is not None and batch.prompt_budget > 0
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self.jobs: list[Job] = []  # the running ones
        self._stop = False
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "rejected": 0}
        self._threads = [threading.Thread(target=self._loop, name=f"showo2-worker-{k}", daemon=True)
                         for k in range(parallel)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> Job | None:
        """A running job (the first), None when none runs."""
        jobs = self.jobs
        return jobs[0] if jobs else None

    def submit(self, job: Job) -> None:
        with self._cv:
            if self._stop:
                raise ApiError(503, "the server is shutting down", "shutting_down", type_="server_error")
            # max_queue wait behind the running jobs; while a slot is free, the first in line is the
            # next to run, not a waiting one (a burst that came before a worker took it got fewer)
            if len(self._waiting) >= self.max_queue + max(0, self.parallel - len(self.jobs)):
                self.counts["rejected"] += 1
                raise QueueFull
            self._waiting.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        """Stop a job: taken out of the queue if it waits (a generation waiting for another's end
        too), told to stop if it runs."""
        job.cancel.set()
        with self._cv:
            if job in self._waiting:
                self._waiting.remove(job)
                self.counts["cancelled"] += 1

    def _next(self) -> Job | None:
        """The first waiting job that may run now (under ``_cv``): a generation only while none runs
        (where :attr:`generations_queued`), or once cancelled (it ends at once)."""
        busy = self.generations_queued and any(j.generation for j in self.jobs)
        for job in self._waiting:
            if not (busy and job.generation) or job.cancel.is_set():
                return job
        return None

    def _loop(self) -> None:
        if self.batch is not None:  # this thread's answers decode in the batch
            from ..decoding_batch import CURRENT

            CURRENT.set(self.batch)
        while True:
            with self._cv:
                while (job := self._next()) is None and not (self._stop and not self._waiting):
                    self._cv.wait()
                if job is None:
                    return
                self._waiting.remove(job)
                self.jobs.append(job)
            if self.batch is None:
                self._run(job)
            else:
                with self.batch.turn():  # the model is this job's, but while its answer waits for the step
                    self._run(job)
            job = None  # an idle worker keeps nothing of the last request (its body, images, result)

    def _run(self, job: Job) -> None:
        from ..dialogue import Cancelled

        try:
            if job.cancel.is_set():
                raise Cancelled("cancelled")
            job.started = True
            result = job.fn(job)
        except BaseException as e:  # every failure goes back to its request, the thread lives on
            kind = "cancelled" if isinstance(e, Cancelled) else "failed"
            with self._cv:
                self.counts[kind] += 1
            job.emit("error", shutting_down() if job.abandoned and kind == "cancelled" else e)
        else:
            with self._cv:
                self.counts["completed"] += 1
            job.emit("done", result)
        finally:
            with self._cv:
                self.jobs.remove(job)
                if job.generation:  # the next generation waiting may run now
                    self._cv.notify_all()

    def abandon(self, why: str = "drain timeout") -> None:
        """The drain timeout (or a forced exit): stop the running job and every waiting one; each is
        answered 503."""
        with self._cv:
            jobs = list(self._waiting) + list(self.jobs)
            for job in jobs:
                job.abandoned = True
                job.cancel.set()
            for job in self._waiting:
                self.counts["cancelled"] += 1
                job.emit("error", shutting_down())
            self._waiting.clear()
        if jobs:
            log.warning("%s: %d request(s) stopped", why, len(jobs))

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the running jobs, cancel any still waiting, end the threads."""
        with self._cv:
            self._stop = True
            for job in self._waiting:
                job.cancel.set()
            self._cv.notify_all()
        end = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, end - time.monotonic()))
