"""A diffusers-shaped face over the API: ``Showo2Pipeline``.

    from showo2_cli import Showo2Pipeline
    pipe = Showo2Pipeline.from_pretrained("demo", torch_dtype=torch.float32, device="cpu")
    image = pipe("a red circle", num_inference_steps=30, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    print(pipe.caption(image, "What shape is it?"))
    pipe.enable_model_cpu_offload()      # or enable_sequential_cpu_offload(), or pipe.to("cuda")

Everything delegates to the functions of :mod:`showo2_cli.api` (``load``, ``text_to_image``,
``text_to_video``, ``image_to_video``, ``caption``) with their option objects, and offload to
:func:`showo2_cli.runtime.enable_offload`; nothing is computed here that they do not compute.

Seeds follow diffusers' habits and stay equal to the CLI's: a freshly seeded generator's seed is the base
seed, so ``pipe(p, generator=torch.Generator().manual_seed(7))`` gives the image ``showo2 t2i p --seed 7``
writes; each call then advances the generator (calling again with it gives new images, reproducibly); a list
of generators seeds one output each (``GenerateOptions.seeds``, in the run's batches); with neither
``generator`` nor ``seed`` the seed comes from torch's global generator (``torch.manual_seed``).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .dialogue import check_streamer
from .errors import UsageError
from .loading import Showo2, fetch, load
from .options import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SAMPLER,
    DEFAULT_VIDEO_FRAMES,
    OFFLOAD_MODES,
    STEPS_RANGE,
    CaptionOptions,
    GenerateOptions,
    RuntimeOptions,
)
from .pipeline_lora import LoraLoaderMixin
from .pipeline_memory import MemoryTogglesMixin
from .pipeline_parts import PartsMixin
from .pipelines import caption, image_to_video, text_to_image, text_to_video
from .pipelines.arguments import (
    CALL_HINTS,
    CAPTION_NAMES,
    DEVICE_NAMES,
    GENERATE_HINTS,
    MEMORY_NAMES,
    PYTHON_NAMES,
    SAVE_HINTS,
    call_seeds,
    check_kwargs,
    check_output_type,
    check_pretrained_kwargs,
    device_from_map,
    generation_settings,
    lora_names,
    negative_prompts,
    outputs_as,
    prompt_list,
    python_names,
    real_number,
    sampling_temperature,
    step_hook,
    whole_number,
)
from .runtime import (
    cpu_by_default,
    disable_offload,
    enable_offload,
    load_placement,
    one_call_at_a_time,
    pick_device,
    python_dtype,
    quiet_imports,
)
from .sampling import uses_uncond

with quiet_imports():
    from diffusers.utils import BaseOutput


@dataclass
class Showo2PipelineOutput(BaseOutput):
    """``images``: a list of PIL images, or a batch: ``np`` (N, H, W, 3) or ``pt`` (N, 3, H, W) floats in
    [0, 1], ``latent`` (N, C, h, w); ``frames``: for videos, one list of PIL frames per output, or
    (N, F, H, W, 3) / (N, F, 3, H, W) / (N, C, T, h, w); ``results``: the API's
    :class:`~showo2_cli.pipelines.Generated` records (seeds, parameters), for ``api.save_results``."""

    images: Any = None
    frames: Any = None
    results: list | None = None


class Showo2Pipeline(LoraLoaderMixin, MemoryTogglesMixin, PartsMixin):
    """A loaded Show-o2 model with diffusers' calling conventions. Calls on one pipeline (generation,
    ``caption``, ``to``, ``load_lora_weights``) run one at a time: threads sharing it wait their turn."""

    def __init__(self, model: Showo2 | None = None, network=None, vae=None, tokenizer=None, scheduler=None, *,
                 transformer=None):
        """Over a loaded model (``showo2_cli.load(...)``), or diffusers' way, over another pipeline's
        parts: ``Showo2Pipeline(**pipe.components)``, maybe with some replaced (``vae=``,
        ``network=`` / ``transformer=``, ``scheduler=``, checked as assigning them is). The two share
        the weights and what is done to them (``to()``, LoRA adapters, CPU offload), as diffusers'
        pipelines sharing modules do; a part replaced or a scheduler set on either stays its own."""
        if not hasattr(model, "network") or isinstance(model, Showo2Pipeline):  # (a loaded model: loading.Showo2)
            got = "no model" if model is None else f"model={type(model).__name__}"  # (a pipeline: from_pipe)
            raise TypeError("Showo2Pipeline needs the loaded model: Showo2Pipeline(showo2_cli.load(...)), "
                            "Showo2Pipeline(**pipe.components), Showo2Pipeline.from_pipe(pipe) or "
                            f"Showo2Pipeline.from_pretrained(...), got {got}")
        if network is not None and transformer is not None and network is not transformer:
            raise ValueError("network and transformer name the same part: pass one of them")
        if tokenizer is not None and tokenizer is not model.tokenizer:
            raise ValueError("the tokenizer must be the model's own (its special tokens and ids are the model's)")
        # one call at a time (runtime.one_call_at_a_time): a call's state lives here, as diffusers keeps it
        self._call_lock = threading.RLock()
        self.model = model.shared() if isinstance(model, Showo2) else model  # (parts assigned here: its own)
        # the parts loaded and their records: one assigned in their place is recorded as such (_given)
        self._loaded_parts = {"network": (getattr(model.network, "_orig_mod", model.network), model.network_given),
                              "vae": (model.vae, model.vae_given)}
        self.sampler = DEFAULT_SAMPLER  # the default of ``sampler=``; ``pipe.scheduler = ...`` sets it
        self.default_shift: float | None = None
        for name, part in (("network", network if network is not None else transformer), ("vae", vae),
                           ("scheduler", scheduler)):
            if part is not None:
                setattr(self, name, part)  # (checked and recorded as assigning it is)
        self._progress_bar_config: dict = {}
        self._interrupt = False  # a step callback sets it to end the sampling (diffusers' ``pipe._interrupt``)
        self._num_timesteps, self._guidance_scale = 0, 0.0  # of the running call (diffusers' attributes)

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: the copy gets a lock of its own
        return {k: v for k, v in self.__dict__.items() if k != "_call_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._call_lock = threading.RLock()

    # ---- loading and placement --------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str | os.PathLike = "demo", *, torch_dtype: torch.dtype | str | None = None,
                        device: str | torch.device | None = None, vae: str | os.PathLike | None = None,
                        runtime: RuntimeOptions | None = None, progress=None,
                        local_files_only: bool = False, revision: str | None = None,
                        cache_dir: str | os.PathLike | None = None, token: bool | str | None = None,
                        force_download: bool = False, proxies: dict | None = None, subfolder: str | None = None,
                        use_safetensors: bool | None = None, variant: str | None = None,
                        device_map: str | torch.device | None = None, low_cpu_mem_usage: bool = True,
                        lora: str | os.PathLike | list | tuple | None = (), **unsupported: Any) -> Showo2Pipeline:
        """Load by name (``demo``, a folder, a variant such as ``1.5B``, a Hub repo id, which ``@revision``
        pins: a commit, tag or branch; or ``revision=``). A name that is not cached is downloaded with
        :func:`showo2_cli.hub.pull` when online (``progress`` gets its bytes) unless ``local_files_only`` (then,
        as with ``HF_HUB_OFFLINE``, only local folders and the cache are used). Default placement is diffusers':
        the CPU in float32; ``device="auto"`` picks CUDA, then MPS, then the CPU (and bf16 on CUDA unless
        ``torch_dtype`` says). ``runtime`` (:class:`~showo2_cli.options.RuntimeOptions`): attention backend,
        quantization (``quantize="nf4"`` or ``"int8wo"``), compilation, VAE tiling and CPU offload
        (``offload=``), as the CLI options; its ``device`` and ``dtype`` (when not ``auto``) stand for
        ``device`` and ``torch_dtype`` when those are not given.
        ``lora``: a LoRA adapter (a folder, a checkpoint, a training run or a Hugging Face repo id)
        or a list of them, each maybe ``(path, weight)``, merged in order as ``--lora`` does (later:
        :meth:`load_lora_weights`, bit for bit the same). The network's heads load on first
        use (``load(heads=())``): the flow head with the first generation, an untied ``lm_head``
        with the first :meth:`caption`; :meth:`save_pretrained` loads what is missing first.

        The Hub arguments mean what they mean to huggingface_hub, for this call only:
        ``cache_dir`` is the cache looked in and downloaded into (default ``HF_HUB_CACHE``);
        ``token`` a string is sent, ``False`` sends none (even with ``HF_TOKEN`` set), ``True``
        needs the saved one (``hf auth login`` or ``HF_TOKEN``), None (``use_auth_token``, its old
        name) sends the saved one unless ``HF_HUB_DISABLE_IMPLICIT_TOKEN`` is set; ``force_download``
        fetches the model repo's files again (the tokenizer and VAE repos it shares with other
        models only when missing). ``proxies`` and ``subfolder`` other than None are refused:
        huggingface_hub takes no per-call proxies (set ``HTTPS_PROXY``), and a Show-o2 model is the
        whole of its repo or folder (name the folder itself).

        diffusers' other arguments: ``use_safetensors=True`` refuses pickled weights (``.bin``,
        ``.pth``); ``device_map`` names one device (``"cuda"``, ``"cuda:1"``; ``"balanced"``
        or ``"auto"``: the best one) as ``device`` does, since the model runs on one device;
        ``low_cpu_mem_usage`` is accepted either way (weights are always memory-mapped, built in place);
        ``variant`` must be None (Show-o2 repos publish one weight set: ``torch_dtype`` picks the
        precision); ``torch_dtype="auto"`` is bf16 on CUDA, float32 elsewhere. The VAE's
        encoder, which only captions and image-to-video use, loads on their first call, then stays."""
        from .hub import with_revision
        from .hub_auth import hub_access

        if not isinstance(name, (str, os.PathLike)):
            raise TypeError(f"from_pretrained needs a model name or folder, got {type(name).__name__}")
        token = check_pretrained_kwargs(unsupported, variant, proxies, subfolder, token, force_download,
                                        local_files_only)
        if device_map is not None:
            if device is not None:
                raise ValueError("pass device or device_map, not both")
            device = device_from_map(device_map)
        name = with_revision(name, revision)
        with python_names(DEVICE_NAMES):
            if runtime is not None:
                runtime.validate()
            # api.load's one reading of device, torch_dtype ("auto" too) and the options', before any download
            dev, dtype = load_placement(runtime, device, torch_dtype, "torch_dtype")
        with hub_access(cache_dir, token):  # this call's cache and token, for the pull and the load alike
            fetch(name, force_download, local_files_only, progress, when_needed=True, vae=vae)
            with python_names(lora_names("lora")):
                return cls(load(name, vae=vae, device=dev, dtype=dtype, runtime=runtime,
                                local_files_only=local_files_only, use_safetensors=use_safetensors, lora=lora,
                                vae_parts=("decoder",), heads=()))  # each head on first use (a caption, a generation)

    @one_call_at_a_time
    def save_pretrained(self, save_directory: str | os.PathLike, *, safe_serialization: bool = True,
                        overwrite: bool = False, **unsupported) -> Path:
        """Write the loaded model (with the LoRA adapters merged on load) as a showo2-format folder
        that :meth:`from_pretrained` loads back: safetensors weights in the model's dtype, config,
        tokenizer, VAE; atomically (a failure leaves no half folder). An existing folder is
        replaced only with ``overwrite=True``. Not after quantization or offload: their weights
        are not the model's plain tensors (save first, or load it again without them). diffusers'
        ``push_to_hub``, ``variant`` and ``max_shard_size`` are refused, saying what to do instead."""
        check_kwargs("save_pretrained", unsupported, hints=SAVE_HINTS)
        from .errors import OutputError
        from .loading import save_folder

        if not str(save_directory).strip():
            raise ValueError("save_directory must name a folder")
        folder = Path(save_directory).expanduser()
        if folder.exists() and not overwrite:
            raise OutputError(f"'{save_directory}' already exists; pass overwrite=True to replace it")
        if not safe_serialization:
            raise ValueError("only safetensors are written (safe_serialization=True): a pickle could run code")
        if self.offload != "none":
            raise UsageError(f"this pipeline uses {self.offload} CPU offload, whose hooks hold the weights; save it "
                             "before enabling offload")
        quantized = "--quantize to save it"
        if self.model.quantize != "none":  # refused before a head left out is loaded (and quantized) for nothing
            raise UsageError(f"the weights are quantized ({self.model.quantize}); load the model again without "
                             + quantized)
        network = getattr(self.network, "_orig_mod", self.network)  # torch.compile's wrapper: its module
        with python_names(MEMORY_NAMES):
            network.load_heads()  # the whole network is written (a head not yet run loads first)
        state = network.state_dict()
        odd = next((k for k, v in state.items() if type(v) is not torch.Tensor or v.is_meta), None)
        if odd is not None:
            raise UsageError(f"the weights are quantized or offloaded ({odd}); load the model again without " + quantized)
        extra = {"saved_from": self.model.files.name if self.model.files else self.spec.name}
        if self.model.adapters:
            extra["lora_merged"] = list(self.model.adapters)
        if overwrite and self.model.files is not None:  # never replace a folder holding the model it saves
            from .media import check_folder_keeps_inputs

            check_folder_keeps_inputs(folder, [(p, True) for p in self.model.files.pieces()],
                                      rewritable=self.model.files.root)
        folder.parent.mkdir(parents=True, exist_ok=True)  # as diffusers does
        return save_folder(folder, self.spec, state, tokenizer=self.tokenizer, vae=self.model.vae,
                           overwrite=overwrite, extra=extra)

    @one_call_at_a_time
    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None, *,
           silence_dtype_warnings: bool = False) -> Showo2Pipeline:
        """Move network and VAE together (not after offload is enabled: the hooks place them), as
        diffusers' ``to``: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``, or by keyword;
        ``silence_dtype_warnings`` is taken (no dtype warning is ever given here)."""
        if self.offload != "none":
            raise UsageError(f"this pipeline uses {self.offload} CPU offload, which places the weights itself; "
                             "call remove_all_hooks() first to move it with .to()")
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise ValueError("pass the device first and the dtype second: .to(device, dtype)")
            device, dtype = None, device
        with python_names(DEVICE_NAMES):
            device = pick_device(str(device)) if device is not None else None
            self.model.to(device=device, dtype=python_dtype(dtype, device or self.model.device) if dtype is not None else None)
        return self

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Weights in CPU memory; the network or the VAE on the device while it runs (accelerate). A
        sequential offload enabled before is replaced, as in diffusers."""
        self._offload("model", gpu_id, device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Weights in CPU memory; each layer on the device only for its own forward (least memory). A
        model offload enabled before is replaced, as in diffusers."""
        self._offload("sequential", gpu_id, device)

    @one_call_at_a_time
    def _offload(self, mode: str, gpu_id: int | None, device) -> None:
        if self.offload == mode:  # again: nothing to change (diffusers allows the repeat)
            return
        if self.offload != "none":  # the other mode: its hooks off first, as diffusers' remove_all_hooks() there
            disable_offload(self.model)
        with python_names(DEVICE_NAMES):
            dev = pick_device(str(device or "auto"))
            if gpu_id is not None and dev.startswith("cuda"):
                dev = pick_device(f"cuda:{int(gpu_id)}")
        self.model.to(device="cpu")
        with python_names(MEMORY_NAMES):  # (sequential loads the heads left out first)
            enable_offload(self.model, mode, dev)

    @one_call_at_a_time
    def remove_all_hooks(self) -> None:
        """Undo :meth:`enable_model_cpu_offload` / :meth:`enable_sequential_cpu_offload` (diffusers'
        call): the weights stay where the hooks left them; :meth:`to` moves them again."""
        disable_offload(self.model)

    @property
    def offload(self) -> str:
        """The CPU offload in use: ``none``, ``model`` or ``sequential`` (``RuntimeOptions(offload=)`` too)."""
        return self.model.offload

    @classmethod
    def from_pipe(cls, pipeline: Showo2Pipeline, **kwargs) -> Showo2Pipeline:
        """diffusers' ``from_pipe``: a new pipeline over ``pipeline``'s components (no memory added),
        any of them replaced by ``kwargs`` (``scheduler=``, ``vae=``, ``transformer=``, ...)."""
        if not isinstance(pipeline, Showo2Pipeline):
            raise TypeError(f"from_pipe takes a Showo2Pipeline, got {type(pipeline).__name__}")
        parts = pipeline.components
        if "transformer" in kwargs or "network" in kwargs:  # one name given: the other follows it
            del parts["network"], parts["transformer"]
        return cls(**{**parts, **kwargs})

    # ---- generation -------------------------------------------------------------------------
    @one_call_at_a_time
    @cpu_by_default  # the seed drawn from torch's global CPU generator, whatever the caller's default device
    def __call__(self, prompt: str | list[str] | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | list | None = None, *,
                 height: int | None = None, width: int | None = None, num_images_per_prompt: int = 1,
                 num_frames: int | None = None, image=None, seed: int | None = None, sampler: str | None = None,
                 shift: float | None = None, batch_size: int = 4, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True, negative_prompt: str | list[str] | None = None,
                 callback_on_step_end=None, callback_on_step_end_tensor_inputs: list[str] | None = None,
                 progress=None, sigmas=None, timesteps=None, **unsupported):
        """Text to image; with ``num_frames`` text to video; with ``image`` (a path, PIL image, array
        or tensor) image to video. ``num_inference_steps`` is the number of grid points (steps - 1
        model calls, as ``--steps``); unset values are the model's. ``negative_prompt`` (one, or one
        per prompt) replaces the official empty prompt of guidance's unconditional rows
        (``--negative-prompt``). ``latents`` is the exact starting noise (``--noise``).
        ``callback_on_step_end(pipe, step_index, t, {"latents": x})`` runs after every step, as in
        diffusers (``t``: Show-o2's time, 0 = noise, 1 = clean; the dict it returns may hold new
        ``latents``; setting ``pipe._interrupt = True`` ends the sampling there: the outputs in
        progress are decoded from the latents reached, later batches are not made).
        ``return_dict=False`` returns ``(images,)`` (``(frames,)`` for videos). ``sigmas`` (one noise
        level per model call, 1 = noise, without the final 0; shifted by ``shift`` as diffusers'
        flow schedulers shift them) or ``timesteps`` (diffusers' scale, sigma * 1000, used as given)
        replace the grid, as diffusers' ``retrieve_timesteps`` takes them (:mod:`showo2_cli.grids`;
        a list, array or tensor; recorded in ``results[i].params``); the samplers whose diffusers
        scheduler takes no such grid (``heun``; ``dpm++``; ``unipc``'s ``timesteps``) refuse them.
        diffusers' arguments this model has no use for (``max_sequence_length``, ``prompt_embeds``,
        ``fps``, ...) are refused by name, saying what to pass instead."""
        check_kwargs("Showo2Pipeline.__call__", unsupported, hints=CALL_HINTS)
        check_output_type(output_type)
        prompts = prompt_list(prompt)
        negatives = negative_prompts(negative_prompt, len(prompts))
        n = whole_number(num_images_per_prompt, "num_images_per_prompt")
        height, width = whole_number(height, "height", True), whole_number(width, "width", True)
        video = num_frames is not None or image is not None
        default_h, default_w = self.spec.default_size(video)
        size = None if height is None and width is None else (height or default_h, width or default_w)
        seeds = call_seeds(generator, seed, len(prompts) * n)
        on_step = step_hook(self, callback_on_step_end, callback_on_step_end_tensor_inputs)
        if latents is not None and not isinstance(latents, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        self._interrupt = False
        opts = GenerateOptions(size=size, steps=whole_number(num_inference_steps, "num_inference_steps", True,
                                                                     *STEPS_RANGE),
                               guidance=real_number(guidance_scale, "guidance_scale"), seed=seeds[0] if seeds else seed,
                               seeds=seeds if seeds is not None and len(seeds) > 1 else None,  # one per output
                               shift=real_number(shift if shift is not None else self.default_shift, "shift"),
                               num_per_prompt=n, batch_size=whole_number(batch_size, "batch_size"),
                               frames=whole_number(num_frames, "num_frames", True) or (DEFAULT_VIDEO_FRAMES if video else 1),
                               method=sampler or self.sampler, noise=latents, negative_prompt=negatives,
                               sigmas=sigmas, timesteps=timesteps)
        resolved = opts.resolved(self.spec, video)  # checked once, by the API below
        if any(n.strip() for n in negatives) and not uses_uncond(resolved.guidance):  # the CLI's notice
            warnings.warn(f"negative_prompt has no effect at guidance_scale {resolved.guidance:g} (no unconditional "
                          "branch)", UserWarning, stacklevel=4)  # (the caller: past the lock and the pinning)
        self._num_timesteps, self._guidance_scale = resolved.steps - 1, resolved.guidance
        with self._progress(progress) as report, python_names(PYTHON_NAMES):
            # one run, in batches of batch_size: output k uses the base seed + k, or its own generator's seed
            results = self._run(prompts, opts, image, video, report, on_step)
        for note in dict.fromkeys(note for item in results for note in item.unused_prompt_notes()):  # as diffusers
            warnings.warn(note, UserWarning, stacklevel=4)  # to the caller, past the lock and the pinning
        out = outputs_as(results, output_type, video, self.device)  # tensors on the pipeline's device
        if not return_dict:
            return (out,)
        return Showo2PipelineOutput(frames=out, results=results) if video else \
            Showo2PipelineOutput(images=out, results=results)

    def _run(self, prompts, opts, image, video, report, on_step):
        if image is not None:
            return image_to_video(self.model, image, prompts, opts, progress=report, on_step=on_step)
        if video:
            return text_to_video(self.model, prompts, opts, progress=report, on_step=on_step)
        return text_to_image(self.model, prompts, opts, progress=report, on_step=on_step)

    @property
    def num_timesteps(self) -> int:
        """Sampling steps per output of the running (or last) call: diffusers' ``num_timesteps``,
        which its callbacks compare ``step_index`` with (``num_inference_steps - 1`` here: it counts
        grid points). ``callback_on_step_end`` runs once a step; that is one model call a step for
        every sampler but ``heun``, which makes two a step but the last."""
        return self._num_timesteps

    @property
    def guidance_scale(self) -> float:
        """The guidance scale of the running (or last) call."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return uses_uncond(self._guidance_scale)

    @property
    def interrupt(self) -> bool:
        """True once a step callback has set ``pipe._interrupt``: the rest of the sampling is skipped."""
        return self._interrupt

    # ---- understanding ----------------------------------------------------------------------
    @one_call_at_a_time
    @cpu_by_default
    def caption(self, image, question: str | list[str] | None = None, *, max_new_tokens: int | None = None,
                temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                seed: int | None = None, streamer=None, do_sample: bool | None = None, generation_config=None,
                **options) -> str | list[str]:
        """Answer a question (``None``: describe it) about an image or a video (a path, a PIL image, an array or
        tensor, or a video's frames as a list of images); a list of questions gives a list of answers. ``streamer``:
        transformers' ``TextStreamer`` / ``TextIteratorStreamer`` (or anything with ``put`` and ``end``), fed as
        ``generate(streamer=)`` feeds it, for one question; ``stop_strings`` (a string or a list) end each answer where
        one first appears, as transformers' ``generate(stop_strings=)``. ``do_sample`` as transformers' ``generate``:
        decoding is greedy unless it is True or ``temperature`` > 0 (``do_sample=True`` alone samples at temperature
        1.0). ``max_new_tokens``: None is the model's 300. ``generation_config``: a transformers ``GenerationConfig``
        whose settings (those it sets apart from transformers' defaults) apply unless the call gives them, as in
        ``generate``. Other ``CaptionOptions`` fields (``frames``, ``mask_mode``, ``template``, ``size``, ...) pass through."""
        check_streamer(streamer)
        try:  # a refused call ends the streamer too (caption() ends it from here on): a reader would wait
            if question is not None and not isinstance(question, (str, list, tuple)):
                raise TypeError(f"question must be a string or a list of strings, got {type(question).__name__}")
            questions = [] if question is None else [question] if isinstance(question, str) else list(question)
            if question is not None and not questions:  # a list of no questions would get one answer
                raise ValueError("question is an empty list: pass None to have it described, or the questions")
            allowed = {f.name for f in fields(CaptionOptions)} - {"questions"}
            check_kwargs("caption", options, allowed, GENERATE_HINTS)
            if generation_config is not None:  # (its settings under the call's own, as generate takes them)
                named = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                         "top_k": top_k, "do_sample": do_sample}
                settings = generation_settings(generation_config, {**options, **named}, allowed | named.keys())
                named = {k: settings.pop(k) for k in named}
                options = settings
                max_new_tokens, temperature, top_p, top_k, do_sample = named.values()
            if max_new_tokens is None:
                max_new_tokens = DEFAULT_MAX_NEW_TOKENS
            temperature = sampling_temperature(do_sample, temperature)
            opts = CaptionOptions(questions=questions, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, top_k=top_k, seed=seed, **options)
            with python_names(CAPTION_NAMES):  # before the notice reads them ('>=' between str and float)
                opts.validate()
            unused = [CAPTION_NAMES.get(name, name) for name in opts.unused_sampling_options()]
            if unused:  # the CLI's notice; transformers' generate warns alike when do_sample is off
                warnings.warn(f"{', '.join(unused)} {'has' if len(unused) == 1 else 'have'} no effect at "
                              f"temperature {temperature:g} (decoding is greedy): pass temperature > 0 to sample",
                              UserWarning, stacklevel=4)  # the caller of pipe.caption (past the lock and the pinning)
        except BaseException:
            if streamer is not None:
                streamer.end()
            raise
        with python_names(CAPTION_NAMES):
            result = caption(self.model, image, opts, streamer=streamer)
        for line in result.notices[1 if unused else 0:]:  # (the first said above) an answer the context shortened:
            warnings.warn(line, UserWarning, stacklevel=4)  # a warning, as transformers' generate past max_length
        return result.answers if isinstance(question, (list, tuple)) else result.answers[0]


__all__ = ["Showo2Pipeline", "Showo2PipelineOutput", "OFFLOAD_MODES"]
