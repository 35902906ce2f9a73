"""Generation: text to image (spec §8.1), text to video and image to video (§8.4), by guided
flow matching through the flow head; plus the memory estimate every job is checked against."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import media as M
from ..decoding_batch import between_sampling_steps, generation_turn
from ..errors import InputError, ModelError, UsageError, non_finite, short
from ..loading import Showo2, require_model
from ..options import GenerateOptions, check_prompts, seed_for
from ..runtime import cpu_by_default
from ..sampling import StepCallback, StopSampling, check_schedule, generate_latents, uses_uncond
from ..sequences import generation_layout
from ..specs import I2V, T2I, T2V
from ..tokenizer import encode_user_text
from .latents import check_latent_values
from .progress import Progress, noop

# ---- generation -------------------------------------------------------------------------------

@dataclass
class Generated:
    prompt: str
    prompt_index: int
    seed: int | None  # None: started from given noise (``params['noise_row']``)
    latents: torch.Tensor  # (C, [T,] h, w) float32
    frames: np.ndarray  # uint8 (T, H, W, 3)
    params: dict

    def unused_prompt_notes(self) -> list[str]:
        """What of the prompts the model's sequence could not hold, one line each (the command
        line's notice, the pipeline's warning); empty when all of it was used. The lines name the
        prompt (its index among the run's prompts), so every output of one prompt has the same."""
        return [f"{what}{self.prompt_index} has {self.params[key]} tokens; the model's sequence "
                f"holds {self.params['prompt_tokens_used']}, so the rest was not used"
                for key, what in (("prompt_tokens", "prompt "), ("negative_prompt_tokens", "the negative prompt of prompt "))
                if key in self.params]

    def prompt_used(self, tokenizer) -> str:
        """The prompt as far as the model's sequence held it (the whole prompt when it fit): what a
        server answers as OpenAI's ``revised_prompt``, the prompt the image was made from."""
        if "prompt_tokens" not in self.params:
            return self.prompt
        ids = _encode_prompt(tokenizer, self.prompt)[:self.params["prompt_tokens_used"]]
        return tokenizer.decode(ids).rstrip("\ufffd")  # a character cut mid-way is not shown as one


def estimate_memory_gb(model, rows: int, seq_len: int, video_tokens: int, *, dtype: torch.dtype | None = None,
                       vae_base_dim: int | None = None, latent_frames: int = 1, vae_tiled: bool = False,
                       vae_tile: tuple[int, int, int, int] | None = None, llm_only: bool = False) -> float:
    """A rough upper bound (GB) of the memory one generation job needs beyond the weights: the
    largest of one guided step's activations (``rows`` sequences of ``seq_len``: attention scores,
    the hidden- and MLP-width activations of the widest layer, the mask) and the VAE decoding one
    output (``video_tokens`` latent positions over ``latent_frames`` frames, see
    :meth:`WanVAE.decode_memory_gb`), which run one after the
    other. ``model`` is a loaded :class:`Showo2` or a :class:`ModelSpec` (then give ``dtype``;
    the VAE is taken as the real Wan2.1 one, base_dim 96, unless ``vae_base_dim`` says;
    ``vae_tiled``: the decode runs in spatial tiles, of ``vae_tile`` (the loaded VAE's, else
    diffusers' default)). ``llm_only``: a forward of the LLM alone (answering text: the flow head
    does not run)."""
    from ..modeling.vae import DEFAULT_TILE, decode_memory_bytes

    spec = model.spec if isinstance(model, Showo2) else model
    if dtype is None:
        dtype = model.dtype if isinstance(model, Showo2) else torch.float32
    if vae_base_dim is None:
        vae_base_dim = model.vae.base_dim if isinstance(model, Showo2) and model.vae is not None else 96
    if vae_tile is None:
        vae_tile = model.vae.tile if isinstance(model, Showo2) and model.vae is not None else DEFAULT_TILE
    bytes_per = torch.finfo(dtype).bits // 8
    head = (0, 0, 0) if llm_only else (spec.head_hidden, spec.head_intermediate, spec.head_heads)
    width = max(spec.hidden_size, head[0])
    inner = max(spec.intermediate_size, head[1])
    attn = rows * max(spec.num_heads, head[2]) * seq_len * seq_len * bytes_per
    # Per position, the largest layer's transients: its SwiGLU MLP holds up to four tensors of the
    # intermediate width (gate, its activation, up, their product) beside about eight of the hidden
    # width (residual, norm, q/k/v with the kv heads repeated, attention and projection outputs).
    acts = rows * seq_len * (4 * inner + 8 * width) * bytes_per
    mask = rows * seq_len * seq_len
    t = max(latent_frames, 1)
    per_frame = max(video_tokens // t, 1)
    side = max(int(math.isqrt(per_frame)), 1)
    vae = decode_memory_bytes(vae_base_dim, t, side, max(per_frame // side, 1), bytes_per,  # (the VAE runs in
                              tiled=vae_tiled, tile=vae_tile)  # the model's dtype, as WanVAE.decode_memory_gb says)
    return max(attn + acts + mask, vae) / 1e9


def generation_memory_gb(spec, dtype: torch.dtype, size: tuple[int, int], frames: int, video: bool, batch: int,
                         vae_base_dim: int = 96, vae_tiled: bool = False,
                         vae_tile: tuple[int, int, int, int] | None = None, from_image: bool = False) -> float:
    """:func:`estimate_memory_gb` for ``batch`` outputs of ``size`` (height, width) pixels and
    ``frames`` pixel frames, with classifier-free guidance (two rows per output); ``from_image``:
    image to video, whose one latent frame, the image's, is not sampled (the network does not run:
    the VAE's decode alone, as :data:`~showo2_cli.footprint.STILL_PARTS` counts no head)."""
    h, w = size
    t_lat = spec.latent_frames(frames) if video else 1
    visual = 1 + t_lat * spec.tokens_per_frame(h, w)
    seq_len = visual + 4 + spec.text_budget
    lat_h, lat_w = h // spec.vae_spatial, w // spec.vae_spatial
    rows = 0 if from_image and video and t_lat == 1 else 2 * max(batch, 1)
    return estimate_memory_gb(spec, rows, seq_len, t_lat * lat_h * lat_w, dtype=dtype,
                              vae_base_dim=vae_base_dim, latent_frames=t_lat, vae_tiled=vae_tiled, vae_tile=vae_tile)


def generation_tiling(spec, dtype: torch.dtype, size: tuple[int, int], frames: int, video: bool, batch: int,
                      max_memory_gb: float | None = None, device="cpu", vae_base_dim: int = 96,
                      vae_tiling: str = "off", vae_tile: tuple[int, int, int, int] | None = None,
                      weights: tuple[float, float] = (0.0, 0.0), from_image: bool = False) -> bool:
    """Whether the job's VAE decode runs in tiles (:func:`showo2_cli.runtime.pick_tiling`)."""
    from ..runtime import pick_tiling

    args = (spec, dtype, size, frames, video, batch, vae_base_dim)
    return pick_tiling(vae_tiling, generation_memory_gb(*args, vae_tile=vae_tile, from_image=from_image),
                       generation_memory_gb(*args, vae_tiled=True, vae_tile=vae_tile, from_image=from_image),
                       max_memory_gb, device, weights, video and frames > 1)


def check_generation_memory(spec, dtype: torch.dtype, size: tuple[int, int], frames: int, video: bool, batch: int,
                            max_memory_gb: float | None = None, device="cpu", vae_base_dim: int = 96,
                            vae_tiling: str = "off", vae_tile: tuple[int, int, int, int] | None = None,
                            weights: tuple[float, float] = (0.0, 0.0), from_image: bool = False) -> float:
    """Refuse (:class:`ResourceError`, the estimate in the message) a job that would not fit
    the memory limit (``max_memory_gb``, else ``$SHOWO2_MAX_MEMORY_GB``, else what is available
    on ``device``) with the ``weights`` it runs (:func:`~showo2_cli.footprint.weights_gb`); return
    the estimate of its working memory (with a tiled decode when ``vae_tiling`` picks it;
    ``from_image``: image to video, :func:`generation_memory_gb`; a video's check adds the CPU
    heap's allowance, :func:`~showo2_cli.runtime.heap_allowance_gb`, not in the number returned)."""
    from ..runtime import check_memory

    tiled = generation_tiling(spec, dtype, size, frames, video, batch, max_memory_gb, device, vae_base_dim,
                              vae_tiling, vae_tile, weights, from_image)
    need = generation_memory_gb(spec, dtype, size, frames, video, batch, vae_base_dim, vae_tiled=tiled,
                                vae_tile=vae_tile, from_image=from_image)
    h, w = size
    what = (f"generating {batch} video(s) of {frames} frames at {w}x{h}" if video
            else f"generating {batch} image(s) at {w}x{h}")
    advice = "lower --size, --frames or --batch-size" if video else "lower --size or --batch-size"
    if vae_tiling == "off" and generation_memory_gb(spec, dtype, size, frames, video, batch, vae_base_dim,
                                                    vae_tiled=True, vae_tile=vae_tile, from_image=from_image) < need:
        advice += ", or tile the VAE with --vae-tiling auto"
    check_memory(need, what, max_memory_gb, device, advice, weights, video and frames > 1)
    return need


def _memory_args(model: Showo2, opts: GenerateOptions, frames: int, video: bool, count: int,
                 image: bool = False) -> tuple:
    """The arguments of :func:`check_generation_memory` and :func:`generation_tiling` for a run of
    ``count`` outputs (``image``: from an image, which the VAE's encoder encodes first)."""
    from ..footprint import generation_parts, weights_gb

    vae = model.require_vae()
    return (model.spec, model.dtype, tuple(opts.size), frames, video, min(opts.batch_size, count),
            model.memory_limit(opts.max_memory_gb), model.device, vae.base_dim, vae.tiling, vae.tile,
            weights_gb(model, *generation_parts(image, frames)), image)


def generation_latent_shape(spec, size: tuple[int, int], frames: int, video: bool) -> tuple[int, ...]:
    """The latents of one output: (C, T, h, w) for a video of ``frames`` frames, (C, h, w) for an image."""
    h, w = size[0] // spec.vae_spatial, size[1] // spec.vae_spatial
    if not video:
        return (spec.latent_channels, h, w)
    return (spec.latent_channels, spec.latent_frames(frames), h, w)


def noise_rows(noise: torch.Tensor, spec, opts: GenerateOptions, video: bool, frames: int, indices: list[int],
               part: bool = False) -> tuple[torch.Tensor, list[int]]:
    """The given starting noise as (rows, *latent shape) and, for each output (prompt ``indices``
    x ``num_per_prompt``, in job order), the row it starts from; ``part``: these prompts are part of
    a larger run. Judged from the shape alone (before a model loads too), except the values."""
    shape = generation_latent_shape(spec, opts.size, frames, video)
    noise_all = noise.float()
    if not video and tuple(noise_all.shape[-4:]) == (shape[0], 1, *shape[1:]):
        noise_all = noise_all.squeeze(-3)  # an image's latents as --save-latents and encode write them
    if tuple(noise_all.shape) == shape:
        noise_all = noise_all[None]
    n = opts.num_per_prompt
    jobs = [(i, k) for i in indices for k in range(n)]
    count = noise_all.shape[0] if tuple(noise_all.shape[1:]) == shape else 0
    if count in (1, len(jobs)):
        rows = [0] * len(jobs) if count == 1 else list(range(len(jobs)))
    elif part and count >= (max(indices) + 1) * n:  # one row per output of the whole run
        rows = [i * n + k for i, k in jobs]
    else:
        whole = " or one per output of the whole prompts file" if part else ""
        image = f", an image's latents {(shape[0], 1, *shape[1:])}" if not video else ""
        given = ""
        if video and noise_all.dim() in (4, 5) and noise_all.shape[-3] != shape[1] and noise_all.shape[-2:] == shape[-2:]:
            latent_frames = noise_all.shape[-3]
            given = f": latents of a {spec.pixel_frames(latent_frames)}-frame video, not {frames}"
        raise InputError(f"--noise has shape {tuple(noise.shape)}, expected {shape}{image} or "
                         f"{(len(jobs), *shape)} (one per output{whole}){given}")
    # NaN noise gave a black image, silently; 3e38 overflowed the sampler
    check_latent_values(noise_all, "--noise holds", "starting noise is a standard normal draw (or latents),")
    return noise_all, rows


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _keep_first_frame(latents: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
    """Image to video: latent frame 0 is the image's and stays fixed, whatever a step callback returns."""
    latents = latents.clone()
    latents[:, :, 0] = first_frame.to(device=latents.device, dtype=latents.dtype)
    return latents


def _encode_prompt(tokenizer, text: str) -> list[int]:
    """A prompt's (or negative prompt's) tokens, each line break (``\\n``, ``\\r\\n`` or a lone
    ``\\r``, as a prompts file's lines end) one space, special-token strings as plain text (a
    prompt cannot end its row early or pose as an image position); a blank one is the official
    empty prompt."""
    return encode_user_text(tokenizer, re.sub("\r\n?|\n", " ", text)) if text.strip() else []


def _output_seeds(opts: GenerateOptions, indices: list[int], part: bool) -> Callable[[int, int], int]:
    """``seed_of(prompt_index, k)``: the seed of output ``k`` of a prompt: ``opts.seeds`` at the
    output's position in the run (one per output, checked here), else the base seed's rule."""
    n = opts.num_per_prompt
    if opts.seeds is None:
        return lambda i, k: seed_for(opts.seed, i, k, n)
    needed = (max(indices) + 1) * n if part else len(indices) * n  # a share of a run: its positions
    if len(opts.seeds) != needed and not (part and len(opts.seeds) > needed):
        raise UsageError(f"got {len(opts.seeds)} seeds for {needed} outputs: give one per output")
    return lambda i, k: opts.seeds[i * n + k]


def _outputs_made(outputs, total: int) -> list[int] | None:
    """``outputs`` (which of a run's ``total`` outputs to make, positions in the run's order) as a
    list, checked; None: all of them."""
    if outputs is None:
        return None
    try:
        chosen = None if isinstance(outputs, (str, bytes, dict)) else list(outputs)
    except TypeError:  # not iterable
        chosen = None
    if chosen is None or not all(isinstance(j, int) and not isinstance(j, bool) for j in chosen):
        raise TypeError("outputs must be a range (or a list) of output positions")
    if any(not 0 <= j < total for j in chosen) or len(set(chosen)) != len(chosen):
        raise UsageError(f"outputs must be distinct positions among the run's {total} output(s), got {short(str(outputs), 60)}")
    return chosen


def _generate(*args) -> list[Generated]:
    """:func:`_generate_now` in this thread's generation turn: under ``serve --parallel``, one
    generation at a time, between whose steps the other requests take theirs
    (:func:`~showo2_cli.decoding_batch.between_sampling_steps`); elsewhere a plain call."""
    with generation_turn():
        return _generate_now(*args)


@torch.no_grad()
def _generate_now(model: Showo2, prompts: list[str], opts: GenerateOptions, video: bool, frames: int,
                  first_frame: torch.Tensor | None, indices: list[int] | None, progress: Progress,
                  on_result: OnResult | None = None, on_step: OnStep | None = None,
                  outputs: list[int] | None = None) -> list[Generated]:
    spec, net, vae = model.spec, model.network, model.require_vae()
    tokenizer, tokens = model.require_tokenizer(), model.tokens
    h, w = opts.size
    latent_shape = generation_latent_shape(spec, (h, w), frames, video)
    visual = 1 + (latent_shape[1] if video else 1) * spec.tokens_per_frame(h, w)
    budget = spec.text_budget
    max_seq_len = visual + 4 + budget
    part = indices is not None  # these prompts are part of a larger run (several processes)
    indices = list(range(len(prompts))) if indices is None else list(indices)
    if len(indices) != len(prompts):
        raise UsageError("one index per prompt is needed")
    negative = dict(zip(indices, opts.negatives_for(len(prompts)), strict=True))
    jobs = [(p, i, k) for i, p in zip(indices, prompts, strict=True) for k in range(opts.num_per_prompt)]
    noise_all, rows = None, None  # rows[j]: the row of the given noise that job j starts from
    if opts.noise is not None:  # judged for the whole run, as one process judges it
        noise_all, rows = noise_rows(opts.noise, spec, opts, video, frames, indices, part)
    seed_of = _output_seeds(opts, indices, part)
    outputs = _outputs_made(outputs, len(jobs))
    if outputs is not None:  # a share of the run's outputs (several processes): each as the whole run makes it
        jobs = [jobs[j] for j in outputs]
        rows = None if rows is None else [rows[j] for j in outputs]
    memory = _memory_args(model, opts, frames, video, len(jobs), first_frame is not None)
    check_generation_memory(*memory)
    if first_frame is None or latent_shape[1] > 1:  # (a one-frame image to video runs no head: see
        net.load_heads("flow_head", judged=True)  # generate_latents; a head left out on load: counted above)
    tiled = generation_tiling(*memory)
    tiles = vae.tiles_used(h, w, tiled)  # a tiled decode blends seams: another image, so it is recorded
    results: list[Generated] = []
    total_steps = math.ceil(len(jobs) / opts.batch_size) * (opts.steps - 1)
    done_steps = 0
    for start in range(0, len(jobs), opts.batch_size):
        batch = jobs[start:start + opts.batch_size]
        ids = [_encode_prompt(tokenizer, p) for p, _, _ in batch]
        neg_ids = [_encode_prompt(tokenizer, negative[i]) for _, i, _ in batch]
        layout = generation_layout(ids, visual, tokens, max_seq_len, video=video, negatives=neg_ids)
        seeds = [seed_of(i, k) for _, i, k in batch]
        if noise_all is not None:
            noise = noise_all[rows[start:start + len(batch)]].clone()
        else:
            noise = torch.stack([_noise(latent_shape, s) for s in seeds])
        if first_frame is not None:
            noise = _keep_first_frame(noise, first_frame)

        reached, stopped = [0], [False]  # steps taken; whether a step callback stopped the sampling

        def step(i, n, t, x, base=done_steps, reached=reached, stopped=stopped):
            def kept(z):  # image to video: a callback's latents keep the image's frame 0
                ok = first_frame is not None and isinstance(z, torch.Tensor) and z.shape == x.shape
                return _keep_first_frame(z, first_frame) if ok else z

            reached[0] = i
            between_sampling_steps()  # (serve --parallel: the answers decoding meanwhile take a step)
            progress("denoising", base + i, total_steps)
            try:
                return kept(on_step(i, n, t, x)) if on_step is not None else None
            except StopSampling as e:
                stopped[0] = True
                e.latents = kept(e.latents)
                raise

        latents = generate_latents(net, layout, noise, opts.guidance, opts.steps, opts.shift, method=opts.method,
                                   cache_prefix=opts.cache_prefix, first_frame_as_cond=first_frame is not None,
                                   callback=step, sigmas=opts.sigmas, timesteps=opts.timesteps)
        if first_frame is not None:  # the multistep solvers' updates move a still frame by float rounding
            latents = _keep_first_frame(latents, first_frame)
        if not bool(torch.isfinite(latents).all()):  # decoded, a black picture (and `decode` refuses its latents)
            raise non_finite("sampling gave latents")
        done_steps += opts.steps - 1
        progress("decoding", 0, len(batch))
        for j, (prompt, i, _k) in enumerate(batch):
            if j:
                between_sampling_steps()
            pixels = vae.decode(latents[j:j + 1].to(vae.device), tiled=tiled)[0].cpu()
            arr = M.tensor_to_frames(pixels)
            seed = seeds[j] if rows is None else None  # given noise: no seed made this output
            params = {"prompt": prompt, "seed": seed, "steps": opts.steps, "guidance": opts.guidance,
                      "shift": opts.shift, "sampler": opts.method, "width": w, "height": h}
            loaded = model.record()  # the model, its adapters, --vae, --quantize, the dtype (caption's too)
            dtype = loaded.pop("dtype", None)
            params.update(loaded)
            for grid in ("sigmas", "timesteps"):  # a custom grid: the run is repeated with it (and the shift)
                if getattr(opts, grid) is not None:
                    params[grid] = list(getattr(opts, grid))
            if tiles is not None:
                params["vae_tiles"] = list(tiles)  # (tile height, width, stride height, width) in pixels
            if dtype is not None:
                params["dtype"] = dtype
            if stopped[0]:  # a step callback ended the sampling (perhaps at the last step)
                params["steps_done"] = reached[0]
            if rows is not None:  # started from the given noise, not from the seed
                params["noise_row"] = rows[start + j]
            if video:
                params["frames"] = int(arr.shape[0])
            if len(ids[j]) > budget:  # never cut silently: the result says how much of the prompt was used
                params["prompt_tokens"] = len(ids[j])
                params["prompt_tokens_used"] = budget
            if negative[i].strip() and uses_uncond(opts.guidance):  # recorded where it steered the result
                params["negative_prompt"] = negative[i]
                if len(neg_ids[j]) > budget:
                    params["negative_prompt_tokens"] = len(neg_ids[j])
                    params["prompt_tokens_used"] = budget
            result = Generated(prompt, i, seed, latents[j].cpu(), arr, params)
            if on_result is not None:  # handed over now (saved as it comes), not kept
                on_result(result)
            else:
                results.append(result)
            progress("decoding", j + 1, len(batch))
        if stopped[0]:  # the rest of the run is not started
            break
    return results


#: ``on_result(generated)``: called with each output as soon as its batch is decoded, in job
#: order; the pipelines then keep nothing (their list is empty), so a long prompts file holds one
#: batch in memory and every finished output can be saved before the next batch runs.
OnResult = Callable[[Generated], None]
#: ``on_step(step, total, t, latents)``: called after each sampling step of each batch with the
#: batch's latents (B, C, [T,] h, w), float32 (:data:`showo2_cli.sampling.StepCallback`): a tensor
#: it returns replaces them, and raising :class:`~showo2_cli.sampling.StopSampling` ends the
#: run's sampling there: the batch's outputs are decoded from the latents reached (their
#: ``params["steps_done"]`` says how many steps ran) and later batches are not started.
OnStep = StepCallback


def _require(model: Showo2, task: str, what: str, options=None) -> None:
    """The model can do ``task``; the arguments have the types the functions take (a pipeline or
    a dict in their place failed deep inside with an AttributeError)."""
    require_model(model)
    if options is not None and not isinstance(options, GenerateOptions):
        raise TypeError(f"options must be a GenerateOptions, got {type(options).__name__}"
                        + (" (GenerateOptions(**your_dict))" if isinstance(options, dict) else ""))
    if not model.spec.supports(task):
        name = model.files.name if model.files else model.spec.name
        raise ModelError(f"model '{name}' was not trained for {what} (no released Show-o2 checkpoint can do it); "
                         "use a checkpoint trained for it, e.g. --model demo")


@cpu_by_default
def text_to_image(model: Showo2, prompts: list[str], options: GenerateOptions | None = None,
                  progress: Progress | None = None, indices: list[int] | None = None,
                  on_result: OnResult | None = None, on_step: OnStep | None = None,
                  outputs: Sequence[int] | None = None) -> list[Generated]:
    """Generate ``num_per_prompt`` images per prompt, in batches, with classifier-free guidance
    (``on_result``: see :data:`OnResult`; ``on_step``: see :data:`OnStep`). ``outputs``: make only
    these of the run's outputs (positions in its order, prompt by prompt, ``num_per_prompt`` each),
    each with the seed (or ``noise`` row) the whole run gives it: a process's share of a launch
    (:func:`~showo2_cli.processes.process_share`)."""
    _require(model, T2I, "text-to-image", options)
    opts = (options or GenerateOptions()).resolved(model.spec, video=False)
    opts.validate(model.spec)
    check_schedule(opts.method, opts.steps, opts.shift, opts.sigmas, opts.timesteps)  # before any model work
    return _generate(model, check_prompts([prompts] if isinstance(prompts, str) else prompts), opts, False, 1, None, indices, progress or noop, on_result,
                     on_step, outputs)


@cpu_by_default
def text_to_video(model: Showo2, prompts: list[str], options: GenerateOptions | None = None,
                  progress: Progress | None = None, indices: list[int] | None = None,
                  on_result: OnResult | None = None, on_step: OnStep | None = None,
                  outputs: Sequence[int] | None = None) -> list[Generated]:
    """Generate videos of ``options.frames`` frames (1+4k) per prompt (``outputs``: as for
    :func:`text_to_image`)."""
    _require(model, T2V, "text-to-video", options)
    opts = (options or GenerateOptions()).resolved(model.spec, video=True)
    opts.validate(model.spec)
    check_schedule(opts.method, opts.steps, opts.shift, opts.sigmas, opts.timesteps)  # before any model work
    return _generate(model, check_prompts([prompts] if isinstance(prompts, str) else prompts), opts, True, opts.frames, None, indices, progress or noop,
                     on_result, on_step, outputs)


@cpu_by_default
def image_to_video(model: Showo2, image, prompts: list[str], options: GenerateOptions | None = None,
                   progress: Progress | None = None, indices: list[int] | None = None,
                   on_result: OnResult | None = None, on_step: OnStep | None = None,
                   outputs: Sequence[int] | None = None) -> list[Generated]:
    """Animate an image (a path, or a PIL image, array or tensor: :func:`~showo2_cli.media.image_input`):
    its clean latent is latent frame 0 and stays fixed (spec §6.5, §8.4); ``outputs``: as for
    :func:`text_to_image`."""
    _require(model, I2V, "image-to-video", options)
    opts = (options or GenerateOptions()).resolved(model.spec, video=True)
    opts.validate(model.spec)
    check_schedule(opts.method, opts.steps, opts.shift, opts.sigmas, opts.timesteps)  # before any model work
    h, w = opts.size
    prompts = check_prompts([prompts] if isinstance(prompts, str) else prompts)
    img = M.resize_center_crop(M.image_input(image), (h, w))
    vae = model.require_vae()
    pixels = M.frames_to_tensor(np.asarray(img)[None])[None].to(vae.device)
    total = len(prompts) * opts.num_per_prompt
    chosen = _outputs_made(outputs, total)
    count = total if chosen is None else len(chosen)
    memory = _memory_args(model, opts, opts.frames, True, count, image=True)
    check_generation_memory(*memory)  # before the image is encoded
    tiled = generation_tiling(*memory)  # as its decode will be
    first = vae.encode(pixels, tiled=tiled)[0, :, 0].cpu()
    return _generate(model, prompts, opts, True, opts.frames, first, indices, progress or noop, on_result, on_step,
                     outputs)
