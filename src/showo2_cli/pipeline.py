"""A diffusers-shaped face over the API: ``Showo2Pipeline``.

    from showo2_cli import Showo2Pipeline
    pipe = Showo2Pipeline.from_pretrained("demo", torch_dtype=torch.float32, device="cpu")
    image = pipe("a red circle", num_inference_steps=30, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    print(pipe.caption(image, "What shape is it?"))
    pipe.enable_model_cpu_offload()      # or enable_sequential_cpu_offload(), or pipe.to("cuda")

Everything delegates to the functions of :mod:`showo2_cli.api` (``load``, ``text_to_image``,
``text_to_video``, ``image_to_video``, ``caption``) with their option objects, and offload to
:func:`showo2_cli.runtime.enable_offload`; nothing is computed here that they do not compute. A
generator's *seed* is the base seed (its state is not consumed), so
``pipe(p, generator=torch.Generator().manual_seed(7))`` gives the image ``showo2 t2i p --seed 7`` writes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils import BaseOutput

from .errors import UsageError
from .loading import Showo2, load
from .options import OFFLOAD_MODES, CaptionOptions, GenerateOptions, RuntimeOptions
from .pipelines import caption, image_to_video, text_to_image, text_to_video
from .runtime import enable_offload, pick_device, pick_dtype, torch_dtype

OUTPUT_TYPES = ("pil", "np", "latent")


@dataclass
class Showo2PipelineOutput(BaseOutput):
    """``images``: one per output (PIL, or float arrays in [0, 1] with ``output_type="np"``, or the
    latents); ``frames``: for videos, one list of frames per output; ``results``: the API's
    :class:`~showo2_cli.pipelines.Generated` records (seeds, parameters), for ``api.save_results``."""

    images: list | None = None
    frames: list | None = None
    results: list | None = None


class Showo2Pipeline:
    """A loaded Show-o2 model with diffusers' calling conventions."""

    def __init__(self, model: Showo2):
        self.model = model
        self.offload = "none"

    # ---- loading and placement --------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str | os.PathLike = "demo", *, torch_dtype: torch.dtype | str | None = None,
                        device: str | torch.device | None = None, vae: str | os.PathLike | None = None,
                        runtime: RuntimeOptions | None = None, progress=None) -> Showo2Pipeline:
        """Load by name (``demo``, a folder, a variant such as ``1.5B``, a Hub repo id). A name that
        is not cached is downloaded with :func:`showo2_cli.hub.pull` when online (``progress`` gets
        its bytes). Default placement is diffusers': the CPU in float32; ``device="auto"`` picks
        CUDA, then MPS, then the CPU (and bf16 on CUDA unless ``torch_dtype`` says). ``runtime``
        (:class:`~showo2_cli.options.RuntimeOptions`): attention backend, quantization
        (``quantize="nf4"`` or ``"int8wo"``), compilation, VAE tiling, as the CLI options."""
        from .hub import needs_download, pull

        dev = pick_device(str(device or "cpu"))
        dtype = _dtype_for(torch_dtype, "auto" if str(device) == "auto" else "fp32", dev)
        if needs_download(str(name)):
            pull(str(name), progress=progress)
        return cls(load(name, vae=vae, device=dev, dtype=dtype, runtime=runtime))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | str | None = None) -> Showo2Pipeline:
        """Move network and VAE together (not after offload is enabled: the hooks place them)."""
        if self.offload != "none":
            raise UsageError(f"this pipeline uses {self.offload} CPU offload, which places the weights itself; "
                             "load it again to move it with .to()")
        if isinstance(device, torch.dtype) and dtype is None:
            device, dtype = None, device
        self.model.to(device=pick_device(str(device)) if device is not None else None,
                      dtype=torch_dtype(dtype) if dtype is not None else None)
        return self

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Weights in CPU memory; the network or the VAE on the device while it runs (accelerate)."""
        self._offload("model", gpu_id, device)

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device | None = None) -> None:
        """Weights in CPU memory; each layer on the device only for its own forward (least memory)."""
        self._offload("sequential", gpu_id, device)

    def _offload(self, mode: str, gpu_id: int | None, device) -> None:
        dev = pick_device(str(device or "auto"))
        if gpu_id is not None and dev.startswith("cuda"):
            dev = f"cuda:{int(gpu_id)}"
        self.model.to(device="cpu")
        enable_offload(self.model, mode, dev)
        self.offload = mode

    def enable_vae_tiling(self) -> None:
        """Encode/decode in tiles (diffusers' ``pipe.enable_vae_tiling()``; ``--vae-tiling on``)."""
        self._vae().enable_tiling()

    def disable_vae_tiling(self) -> None:
        """Never tile (``--vae-tiling off``); a freshly loaded pipeline tiles only what would not fit."""
        self._vae().disable_tiling()

    def enable_vae_slicing(self) -> None:
        """Decode one output at a time: forwards to ``vae.enable_slicing()``."""
        self._vae().enable_slicing()

    def _vae(self):
        if self.vae is None:
            raise UsageError("this pipeline was loaded without a VAE")
        return self.vae

    # ---- components -------------------------------------------------------------------------
    @property
    def network(self):
        return self.model.network

    @property
    def vae(self):
        return self.model.require_vae()

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def spec(self):
        return self.model.spec

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def components(self) -> dict[str, Any]:
        return {"network": self.model.network, "vae": self.model.vae, "tokenizer": self.model.tokenizer}

    # ---- generation -------------------------------------------------------------------------
    def __call__(self, prompt: str | list[str], num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, generator: torch.Generator | None = None, *,
                 height: int | None = None, width: int | None = None, num_images_per_prompt: int = 1,
                 num_frames: int | None = None, image=None, seed: int | None = None, sampler: str = "euler",
                 shift: float | None = None, batch_size: int = 4, latents: torch.Tensor | None = None,
                 output_type: str = "pil", progress=None) -> Showo2PipelineOutput:
        """Text to image; with ``num_frames`` text to video; with ``image`` (a path or a PIL image)
        image to video. ``num_inference_steps`` is the number of grid points (steps - 1 model
        calls, as ``--steps``); unset values are the model's. ``latents`` is the exact starting
        noise (``--noise``)."""
        if output_type not in OUTPUT_TYPES:
            raise UsageError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got '{output_type}'")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if generator is not None:
            if isinstance(generator, (list, tuple)):
                raise UsageError("give one generator (its seed is the base seed of every output)")
            if seed is not None:
                raise UsageError("give generator or seed, not both")
            seed = int(generator.initial_seed())
        video = num_frames is not None or image is not None
        side = self.spec.video_resolution if video else self.spec.resolution
        size = None if height is None and width is None else (height or side, width or side)
        opts = GenerateOptions(size=size, steps=num_inference_steps, guidance=guidance_scale, shift=shift, seed=seed,
                               num_per_prompt=num_images_per_prompt, batch_size=batch_size,
                               frames=num_frames if num_frames is not None else (17 if video else 1), method=sampler,
                               noise=latents)
        if image is not None:
            with _as_file(image) as path:
                results = image_to_video(self.model, path, prompts, opts, progress=progress)
        elif video:
            results = text_to_video(self.model, prompts, opts, progress=progress)
        else:
            results = text_to_image(self.model, prompts, opts, progress=progress)
        if output_type == "latent":
            return Showo2PipelineOutput(images=[r.latents for r in results], results=results)
        convert = _to_pil if output_type == "pil" else (lambda f: f.astype(np.float32) / 255.0)
        if video:
            frames = [[convert(f) for f in r.frames] for r in results]
            return Showo2PipelineOutput(frames=frames, results=results)
        return Showo2PipelineOutput(images=[convert(r.frames[0]) for r in results], results=results)

    # ---- understanding ----------------------------------------------------------------------
    def caption(self, image, question: str | list[str] | None = None, *, max_new_tokens: int = 300,
                temperature: float = 0.0, top_p: float | None = None, top_k: int | None = None,
                seed: int | None = None, **options) -> str | list[str]:
        """Answer a question (``None``: describe it) about an image or a video (a path, or a PIL
        image); a list of questions gives a list of answers. Other ``CaptionOptions`` fields
        (``frames``, ``mask_mode``, ``template``, ``size``, ...) pass through."""
        questions = [] if question is None else [question] if isinstance(question, str) else list(question)
        opts = CaptionOptions(questions=questions, max_new_tokens=max_new_tokens, temperature=temperature,
                              top_p=top_p, top_k=top_k, seed=seed, **options)
        with _as_file(image) as path:
            answers = caption(self.model, path, opts).answers
        return answers if isinstance(question, list) else answers[0]


def _dtype_for(value, default: str, device: str) -> torch.dtype:
    return torch_dtype(value) if value is not None else pick_dtype(default, device)


def _to_pil(frame: np.ndarray):
    from PIL import Image

    return Image.fromarray(frame)


@contextmanager
def _as_file(source) -> Iterator[str | os.PathLike]:
    """A path for the API: a path as is, a PIL image written losslessly to a temporary PNG."""
    from PIL import Image

    if isinstance(source, (str, os.PathLike)):
        yield source
        return
    if not isinstance(source, Image.Image):
        raise UsageError(f"expected a path or a PIL image, got {type(source).__name__}")
    fd, name = tempfile.mkstemp(suffix=".png", prefix="showo2-")
    os.close(fd)
    try:
        source.convert("RGB").save(name, format="PNG")
        yield name
    finally:
        Path(name).unlink(missing_ok=True)


__all__ = ["Showo2Pipeline", "Showo2PipelineOutput", "OFFLOAD_MODES"]
