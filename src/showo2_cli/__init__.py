"""showo2: run the Show-o2 unified multimodal model from the command line or from Python.

    from showo2_cli import load, caption, text_to_image, save_results, encode, decode   # see showo2_cli.api

Attributes are imported lazily so that `showo2 --help` and argument errors do not pay for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = ("Showo2", "load", "default_model", "resolve_vae", "CaptionOptions", "EncodeOptions", "GenerateOptions",
           "RuntimeOptions", "TextSampling", "caption", "CaptionResult", "text_to_image", "text_to_video",
           "image_to_video", "Generated", "read_prompts", "plan_outputs", "OutputPlan", "load_noise", "save_results",
           "encode", "encode_file", "EncodeResult", "decode", "decode_file", "DecodeResult", "save_latents", "load_latents", "normalize_raw",
           "write_decoded", "pull", "PullResult",
           "enable_offload", "Showo2Pipeline", "Showo2PipelineOutput")
_EXPORTS = {**{name: "api" for name in _PUBLIC}, "ModelSpec": "specs", "REGISTRY": "specs", "get_spec": "specs"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'showo2_cli' has no attribute '{name}'")
