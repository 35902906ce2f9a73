"""showo2: run the Show-o2 unified multimodal model from the command line or from Python.

    from showo2_cli import load, caption, text_to_image, text_to_video, image_to_video, encode, decode

Attributes are imported lazily so that `showo2 --help` and argument errors do not pay for torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load": "loading", "Showo2": "loading",
    "encode": "api", "decode": "api", "EncodeOptions": "api", "save_latents": "api", "load_latents": "api",
    "default_model": "api",
    "caption": "pipelines", "text_to_image": "pipelines", "text_to_video": "pipelines",
    "image_to_video": "pipelines", "CaptionOptions": "pipelines", "GenerateOptions": "pipelines",
    "ModelSpec": "specs", "REGISTRY": "specs", "get_spec": "specs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'showo2_cli' has no attribute '{name}'")
