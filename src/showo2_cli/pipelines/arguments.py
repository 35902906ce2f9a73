"""The arguments of :class:`~showo2_cli.pipeline.Showo2Pipeline` as the API takes them: diffusers'
``from_pretrained`` arguments, prompts, numbers, seeds from generators, dtypes, and images given
as PIL images, arrays or tensors (read as diffusers' image processor reads them); the library's
errors renamed with the pipeline's argument names; diffusers' ``callback_on_step_end`` as the
API's step callback (:func:`step_hook`); and its outputs in diffusers' forms."""

from __future__ import annotations

import math
import operator
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
    "--seed": "seed", "--negative-prompt": "negative_prompt", "--offload": "enable_model_cpu_offload()",
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
    "--dtype bf16 or fp32": PYTHON_NAMES["--dtype bf16 or fp32"],
}


#: transformers' ``generate`` arguments a caption call does not take -> what to pass instead
GENERATE_HINTS = {
    "do_sample": "pass temperature > 0 to sample (0, the default, is greedy)", "generator": "pass seed= (an int)",
    "max_length": "pass max_new_tokens=", "num_beams": "beam search is not offered",
    "num_return_sequences": "call again with another seed",
    "stop": "stop strings are Conversation.ask's (TextSampling(stop_strings=...))",
    "questions": "pass question= (a list for several)",
}
GENERATE_HINTS["stop_strings"] = GENERATE_HINTS["stop"]


def check_caption_kwargs(given: dict, allowed) -> None:
    """A ``caption`` keyword that is no ``CaptionOptions`` field: a TypeError naming ``caption()``
    (not the options class) and, for transformers' ``generate`` names, what to pass instead."""
    for key in given:
        if key not in allowed:
            hint = GENERATE_HINTS.get(key)
            raise TypeError(f"caption() got an unexpected keyword argument {key!r}"
                            + (f": {hint}" if hint else ""))


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
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)) and all(isinstance(p, str) for p in prompt):
        return list(prompt)
    raise TypeError(f"{name} must be a string or a list of strings, got {type(prompt).__name__}")


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


def outputs_as(results, output_type: str, video: bool):
    """The outputs in diffusers' forms: PIL lists, or one batch (np / pt in [0, 1], latents)."""
    if output_type == "latent":
        return torch.stack([r.latents for r in results])
    if output_type == "pil":
        from PIL import Image

        return ([[Image.fromarray(f) for f in r.frames] for r in results] if video
                else [Image.fromarray(r.frames[0]) for r in results])
    batch = np.stack([np.stack(r.frames) if video else r.frames[0] for r in results]).astype(np.float32) / 255.0
    if output_type == "np":
        return batch
    return torch.from_numpy(batch).movedim(-1, -3).contiguous()


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
