"""Answers decoded together: one batched forward per step for every answer being decoded at once
(continuous batching, as llama.cpp's ``--parallel`` slots and vLLM do), each answer on its own
thread.

Each answer's prompt runs alone (:func:`~showo2_cli.text_decoding.run_prompt`, its own cache),
in chunks of :attr:`DecodingBatch.prompt_budget` positions while other answers decode, each chunk
followed by one step of theirs (chunked prefill: a long prompt no longer stalls them for its whole
length); then the answer joins the batch: its keys and values go into one batched KV cache, and from then
on its next token runs with every other answer's in one call of the LLM. Everything else stays the
answer's own: its sampling (logits processors, generator, seed), stop strings, grammar, streaming
and cancellation happen on its thread between the steps, exactly as alone. An answer that ends
leaves at once and frees its row.

An image or video generation shares the model's turn the same way, its sampler step by step
(:func:`between_sampling_steps`): between two of its steps the threads waiting for their turn run
(a new request's prompt), then the answers take one step; one generation at a time
(:func:`generation_turn`).

The batch is cooperative: its :attr:`DecodingBatch.lock` is held by whichever thread uses the model
(a job's media encoding, a prompt, an image generation, the batched step), and an answer waiting
for the step gives it up. So the model never runs on two threads at once.

Exactness: a batch of one answer runs the very call an answer alone runs (bit for bit). Two or
more run as one ``(B, 1)`` call over a right-padded cache whose padding is masked out: the same
numbers, to float rounding (a batch's kernels round differently, the logits ~1e-5 apart on the
demo), the rule of ``--batch-size`` for images.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch

from .runtime import quiet_imports

with quiet_imports():
    from transformers import DynamicCache

#: the batch this thread's answers join (:func:`~showo2_cli.text_decoding.generate` reads it)
CURRENT: contextvars.ContextVar[DecodingBatch | None] = contextvars.ContextVar("showo2_decoding_batch", default=None)


def let_others_step() -> None:
    """A pause in this thread's work with the model (between a video's frames as they are encoded):
    the answers decoding in its batch take one step, where chunked prefill is on
    (:attr:`DecodingBatch.prompt_budget`) and any are; else nothing."""
    batch = CURRENT.get()
    if batch is not None and batch.prompt_budget > 0 and batch.rows:
        batch.let_step()


def between_sampling_steps() -> None:
    """A pause between two steps of this thread's image or video generation (and between its
    outputs' decodes): the threads waiting for their turn with the model (a new request's media and
    prompt) have it first, then the answers decoding in its batch take one step, where chunked
    prefill is on (:attr:`DecodingBatch.prompt_budget`); else nothing."""
    batch = CURRENT.get()
    if batch is not None and batch.prompt_budget > 0 and (batch.rows or batch.arriving):
        batch.let_step(let_in=True)


@contextmanager
def generation_turn():
    """One image or video generation at a time in this thread's batch (none: nothing to wait for):
    another one waits here until it ends, giving its turn with the model back meanwhile, so the
    generations between whose steps the answers decode run one after the other, not interleaved
    with each other (each would finish as late as the last)."""
    batch = CURRENT.get()
    if batch is None:
        yield
        return
    with batch.lock:
        while batch.generating is not None:
            batch.lock.notify_all()
            batch.lock.wait()
        batch.generating = threading.current_thread()
    try:
        yield
    finally:
        with batch.lock:
            batch.generating = None
            batch.lock.notify_all()


class Row:
    """One answer in the batch: its next token in, its next logits out."""

    def __init__(self, batch: DecodingBatch, position: int, length: int, final: int):
        self.batch, self.position, self.length, self.final = batch, position, length, final
        self.token: int | None = None  # the token submitted for the next step
        self.logits: torch.Tensor | None = None
        self.error: BaseException | None = None

    def step(self, token: int) -> torch.Tensor:
        """Run ``token`` (with every other answer's next one); its next logits ``(V,)`` (float)."""
        return self.batch.step(self, token)

    def leave(self) -> None:
        self.batch.leave(self)


class DecodingBatch:
    """The answers decoding at once over one model (``network``: a Showo2Model).

    ``fits(rows, width)``: whether a batched cache of ``rows`` answers ``width`` positions wide fits
    the memory limit (None: no check); an answer that would not fit waits for others to end (one
    alone is never held back: its own request was checked)."""

    def __init__(self, network, fits: Callable[[int, int], bool] | None = None, prompt_budget: int = 512):
        self.network, self.fits = network, fits
        #: prompt positions run between two steps of the answers (chunked prefill; 0: a prompt whole)
        self.prompt_budget = prompt_budget
        self.lock = threading.Condition(threading.RLock())
        self.queued = 0  # threads waiting for their turn (:meth:`turn`): the step lets them in first
        self.arriving = 0  # of them, those in :meth:`turn` (the others wait in :meth:`let_step`)
        self.entered = 0  # turns taken so far
        self.generating: threading.Thread | None = None  # the thread in its :func:`generation_turn`
        self._count = threading.Lock()
        self.rows: list[Row] = []
        self.cache = None  # DynamicCache (B, kv_heads, W, d) per layer, rows in ``self.rows`` order
        self.valid: torch.Tensor | None = None  # (B, W) bool: which cached positions are each row's own
        self.steps = 0  # batched calls run
        self.row_steps = 0  # answers' tokens they ran

    @contextmanager
    def turn(self):
        """The model is this thread's (a job's media, its prompt, an image generation) until it
        leaves, but while its answer waits for the step. Waiting rows let a thread that asks for its
        turn in before their next step (its prompt joins the batch sooner, as vLLM schedules a
        waiting prompt before the next decoding step)."""
        with self._count:
            self.queued += 1
            self.arriving += 1
        try:
            self.lock.acquire()
        finally:
            with self._count:
                self.queued -= 1
                self.arriving -= 1
        self.entered += 1
        self.lock.notify_all()  # a generation letting this thread in goes on once it waits or leaves
        try:
            yield
        finally:
            self.lock.notify_all()  # rows waiting for this turn to end
            self.lock.release()

    # ---- rows in and out ------------------------------------------------------------------------
    def join(self, cache, position: int, final: int) -> Row:
        """Add an answer whose prompt is in ``cache`` (its own, batch 1; taken over) and whose next
        token sits at ``position``; ``final``: its length at most (prompt + answer budget)."""
        with self.lock:
            length = cache.get_seq_length()
            while self.rows and self.fits is not None and not self.fits(
                    len(self.rows) + 1, max(final, *(r.final for r in self.rows))):
                self.lock.notify_all()  # the rows may step meanwhile
                self.lock.wait()  # a row that ends notifies
            row = Row(self, position, length, final)
            if not self.rows:
                device = cache.layers[0].keys.device
                self.cache, self.valid = cache, torch.ones(1, length, dtype=torch.bool, device=device)
            else:
                self._rebuild(self.rows, [(layer.keys, layer.values) for layer in cache.layers])
            self.rows.append(row)
            return row

    def leave(self, row: Row) -> None:
        with self.lock:
            if row not in self.rows:
                return
            keep = [r for r in self.rows if r is not row]
            if not keep:
                self.cache = self.valid = None
            else:
                self._rebuild(keep)
            self.rows = keep
            self.lock.notify_all()  # the rest may all be waiting for the step now, or a row to join

    def _rebuild(self, keep: list[Row], new: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """The batched cache of rows ``keep`` (and of a new row whose cache holds ``new``, per layer
        its keys and values ``(1, H, n, d)``, appended), each row's own positions gathered to the
        left in their order: the columns no row needs any more are dropped."""
        index = [self.rows.index(r) for r in keep]
        own = [self.valid[i].nonzero().squeeze(1) for i in index]
        counts = [len(cols) for cols in own] + ([new[0][0].shape[2]] if new is not None else [])
        width = max(counts)
        cache = DynamicCache()
        for n, layer in enumerate(self.cache.layers):
            ks = [_padded(layer.keys[i:i + 1, :, cols], width) for i, cols in zip(index, own, strict=True)]
            vs = [_padded(layer.values[i:i + 1, :, cols], width) for i, cols in zip(index, own, strict=True)]
            if new is not None:
                ks.append(_padded(new[n][0], width))
                vs.append(_padded(new[n][1], width))
            cache.update(torch.cat(ks), torch.cat(vs), n)
        device = self.valid.device
        self.valid = torch.arange(width, device=device)[None] < torch.tensor(counts, device=device)[:, None]
        self.cache = cache

    # ---- the step -------------------------------------------------------------------------------
    def let_step(self, let_in: bool = False) -> None:
        """Between two chunks of a prompt (its thread holds the model): the answers being decoded
        take one step, and each chooses its next token (its stream gets its piece) before the
        prompt goes on; meanwhile the prompt counts as a thread waiting for its turn, so the
        answers run no step of their own before its next chunk. A failing step is the answers'
        error (they hear it, the batch empties), not the prompt's: its thread goes on.

        ``let_in`` (between two steps of a generation): first the threads waiting for their turn
        now take it (each until it first gives the model back: its answer waiting for the step,
        its prompt between two chunks, its end), so a request arriving during a long generation
        has its prompt run and its answer decoding beside the others from the next step."""
        with self.lock:
            with self._count:
                self.queued += 1
            try:
                if let_in and self.arriving:
                    target = self.entered + self.arriving
                    while self.entered < target:
                        self.lock.wait()
                ran = False
                while self.rows:
                    if all(r.token is not None for r in self.rows):
                        if ran:
                            return
                        ran = True
                        try:
                            self._run()
                        except Exception:
                            return
                    else:
                        self.lock.wait()
            finally:
                with self._count:
                    self.queued -= 1

    def step(self, row: Row, token: int) -> torch.Tensor:
        with self.lock:
            row.token, row.logits = token, None
            self.lock.notify_all()  # this may be the token the others wait for
            while row.logits is None and row.error is None:
                if not self.queued and all(r.token is not None for r in self.rows):
                    self._run()
                else:
                    self.lock.wait()
            if row.error is not None:
                error, row.error = row.error, None
                raise error
            logits, row.logits = row.logits, None
            return logits

    def _run(self) -> None:
        """One batched call of the LLM for every row's submitted token."""
        rows, net = self.rows, self.network
        embed = net.showo.model.embed_tokens
        device = self.valid.device
        try:
            ids = torch.tensor([[r.token] for r in rows], device=device)
            pos = torch.tensor([[r.position] for r in rows], device=device)
            if len(rows) == 1 and bool(self.valid.all()):  # alone: the call an answer alone makes
                mask = None
            else:
                self.valid = torch.cat([self.valid, torch.ones(len(rows), 1, dtype=torch.bool, device=device)], 1)
                mask = self.valid[:, None, None, :]
            hidden, self.cache = net.llm(embed(ids), mask, position_ids=pos, past_key_values=self.cache, use_cache=True)
            if mask is None:
                self.valid = torch.cat([self.valid, torch.ones(1, 1, dtype=torch.bool, device=device)], 1)
            logits = net.logits(hidden[:, -1]).float()
        except BaseException as e:  # every row's thread hears it; the batch (its cache half updated) is gone
            for r in rows:
                r.error, r.token = e, None
            self.rows, self.cache, self.valid = [], None, None
            self.lock.notify_all()
            raise
        for k, r in enumerate(rows):
            r.logits = logits[k] if len(rows) > 1 else logits[0]
            r.token = None
            r.position += 1
        self.steps += 1
        self.row_steps += len(rows)
        self.lock.notify_all()


def _padded(t: torch.Tensor, width: int) -> torch.Tensor:
    """``(1, H, n, d)`` zero-padded to ``width`` positions."""
    return torch.nn.functional.pad(t, (0, 0, 0, width - t.shape[2])) if t.shape[2] < width else t
