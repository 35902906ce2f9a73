"""showo2: run the Show-o2 unified multimodal model from the command line or from Python.

    from showo2_cli import load, caption, text_to_image, save_results, encode, decode   # see showo2_cli.api

Attributes are imported lazily so that `showo2 --help` and argument errors do not pay for torch.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

# With torchao installed (``--quantize int8wo``), importing transformers or diffusers imports it, and
# on a machine without its CUDA kernels it logs a warning per missing extension, torch one about an
# Enum it registers, and diffusers one about torchao 0.18's removed tensor classes: noise on every
# command, about nothing the user can act on. bitsandbytes (``--quantize nf4``) on a CPU with
# AVX512-BF16 warns that the optional ``kernels`` package (a kernel fetched from the Hub) is missing;
# its own CPU kernels run instead. Only these import-time loggers are quietened.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer",
              "bitsandbytes.backends.cpu.ops"):
    logging.getLogger(_name).setLevel(logging.ERROR)

_PUBLIC = ("Showo2", "load", "default_model", "resolve_vae", "CaptionOptions", "EncodeOptions", "GenerateOptions",
           "RuntimeOptions", "TextSampling", "caption", "CaptionResult", "text_to_image", "text_to_video",
           "image_to_video", "Generated", "read_prompts", "plan_outputs", "OutputPlan", "load_noise", "save_results",
           "encode", "EncodeResult", "decode", "save_latents", "load_latents", "normalize_raw", "write_decoded", "pull", "PullResult",
           "enable_offload", "Showo2Pipeline", "Showo2PipelineOutput")
_EXPORTS = {**{name: "api" for name in _PUBLIC}, "ModelSpec": "specs", "REGISTRY": "specs", "get_spec": "specs"}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'showo2_cli' has no attribute '{name}'")
