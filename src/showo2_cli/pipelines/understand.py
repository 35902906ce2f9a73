"""Understanding: answers about an image or a video (spec §8.2-8.3), streamed token by token."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch

from ..dialogue import answer_room, check_streamer, encode_media, ending
from ..errors import UsageError
from ..loading import Showo2, require_model
from ..modeling.attention import omni_attention_mask
from ..options import CaptionOptions, seed_from_torch, unused_sampling_note
from ..runtime import cpu_by_default
from ..sequences import ASSISTANT_PREFIX, SYSTEM_PROMPT, USER_PREFIX, understanding_layout
from ..specs import VIDEO_UND
from ..structured import constraint_for
from ..text_decoding import TextStream, generate, prefill, shared_prefix_length
from ..tokenizer import encode_text, encode_user_text
from .progress import Progress, noop

# ---- understanding ----------------------------------------------------------------------------

@dataclass
class CaptionResult:
    kind: str  # "image" or "video"
    questions: list[str]
    answers: list[str]
    token_counts: list[int]
    seconds: float
    frames: int
    options: dict
    #: the VAE tiles the media was encoded in (tile height, width, stride height, width in pixels;
    #: ``--vae-tiling on`` and frames larger than a tile), None when encoded whole: tiles blend
    #: their seams, so the latents the answers come from differ, and the record says so
    vae_tiles: list[int] | None = None
    #: what the command line says of the call on stderr (sampling options a greedy decode does not
    #: use, a video given to a checkpoint not trained for video understanding), one line each
    notices: list[str] = field(default_factory=list)


def check_caption_memory(model: Showo2, frames: int, side: int, max_memory_gb: float | None = None,
                         video: bool = True) -> float:
    """Refuse (:class:`ResourceError`) a question about an image or a video whose frames and
    sequence would not fit: the decoded frames (uint8 and float32 pixels) plus the larger of the
    VAE encoding one frame (the frames are encoded one at a time) and, for a video, one forward over
    every frame's tokens (an image's forward is the answer's: :func:`check_answer_memory`). The VAE's
    ``tiling`` is counted: ``auto`` encodes in tiles a frame that fits only so (:func:`caption_memory`)."""
    return caption_memory(model, frames, side, max_memory_gb, video)[0]


def caption_memory(model: Showo2, frames: int, side: int, max_memory_gb: float | None = None,
                   video: bool = True) -> tuple[float, bool]:
    """:func:`check_caption_memory`, and whether the VAE encodes the frames in tiles
    (:func:`~showo2_cli.runtime.pick_tiling` of the VAE's ``tiling``, as ``encode`` and generation pick it)."""
    vae = model.vae
    return check_understanding_memory(model.spec, model.dtype, frames, side, video, model.memory_limit(max_memory_gb),
                                      model.network.device, None if vae is None else vae.base_dim,
                                      understanding_weights(model), None if vae is None else vae.dtype,
                                      "off" if vae is None else vae.tiling, None if vae is None else vae.tile)


def check_understanding_memory(spec, dtype: torch.dtype, frames: int, side: int, video: bool,
                               max_memory_gb: float | None, device, vae_base_dim: int | None,
                               weights: tuple[float, float], vae_dtype: torch.dtype | None = None,
                               tiling: str = "off", tile: tuple[int, int, int, int] | None = None,
                               ) -> tuple[float, bool]:
    """:func:`check_caption_memory` of a model by its spec (``vae_base_dim`` None: no VAE), loaded or
    not: the command line's check before the load gives the loaded check's verdict and figures.
    Returns (the working memory counted, whether the VAE encodes in tiles of ``tile``: ``tiling`` on, or
    auto when only the tiled encode fits the limit)."""
    from ..modeling.vae import DEFAULT_TILE, encode_memory_bytes
    from ..runtime import check_memory, pick_tiling
    from .generate import estimate_memory_gb

    pixels = frames * side * side * 3 * (1 + 4 * 2)
    seq = frames * spec.und_video_pool ** 2 + 512
    forward = estimate_memory_gb(spec, 1, seq, 0, dtype=dtype, vae_base_dim=vae_base_dim or 96) if video else 0.0

    def need_gb(tiled: bool) -> float:
        encode = 0.0 if vae_base_dim is None else encode_memory_bytes(
            vae_base_dim, 1, side, side, torch.finfo(vae_dtype or dtype).bits // 8, tiled, tile or DEFAULT_TILE) / 1e9
        return pixels / 1e9 + max(encode, forward)

    whole, in_tiles = need_gb(False), need_gb(True)
    tiled = pick_tiling(tiling, whole, in_tiles, max_memory_gb, device, weights)
    advice = "lower --frames" if video else ""
    if tiling == "off" and in_tiles < whole:  # as encode and generation advise it
        advice = ", or ".join(filter(None, [advice, "tile the VAE with --vae-tiling auto"]))
    need = in_tiles if tiled else whole
    what = f"understanding {frames} frame(s) at {side}x{side}" if video else f"encoding an image at {side}x{side}"
    check_memory(need, what, max_memory_gb, device, advice, weights)  # (an image is read at the model's size)
    return need, tiled


def understanding_weights(model: Showo2, media: bool = True) -> tuple[float, float]:
    """The weights an answer runs (:func:`~showo2_cli.footprint.weights_gb`): the network without
    its flow head, and the VAE's encoder when its prompt holds media (``media``: a caption's
    always; a chat's or a request's only with an image or a video in it)."""
    from ..footprint import TEXT_PARTS, UNDERSTANDING_PARTS, weights_gb

    return weights_gb(model, *(UNDERSTANDING_PARTS if media else TEXT_PARTS))


def answer_memory_gb(model: Showo2, prompt_tokens: int, answer_tokens: int) -> float:
    """A rough upper bound (GB) of the memory one answer needs beyond the weights: the LLM's forward
    over the prompt (its attention, activations and mask grow with the prompt's square) plus the KV
    cache of prompt and answer (the answer's tokens run one at a time)."""
    from .generate import estimate_memory_gb

    spec = model.spec
    kv = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * (prompt_tokens + answer_tokens)
    return estimate_memory_gb(model, 1, prompt_tokens, 0, llm_only=True) + kv * model.dtype.itemsize / 1e9


def check_answer_memory(model: Showo2, prompt_tokens: int, answer_tokens: int, what: str,
                        max_memory_gb: float | None = None, advice: str = "", media: bool = True) -> float:
    """Refuse (:class:`ResourceError`) an answer whose prompt and answer would not fit the memory
    limit (:func:`~showo2_cli.runtime.check_memory`), before the prompt's mask is allocated; the
    weights counted are those of an answer about media, or about text alone (``media`` False: no
    VAE encoder, :func:`understanding_weights`)."""
    from ..runtime import check_memory

    need = answer_memory_gb(model, prompt_tokens, answer_tokens)
    check_memory(need, what, model.memory_limit(max_memory_gb), model.network.device, advice,
                 understanding_weights(model, media))
    model.network.load_heads("lm_head", judged=True)  # (a head left out on load: counted above)
    return need


@cpu_by_default
@torch.no_grad()
def caption(model: Showo2, source, options: CaptionOptions | None = None,
            on_text: Callable[[int, str], None] | None = None, progress: Progress | None = None,
            on_done: Callable[[int, str], None] | None = None, streamer=None) -> CaptionResult:
    """Answer questions about an image or a video (one fresh prompt per question, no history):
    a path, a PIL image, an array or tensor, or a video's frames (:func:`~showo2_cli.dialogue.encode_media`).

    ``on_text(i, piece)`` receives answer ``i``'s text as it is produced (for streaming) and
    ``on_done(i, answer)`` the finished answer. ``streamer``: transformers' streaming object (a
    ``TextStreamer``, a ``TextIteratorStreamer`` read in another thread, or anything with ``put``
    and ``end``), fed as ``generate(streamer=)`` feeds it: the prompt's ids ``(1, L)`` (which
    ``skip_prompt=True`` skips), each new id ``(1,)`` (the stop token too), then ``end()``, also
    when the call fails; one question a call, as transformers' streamers take one sequence.
    """
    check_streamer(streamer)
    with ending(streamer):  # a refused call ends the streamer too: a thread reading it would wait for ever
        require_model(model)
        if options is not None and not isinstance(options, CaptionOptions):
            raise TypeError(f"options must be a CaptionOptions, got {type(options).__name__}")
        opts = options or CaptionOptions()
        opts.validate()
        if opts.seed is None and opts.draws:  # drawn answers or VAE noise: the seed is drawn (from torch's
            # generator, so torch.manual_seed repeats a run) and recorded in the result's options
            opts = replace(opts, seed=seed_from_torch())
        if streamer is not None and len(opts.questions) > 1:
            raise UsageError(f"a streamer takes one answer, got {len(opts.questions)} questions: ask them one at "
                             "a time (or use on_text(i, piece))")
        return _caption(model, source, opts, on_text, progress, on_done, streamer)


def _caption(model: Showo2, source, opts: CaptionOptions, on_text, progress, on_done, streamer) -> CaptionResult:
    progress = progress or noop
    spec, net = model.spec, model.network
    tokenizer, tokens = model.require_tokenizer(), model.tokens
    start = time.perf_counter()
    system, user, assistant = (encode_text(tokenizer, s) for s in (SYSTEM_PROMPT, USER_PREFIX, ASSISTANT_PREFIX))
    asked = [encode_user_text(tokenizer, q) for q in opts.questions]
    for ids in asked:  # the text alone past the context: refused before the media are read (bos, boi, the
        # time token, eoi: the least a prompt holds around its visual tokens)
        answer_room(4 + len(system) + len(user) + len(ids) + len(assistant), opts.max_new_tokens,
                    spec.max_position_embeddings, counted="before their media")
    progress("encoding", 0, 1)
    media = encode_media(model, source, opts)  # the one media encoder (chat and server use it too)
    kind, visual, official_len, frames = media.kind, media.tokens, media.official_len, media.frames
    progress("encoding", 1, 1)
    notices = [note for note in (unused_sampling_note(opts), video_note(model, kind)) if note]
    questions = opts.questions or ["Describe the image." if kind == "image" else "Describe the video."]
    asked = asked or [encode_user_text(tokenizer, questions[0])]
    newline = encode_text(tokenizer, "\n")
    layouts, limits = [], []
    for ids in asked:  # every prompt fits (or the call is refused) before any answer is made
        layouts.append(understanding_layout(ids, visual.shape[0], tokens, system, user, assistant,
                                            mask_mode=opts.mask_mode or spec.und_mask_mode,
                                            template=opts.template or spec.und_template, newline=newline,
                                            official_block_len=official_len))
        limit, shortened = answer_room(layouts[-1].seq_len, opts.max_new_tokens, spec.max_position_embeddings)
        limits.append(limit)
        if shortened and shortened not in notices:
            notices.append(shortened)
    answers, counts = [], []
    stop = (tokens.end,)
    head = head_len = None  # the image part of the prompt, run once for every question
    for i, (layout, limit) in enumerate(zip(layouts, limits, strict=True)):
        check_answer_memory(model, layout.seq_len, limit, f"answering a prompt of {layout.seq_len} tokens",
                            opts.max_memory_gb, "ask a shorter question")
        embeds, _ = net.embed_inputs(layout.input_ids, [[visual]], layout.slots, torch.ones(1))
        mask = omni_attention_mask(layout.blocks, layout.seq_len, device=net.device)
        if len(questions) > 1 and head_len is None:
            head_len = shared_prefix_length(layout)  # the same for every question (0: none to share)
            if head_len:
                head = prefill(net, embeds[:, :head_len], mask[..., :head_len, :head_len])
        if head is not None:
            embeds, mask = embeds[:, head_len:], None
        stream = TextStream(tokenizer, stop, opts.stop_strings,
                            on_text=None if on_text is None else lambda piece, i=i: on_text(i, piece))

        if streamer is not None:
            streamer.put(layout.input_ids.cpu())

        def on_token(tok: int, i=i, stream=stream, limit=limit) -> bool:
            if streamer is not None:
                streamer.put(torch.tensor([tok]))
            stopped = stream.push(tok)  # true once a stop string appeared: the answer ends there
            progress(f"answer {i + 1}/{len(questions)}", len(stream.produced), limit)
            return stopped

        sampling = replace(opts.sampling(), seed=None if opts.seed is None else opts.seed + i, stop_ids=stop,
                           max_new_tokens=limit)
        out = generate(net, embeds, mask, sampling, on_token=on_token, cache=head,
                       constraint=constraint_for(tokenizer, sampling))
        answers.append(stream.finish())
        counts.append(len(out.token_ids))
        if on_done is not None:
            on_done(i, answers[-1])
    return CaptionResult(kind, questions, answers, counts, time.perf_counter() - start, frames, asdict(opts),
                         None if media.vae_tiles is None else list(media.vae_tiles), notices)


def supports_video_understanding(model: Showo2) -> bool:
    return model.spec.supports(VIDEO_UND)


def video_note(model: Showo2, kind: str) -> str | None:
    """The note for a video (``kind``) given to a checkpoint not trained for video understanding
    (``caption``, a chat's or the server's attached media), or None."""
    if kind == "video" and not supports_video_understanding(model):
        return "note: this checkpoint was not trained for video understanding (use a -w-video-und model)"
    return None
