"""Understanding, generation and latents pipelines: plain functions over a loaded
:class:`~showo2_cli.loading.Showo2` bundle. Nothing here prints: progress reaches the caller through
``progress(phase, done, total)`` and streamed tokens through ``on_text``.
"""

from ..options import MAX_PROMPT_CHARS, CaptionOptions, GenerateOptions, seed_for
from .generate import (
    Generated,
    check_generation_memory,
    estimate_memory_gb,
    generation_memory_gb,
    generation_tiling,
    image_to_video,
    noise_rows,
    text_to_image,
    text_to_video,
)
from .progress import Progress
from .understand import CaptionResult, caption, supports_video_understanding

__all__ = ["CaptionOptions", "CaptionResult", "GenerateOptions", "Generated", "caption", "text_to_image",
           "text_to_video", "image_to_video", "seed_for", "estimate_memory_gb", "generation_memory_gb",
           "check_generation_memory", "noise_rows", "generation_tiling", "supports_video_understanding", "MAX_PROMPT_CHARS", "Progress"]
