"""Understanding and generation pipelines: plain functions over a loaded :class:`Showo2` bundle.

``caption`` (image/video understanding, spec §8.2-8.3), ``text_to_image`` (§8.1),
``text_to_video`` and ``image_to_video`` (§8.4). Nothing here prints: progress reaches the
caller through ``progress(phase, done, total)`` and streamed tokens through ``on_text``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import media as M
from .decoding import TextSampling, generate
from .errors import InputError, ModelError, UsageError
from .generation import generate_latents
from .loading import Showo2
from .modeling.attention import omni_attention_mask
from .sequences import ASSISTANT_PREFIX, SYSTEM_PROMPT, USER_PREFIX, generation_layout, understanding_layout
from .specs import I2V, T2I, T2V, VIDEO_UND
from .tokenizer import encode_text

Progress = Callable[[str, int, int], None]


def _noop(phase: str, done: int, total: int) -> None:
    pass


# ---- understanding ----------------------------------------------------------------------------

@dataclass
class CaptionOptions:
    questions: list[str] = field(default_factory=list)  # empty: "Describe the image/video."
    max_new_tokens: int = 300
    temperature: float = 0.0  # 0 = greedy, as the official demos
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    frames: int | None = None  # video: frames sampled uniformly (default: the spec's, 32 for the real models)
    mask_mode: str | None = None  # "official" (demo quirk) or "training"; None = what the checkpoint expects
    template: str | None = None  # "official" (demo prompt) or "training" (stage-2); None = the checkpoint's
    vae_sample: bool = False  # the official demos draw a stochastic VAE sample; default is the mean
    size: int | None = None  # pixels per side; default the model's resolution


@dataclass
class CaptionResult:
    kind: str  # "image" or "video"
    questions: list[str]
    answers: list[str]
    token_counts: list[int]
    seconds: float
    frames: int
    options: dict


#: Longest prompt or question accepted, in characters (the models see a few hundred tokens).
MAX_PROMPT_CHARS = 10_000


def _validate_caption(opts: CaptionOptions) -> None:
    TextSampling(opts.max_new_tokens, opts.temperature, opts.top_k, opts.top_p, opts.seed).validate()
    if opts.frames is not None and not 1 <= opts.frames <= 512:
        raise UsageError(f"--frames must be between 1 and 512, got {opts.frames}")
    for q in opts.questions:
        if not isinstance(q, str) or not q.strip():
            raise UsageError("empty question: give a question with some text (or none, to describe)")
        if len(q) > MAX_PROMPT_CHARS:
            raise UsageError(f"a question of {len(q)} characters is too long (at most {MAX_PROMPT_CHARS})")


@torch.no_grad()
def caption(model: Showo2, source: str | os.PathLike, options: CaptionOptions | None = None,
            on_text: Callable[[int, str], None] | None = None, progress: Progress | None = None,
            on_done: Callable[[int, str], None] | None = None) -> CaptionResult:
    """Answer questions about an image or a video (one fresh prompt per question, no history).

    ``on_text(i, piece)`` receives answer ``i``'s text as it is produced (for streaming) and
    ``on_done(i, answer)`` the finished answer.
    """
    opts = options or CaptionOptions()
    _validate_caption(opts)
    progress = progress or _noop
    spec, net = model.spec, model.network
    tokenizer, tokens = model.require_tokenizer(), model.tokens
    vae = model.require_vae()
    start = time.perf_counter()
    kind = M.probe_kind(source)
    side = opts.size or spec.resolution
    if side % spec.latent_multiple:
        raise UsageError(f"--size must be a multiple of {spec.latent_multiple}, got {side}")
    progress("encoding", 0, 1)
    if kind == "image":
        img = M.resize_center_crop(M.read_image(source), side)
        pixels = M.frames_to_tensor(np.asarray(img)[None])[None].to(vae.device)  # (1,3,1,H,W)
        latents = _vae_encode(vae, pixels, opts)[:, :, 0]
        visual = net.encode_visual(latents).fused[0]
        official_len = None
        frames = 1
    else:
        count = opts.frames or spec.und_video_frames
        video = M.read_video(source, num_frames=count)
        from PIL import Image

        padded = [np.asarray(M.resize_and_pad(Image.fromarray(f), side)) for f in video.frames]
        pixels = M.frames_to_tensor(np.stack(padded)).permute(1, 0, 2, 3)[:, :, None].to(vae.device)  # (K,3,1,H,W)
        latents = torch.cat([_vae_encode(vae, pixels[i:i + 1], opts) for i in range(pixels.shape[0])])[:, :, 0]
        visual = net.pooled_frame_tokens(latents, spec.und_video_pool)
        official_len = spec.image_latent_grid ** 2 + 1  # the official demo keeps the image block length
        frames = count
    progress("encoding", 1, 1)
    _, time_token = net.time_embedding(torch.ones(1))
    questions = opts.questions or ["Describe the image." if kind == "image" else "Describe the video."]
    system, user, assistant = (encode_text(tokenizer, s) for s in (SYSTEM_PROMPT, USER_PREFIX, ASSISTANT_PREFIX))
    newline = encode_text(tokenizer, "\n")
    answers, counts = [], []
    stop = (tokens.eos,)
    for i, question in enumerate(questions):
        layout = understanding_layout(encode_text(tokenizer, question), visual.shape[0], tokens, system, user, assistant,
                                      mask_mode=opts.mask_mode or spec.und_mask_mode,
                                      template=opts.template or spec.und_template, newline=newline,
                                      official_block_len=official_len)
        embeds = net.embed_sequence(layout.input_ids, [[visual]], layout.slots, time_token[:, None])
        mask = omni_attention_mask(layout.blocks, layout.seq_len, device=net.device)
        produced: list[int] = []
        shown = [""]

        def on_token(tok: int, i=i, produced=produced, shown=shown) -> None:
            if tok in stop:
                return
            produced.append(tok)
            text = tokenizer.decode(produced, skip_special_tokens=True)
            if on_text is not None and len(text) > len(shown[0]) and not text.endswith("\ufffd"):
                on_text(i, text[len(shown[0]):])
                shown[0] = text
            progress(f"answer {i + 1}/{len(questions)}", len(produced), opts.max_new_tokens)

        sampling = TextSampling(opts.max_new_tokens, opts.temperature, opts.top_k, opts.top_p,
                                None if opts.seed is None else opts.seed + i, stop)
        out = generate(net, embeds, mask, sampling, on_token=on_token)
        answer = tokenizer.decode([t for t in out.token_ids if t not in stop], skip_special_tokens=True)
        if on_text is not None and len(answer) > len(shown[0]):
            on_text(i, answer[len(shown[0]):])
        answers.append(answer.strip())
        counts.append(len(out.token_ids))
        if on_done is not None:
            on_done(i, answers[-1])
    return CaptionResult(kind, questions, answers, counts, time.perf_counter() - start, frames, asdict(opts))


def _vae_encode(vae, pixels: torch.Tensor, opts: CaptionOptions) -> torch.Tensor:
    gen = None
    if opts.vae_sample:
        gen = torch.Generator(device="cpu").manual_seed(opts.seed if opts.seed is not None else 0)
    return vae.encode(pixels, sample=opts.vae_sample, generator=gen).to(vae.device)


# ---- generation -------------------------------------------------------------------------------

@dataclass
class GenerateOptions:
    size: tuple[int, int] | None = None  # (height, width) in pixels; default the model's
    steps: int | None = None  # grid points (steps - 1 model calls); default the spec's (50)
    guidance: float | None = None  # default the spec's (5.0)
    shift: float | None = None  # default 3.0
    seed: int | None = None  # base seed; image k of prompt p uses seed + p*n + k
    num_per_prompt: int = 1
    batch_size: int = 4
    frames: int = 17  # videos: pixel frames (1+4k)
    method: str = "euler"
    noise: torch.Tensor | None = None  # exact starting noise (N, C, [T,] h, w) or one sample
    cache_prefix: bool = True  # reuse the text prefix's keys/values at every step
    max_memory_gb: float | None = None  # refuse jobs estimated to need more

    def resolved(self, model: Showo2, video: bool) -> GenerateOptions:
        spec = model.spec
        side = spec.video_resolution if video else spec.resolution
        out = GenerateOptions(**{**self.__dict__})
        out.size = self.size or (side, side)
        out.steps = spec.steps if self.steps is None else self.steps
        out.guidance = spec.guidance if self.guidance is None else self.guidance
        out.shift = spec.shift if self.shift is None else self.shift
        if out.seed is None:
            out.seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        return out

    def validate(self, spec=None) -> None:
        """Check every value; without a spec, only the values that do not depend on the model."""
        if spec is not None:
            h, w = self.size
            m = spec.latent_multiple
            if h % m or w % m or h <= 0 or w <= 0:
                raise UsageError(f"--size must be positive multiples of {m}, got {w}x{h}")
        if self.steps is not None and not 2 <= self.steps <= 10000:
            raise UsageError(f"--steps must be between 2 and 10000, got {self.steps}")
        if self.guidance is not None and (not math.isfinite(self.guidance) or not 0 <= self.guidance <= 100):
            raise UsageError(f"--guidance must be a number between 0 and 100, got {self.guidance}")
        if self.shift is not None and (not math.isfinite(self.shift) or self.shift <= 0):
            raise UsageError(f"--shift must be a positive number, got {self.shift}")
        if not 1 <= self.num_per_prompt <= 1000:
            raise UsageError(f"-n/--num-images must be between 1 and 1000, got {self.num_per_prompt}")
        if not 1 <= self.batch_size <= 1024:
            raise UsageError(f"--batch-size must be between 1 and 1024, got {self.batch_size}")
        if self.method not in ("euler", "heun"):
            raise UsageError(f"--sampler must be euler or heun, got {self.method}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed must be between 0 and 2^63-1, got {self.seed}")
        if self.max_memory_gb is not None and not (math.isfinite(self.max_memory_gb) and self.max_memory_gb >= 0):
            raise UsageError(f"--max-memory must be a number of GB >= 0 (0: no limit), got {self.max_memory_gb}")


@dataclass
class Generated:
    prompt: str
    prompt_index: int
    seed: int
    latents: torch.Tensor  # (C, [T,] h, w) float32
    frames: np.ndarray  # uint8 (T, H, W, 3)
    params: dict


def _text_budget(spec) -> int:
    """Prompt tokens the model was trained with (max_seq_len - visual positions - 4 at its resolution)."""
    visual = spec.tokens_per_frame(spec.resolution, spec.resolution) + 1
    return max(spec.max_seq_len - visual - 4, 16)


def estimate_memory_gb(model, rows: int, seq_len: int, video_tokens: int, *, dtype: torch.dtype | None = None,
                       vae_base_dim: int | None = None, latent_frames: int = 1) -> float:
    """A rough upper bound (GB) of the memory one generation job needs beyond the weights: the
    largest of one guided step's activations (``rows`` sequences of ``seq_len``: attention scores,
    hidden states, the mask) and the VAE decoding one output (``video_tokens`` latent positions
    over ``latent_frames`` frames, see :meth:`WanVAE.decode_memory_gb`), which run one after the
    other. ``model`` is a loaded :class:`Showo2` or a :class:`ModelSpec` (then give ``dtype``;
    the VAE is taken as the real Wan2.1 one, base_dim 96, unless ``vae_base_dim`` says)."""
    from .modeling.vae import decode_memory_bytes

    spec = model.spec if isinstance(model, Showo2) else model
    if dtype is None:
        dtype = model.dtype if isinstance(model, Showo2) else torch.float32
    if vae_base_dim is None:
        vae_base_dim = model.vae.base_dim if isinstance(model, Showo2) and model.vae is not None else 96
    bytes_per = torch.finfo(dtype).bits // 8
    width = max(spec.hidden_size, spec.head_hidden)
    attn = rows * max(spec.num_heads, spec.head_heads) * seq_len * seq_len * bytes_per
    acts = rows * seq_len * width * bytes_per * 12
    mask = rows * seq_len * seq_len
    t = max(latent_frames, 1)
    per_frame = max(video_tokens // t, 1)
    side = max(int(math.isqrt(per_frame)), 1)
    vae = decode_memory_bytes(vae_base_dim, t, side, max(per_frame // side, 1))
    return max(attn + acts + mask, vae) / 1e9


def generation_memory_gb(spec, dtype: torch.dtype, size: tuple[int, int], frames: int, video: bool, batch: int,
                         vae_base_dim: int = 96) -> float:
    """:func:`estimate_memory_gb` for ``batch`` outputs of ``size`` (height, width) pixels and
    ``frames`` pixel frames, with classifier-free guidance (two rows per output)."""
    h, w = size
    t_lat = 1 + (frames - 1) // spec.vae_temporal if video else 1
    visual = 1 + t_lat * spec.tokens_per_frame(h, w)
    seq_len = visual + 4 + _text_budget(spec)
    lat_h, lat_w = h // spec.vae_spatial, w // spec.vae_spatial
    return estimate_memory_gb(spec, 2 * max(batch, 1), seq_len, t_lat * lat_h * lat_w, dtype=dtype,
                              vae_base_dim=vae_base_dim, latent_frames=t_lat)


def check_generation_memory(spec, dtype: torch.dtype, size: tuple[int, int], frames: int, video: bool, batch: int,
                            max_memory_gb: float | None = None, device="cpu", vae_base_dim: int = 96) -> float:
    """Refuse (:class:`ResourceError`, the estimate in the message) a job that would not fit
    the memory limit (``max_memory_gb``, else ``$SHOWO2_MAX_MEMORY_GB``, else what is available
    on ``device``); return the estimate."""
    from .api import check_memory

    need = generation_memory_gb(spec, dtype, size, frames, video, batch, vae_base_dim)
    h, w = size
    what = (f"generating {batch} video(s) of {frames} frames at {w}x{h}" if video
            else f"generating {batch} image(s) at {w}x{h}")
    check_memory(need, what, max_memory_gb, device, "lower --size, --frames or --batch-size")
    return need


def seed_for(base: int, prompt_index: int, k: int, n: int) -> int:
    """Per-image seed: reproducible for one prompt regardless of batching or process sharding."""
    return (base + prompt_index * n + k) % 2**63


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


@torch.no_grad()
def _generate(model: Showo2, prompts: list[str], opts: GenerateOptions, video: bool, frames: int,
              first_frame: torch.Tensor | None, indices: list[int] | None, progress: Progress) -> list[Generated]:
    spec, net, vae = model.spec, model.network, model.require_vae()
    tokenizer, tokens = model.require_tokenizer(), model.tokens
    h, w = opts.size
    lat_h, lat_w = h // spec.vae_spatial, w // spec.vae_spatial
    t_lat = 1 + (frames - 1) // spec.vae_temporal if video else 1
    visual = 1 + t_lat * spec.tokens_per_frame(h, w)
    budget = _text_budget(spec)
    max_seq_len = visual + 4 + budget
    check_generation_memory(model.spec, model.dtype, (h, w), frames, video,
                            min(opts.batch_size, len(prompts) * opts.num_per_prompt), opts.max_memory_gb,
                            model.device, vae.base_dim)
    indices = list(range(len(prompts))) if indices is None else list(indices)
    if len(indices) != len(prompts):
        raise UsageError("one index per prompt is needed")
    jobs = [(p, i, k) for i, p in zip(indices, prompts, strict=True) for k in range(opts.num_per_prompt)]
    latent_shape = (spec.latent_channels, t_lat, lat_h, lat_w) if video else (spec.latent_channels, lat_h, lat_w)
    noise_all = None
    if opts.noise is not None:
        noise_all = opts.noise.float()
        if tuple(noise_all.shape) == latent_shape:
            noise_all = noise_all[None].expand(len(jobs), *latent_shape)
        if tuple(noise_all.shape[1:]) != latent_shape or noise_all.shape[0] not in (1, len(jobs)):
            raise InputError(f"--noise has shape {tuple(opts.noise.shape)}, expected {latent_shape} or "
                             f"({len(jobs)}, {', '.join(map(str, latent_shape))})")
        if noise_all.shape[0] == 1:
            noise_all = noise_all.expand(len(jobs), *latent_shape)
    results: list[Generated] = []
    total_steps = math.ceil(len(jobs) / opts.batch_size) * (opts.steps - 1)
    done_steps = 0
    for start in range(0, len(jobs), opts.batch_size):
        batch = jobs[start:start + opts.batch_size]
        ids = [encode_text(tokenizer, p.replace("\n", " ")) for p, _, _ in batch]
        layout = generation_layout(ids, visual, tokens, max_seq_len, video=video)
        seeds = [seed_for(opts.seed, i, k, opts.num_per_prompt) for _, i, k in batch]
        if noise_all is not None:
            noise = noise_all[start:start + len(batch)].clone()
        else:
            noise = torch.stack([_noise(latent_shape, s) for s in seeds])
        if first_frame is not None:
            noise[:, :, 0] = first_frame.float()

        def step(i, n, x, base=done_steps):
            progress("denoising", base + i, total_steps)

        latents = generate_latents(net, layout, noise, opts.guidance, opts.steps, opts.shift, method=opts.method,
                                   cache_prefix=opts.cache_prefix, first_frame_as_cond=first_frame is not None,
                                   callback=step)
        done_steps += opts.steps - 1
        progress("decoding", 0, len(batch))
        for j, (prompt, i, _k) in enumerate(batch):
            pixels = vae.decode(latents[j:j + 1].to(vae.device))[0].cpu()
            arr = M.tensor_to_frames(pixels)
            params = {"prompt": prompt, "seed": seeds[j], "steps": opts.steps, "guidance": opts.guidance,
                      "shift": opts.shift, "sampler": opts.method, "width": w, "height": h,
                      "model": model.files.name if model.files else spec.name}
            if video:
                params["frames"] = int(arr.shape[0])
            results.append(Generated(prompt, i, seeds[j], latents[j].cpu(), arr, params))
            progress("decoding", j + 1, len(batch))
    return results


def _check_prompts(prompts: list[str]) -> list[str]:
    if not prompts:
        raise UsageError("no prompt given")
    out = []
    for p in prompts:
        if not isinstance(p, str):
            raise UsageError("prompts must be text")
        if len(p) > MAX_PROMPT_CHARS:
            raise UsageError(f"a prompt of {len(p)} characters is too long (at most {MAX_PROMPT_CHARS})")
        out.append(p)
    return out


def _require(model: Showo2, task: str, what: str) -> None:
    if not model.spec.supports(task):
        name = model.files.name if model.files else model.spec.name
        raise ModelError(f"model '{name}' was not trained for {what} (no released Show-o2 checkpoint can do it); "
                         "use a checkpoint trained for it, e.g. --model demo")


def text_to_image(model: Showo2, prompts: list[str], options: GenerateOptions | None = None,
                  progress: Progress | None = None, indices: list[int] | None = None) -> list[Generated]:
    """Generate ``num_per_prompt`` images per prompt, in batches, with classifier-free guidance."""
    _require(model, T2I, "text-to-image")
    opts = (options or GenerateOptions()).resolved(model, video=False)
    opts.validate(model.spec)
    return _generate(model, _check_prompts(prompts), opts, False, 1, None, indices, progress or _noop)


def text_to_video(model: Showo2, prompts: list[str], options: GenerateOptions | None = None,
                  progress: Progress | None = None, indices: list[int] | None = None) -> list[Generated]:
    """Generate videos of ``options.frames`` frames (1+4k) per prompt."""
    _require(model, T2V, "text-to-video")
    opts = (options or GenerateOptions()).resolved(model, video=True)
    opts.validate(model.spec)
    _check_frames(opts.frames)
    return _generate(model, _check_prompts(prompts), opts, True, opts.frames, None, indices, progress or _noop)


def image_to_video(model: Showo2, image: str | os.PathLike, prompts: list[str], options: GenerateOptions | None = None,
                   progress: Progress | None = None, indices: list[int] | None = None) -> list[Generated]:
    """Animate an image: its clean latent is latent frame 0 and stays fixed (spec §6.5, §8.4)."""
    _require(model, I2V, "image-to-video")
    opts = (options or GenerateOptions()).resolved(model, video=True)
    opts.validate(model.spec)
    _check_frames(opts.frames)
    h, w = opts.size
    img = M.resize_center_crop(M.read_image(image), (h, w))
    vae = model.require_vae()
    pixels = M.frames_to_tensor(np.asarray(img)[None])[None].to(vae.device)
    first = vae.encode(pixels)[0, :, 0].cpu()
    return _generate(model, _check_prompts(prompts), opts, True, opts.frames, first, indices, progress or _noop)


def _check_frames(frames: int) -> None:
    if not M.is_valid_frames(frames):
        raise UsageError(f"frames must be 1+4k, got {frames}")
    if frames > 1 + 4 * 64:
        raise UsageError(f"at most {1 + 4 * 64} frames, got {frames}")


def supports_video_understanding(model: Showo2) -> bool:
    return model.spec.supports(VIDEO_UND)


__all__ = ["CaptionOptions", "CaptionResult", "GenerateOptions", "Generated", "caption", "text_to_image",
           "text_to_video", "image_to_video", "seed_for", "estimate_memory_gb", "generation_memory_gb",
           "check_generation_memory", "MAX_PROMPT_CHARS", "Path"]
