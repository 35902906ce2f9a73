"""The arguments of :class:`~showo2_cli.pipeline.Showo2Pipeline` as the API takes them: diffusers'
``from_pretrained`` arguments, prompts, numbers, seeds from generators, dtypes, and images given
as PIL images, arrays or tensors (read as diffusers' image processor reads them); the library's
errors renamed with the pipeline's argument names; diffusers' ``callback_on_step_end`` as the
API's step callback (:func:`step_hook`); and its outputs in diffusers' forms."""

from __future__ import annotations

import math
import operator
import os
from contextlib import contextmanager

import numpy as np
import torch

from ..errors import UsageError
from ..options import MAX_MEMORY_ENV, seed_from_torch
from ..sampling import StopSampling

SEED_LIMIT = 2**63 - 1


def check_pretrained_kwargs(unsupported: dict, variant, proxies, subfolder, token, force_download: bool,
                            local_files_only: bool) -> bool | str | None:
    """diffusers' ``from_pretrained`` arguments that do not apply: one clear error each. Returns
    the token (``use_auth_token`` is its old name)."""
    if variant is not None:
        raise ValueError(f"variant={variant!r}: Show-o2 repos publish one weight set; pass torch_dtype "
                         "(e.g. torch.bfloat16) for the precision")
    for key, value in unsupported.items():
        if key != "use_auth_token":
            raise TypeError(f"from_pretrained() got an unexpected keyword argument {key!r}")
        if value is not None and token is not None:
            raise ValueError("pass token or use_auth_token (its old name), not both")
        token = value if value is not None else token
    if proxies is not None:
        raise ValueError("from_pretrained takes no proxies=: huggingface_hub takes none per call; set HTTPS_PROXY "
                         "(and HTTP_PROXY) in the environment")
    if subfolder:
        raise ValueError(f"subfolder={subfolder!r}: a Show-o2 model is the whole of its repo or folder; name the "
                         "folder itself (a path, or a repo id whose top holds config.json)")
    if force_download and local_files_only:
        raise ValueError("force_download=True needs the Hub, local_files_only=True forbids it: pass one")
    return token


def device_from_map(device_map) -> str:
    """diffusers' ``device_map`` as the one device the model runs on."""
    if isinstance(device_map, (dict, list, tuple)):
        raise ValueError("device_map as a mapping is not offered: the model runs on one device; name it "
                         "(\"cuda\", \"cuda:1\") or use enable_model_cpu_offload()")
    text = str(device_map)
    return "auto" if text in ("balanced", "auto") else text


PYTHON_NAMES = {
    "--size": "width/height", "--steps": "num_inference_steps", "--guidance": "guidance_scale",
    "--noise": "latents", "-n/--num-images": "num_images_per_prompt", "--num-images": "num_images_per_prompt",
    "--batch-size": "batch_size", "--frames": "num_frames", "--sampler": "sampler", "--shift": "shift",
    "--seed": "seed", "--negative-prompt": "negative_prompt", "--sigmas": "sigmas", "--timesteps": "timesteps", "--offload": "enable_model_cpu_offload()",
    "--quantize": "RuntimeOptions(quantize=...)", "--vae-tiling auto": "enable_vae_tiling()",
    "--vae-tiling": "enable_vae_tiling()", "--max-memory": "RuntimeOptions(max_memory_gb=...)",
    # the limit a pipeline is loaded with (from_pretrained(runtime=)), else the variable: each named once
    f"--max-memory or {MAX_MEMORY_ENV}": f"RuntimeOptions(max_memory_gb=...) or {MAX_MEMORY_ENV}",
    # a model whose outputs overflowed half precision (errors.non_finite): the dtype it was loaded in
    "--dtype bf16 or fp32": "from_pretrained(torch_dtype=torch.bfloat16 or torch.float32)",
}
#: the memory limit's names alone: for what loads weights (a head left out, offload's) outside a call
MEMORY_NAMES = {k: v for k, v in PYTHON_NAMES.items() if k.startswith("--max-memory")}
#: the device errors of runtime.pick_device as a Python caller reads them
DEVICE_NAMES = {"--device": "device"}


def lora_names(argument: str) -> dict[str, str]:
    """The adapter errors of lora/hub (``--lora: 'x' does not exist``) as a Python caller reads
    them: naming its own argument (``lora``, ``load_lora_weights``)."""
    return {"--lora:": f"{argument}:"}


CAPTION_NAMES = {
    "--size": "size", "--frames": "frames", "--max-new-tokens": "max_new_tokens", "--temperature": "temperature",
    "--top-p": "top_p", "--top-k": "top_k", "--seed": "seed", "--mask": "mask_mode", "--template": "template",
    "--repetition-penalty": "repetition_penalty", "--max-memory": "max_memory_gb", "--min-p": "min_p",
    "--vae-sample": "vae_sample",
    "--dtype bf16 or fp32": PYTHON_NAMES["--dtype bf16 or fp32"],
}


#: transformers' ``generate`` arguments a caption call does not take -> what to pass instead
GENERATE_HINTS = {
    "generator": "pass seed= (an int)",
    "max_length": "pass max_new_tokens=", "num_beams": "beam search is not offered",
    "num_return_sequences": "call again with another seed",
    "stop": "pass stop_strings= (transformers' name: a string or a list of them)",
    "questions": "pass question= (a list for several)",
    "pad_token_id": "each answer is decoded as a sequence of its own, with no padding: leave it out",
    "eos_token_id": "an answer ends at the model's end-of-turn token; pass stop_strings= to end it earlier",
    "no_repeat_ngram_size": "pass repetition_penalty= (e.g. 1.1) to discourage repeats",
}
#: what ``GenerationConfig.to_diff_dict()`` holds besides settings
_CONFIG_RECORDS = ("transformers_version",)


def generation_settings(config, given: dict, allowed) -> dict:
    """transformers' ``generate(generation_config=)`` for a caption: the settings ``config`` (a
    ``GenerationConfig``) holds apart from transformers' defaults, under ``given``, the call's own
    keywords (None: not given), which win as in ``generate``; one it does not take (``allowed``) is
    a TypeError naming it and what to pass instead. Returns ``given`` completed."""
    from transformers import GenerationConfig

    if not isinstance(config, GenerationConfig):
        raise TypeError(f"generation_config must be a transformers GenerationConfig, got {type(config).__name__}")
    out = dict(given)
    for key, value in config.to_diff_dict().items():
        if key in _CONFIG_RECORDS or key.startswith("_"):
            continue
        if key not in allowed:
            hint = GENERATE_HINTS.get(key)
            raise TypeError(f"generation_config sets {key}={value!r}, which caption() does not take"
                            + (f": {hint}" if hint else ""))
        if out.get(key) is None:
            out[key] = value
    return out

_EMBEDS = "Show-o2 has no separate text encoder (its network reads the prompt's tokens): pass prompt= / negative_prompt="
_ADAPTERS = ("LoRA adapters are merged into the weights when loaded: give the scale as load_lora_weights(..., "
             "weight=) (attention takes no per-call options)")
#: diffusers' pipeline-call arguments (FluxPipeline, WanPipeline, WanImageToVideoPipeline, ...) that a
#: Show-o2 call does not take -> why, and what to pass instead
CALL_HINTS = {
    "max_sequence_length": "Show-o2 has no text encoder whose length a call picks: the prompt's tokens share the "
                           "network's one sequence with the visual tokens, in a row of the model's fixed length "
                           "(pipe.spec.text_budget tokens, the official max_text_len), which places the visual "
                           "tokens; a longer prompt is cut there (with a warning, and params['prompt_tokens'] "
                           "recorded); to use fewer tokens, shorten the prompt",
    "attention_kwargs": _ADAPTERS, "joint_attention_kwargs": _ADAPTERS, "cross_attention_kwargs": _ADAPTERS,
    "fps": "the model takes no frame rate; give it where the frames are written: export_to_video(frames, path, "
           "fps=) or api.save_results(..., fps=)",
    "true_cfg_scale": "pass guidance_scale= (classifier-free guidance, with negative_prompt=)",
    "guidance_scale_2": "Show-o2 has one network and one guidance scale: pass guidance_scale=",
    "ip_adapter_image": "IP adapters are not offered; image= is a video's first frame (image to video)",
    "last_image": "a last frame is not offered: image= is the first frame",
    "strength": "image-to-image is not offered: image= is a video's first frame (image to video: num_frames=)",
    "mask_image": "inpainting is not offered: image= is a video's first frame (image to video: num_frames=)",
    "image_embeds": "pass image= (the network embeds it itself)",
    "callback": "pass callback_on_step_end= (diffusers' current name)",
    "eta": "the samplers are deterministic ODE solvers (no eta)",
}
CALL_HINTS["frame_rate"] = CALL_HINTS["fps"]
CALL_HINTS["callback_steps"] = CALL_HINTS["callback"]
CALL_HINTS["ip_adapter_image_embeds"] = CALL_HINTS["negative_ip_adapter_image"] = CALL_HINTS["ip_adapter_image"]
for _name in ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds",
              "prompt_attention_mask", "negative_prompt_attention_mask", "prompt_2", "negative_prompt_2"):
    CALL_HINTS[_name] = _EMBEDS

#: diffusers' ``save_pretrained`` arguments a Show-o2 save does not take -> what to do instead
SAVE_HINTS = {
    "push_to_hub": "save to a folder, then upload it with huggingface_hub (HfApi().upload_folder, or hf upload)",
    "variant": "one weight set is written, in the pipeline's dtype: pipe.to(dtype) first for another precision",
    "max_shard_size": "the weights are written as one model.safetensors (which loads memory-mapped)",
}


def check_kwargs(call: str, given: dict, allowed=(), hints: dict | None = None) -> None:
    """A keyword ``call`` does not take: a TypeError naming ``call()`` and, for diffusers' or
    transformers' names for things done otherwise here, what to pass instead."""
    for key in given:
        if key not in allowed:
            hint = (hints or {}).get(key)
            raise TypeError(f"{call}() got an unexpected keyword argument {key!r}" + (f": {hint}" if hint else ""))


def sampling_temperature(do_sample, temperature):
    """A caption's temperature from transformers' ``do_sample`` and ``temperature`` (None: not
    given): greedy (0) unless sampling is asked for; ``do_sample=True`` alone samples at
    transformers' default temperature, 1.0. Contradictions are refused, not ignored."""
    do_sample, temperature = (v.item() if isinstance(v, np.generic) else v for v in (do_sample, temperature))
    if do_sample is not None and not isinstance(do_sample, bool):
        raise TypeError(f"do_sample must be True or False, got {do_sample!r}")
    if temperature is None:
        return 1.0 if do_sample else 0.0
    # a bool, inf, nan or 10**400 is left to the options' check ('temperature=1 samples' was said of True)
    plain = type(temperature) in (int, float) and abs(temperature) <= 1e300 and temperature == temperature
    if do_sample is True and plain and temperature == 0:
        raise ValueError("do_sample=True needs temperature > 0 (temperature=0 is greedy decoding: pass "
                         "do_sample=False, or leave temperature out for 1.0)")
    if do_sample is False and plain and temperature > 0:
        raise ValueError(f"do_sample=False decodes greedily, but temperature={temperature:g} samples: pass "
                         "do_sample=True, or leave temperature out")
    return temperature


@contextmanager
def python_names(names: dict[str, str]):
    """Re-raise the library's errors with the pipeline's argument names for the CLI's options
    (same class, same one line): a Python caller passed ``num_inference_steps``, not ``--steps``."""
    from ..errors import InputError, Showo2Error, rename_options

    try:
        yield
    except Showo2Error as e:
        text = rename_options(str(e), names)
        if text == str(e):
            raise
        # the CLI's --noise is a file (an input error); the pipeline's latents= is an argument: a ValueError
        cls = UsageError if isinstance(e, InputError) and "--noise" in str(e) else type(e)
        raise cls(text) from e


def prompt_list(prompt, name: str = "prompt") -> list[str]:
    """Prompts as a list; an image where the prompt goes (``pipe(image, prompt)``, the order of
    diffusers' image-to-video pipelines) is told to go in ``image=``."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    first = prompt[0] if isinstance(prompt, (list, tuple)) and prompt else prompt
    image = isinstance(first, (np.ndarray, torch.Tensor, os.PathLike)) or hasattr(first, "getpixel")  # (PIL)
    raise TypeError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}"
                    + (": pass the image as image= (by name; diffusers' image-to-video pipelines take it first)"
                       if image else ""))


def negative_prompts(negative_prompt, count: int) -> list[str]:
    """A call's negative prompts, one per prompt: none given is the official empty prompt."""
    negatives = [""] * count if negative_prompt is None else prompt_list(negative_prompt, "negative_prompt")
    if len(negatives) == 1:
        negatives *= count
    if len(negatives) != count:
        raise ValueError(f"got {len(negatives)} negative prompts for {count} prompts: give one, or one per prompt")
    return negatives


def whole_number(value, name: str, optional: bool = False, low: int = 1, high: int | None = None) -> int | None:
    """A whole number (numpy integers too) from ``low`` (to ``high`` when given: the message then
    names the whole range); ``None`` only where ``optional``."""
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be a whole number, got {value!r}") from None
    if high is not None and not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {number}")
    if number < low:
        raise ValueError(f"{name} must be at least {low}, got {number}")
    return number


def real_number(value, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:  # a whole number too large for a float (10**400): infinite, which the checks refuse
        return math.inf


def generator_seed(generator) -> int:
    """A freshly seeded generator's seed, else a seed drawn from it; the generator is advanced either
    way, so the next call with it gives new outputs."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (or a list of them), got {type(generator).__name__}")
    fresh = torch.Generator(device=generator.device).manual_seed(generator.initial_seed()).get_state()
    if torch.equal(fresh, generator.get_state()):
        seed = generator.initial_seed() % (SEED_LIMIT + 1)
    else:
        seed = int(torch.randint(0, SEED_LIMIT, (1,), generator=generator, device=generator.device))
    torch.randint(0, 2, (1,), generator=generator, device=generator.device)
    return seed


def call_seeds(generator, seed, count: int) -> list[int] | None:
    """A call's base seed (one item) or one seed per output (a list of generators); None: ``seed``
    (with neither, one drawn from torch's global generator, so ``torch.manual_seed`` repeats runs)."""
    if generator is None:
        return [seed_from_torch(SEED_LIMIT)] if seed is None else None
    if seed is not None:
        raise ValueError("give generator or seed, not both")
    if isinstance(generator, (list, tuple)):
        if len(generator) != count:
            raise ValueError(f"got a list of {len(generator)} generators for {count} outputs: give one generator "
                             "(not in a list) for all, or a list of one per output")
        return [generator_seed(g) for g in generator]
    return [generator_seed(generator)]


OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def check_output_type(output_type) -> None:
    """A pipeline call's ``output_type``: one of diffusers' forms this pipeline makes."""
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")


def outputs_as(results, output_type: str, video: bool, device: torch.device | str = "cpu"):
    """The outputs in diffusers' forms: PIL lists, or one batch (np / pt in [0, 1], latents). The
    tensors (``pt``, ``latent``) are on ``device``, the pipeline's (diffusers leaves them on its
    execution device; a result's own latents stay on the CPU, where saving reads them)."""
    if output_type == "latent":
        return torch.stack([r.latents for r in results]).to(device)
    if output_type == "pil":
        from PIL import Image

        return ([[Image.fromarray(f) for f in r.frames] for r in results] if video
                else [Image.fromarray(r.frames[0]) for r in results])
    batch = np.stack([np.stack(r.frames) if video else r.frames[0] for r in results]).astype(np.float32) / 255.0
    if output_type == "np":
        return batch
    return torch.from_numpy(batch).movedim(-1, -3).contiguous().to(device)


def step_hook(pipe, callback, tensor_inputs):
    """The API's ``on_step`` for a call of the pipeline ``pipe``: diffusers' ``callback_on_step_end``
    (a function or a ``PipelineCallback``, whose ``tensor_inputs`` it takes), and
    ``pipe._interrupt`` looked at after every step even without a callback (a progress callable or
    another thread may set it)."""
    if tensor_inputs is not None and (isinstance(tensor_inputs, str)
                                      or any(name != "latents" for name in tensor_inputs)):
        raise ValueError(f"callback_on_step_end_tensor_inputs can only name 'latents', got {tensor_inputs!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback_on_step_end must be callable, got {type(callback).__name__}")
    inputs = getattr(callback, "tensor_inputs", None)
    inputs = list(inputs if inputs is not None else tensor_inputs if tensor_inputs is not None else ["latents"])
    if any(name != "latents" for name in inputs):
        raise ValueError(f"the callback's tensor_inputs can only name 'latents', got {inputs!r}")

    def on_step(step: int, total: int, t: float, latents: torch.Tensor):
        new = None
        if callback is not None:
            guidance = pipe._guidance_scale
            out = callback(pipe, step - 1, torch.tensor(t), {"latents": latents} if inputs else {})
            if out is not None and not isinstance(out, dict):
                raise TypeError(f"callback_on_step_end must return a dict (or None), got {type(out).__name__}")
            if pipe._guidance_scale != guidance:  # diffusers' CFG cut-off idiom: it would be ignored
                pipe._guidance_scale = guidance
                raise ValueError("callback_on_step_end changed pipe._guidance_scale: the guidance scale is "
                                 "fixed for a call here (pass guidance_scale=; it cannot change between steps)")
            new = (out or {}).get("latents")
        if pipe._interrupt:  # the latents it returned are the result
            raise StopSampling(new)
        return new

    return on_step


def pipeline_config(pipe):
    """diffusers' ``pipe.config`` of a pipeline: a ``FrozenDict`` of its class, the name its model
    was loaded by and, for each component, ``(library, class name)`` as diffusers records them (the
    library's name for diffusers' and transformers' classes, else the class's module; a
    ``torch.compile`` wrapper is recorded as what it wraps)."""
    from ..runtime import quiet_imports

    with quiet_imports():
        from diffusers.configuration_utils import FrozenDict

    def library_class(part) -> tuple[str | None, str | None]:
        if part is None:
            return (None, None)
        part = getattr(part, "_orig_mod", part)
        module = type(part).__module__
        top = module.split(".")[0]
        return (top if top in ("diffusers", "transformers") else module, type(part).__name__)

    model = pipe.model
    name = model.files.name if model.files is not None else model.spec.name
    config = {"_class_name": type(pipe).__name__, "_name_or_path": str(name)}
    config.update((key, library_class(part)) for key, part in pipe.components.items())
    return FrozenDict(config)
