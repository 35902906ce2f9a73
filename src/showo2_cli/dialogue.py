"""Multi-turn understanding: media encoding, the repeated chat layout and one streamed answer.

:func:`~showo2_cli.pipelines.caption` answers each question in a fresh prompt; a chat
needs the earlier turns in the prompt. The three pieces here are the ones ``caption`` has inline,
made reusable, so :class:`showo2_cli.chat.Conversation` and the server build their prompts with
the same code as the single-question path:

* :func:`encode_media`: an image or video (a path, or an image in memory) to the model's visual
  tokens, exactly as ``caption`` encodes its media;
* :func:`conversation_layout`: the prompt of a whole conversation. Its first turn is
  :func:`~showo2_cli.sequences.understanding_layout` itself (the checkpoint's template and mask
  mode, so one question gives the ``caption`` prompt token for token); every answer is followed
  by ``<|im_end|>`` and every later turn is the stage-2 (training) ChatML form
  ``\\n<|im_start|>user\\n [visual blocks \\n] question <|im_end|>\\n<|im_start|>assistant\\n``;
* :func:`generate_answer`: the KV-cached decoding of ``caption`` with its streaming text
  callback, plus cancellation (a :class:`threading.Event` checked at every token).

``caption`` encodes its media with :func:`encode_media` too. (Its prompt and decoding stay its
own: it answers several questions over one shared image prefix.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import media as M
from .decoding_batch import let_others_step
from .errors import ContextTooLong, Showo2Error, UsageError
from .loading import Showo2
from .modeling.attention import omni_attention_mask
from .options import CaptionOptions, TextSampling
from .runtime import cpu_by_default
from .sequences import (
    ASSISTANT_PREFIX,
    SYSTEM_PROMPT,
    USER_PREFIX,
    Layout,
    SpecialTokens,
    understanding_layout,
)
from .structured import constraint_for
from .text_decoding import TextStream, generate
from .tokenizer import encode_text, encode_user_text

#: The system prompt's text (what :data:`SYSTEM_PROMPT` wraps in ``system\\n ... <|im_end|>``).
DEFAULT_SYSTEM = SYSTEM_PROMPT.removeprefix("system\n").removesuffix("<|im_end|>")


class Cancelled(Showo2Error):
    """The caller asked generation to stop (a closed connection, Ctrl-C)."""

    exit_code = 130
    kind = "interrupted"


@dataclass
class VisualInput:
    """One encoded image or video: its fused visual tokens (without the time token)."""

    kind: str  # "image" or "video"
    tokens: torch.Tensor  # (n, H) on the model's device
    official_len: int | None  # the official demos' mask block length for videos (None: 1 + n)
    frames: int
    source: str  # what to call it in transcripts: a path or "<image>"
    #: the VAE tiles its frames were encoded in (:meth:`~showo2_cli.modeling.vae.WanVAE.tiles_used`), None: whole
    vae_tiles: tuple[int, int, int, int] | None = None

    @property
    def positions(self) -> int:
        """Sequence positions of its block content: the time token plus the visual tokens."""
        return 1 + int(self.tokens.shape[0])

    def describe(self) -> dict:
        return {"source": self.source, "kind": self.kind, "frames": self.frames, "tokens": self.positions,
                **({"vae_tiles": list(self.vae_tiles)} if self.vae_tiles is not None else {})}

    @property
    def released(self) -> bool:
        """Its tokens were let go (:meth:`release`): only their shape is left."""
        return self.tokens.device.type == "meta"

    def release(self) -> VisualInput:
        """The same record without its tokens' memory (a ``meta`` tensor of their shape and dtype):
        what a chat keeps of a medium that left its context, which the transcript still describes."""
        return self if self.released else replace(self, tokens=self.tokens.to("meta"))


@cpu_by_default
@torch.no_grad()
def encode_media(model: Showo2, source, options: CaptionOptions | None = None,
                 max_pixels: int | None = None, name: str | None = None) -> VisualInput:
    """Encode an image or a video for understanding, as :func:`~showo2_cli.pipelines.caption` does.

    ``source`` is a path (image or video, judged by content), an image in memory (PIL, array or
    tensor, read by dtype as diffusers reads it) or a video's frames (a list of images, or a
    ``(T, H, W, 3)`` array or tensor): :func:`~showo2_cli.media.read_media`. Images are resized and
    center-cropped to the model's resolution (or ``options.size``); videos are sampled to
    ``options.frames`` frames, each padded square, encoded alone and pooled.
    """
    opts = options or CaptionOptions()
    spec, net = model.spec, model.network
    vae = model.require_vae()
    side = opts.size or spec.resolution
    if side % spec.latent_multiple:
        raise UsageError(f"--size must be a multiple of {spec.latent_multiple}, got {side}")
    from PIL import Image

    count = opts.frames or spec.und_video_frames
    in_memory = None
    if isinstance(source, (str, os.PathLike)):
        kind = M.probe_kind(source, max_pixels)
        label = name or os.fspath(source)
    else:
        in_memory = M.read_media(source, num_frames=count, max_pixels=max_pixels)
        kind, label = in_memory.kind, name or in_memory.source
    from .pipelines.understand import caption_memory  # (that module imports this one)

    if kind == "image":  # checked before the VAE encodes it; tiled where only tiles fit (--vae-tiling auto)
        tiled = caption_memory(model, 1, side, opts.max_memory_gb, video=False)[1]
        img = Image.fromarray(in_memory.frames[0]) if in_memory is not None else \
            M.read_image(source, max_pixels=max_pixels, min_side=side)  # (a photo over the limit: reduced)
        img = M.resize_center_crop(img, side)
        pixels = M.frames_to_tensor(np.asarray(img)[None])[None].to(vae.device)  # (1,3,1,H,W)
        latents = _vae_encode(vae, pixels, opts, _noise_generator(opts), tiled)[:, :, 0]
        visual = net.encode_visual(latents, understanding=True).fused[0]
        return VisualInput("image", visual, None, 1, label, vae.tiles_used(side, side, tiled))
    tiled = caption_memory(model, count, side, opts.max_memory_gb)[1]  # before any frame is decoded
    from .runtime import decode_budget

    def pad(frame: np.ndarray) -> np.ndarray:
        return np.asarray(M.resize_and_pad(Image.fromarray(frame), side))

    if in_memory is not None:
        padded = np.stack([pad(f) for f in in_memory.frames])
    else:  # each frame padded as it is decoded: 32 frames of a 4K video are never held whole
        padded = M.read_video(source, num_frames=count, max_pixels=max_pixels,
                              max_bytes=decode_budget(model.memory_limit(opts.max_memory_gb)), fit=pad).frames
    # a clip shorter than the frames asked for gives repeated frames: with the posterior mean (a
    # function of the pixels) each distinct frame is encoded once, and its tokens serve every repeat
    repeats = None if opts.vae_sample else distinct_frames(padded)
    index = None
    if repeats is not None:
        keep, index = repeats
        padded = padded[keep]
    pixels = M.frames_to_tensor(padded).permute(1, 0, 2, 3)[:, :, None]  # (K,3,1,H,W)
    pixels = pixels.to(vae.device)
    # one generator for all the frames: frame k's noise is the k-th slice of one (K, ...) draw, as the
    # official demo's single ``randn_like`` over its batch of K one-frame videos (never one draw repeated)
    gen = _noise_generator(opts)
    latents = []
    for i in range(pixels.shape[0]):
        let_others_step()  # (a server's answers decoding meanwhile take a step before each frame)
        latents.append(_vae_encode(vae, pixels[i:i + 1], opts, gen, tiled))
    latents = torch.cat(latents)[:, :, 0]
    visual = net.pooled_frame_tokens(latents, spec.und_video_pool, frame_index=index)
    return VisualInput("video", visual, spec.config_tokens + 1, count, label, vae.tiles_used(side, side, tiled))


def distinct_frames(frames: np.ndarray) -> tuple[list[int], torch.Tensor] | None:
    """The repeats among frames ``(K, H, W, 3)``: (the position of each distinct frame's first
    appearance, each frame's index among those ``(K,)``); None when every frame is distinct."""
    first: dict[bytes, int] = {}
    keep: list[int] = []
    index = []
    for k, frame in enumerate(frames):
        key = frame.tobytes()
        if key not in first:
            first[key] = len(keep)
            keep.append(k)
        index.append(first[key])
    return None if len(keep) == len(index) else (keep, torch.tensor(index))


def _noise_generator(opts: CaptionOptions) -> torch.Generator | None:
    """The generator of the stochastic VAE sample (``vae_sample``), seeded by the options' seed (0 if none)."""
    if not opts.vae_sample:
        return None
    return torch.Generator(device="cpu").manual_seed(opts.seed if opts.seed is not None else 0)


def _vae_encode(vae, pixels: torch.Tensor, opts: CaptionOptions, gen: torch.Generator | None,
                tiled: bool) -> torch.Tensor:
    """The posterior mean, or the official demos' stochastic sample (``vae_sample``, noise drawn from
    ``gen``: a video's frames draw theirs in turn from one generator), as ``caption``; in tiles when ``tiled``."""
    return vae.encode(pixels, sample=opts.vae_sample, generator=gen, tiled=tiled).to(vae.device)


@dataclass
class TurnTokens:
    """One turn of a conversation as token ids: its media, its question and (if answered) its answer."""

    question: list[int] | None  # None: an assistant message that opens the conversation (a greeting)
    visuals: Sequence[VisualInput] = ()
    answer: list[int] | None = None  # None: the turn being asked (the last one)
    prefix: Sequence[int] = ()  # the turn being asked: the start of its answer, which the model continues


@dataclass
class PromptPieces:
    """The fixed token pieces of the chat template, encoded once per model."""

    tokens: SpecialTokens
    system: list[int]
    user: list[int]
    assistant: list[int]
    newline: list[int]

    @classmethod
    def of(cls, model: Showo2, system: str | None = None) -> PromptPieces:
        tokenizer = model.require_tokenizer()
        return cls(model.tokens, system_ids(tokenizer, model.tokens, system),
                   encode_text(tokenizer, USER_PREFIX), encode_text(tokenizer, ASSISTANT_PREFIX),
                   encode_text(tokenizer, "\n"))


def system_ids(tokenizer, tokens: SpecialTokens, system: str | None) -> list[int]:
    """The system turn (after ``<|im_start|>``): exactly :data:`SYSTEM_PROMPT` for the default text."""
    if system is None or system == DEFAULT_SYSTEM:
        return encode_text(tokenizer, SYSTEM_PROMPT)
    return encode_user_text(tokenizer, "system\n" + system) + [tokens.eos]


def _append_turn(ids: list[int], slots: list, blocks: list, turn: TurnTokens, pieces: PromptPieces,
                 mask_mode: str, stage2: bool) -> None:
    """Append ``user_prefix [boi (time) visual eoi]* [\\n] question [eos] assistant_prefix`` (a
    greeting, with no question: ``assistant_prefix`` alone)."""
    tk = pieces.tokens
    if turn.question is None:
        ids += pieces.assistant
        return
    ids += pieces.user
    for v in turn.visuals:
        time_pos = len(ids) + 1
        ids += [tk.boi] + [tk.img_pad] * v.positions + [tk.eoi]
        slots.append([time_pos, v.positions])
        if mask_mode == "official":
            blocks.append([time_pos + 1, v.official_len if v.official_len is not None else v.positions])
        else:
            blocks.append([time_pos, v.positions])
    if turn.visuals and stage2:
        ids += pieces.newline
    ids += turn.question
    if stage2:
        ids.append(tk.eos)
    ids += pieces.assistant


def conversation_layout(turns: Sequence[TurnTokens], pieces: PromptPieces, mask_mode: str = "official",
                        template: str = "official") -> tuple[Layout, list[torch.Tensor | None]]:
    """The prompt of a conversation (one row) and its visual inputs in slot order.

    The first turn follows the checkpoint's ``template`` and ``mask_mode``; with one medium it is
    built by :func:`~showo2_cli.sequences.understanding_layout`, so a one-turn conversation is the
    ``caption`` prompt exactly. Answers end with ``<|im_end|>``; later turns use the stage-2 form.
    A first turn without a question (an assistant greeting) is ``<|im_start|>assistant\\n ...
    <|im_end|>`` after the system turn, as Qwen2.5's ChatML has it. Returns ``(layout, visuals)``; ``layout.slots``/``blocks`` are ``(1, M, 2)`` for M media.
    """
    if not turns:
        raise UsageError("a conversation needs at least one question")
    tk = pieces.tokens
    ids: list[int] = [tk.bos, *pieces.system]
    slots: list[list[int]] = []
    blocks: list[list[int]] = []
    visuals: list[torch.Tensor | None] = []
    for k, turn in enumerate(turns):
        if turn.question is None and (k > 0 or turn.answer is None or turn.visuals):
            raise UsageError("only the first turn may be an assistant message without a question, with no media")
        if k == 0 and len(turn.visuals) == 1 and turn.question is not None:
            v = turn.visuals[0]
            first = understanding_layout(turn.question, v.positions - 1, tk, pieces.system, pieces.user,
                                         pieces.assistant, mask_mode=mask_mode, template=template,
                                         newline=pieces.newline, official_block_len=v.official_len)
            ids = first.input_ids[0].tolist()
            slots.append(first.slots[0, 0].tolist())
            blocks.append(first.blocks[0, 0].tolist())
        else:
            _append_turn(ids, slots, blocks, turn, pieces, mask_mode, stage2=k > 0 or template == "training")
        visuals += [v.tokens for v in turn.visuals]
        if turn.answer is not None:
            ids += list(turn.answer) + [tk.eos]
        elif k != len(turns) - 1:
            raise UsageError("only the last turn of a conversation may be unanswered")
    if turns[-1].answer is not None:
        raise UsageError("the last turn of a conversation must be the question to answer")
    if any(t.prefix for t in turns[:-1]):
        raise UsageError("only the turn being asked may have an answer prefix")
    ids += list(turns[-1].prefix)  # a reply to continue (prefill): the answer goes on from it
    shape = (1, len(slots), 2)
    slots_t = torch.tensor([slots], dtype=torch.long) if slots else torch.zeros(shape, dtype=torch.long)
    blocks_t = torch.tensor([blocks], dtype=torch.long) if blocks else torch.zeros(shape, dtype=torch.long)
    return Layout(torch.tensor([ids], dtype=torch.long), slots_t, blocks_t), visuals


def prompt_length(turns: Sequence[TurnTokens], pieces: PromptPieces, template: str = "official") -> int:
    """Tokens of :func:`conversation_layout`'s prompt, counted without building tensors."""
    n = 1 + len(pieces.system)
    for k, turn in enumerate(turns):
        if turn.question is None:  # a greeting: the assistant turn alone
            n += len(pieces.assistant) + len(turn.answer or []) + 1
            continue
        stage2 = k > 0 or template == "training"
        n += len(pieces.user) + sum(v.positions + 2 for v in turn.visuals) + len(turn.question)
        n += len(pieces.assistant) + (len(pieces.newline) if turn.visuals and stage2 else 0) + int(stage2)
        if turn.answer is not None:
            n += len(turn.answer) + 1
    return n + len(turns[-1].prefix) if turns else n


def answer_room(prompt_tokens: int, max_new_tokens: int, context: int, refuse: bool = False,
                counted: str = "with their media") -> tuple[int, str | None]:
    """The answer's token budget in a ``context`` of positions after a prompt of ``prompt_tokens``,
    and the notice when it is shorter than ``max_new_tokens`` (None otherwise). A prompt that leaves
    no room, or (``refuse``: a request that set its answer's length) less than ``max_new_tokens``,
    is :class:`~showo2_cli.errors.ContextTooLong`, with OpenAI's and vLLM's sentences (clients such
    as LiteLLM's fallbacks recognise an overflow by them); ``counted`` says what the count holds.
    The one rule of a caption, a chat turn and a server request."""
    room = context - prompt_tokens
    if room < 1:
        raise ContextTooLong(f"This model's maximum context length is {context} tokens. However, your "
                             f"messages resulted in {prompt_tokens} tokens ({counted}). Please reduce the "
                             "length of the messages.")
    if refuse and room < max_new_tokens:
        raise ContextTooLong(f"This model's maximum context length is {context} tokens. However, you "
                             f"requested {prompt_tokens + max_new_tokens} tokens ({prompt_tokens} in the messages, "
                             f"{max_new_tokens} in the completion). Please reduce the length of the messages "
                             "or completion.")
    if room < max_new_tokens:
        return room, f"the answer is limited to {room} tokens by the context budget of {context}"
    return max_new_tokens, None


@dataclass
class Answer:
    text: str
    token_ids: list[int]  # without the stop token
    stopped: bool  # ended by <|im_end|> (else: max_new_tokens reached)
    prompt_tokens: int
    generated: int = 0  # tokens the model produced (those a stop string cut included), the stop token not


def check_streamer(streamer) -> None:
    """A ``streamer=`` must be None or transformers' kind of streaming object: ``put`` and ``end``."""
    if streamer is not None and not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise TypeError(f"streamer must have put() and end() (transformers' TextStreamer), got "
                        f"{type(streamer).__name__}")


@contextmanager
def ending(streamer):
    """Call ``streamer.end()`` when the block is left, however (a reader thread of a
    ``TextIteratorStreamer`` waits for it); nothing for no streamer."""
    if streamer is None:
        yield
        return
    try:
        yield
    finally:
        streamer.end()


@cpu_by_default
@torch.no_grad()
def generate_answer(model: Showo2, layout: Layout, visuals: list[torch.Tensor], sampling: TextSampling,
                    on_text: Callable[[str], None] | None = None,
                    cancel: threading.Event | None = None, prefix: Sequence[int] = (),
                    prefix_spaced: bool = False, streamer=None) -> Answer:
    """Decode one answer from a conversation prompt (greedy unless ``sampling`` says otherwise).

    ``on_text(piece)`` receives the answer's text as it grows, the pieces adding up to the
    returned text (:class:`~showo2_cli.text_decoding.TextStream`); when ``cancel`` is set,
    :class:`Cancelled` is raised at the next token. ``sampling.stop_strings`` end the answer where
    one first appears (the answer is the text before it). ``prefix``: the ids of the answer's
    start, which the layout ends with (a reply being continued); the text is what follows it
    (``prefix_spaced``: the given start ended in whitespace, left out of ``prefix``).
    ``streamer`` (checked by :func:`check_streamer`) is fed as ``generate(streamer=)`` feeds
    it: the prompt's ids ``(1, L)``, then each new id ``(1,)``; the caller calls its ``end()``.
    """
    net, tokenizer, tokens = model.network, model.require_tokenizer(), model.tokens
    stop = (tokens.end,)
    sampling = replace(sampling, stop_ids=stop)
    sampling.validate()
    if sampling.json_schema is not None and prefix:
        raise UsageError("a JSON schema holds a whole answer: it cannot continue a given start of one")
    constraint = constraint_for(tokenizer, sampling)
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")
    embeds, _ = net.embed_inputs(layout.input_ids, [visuals], layout.slots, torch.ones(1))
    mask = omni_attention_mask(layout.blocks, layout.seq_len, device=net.device)
    stream = TextStream(tokenizer, stop, sampling.stop_strings, on_text, head_ids=prefix, head_spaced=prefix_spaced)

    def check() -> None:  # (between a long prompt's chunks too: a client that left stops its prompt)
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")

    def on_token(tok: int) -> bool:
        check()
        if streamer is not None:
            streamer.put(torch.tensor([tok]))
        return stream.push(tok)

    if streamer is not None:
        streamer.put(layout.input_ids.cpu())
    out = generate(net, embeds, mask, sampling, on_token=on_token, constraint=constraint, on_chunk=check)
    text = stream.finish()
    # a stop string cut the answer: its ids are the kept text's; else the model's own ids
    ids = encode_user_text(tokenizer, text) if stream.cut is not None else stream.produced
    return Answer(text, ids, bool(out.stopped), layout.seq_len, len(stream.produced))


__all__ = ["Answer", "Cancelled", "DEFAULT_SYSTEM", "PromptPieces", "TextSampling", "TurnTokens",
           "VisualInput", "check_streamer", "conversation_layout", "encode_media", "encode_user_text",
           "generate_answer", "prompt_length", "system_ids"]
