"""Autoregressive text decoding with a KV cache (spec §8.2, §9, §13.21).

The prompt (with its visual block) runs once under the omni mask and fills the cache; each new
token then attends to everything before it, which is exactly the official full-recompute rule
(a causal row appended to the mask) at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .decoding_batch import CURRENT as CURRENT_BATCH
from .errors import non_finite
from .modeling.showo2 import truncate_cache
from .options import TextSampling
from .runtime import quiet_imports

with quiet_imports():
    from transformers import (
        DynamicCache,
        LogitsProcessor,
        LogitsProcessorList,
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        SequenceBiasLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )


@dataclass
class DecodedText:
    token_ids: list[int] = field(default_factory=list)
    step_logits: list[torch.Tensor] = field(default_factory=list)  # last-position logits per step
    stopped: bool = False  # True when a stop token ended generation


#: tokens of a given answer start decoded with the new ones, each time (not the whole start)
HEAD_CONTEXT = 8


class TextStream:
    """Answer token ids in, answer text out: the one rule for what an answer's text is and how it
    is shown while it grows (caption, chat and the server all use it).

    The answer is the tokenizer's text of the ids (special tokens skipped), cut before the first
    stop string it completes (:func:`first_stop`) and stripped of surrounding whitespace.
    ``on_text(piece)`` receives pieces whose concatenation is exactly that text: never half a UTF-8
    character, never a piece of a stop string, no leading whitespace, and whitespace inside the
    answer only once text follows it. So a streamed answer and the same answer returned whole are
    the same string.

    ``head_ids`` is the start of the answer given beforehand (a reply being continued): the text
    is then what the ids add to the head's text, whitespace after the head kept (only trailing
    whitespace is stripped; all of it when ``head_spaced``: the given words ended in whitespace, held
    back from the ids), and stop strings are looked for in it alone.
    """

    def __init__(self, tokenizer, stop_ids: tuple[int, ...] = (), stop_strings: tuple[str, ...] = (),
                 on_text: Callable[[str], None] | None = None, head_ids: Sequence[int] = (),
                 head_spaced: bool = False):
        self.tokenizer, self.stop_ids, self.stops, self.on_text = tokenizer, tuple(stop_ids), tuple(stop_strings), on_text
        self.head_ids = list(head_ids)[-HEAD_CONTEXT:]  # enough to decode the boundary as the whole would
        self.head = tokenizer.decode(self.head_ids, skip_special_tokens=True) if self.head_ids else ""
        # the head's own trailing whitespace was given (``head_spaced``): the text starts at its next word
        self._trim = str.rstrip if self.head.strip() and not head_spaced else str.strip
        self.produced: list[int] = []  # every id but the stop ids
        self.cut: str | None = None  # the text before the first stop string, once one appeared
        self.shown = ""

    def push(self, token: int) -> bool:
        """Take the next id; true once a stop string has appeared (decoding should stop)."""
        if token in self.stop_ids or self.cut is not None:
            return self.cut is not None
        self.produced.append(token)
        if self.on_text is None and not self.stops:
            return False  # nothing to show or look for: the text is made once, at the end
        text = self._decoded()
        if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
            return False
        safe = len(text)
        if self.stops:
            hit = first_stop(text, self.stops)
            if hit >= 0:
                self.cut = text[:hit]
                safe = hit
            else:  # hold back a tail that may be the start of a stop string
                safe -= held_back(text, self.stops)
        self._show(self._trim(text[:safe]))  # trailing whitespace waits for the text after it
        return self.cut is not None

    def _show(self, visible: str) -> None:
        if self.on_text is not None and len(visible) > len(self.shown) and visible.startswith(self.shown):
            self.on_text(visible[len(self.shown):])
            self.shown = visible

    def finish(self) -> str:
        """The answer's text; shows what has not been shown yet."""
        text = self._trim(self.cut if self.cut is not None else self._decoded())
        self._show(text)
        return text

    def _decoded(self) -> str:
        """The text of the ids produced: after the head's text where the head is given."""
        if self.head_ids:
            whole = self.tokenizer.decode(self.head_ids + self.produced, skip_special_tokens=True)
            if whole.startswith(self.head):
                return whole[len(self.head):]
        return self.tokenizer.decode(self.produced, skip_special_tokens=True)


def first_stop(text: str, stops: tuple[str, ...]) -> int:
    """Where the stop string that ``text`` completes first begins (-1: none): as if the text came
    one character at a time, whatever its tokens (of those ending at one place, the longest)."""
    found = [(i + len(s), i) for s, i in ((s, text.find(s)) for s in stops) if i >= 0]
    return min(found)[1] if found else -1


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Characters at the end of ``text`` that could begin one of ``stops`` (not shown yet)."""
    longest = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), longest, -1):
            if text.endswith(s[:k]):
                longest = k
                break
    return longest


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's frequency and presence penalties over the answer so far: each token's logit loses
    ``count * frequency + (count > 0) * presence`` (transformers has only the multiplicative
    repetition penalty, so this one is ours)."""

    def __init__(self, frequency: float, presence: float):
        self.frequency, self.presence = float(frequency), float(presence)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


def logits_processors(opts: TextSampling, vocab_size: int, constraint: LogitsProcessor | None = None
                      ) -> LogitsProcessorList:
    """transformers' logits processors for ``opts``, in ``generate``'s order: a grammar's
    ``constraint`` first (:mod:`showo2_cli.structured`: no bias or penalty brings back a token it
    rules out), the penalties and biases, then (sampling only) temperature, top-k, top-p and min-p.
    Empty for plain greedy decoding."""
    from .errors import UsageError

    procs = LogitsProcessorList()
    if constraint is not None:
        procs.append(constraint)
    if opts.repetition_penalty is not None and opts.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(opts.repetition_penalty))
    if opts.frequency_penalty or opts.presence_penalty:
        procs.append(OpenAIPenalties(opts.frequency_penalty, opts.presence_penalty))
    if opts.logit_bias:
        outside = sorted(t for t in opts.logit_bias if not 0 <= int(t) < vocab_size)
        if outside:
            raise UsageError(f"logit_bias: token id {outside[0]} is not in the vocabulary (0 to {vocab_size - 1})")
        procs.append(SequenceBiasLogitsProcessor({(int(t),): float(b) for t, b in opts.logit_bias.items()}))
    if opts.sampled:
        procs.append(TemperatureLogitsWarper(float(opts.temperature)))
        if opts.top_k:  # None or 0: no top-k (transformers' TopKLogitsWarper refuses 0)
            procs.append(TopKLogitsWarper(int(opts.top_k)))
        if opts.top_p is not None and opts.top_p < 1:
            procs.append(TopPLogitsWarper(float(opts.top_p)))
        if opts.min_p:
            procs.append(MinPLogitsWarper(float(opts.min_p)))
    return procs


def choose_token(logits: torch.Tensor, opts: TextSampling, generator: torch.Generator | None,
                 answer: list[int] = (), processors: LogitsProcessorList | None = None) -> int:
    """Pick the next id from last-position logits ``(V,)`` after ``answer`` (the ids chosen so
    far): argmax at temperature 0, else a draw; ``processors`` (:func:`logits_processors`, made
    once per answer) adjust the logits first."""
    if processors is None:
        processors = logits_processors(opts, logits.shape[-1])
    if not bool(torch.isfinite(logits).all()):  # argmax of NaN scores is token 0: answers of "\x00\x00...", exit 0
        raise non_finite("the language head gave scores")
    scores = logits.float()
    if len(processors):
        ids = torch.tensor([list(answer)], dtype=torch.long, device=scores.device)
        scores = processors(ids, scores[None])[0]
        # extreme accepted values (a tiny temperature or repetition penalty) may overflow the
        # scores: +inf is the largest float, NaN is out; what is left is still a distribution
        scores = torch.nan_to_num(scores, nan=float("-inf"), posinf=torch.finfo(scores.dtype).max)
        if not bool(torch.isfinite(scores).any()):  # nothing left: the model's own choice (within a grammar's)
            held = getattr(processors[0], "holds_answer", False)
            scores = processors[0](ids, logits.float()[None])[0] if held else logits.float()
    if not opts.sampled:
        return int(torch.argmax(scores))
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def shared_prefix_length(layout) -> int:
    """Length of an understanding prompt's question-independent head: everything up to and
    including the token after the visual slot (``eoi``); 0 when there is none worth caching.

    The official demos' video block (``official_block_len``: 1 + the configured image token
    count) is longer than the visual tokens when the frames give fewer pooled tokens than an
    image has (e.g. 1-3 frames on the 432 model): it then runs past ``eoi`` into the question,
    and the visual tokens attend to the question's first tokens, so nothing from the block on is
    the same for two questions (and the rest is not causal, as :func:`generate` takes it)."""
    slot_end = int((layout.slots[..., 0] + layout.slots[..., 1]).max()) + 1
    block_end = int((layout.blocks[..., 0] + layout.blocks[..., 1]).max())
    return slot_end if block_end <= slot_end else 0


#: prompt positions a chunk of :func:`run_prompt` takes (besides a block that must stay whole)
PROMPT_CHUNK = 512
#: mask rows :func:`prompt_chunks` reads at once
_ROWS = 64


def prompt_chunks(mask: torch.Tensor, chunk: int = PROMPT_CHUNK) -> list[tuple[int, int]]:
    """Cut a prompt of boolean mask ``(B, 1, L, L)`` into consecutive ``(start, end)`` chunks of
    about ``chunk`` positions, none of whose rows attends past its end (a bidirectional visual
    block stays in one chunk): run in turn over the KV cache, each chunk's rows see exactly the
    keys they see in the whole prompt."""
    length, rows = mask.shape[-1], mask.shape[-2]
    # the last column each row attends to (over every batch row; -1: none), a few rows at a time in
    # one buffer: the whole mask's column numbers at once were ``L x L`` int64s, 8 times the mask
    # (2.9 GB above the mask for a chat of three videos, 19500 positions, whose mask is 380 MB)
    cols = torch.arange(1, length + 1, dtype=torch.int32, device=mask.device)  # (column + 1: 0 is none)
    buf = torch.empty((mask.shape[0], min(_ROWS, rows), length), dtype=cols.dtype, device=mask.device)
    last = torch.empty(rows, dtype=cols.dtype, device=mask.device)
    for r in range(0, rows, _ROWS):
        part = torch.mul(mask[:, 0, r:r + _ROWS], cols, out=buf[:, :min(_ROWS, rows - r)])
        last[r:r + _ROWS] = part.amax(dim=-1).amax(dim=0) - 1
    last = last.tolist()
    out, start = [], 0
    while start < length:
        end = min(start + chunk, length)
        while (reach := max(last[start:end]) + 1) > end:
            end = min(-(-reach // chunk) * chunk, length)  # ends stay on multiples of ``chunk``
        out.append((start, end))
        start = end
    return out


def run_prompt(model, embeds: torch.Tensor, mask: torch.Tensor, cache, on_chunk: Callable[[], None] | None = None):
    """A prompt ``(B, L, H)`` under its boolean mask ``(B, 1, L, L)`` into ``cache`` (empty on
    entry): (the final normed state of its last position ``(B, 1, H)``, the cache).

    A long prompt (a video's, a conversation's) runs in causal chunks (:func:`prompt_chunks`),
    each chunk's queries against the keys cached so far and its own: attention then does the
    work of the mask's lower triangle instead of the whole square (a 32-frame video prompt of
    6328 positions: 0.54 of it), and the mask reaches each layer as ``chunk x L`` rows, not
    ``L x L``. Every position's keys and values, and the last state, are the whole prompt's.
    Flex attention already skips the blocked tiles (and compiles once per shape): one chunk there.
    Only with SDPA on the CPU, whose kernel is checked to give the same bits (a GPU kernel's tiling
    may round differently; eager attention's matmuls over ``chunk x end`` rows instead of ``L x L``
    moved keys by up to 1.4e-6 on the demo): elsewhere one chunk, as before.

    In a decoding batch (a server's ``--parallel``) whose answers are being decoded, the prompt
    runs in chunks of the batch's ``prompt_budget`` on every device, each chunk followed by one
    step of those answers (:meth:`~showo2_cli.decoding_batch.DecodingBatch.let_step`: chunked
    prefill, as vLLM's and llama.cpp's servers): they go on while a long prompt runs, and it runs
    as fast as its chunks do. ``on_chunk()`` is called between two chunks (raising stops the
    prompt there: a cancelled request)."""
    batch = CURRENT_BATCH.get()
    interleave = batch is not None and batch.prompt_budget > 0 and bool(batch.rows)
    whole = getattr(model, "attn", "sdpa") != "sdpa" or embeds.device.type != "cpu"
    if interleave:
        chunks = prompt_chunks(mask, batch.prompt_budget)
    else:
        chunks = [(0, mask.shape[-1])] if whole else prompt_chunks(mask)
    for start, end in chunks:
        if start:
            if interleave:
                batch.let_step()
            if on_chunk is not None:
                on_chunk()
        # the last layer's shortcut (``last_only``) computes its last position's keys on one row,
        # which rounds differently from the whole prompt's: only the prompt's last position takes it
        hidden, cache = model.llm(embeds[:, start:end], mask[..., start:end, :end], past_key_values=cache,
                                  use_cache=True, last_only=end == chunks[-1][1])
    return hidden[:, -1:], cache


@torch.no_grad()
def prefill(model, prefix_embeds: torch.Tensor, mask: torch.Tensor):
    """Keys/values of a prompt head ``(1, P, H)`` under its mask ``(1, 1, P, P)``, for
    :func:`generate` ``cache=``: several questions about one image run the image once (exact:
    the head never attends to what follows it, and what follows attends causally to all of it)."""
    _, cache = run_prompt(model, prefix_embeds, mask, DynamicCache())
    return cache


@torch.no_grad()
def generate(model, prompt_embeds: torch.Tensor, mask: torch.Tensor | None, opts: TextSampling,
             on_token: Callable[[int], None] | None = None, keep_logits: bool = False,
             cache=None, constraint: LogitsProcessor | None = None,
             on_chunk: Callable[[], None] | None = None) -> DecodedText:
    """Decode from a prompt given as embeddings ``(1, L, H)`` with its boolean mask ``(1, 1, L, L)``.

    ``model`` is a :class:`~showo2_cli.modeling.showo2.Showo2Model`. ``on_token`` is called with
    each new id as soon as it is chosen (for streaming); when it returns true, decoding stops
    there (``stopped``: how stop strings end an answer). Stops at any of ``opts.stop_ids``; the
    stop token is recorded in ``token_ids``. ``cache``: a prompt head already run (:func:`prefill`);
    ``prompt_embeds`` is then only the rest of the prompt and ``mask`` None (the rest attends
    causally to everything before it). The cache is cropped back to its head afterwards, so it
    serves the next question. ``constraint``: a logits processor holding the answer to a grammar
    (:func:`~showo2_cli.structured.constraint_for`, required when ``opts.json_schema`` is set).
    ``on_chunk``: called between two chunks of a prompt run in chunks (:func:`run_prompt`).
    """
    opts.validate()
    if opts.json_schema is not None and constraint is None:
        raise ValueError("opts.json_schema needs constraint=structured.constraint_for(tokenizer, opts)")
    generator = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
    head = 0
    if cache is None:
        cache = DynamicCache()
    else:
        if mask is not None:
            raise ValueError("a prefilled cache takes the rest of the prompt with mask=None")
        head = cache.get_seq_length()
    try:
        return _decode(model, prompt_embeds, mask, opts, on_token, keep_logits, cache, head, generator, constraint,
                       on_chunk)
    finally:
        if head:
            truncate_cache(cache, head)


def _decode(model, prompt_embeds, mask, opts, on_token, keep_logits, cache, head, generator,
            constraint, on_chunk) -> DecodedText:
    if mask is None:  # the rest of a prompt after a prefilled head: causal over all of it
        hidden, cache = model.llm(prompt_embeds, mask, past_key_values=cache, use_cache=True, last_only=True)
    else:
        hidden, cache = run_prompt(model, prompt_embeds, mask, cache, on_chunk)
    logits = model.logits(hidden[:, -1]).float()[0]
    out = DecodedText()
    embed = model.showo.model.embed_tokens
    position = head + prompt_embeds.shape[1]
    processors = logits_processors(opts, logits.shape[-1], constraint)
    # an answer decoded with others (a server's --parallel): its steps run in their batched call
    batch = CURRENT_BATCH.get() if not head and opts.max_new_tokens > 1 else None
    row = batch.join(cache, position, position + opts.max_new_tokens) if batch is not None else None
    try:
        for step in range(opts.max_new_tokens):
            if keep_logits:
                out.step_logits.append(logits.cpu())
            token = choose_token(logits, opts, generator, out.token_ids, processors)
            out.token_ids.append(token)
            if on_token is not None and on_token(token):  # the caller saw its stop (a stop string)
                out.stopped = True
                break
            if token in opts.stop_ids:
                out.stopped = True
                break
            if step == opts.max_new_tokens - 1:
                break
            if row is not None:
                logits = row.step(token)
                continue
            ids = torch.tensor([[token]], device=prompt_embeds.device)
            pos = torch.tensor([[position]], device=prompt_embeds.device)
            hidden, cache = model.llm(embed(ids), None, position_ids=pos, past_key_values=cache, use_cache=True)
            logits = model.logits(hidden[:, -1]).float()[0]
            position += 1
    finally:
        if row is not None:
            row.leave()
    return out


@torch.no_grad()
def generate_uncached(model, prompt_embeds: torch.Tensor, mask: torch.Tensor, opts: TextSampling) -> DecodedText:
    """The official decoding loop: the whole sequence is recomputed for every new token, the mask
    extended by one causal row and column. O(n^2); kept as the reference for tests and benchmarks."""
    from .modeling.attention import extend_mask_for_decoding

    opts.validate()
    generator = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
    embeds, out = prompt_embeds, DecodedText()
    embed = model.showo.model.embed_tokens
    processors = None
    for _ in range(opts.max_new_tokens):
        hidden, _ = model.llm(embeds, mask)
        logits = model.logits(hidden[:, -1]).float()[0]
        out.step_logits.append(logits.cpu())
        processors = logits_processors(opts, logits.shape[-1]) if processors is None else processors
        token = choose_token(logits, opts, generator, out.token_ids, processors)
        out.token_ids.append(token)
        if token in opts.stop_ids:
            out.stopped = True
            break
        embeds = torch.cat([embeds, embed(torch.tensor([[token]], device=embeds.device))], dim=1)
        mask = extend_mask_for_decoding(mask, 1)
    return out
