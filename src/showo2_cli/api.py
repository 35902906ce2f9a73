"""The public Python API: everything the command line does, as functions and option objects.

    from showo2_cli import api
    model = api.load("demo")
    images = api.text_to_image(model, ["a red circle on a white background"], api.GenerateOptions(seed=1))
    plans = api.plan_outputs("t2i", "circle.png", ["a red circle on a white background"], [0], 1, seed=1)
    api.save_results(images, plans, "t2i")          # the same files `showo2 t2i` writes
    print(api.caption(model, "circle.png").answers[0])
    api.decode_file("circle.latents.safetensors", model.vae)   # what `showo2 decode` writes

    pipe = api.Showo2Pipeline.from_pretrained("demo")   # the diffusers-shaped face over the same functions
    image = pipe("a red circle", generator=torch.Generator().manual_seed(1)).images[0]

``showo2_cli`` re-exports these names lazily (``from showo2_cli import load, text_to_image``).
"""

from __future__ import annotations

from .hub import PullResult, pull
from .loading import Showo2, default_model, load, resolve_vae
from .options import (
    CaptionOptions,
    EncodeOptions,
    GenerateOptions,
    RuntimeOptions,
    TextSampling,
)
from .pipeline import Showo2Pipeline, Showo2PipelineOutput
from .pipelines import CaptionResult, Generated, caption, image_to_video, text_to_image, text_to_video
from .pipelines.latents import (
    DecodeResult,
    EncodeResult,
    decode,
    decode_file,
    encode,
    encode_file,
    load_latents,
    normalize_raw,
    save_latents,
    write_decoded,
)
from .processes import process_rank, process_share
from .runtime import check_memory, enable_offload, pick_device, pick_dtype
from .sampling import StopSampling
from .saving import OutputPlan, load_noise, plan_outputs, read_prompts, save_results

__all__ = ["Showo2", "load", "default_model", "resolve_vae",
           "CaptionOptions", "EncodeOptions", "GenerateOptions", "RuntimeOptions", "TextSampling",
           "caption", "CaptionResult", "text_to_image", "text_to_video", "image_to_video", "Generated",
           "read_prompts", "plan_outputs", "OutputPlan", "load_noise", "save_results",
           "encode", "encode_file", "EncodeResult", "decode", "decode_file", "DecodeResult", "save_latents", "load_latents", "normalize_raw", "write_decoded",
           "pick_device", "pick_dtype", "process_rank", "process_share", "check_memory", "enable_offload",
           "pull", "PullResult", "Showo2Pipeline", "Showo2PipelineOutput", "StopSampling"]
