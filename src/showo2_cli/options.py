"""Every option of the library's tasks, their limits and their one ``validate()``.

Torch-free, so the command line builds these objects and checks them once, before torch or a
model loads; the pipelines call the same ``validate()`` (for Python callers) and nothing else
checks an option a second time. Sampler, device, dtype, mask and template names live here too:
their tables drive both the validation and ``--help``. The checks of one value the ``validate()``
methods are made of are :mod:`~showo2_cli.value_checks`' (re-exported here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from .environment import MAX_MEMORY_ENV as MAX_MEMORY_ENV  # (re-exported: its users import it from here)
from .environment import env_memory_limit
from .errors import UsageError, given, short
from .grids import check_grid, grid_list, grid_steps
from .value_checks import MAX_LORA_WEIGHT as MAX_LORA_WEIGHT  # (re-exported, as below: users import them)
from .value_checks import MAX_MODEL_SIZE as MAX_MODEL_SIZE
from .value_checks import (
    MAX_PROMPT_CHARS,
    check_choice,
    check_device,
    check_flag,
    check_int,
    check_number,
    check_seed,
    check_text,
    check_unicode,
)
from .value_checks import check_fps as check_fps
from .value_checks import check_lora_weight as check_lora_weight
from .value_checks import check_max_context as check_max_context
from .value_checks import check_prompts as check_prompts
from .value_checks import is_finite_number as is_finite_number

MAX_STOP_STRINGS = 16  # TextSampling.stop_strings (OpenAI allows 4)
MAX_STOP_CHARS = 200
#: Largest prompts file read.
MAX_PROMPTS_FILE_BYTES = 64 * 1024 * 1024
#: A record's text, the first of these fields it has: a training pairs record's caption, a ``.jsonl``
#: or ``.json`` prompts file's prompt (the official GenEval and DPG-Bench files name it ``prompt``)
CAPTION_FIELDS = ("prompt", "caption", "text")
#: The largest image side (pixels) any command takes (``--size``) and any model spec names.
MAX_SIDE = 4096
#: Largest config file read (a model's config.json, an adapter's, a training config): Qwen2.5's are 1 KB
MAX_CONFIG_BYTES = 16 * 2**20
#: A generated video's length when none is given, in pixel frames (1 + 4k).
DEFAULT_VIDEO_FRAMES = 17
#: The frame rate a written video gets when none is given (nor recorded in its latents).
DEFAULT_FPS = 8.0
#: Longest video generated, in pixel frames (1 + 4k).
MAX_VIDEO_FRAMES = 1 + 4 * 64
#: Most frames sampled from a video for understanding.
MAX_CAPTION_FRAMES = 512
#: Sampling grid points (``--steps``, ``num_inference_steps``): steps - 1 model calls, so at least 2.
STEPS_RANGE = (2, 10_000)
#: Most outputs per prompt, and per batch.
MAX_PER_PROMPT = 1000
#: Most outputs one run makes (prompts x -n), and so most prompts a prompts file holds: each is
#: planned, its files checked, before the model loads (about 1 KB a plan; a 64 MiB file of 32
#: million one-letter lines took 6 GB to read and would take 30 GB to plan)
MAX_OUTPUTS = 1_000_000
MAX_BATCH = 1024

#: The flow-matching ODE solvers (``sampling.SAMPLERS`` implements each); keys drive ``--sampler``.
SAMPLERS = {"euler": "Euler, the official sampler", "heun": "Heun (2nd order; two model calls per step)",
            "flow-euler": "diffusers FlowMatchEulerDiscreteScheduler on the official grid (same as euler)",
            "unipc": "diffusers UniPC multistep with flow sigmas (fewer steps)",
            "dpm++": "diffusers DPM-Solver++ 2M with flow sigmas (fewer steps)"}
#: The sampler when none is named: the official Euler.
DEFAULT_SAMPLER = "euler"
DEVICES = ("auto", "cpu", "cuda", "mps")
#: dtype names -> canonical name (the one dtype table; ``runtime.torch_dtype`` maps it to torch).
DTYPES = {"fp32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16"}
#: ``--attn``: the attention backend of the LLM and the flow head (``acceleration.apply``).
ATTN_BACKENDS = {"sdpa": "torch scaled_dot_product_attention (the default)",
                 "eager": "plain matmul-softmax attention (the official code's reference)",
                 "flex": "flex attention over a block mask of the omni mask (compiled; best on CUDA)"}
#: ``--vae-tiling``: spatial tiles for the VAE (diffusers AutoencoderKLWan tiling).
VAE_TILING = {"auto": "tile only a job that would not fit the memory limit otherwise",
              "on": "always tile images and videos larger than a tile (256 px)", "off": "never tile"}
#: ``--quantize``: weight-only quantization of the LLM and flow-head linear layers.
QUANTIZE = {"none": "the weights in --dtype", "int8wo": "int8 weights, one scale per row (torchao)",
            "nf4": "4-bit NormalFloat weights, one scale per 64 (bitsandbytes)"}
MASK_MODES = ("official", "training")
#: Where the weights wait between uses (``runtime.enable_offload`` implements each, through accelerate).
OFFLOAD_MODES = {"none": "everything on the device", "model": "one component (network or VAE) on the device at a time",
                 "sequential": "one layer on the device at a time (least memory, slowest)"}
TEMPLATES = ("official", "training")


def check_dtype(dtype: str, extra: tuple[str, ...] = ("auto",), option: str = "--dtype") -> str:
    """The canonical name of ``dtype`` (:data:`DTYPES`' ``fp32``/``bf16``/``fp16``, or one of ``extra``,
    lower case: the name a record gives, as generated files do); a UsageError where it is neither."""
    if not isinstance(dtype, str) or (dtype.lower() not in DTYPES and dtype.lower() not in extra):
        names = [*extra, "fp32", "bf16", "fp16"]
        raise UsageError(f"unknown dtype '{short(dtype)}' for {option}; use one of {', '.join(names)}")
    return DTYPES.get(dtype.lower(), dtype.lower())


def unused_sampling_note(options) -> str | None:
    """What a greedy decode says of the sampling options it was given (``options``: a
    :class:`TextSampling` or :class:`CaptionOptions`), or None: the command line's notice, a
    caption's ``notices``."""
    unused = options.unused_sampling_options()
    if not unused:
        return None
    verb = "has" if len(unused) == 1 else "have"
    return f"{', '.join(unused)} {verb} no effect without --temperature above 0 (decoding is greedy)"


def video_frames(frames: int) -> tuple[int, str | None]:
    """A video length for generation: 1 + 4k frames; others are rounded up (with the notice)."""
    from .specs import WAN21  # (specs imports this module; both are torch-free)

    check_int("--frames", frames, 1, MAX_VIDEO_FRAMES)
    rounded = WAN21.round_frames(frames)
    note = f"frames must be 1+4k: {frames} was rounded to {rounded}" if rounded != frames else None
    return rounded, note


def seed_for(base: int, prompt_index: int, k: int, n: int) -> int:
    """Per-output seed: reproducible for one prompt regardless of batching or process sharding."""
    return (base + prompt_index * n + k) % 2**63


def random_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF


def seed_from_torch(high: int = 2**31) -> int:
    """A seed in ``[0, high)`` drawn from torch's global CPU generator, so ``torch.manual_seed(n)``
    before a Python call repeats the call (the library's draws; the CLI uses :func:`random_seed`)."""
    import torch

    return int(torch.randint(0, high, (1,)))


def plain_numbers(options) -> None:
    """Turn numpy scalars in an options object's fields into Python numbers (what the checks,
    the seeds and the JSON sidecars take): ``steps=np.int64(4)`` is 4."""
    import dataclasses

    for f in dataclasses.fields(options):
        value = getattr(options, f.name)
        if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            setattr(options, f.name, value.item())


#: accelerate re-creates each offloaded weight as a plain tensor, without the 4-bit quantization
#: state bitsandbytes keeps on it (diffusers refuses this pairing too)
NF4_SEQUENTIAL = ("--offload sequential cannot hold bitsandbytes 4-bit weights (--quantize nf4); "
                  "use --offload model")


@dataclass
class RuntimeOptions:
    """Where and how a model runs: ``device`` (auto|cpu|cuda[:N]|mps), ``dtype`` (auto|fp32|bf16|fp16),
    ``offload`` (a key of :data:`OFFLOAD_MODES`: weights kept in CPU memory, moved to the device
    per component or per layer as they are used) and the memory/speed options applied at load time
    (``acceleration.apply``)."""

    device: str = "auto"
    dtype: str = "auto"
    max_memory_gb: float | None = None  # refuse jobs estimated to need more: weights run + working memory (0: no limit)
    offload: str = "none"
    attn: str = "sdpa"  # a key of ATTN_BACKENDS
    compile: bool = False  # torch.compile the LLM and flow head (the first call of each shape compiles)
    vae_tiling: str = "auto"  # a key of VAE_TILING
    quantize: str = "none"  # a key of QUANTIZE

    def __post_init__(self) -> None:
        plain_numbers(self)
        # a torch.device / torch.dtype (or "torch.bfloat16") is its name, as the Python API takes them
        for name in ("device", "dtype"):
            value = getattr(self, name)
            if type(value).__module__ == "torch" and type(value).__name__ in ("device", "dtype"):
                value = str(value)
            if isinstance(value, str):
                setattr(self, name, value.removeprefix("torch."))

    def validate(self) -> None:
        check_device(self.device)
        check_dtype(self.dtype, ("auto", "float64"))  # (float64: Python callers', as load's dtype=; not the CLI's)
        check_number("--max-memory", self.max_memory_gb, 0)
        if self.max_memory_gb is None:
            env_memory_limit()  # a bad $SHOWO2_MAX_MEMORY_GB fails now, not after the model loads
        check_choice("--offload", self.offload, tuple(OFFLOAD_MODES), allow_none=False)
        check_choice("--attn", self.attn, tuple(ATTN_BACKENDS), allow_none=False)
        check_choice("--vae-tiling", self.vae_tiling, tuple(VAE_TILING), allow_none=False)
        check_choice("--quantize", self.quantize, tuple(QUANTIZE), allow_none=False)
        if self.quantize == "nf4" and self.offload == "sequential":  # known before the weights load
            raise UsageError(NF4_SEQUENTIAL)
        check_flag("--compile", self.compile)


def stop_string_tuple(value):
    """Stop strings as options hold them: a string is one (``"END"`` stopped at each E, N and D)."""
    return (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else value


#: Most tokens an answer gets when no limit is given (a caption, a chat turn, a server reply).
DEFAULT_MAX_NEW_TOKENS = 300
#: temperatures below this decode greedily (vLLM's threshold): the logits would overflow
MIN_TEMPERATURE = 1e-5


@dataclass
class TextSampling:
    """How answer tokens are chosen: greedy at temperature 0 (the official demos), else sampled."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0
    top_k: int | None = None  # None or 0: no top-k (as transformers' generate and llama.cpp read 0)
    top_p: float | None = None
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()
    #: texts that end the answer where they first appear (not included in it), as OpenAI's ``stop``
    stop_strings: tuple[str, ...] = ()
    #: transformers' multiplicative penalty on tokens already in the answer (> 1 discourages them)
    repetition_penalty: float | None = None
    #: OpenAI's additive penalties: ``count * frequency + (count > 0) * presence`` off each token's logit
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    #: OpenAI's ``logit_bias``: token id -> a value added to its logit (-100 bans, 100 forces)
    logit_bias: dict[int, float] | None = None
    #: min-p sampling: tokens less likely than ``min_p`` times the most likely one are dropped
    min_p: float | None = None
    #: structured output: the answer is JSON valid against this schema (``{"type": "object"}``: any
    #: JSON object, JSON mode), by constrained decoding (:mod:`showo2_cli.structured`); None: free text
    json_schema: dict | None = None
    #: with ``json_schema``: properties and items the schema does not declare are not written
    #: (OpenAI's ``strict: true``); False: JSON Schema's rule (allowed unless the schema forbids them)
    strict_schema: bool = True
    #: with ``json_schema``: the answer may be tool calls instead, ``<tool_call>`` blocks each held to
    #: ``{"schema": ..., "parallel": bool}`` (a server's tools beside a ``response_format``)
    tool_calls: dict | None = None

    def __post_init__(self) -> None:
        plain_numbers(self)
        self.stop_strings = stop_string_tuple(self.stop_strings)

    @property
    def sampled(self) -> bool:
        """Whether tokens are drawn: a temperature below :data:`MIN_TEMPERATURE` is greedy
        (as vLLM does; dividing logits by it would overflow them)."""
        return self.temperature >= MIN_TEMPERATURE

    def unused_sampling_options(self) -> list[str]:
        """The options given that only shape sampling, when decoding is greedy (no effect then)."""
        if self.sampled:
            return []
        given = {"--top-k": self.top_k or None, "--top-p": self.top_p, "--min-p": self.min_p, "--seed": self.seed}
        return [name for name, value in given.items() if value is not None]  # top-k 0 is no top-k: nothing given

    def validate(self) -> None:
        check_int("--max-new-tokens", self.max_new_tokens, 1, 1_000_000)
        check_number("--temperature", self.temperature, 0, 1000)
        check_number("--top-p", self.top_p, 0, 1, low_open=True)
        check_int("--top-k", self.top_k, 0, 10_000_000)  # 0: no top-k (transformers' generate, llama.cpp)
        check_number("--min-p", self.min_p, 0, 1)
        check_number("--repetition-penalty", self.repetition_penalty, 0, 10, low_open=True)
        check_number("frequency_penalty", self.frequency_penalty, -2, 2)
        check_number("presence_penalty", self.presence_penalty, -2, 2)
        for token, bias in (self.logit_bias or {}).items():
            check_int("a logit_bias token id", token, 0, 2**31 - 1)
            check_number("a logit_bias value", bias, -100, 100)
        check_seed(self.seed)
        if not isinstance(self.stop_strings, tuple):  # (5: "TypeError: object of type 'int' has no len()")
            raise UsageError(f"stop_strings must be a text or a list of texts, got {given(self.stop_strings)}")
        if len(self.stop_strings) > MAX_STOP_STRINGS:
            raise UsageError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(self.stop_strings)}")
        for text in self.stop_strings:
            if not isinstance(text, str) or not text or len(text) > MAX_STOP_CHARS:
                raise UsageError(f"a stop string must be 1 to {MAX_STOP_CHARS} characters of text")
        check_flag("strict_schema", self.strict_schema)
        if self.tool_calls is not None and self.json_schema is None:
            raise UsageError("tool_calls are held beside a json_schema: give one")
        if self.tool_calls is not None and (not isinstance(self.tool_calls, dict)
                                            or set(self.tool_calls) != {"schema", "parallel"}):
            raise UsageError("tool_calls must be {'schema': a call's JSON schema, 'parallel': True or False}, got "
                             f"{given(self.tool_calls)}")  # (5, {} or a key missing raised TypeError/KeyError)
        if self.tool_calls is not None:
            check_flag("tool_calls['parallel']", self.tool_calls["parallel"])
        if self.json_schema is not None:
            from .structured import check_schema

            check_schema(self.json_schema, self.strict_schema)
            if self.tool_calls is not None:
                check_schema(self.tool_calls["schema"], True)
            if self.stop_strings:  # a stop string inside the JSON would cut it: an answer that does not parse
                raise UsageError("stop strings cannot end an answer held to a JSON schema (they would cut the JSON)")


@dataclass
class CaptionOptions:
    questions: list[str] = field(default_factory=list)  # empty: "Describe the image/video."
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.0  # 0 = greedy, as the official demos
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    frames: int | None = None  # video: frames sampled uniformly (default: the spec's, 32 for the real models)
    mask_mode: str | None = None  # "official" (demo quirk) or "training"; None = what the checkpoint expects
    template: str | None = None  # "official" (demo prompt) or "training" (stage-2); None = the checkpoint's
    vae_sample: bool = False  # the official demos draw a stochastic VAE sample; default is the mean
    size: int | None = None  # pixels per side; default the model's resolution
    max_memory_gb: float | None = None  # refuse questions estimated to need more: weights run + working memory (0: none)
    repetition_penalty: float | None = None  # > 1 discourages repeating the answer's tokens
    min_p: float | None = None  # min-p sampling (with a temperature)
    #: structured output: each answer is JSON valid against this schema ({"type": "object"}: any JSON
    #: object); None: free text. ``strict_schema`` as :class:`TextSampling`'s
    json_schema: dict | None = None
    strict_schema: bool = True
    #: texts that end each answer where they first appear (not included), as ``TextSampling``'s
    #: and transformers' ``generate(stop_strings=)``; one string is one stop string
    stop_strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        plain_numbers(self)
        if isinstance(self.questions, str):  # one question, not its characters
            self.questions = [self.questions]
        self.stop_strings = stop_string_tuple(self.stop_strings)

    def sampling(self) -> TextSampling:
        return TextSampling(self.max_new_tokens, self.temperature, self.top_k, self.top_p, self.seed,
                            repetition_penalty=self.repetition_penalty, min_p=self.min_p,
                            json_schema=self.json_schema, strict_schema=self.strict_schema,
                            stop_strings=self.stop_strings)

    def unused_sampling_options(self) -> list[str]:
        """The sampling options given that change nothing: the seed also seeds ``vae_sample``'s noise."""
        unused = self.sampling().unused_sampling_options()
        return [name for name in unused if not (name == "--seed" and self.vae_sample)]

    @property
    def draws(self) -> bool:
        """Whether the answers depend on random draws (sampled tokens or the stochastic VAE sample),
        so that a seed is drawn when none is given."""
        return self.sampling().sampled or self.vae_sample

    def validate(self) -> None:
        self.sampling().validate()
        check_int("--frames", self.frames, 1, MAX_CAPTION_FRAMES)
        check_choice("--mask", self.mask_mode, MASK_MODES)
        check_choice("--template", self.template, TEMPLATES)
        check_int("--size", self.size, 16, MAX_SIDE)
        check_number("--max-memory", self.max_memory_gb, 0)
        check_flag("--vae-sample", self.vae_sample)
        if not isinstance(self.questions, (list, tuple)):  # (a number, None: "TypeError: not iterable")
            raise UsageError(f"questions must be a list of texts, got {short(self.questions)}")
        for q in self.questions:
            check_text(q, "question")


@dataclass
class GenerateOptions:
    size: tuple[int, int] | None = None  # (height, width) in pixels; default the model's
    steps: int | None = None  # grid points (steps - 1 model calls); default the model's
    guidance: float | None = None  # default the model's
    shift: float | None = None  # default the model's (3.0)
    seed: int | None = None  # base seed; output k of prompt p uses seed + p*n + k
    #: one seed per output of the run, in its order (diffusers' list of generators): output j uses
    #: seeds[j] in place of seed + j, in the batches ``batch_size`` makes; None: from ``seed``
    seeds: list[int] | None = None
    num_per_prompt: int = 1
    batch_size: int = 4
    frames: int = DEFAULT_VIDEO_FRAMES  # videos: pixel frames (1+4k)
    method: str = DEFAULT_SAMPLER  # a key of SAMPLERS
    noise: Any = None  # exact starting noise: a tensor (N, C, [T,] h, w) or one sample
    cache_prefix: bool = True  # reuse the text prefix's keys/values at every step
    max_memory_gb: float | None = None  # refuse jobs estimated to need more: weights run + working memory
    #: the text guidance steers away from (the unconditional rows' prompt; "" is the official
    #: empty prompt): one for every prompt, or a list with one per prompt
    negative_prompt: str | list[str] = ""
    #: a custom grid as diffusers takes it (:mod:`showo2_cli.grids`): noise levels (shifted) or timesteps
    sigmas: list[float] | None = None
    timesteps: list[float] | None = None

    def __post_init__(self) -> None:
        plain_numbers(self)
        self.sigmas, self.timesteps = grid_list(self.sigmas), grid_list(self.timesteps)
        if isinstance(self.seeds, (list, tuple)):  # numpy's integers as Python's, as plain_numbers does
            self.seeds = [v.item() if type(v).__module__ == "numpy" and hasattr(v, "item") else v for v in self.seeds]
        if isinstance(self.size, int) and not isinstance(self.size, bool):
            self.size = (self.size, self.size)  # one side: a square
        elif isinstance(self.size, list):
            self.size = tuple(self.size)

    def resolved(self, spec, video: bool) -> GenerateOptions:
        """The options with the model's defaults filled in (and a random seed when none)."""
        return replace(self, size=self.size or spec.default_size(video),
                       steps=self.steps if self.steps is not None else
                       grid_steps(self.sigmas, self.timesteps) or spec.steps,
                       guidance=spec.guidance if self.guidance is None else self.guidance,
                       shift=spec.shift if self.shift is None else self.shift,
                       seed=random_seed() if self.seed is None else self.seed)

    def validate(self, spec=None, multiple: int | None = None) -> None:
        """Check every value; without a spec, only the values that do not depend on the model, and
        the sizes by ``multiple`` (what an official ``config.json``'s ``patch_size`` says before a
        load) or else the released models' 16 px."""
        if self.noise is not None and not hasattr(self.noise, "float"):  # a tensor (api.load_noise reads a file)
            raise TypeError(f"noise must be a torch.Tensor (api.load_noise(path) reads a file), got "
                            f"{type(self.noise).__name__}")
        if self.size is not None:
            if isinstance(self.size, (str, bytes)) or not isinstance(self.size, (tuple, list)) or len(self.size) != 2:
                # (unpacked as it was: ValueError/TypeError for (64,), 3.5 or "abc"; "ab" read as b x a)
                raise UsageError(f"size must be an integer or (height, width), got {short(self.size)}")
            h, w = self.size
            m = spec.latent_multiple if spec is not None else multiple or 16
            if not (isinstance(h, int) and isinstance(w, int)) or h <= 0 or w <= 0 or h % m or w % m \
                    or h > 4096 or w > 4096:
                raise UsageError(f"--size must be positive multiples of {m} up to 4096, got {short(w)}x{short(h)}")
        check_grid(self.sigmas, self.timesteps, self.steps, self.method)  # (before --steps: they set it)
        check_int("--steps", self.steps, *STEPS_RANGE)
        check_number("--guidance", self.guidance, 0, 100)
        check_number("--shift", self.shift, 0, 1e6, low_open=True)
        check_int("-n/--num-images", self.num_per_prompt, 1, MAX_PER_PROMPT)
        check_int("--batch-size", self.batch_size, 1, MAX_BATCH)
        check_choice("--sampler", self.method, tuple(SAMPLERS), allow_none=False)
        check_seed(self.seed)
        if self.seeds is not None:
            if isinstance(self.seeds, (str, bytes)) or not isinstance(self.seeds, (list, tuple)) or not self.seeds:
                raise UsageError(f"seeds must be a list of seeds, one per output, got {short(self.seeds)}")
            for one in self.seeds:
                if one is None:  # (seed=None draws one; in seeds it reached torch: "internal error: RuntimeError")
                    raise UsageError("each of seeds must be a whole number between 0 and 2^63-1, got None "
                                     "(leave seeds out to draw them)")
                check_seed(one, "each of seeds")
        check_number("--max-memory", self.max_memory_gb, 0)
        check_flag("cache_prefix", self.cache_prefix)
        check_int("--frames", self.frames, 1, MAX_VIDEO_FRAMES)
        from .specs import WAN21

        if not WAN21.is_valid_frames(self.frames):
            raise UsageError(f"--frames must be 1+4k, got {self.frames}")
        negatives = self.negative_prompt if isinstance(self.negative_prompt, list) else [self.negative_prompt]
        for text in negatives:
            if not isinstance(text, str):
                raise UsageError(f"--negative-prompt must be text (or a list of texts), got {short(text)}")
            if len(text) > MAX_PROMPT_CHARS:
                raise UsageError(f"a negative prompt of {len(text)} characters is too long (at most {MAX_PROMPT_CHARS})")
            check_unicode(text, "--negative-prompt")

    def negatives_for(self, count: int) -> list[str]:
        """One negative prompt per prompt (``count`` prompts)."""
        if not isinstance(self.negative_prompt, list):
            return [self.negative_prompt] * count
        if len(self.negative_prompt) != count:
            raise UsageError(f"{len(self.negative_prompt)} negative prompts for {count} prompts: give one, "
                             "or one per prompt")
        return list(self.negative_prompt)


@dataclass
class EncodeOptions:
    size: tuple[int, int] = (432, 432)  # (height, width); resize short side + center crop
    frames: int | None = None  # videos: first N frames (rounded up to 1+4k); None = all, rounded down
    sample: bool = False  # the official stochastic posterior sample instead of the mean
    seed: int | None = None

    def __post_init__(self) -> None:
        plain_numbers(self)

    def validate(self) -> None:
        from .specs import size_hw  # (specs imports this module; both are torch-free)
        size_hw(self.size)
        check_int("--frames", self.frames, 1, 100_000)
        check_flag("--sample", self.sample)
        check_seed(self.seed)
