"""What an image request (``/v1/images/generations``) may ask of ``showo2 serve``: OpenAI's fields
and diffusers' names for them, checked into an :class:`ImagePlan` (no model here); the body's
fields are read by :mod:`.body`, errors have the OpenAI shape of :mod:`.errors`.
:mod:`.requests` re-exports ``ImagePlan``, ``parse_images`` and ``refuse_pipeline_arguments``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import short
from ..options import STEPS_RANGE
from ..serve_config import ServerConfig
from .body import number_field, optional_string, seed_field
from .errors import ApiError


@dataclass
class ImagePlan:
    prompt: str
    n: int
    size: tuple[int, int] | None
    seed: int | None
    steps: int | None
    guidance: float | None
    negative_prompt: str = ""
    output_format: str = "png"  # png, jpeg or webp (gpt-image-1's field)
    output_compression: int = 95  # jpeg/webp quality, 0-100


#: OpenAI image fields that do not change what this model makes: checked, then accepted
_IMAGE_CHOICES = {"quality": ("auto", "standard", "hd", "low", "medium", "high"), "style": ("vivid", "natural"),
                  "moderation": ("auto", "low"), "background": ("auto", "opaque")}


def _image_field(body: dict, name: str, alias: str, low: float, high: float, **checks):
    """The number ``name``, or sent under ``alias``, the name diffusers' pipelines give it (and
    :class:`~showo2_cli.pipeline.Showo2Pipeline`'s), which clients of diffusers-based image servers
    send: honoured, not dropped (a request for 50 steps made the default 30 without a word). Each is
    checked under the name it came by; both, with other values, is a 400."""
    value = number_field(body, name, low, high, None, **checks)
    other = number_field(body, alias, low, high, None, **checks)
    if value is not None and other is not None and value != other:
        raise ApiError(400, f"'{name}' and '{alias}' name the same setting: send one, not {value} and {other}",
                       "invalid_value", alias)
    return other if value is None else value


def _image_size(body: dict) -> tuple[object, str]:
    """OpenAI's ``size``, or diffusers' ``width`` and ``height`` (given together) as ``WxH``; with
    the name to give it in errors."""
    given = {k: number_field(body, k, 1, 99_999, None, integer=True) for k in ("width", "height")}
    size = body.get("size")
    if all(v is None for v in given.values()):
        return size, "'size'"
    if any(v is None for v in given.values()):
        missing = next(k for k, v in given.items() if v is None)
        raise ApiError(400, f"'width' and 'height' go together: '{missing}' is missing (or send 'size': "
                            "'WIDTHxHEIGHT')", "invalid_value", missing)
    made = f"{given['width']}x{given['height']}"
    if size not in (None, "auto") and size != made:
        raise ApiError(400, f"'size' {short(size)} and 'width'/'height' {made} differ: send one", "invalid_value",
                       "size")
    return made, "'width'x'height'"


#: the generation settings of Show-o2's pipeline call that this endpoint does not take: a value sent
#: under one of them would change the image, so it is refused, not dropped
_PIPELINE_ONLY = ("shift", "sampler", "num_frames", "latents", "sigmas", "timesteps")
_IMAGE_FIELDS = ("prompt, n (num_images_per_prompt), size (width and height), steps (num_inference_steps), "
                 "guidance (guidance_scale), seed, negative_prompt")


def refuse_pipeline_arguments(body: dict) -> None:
    """diffusers' call arguments that :class:`~showo2_cli.pipeline.Showo2Pipeline` refuses
    (``pipelines.arguments.CALL_HINTS``: ``true_cfg_scale``, ``max_sequence_length``,
    ``prompt_2``, ...) and its own settings this endpoint does not take (``shift``, ``sampler``, a
    custom grid's ``sigmas`` / ``timesteps``):
    a 400 naming the field, as the pipeline's TypeError does, not a value dropped without a word
    (the request ``{"sigmas": [...]}`` ran on the default grid)."""
    from ..pipelines.arguments import CALL_HINTS  # (torch: loaded in a server with a model)

    for key in (*CALL_HINTS, *_PIPELINE_ONLY):
        if body.get(key) is not None:
            why = "Show-o2's pipeline refuses it too" if key in CALL_HINTS else \
                "a setting of the Python pipeline and of showo2 t2i, t2v and i2v"
            raise ApiError(400, f"'{key}' is not taken by this endpoint ({why}); its fields: {_IMAGE_FIELDS}",
                           "unsupported_parameter", key)


def parse_images(body: dict, config: ServerConfig, spec) -> ImagePlan:
    from ..options import MAX_PROMPT_CHARS

    for name in ("image", "mask"):  # edits' inputs: an image made from the prompt alone would mislead
        if body.get(name) is not None:
            raise ApiError(400, f"'{name}' is not supported: this endpoint makes images from the prompt alone "
                                "(no edits)", "unsupported_parameter", name)
    refuse_pipeline_arguments(body)

    optional_string(body.get("user"), "user")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "'prompt' must be a non-empty string", "invalid_value", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"'prompt' is longer than {MAX_PROMPT_CHARS} characters", "invalid_value",
                       "prompt")
    n = _image_field(body, "n", "num_images_per_prompt", 1, 128, integer=True, limit=config.max_n)
    n = 1 if n is None else n
    fmt = body.get("response_format")  # (`or`: 0, false, "" and {} were taken as b64_json without a word)
    if fmt is not None and fmt != "b64_json":
        raise ApiError(400, "only response_format 'b64_json' is supported", "invalid_value",
                       "response_format")
    size, name = _image_size(body)
    hw = None
    if size not in (None, "auto"):
        if not isinstance(size, str) or not re.fullmatch(r"\d{1,5}x\d{1,5}", size):
            raise ApiError(400, "'size' must be WIDTHxHEIGHT, e.g. '512x512'", "invalid_value", "size")
        w, h = (int(v) for v in size.split("x"))
        m = spec.latent_multiple
        if w <= 0 or h <= 0 or w % m or h % m:
            raise ApiError(400, f"{name} sides must be positive multiples of {m}, got {size}",
                           "invalid_value", "size" if name == "'size'" else "width")
        if max(w, h) > config.max_size:
            raise ApiError(422, f"{name} {size} is over this server's limit of {config.max_size} pixels "
                                "a side", "over_limit", "size" if name == "'size'" else "width")
        hw = (h, w)
    steps = _image_field(body, "steps", "num_inference_steps", *STEPS_RANGE, integer=True, limit=config.max_steps)
    seed = seed_field(body)
    guidance = _image_field(body, "guidance", "guidance_scale", 0, 100)
    negative = body.get("negative_prompt")
    if negative is None:
        negative = ""
    if not isinstance(negative, str) or len(negative) > MAX_PROMPT_CHARS:
        raise ApiError(400, f"'negative_prompt' must be a string of at most {MAX_PROMPT_CHARS} characters",
                       "invalid_value", "negative_prompt")
    for key, allowed in _IMAGE_CHOICES.items():
        if body.get(key) is not None and body.get(key) not in allowed:
            why = "this model draws opaque images only" if body.get(key) == "transparent" else \
                f"use one of {', '.join(allowed)}"
            raise ApiError(400, f"'{key}' '{short(body.get(key))}' is not supported: {why}", "invalid_value", key)
    for key in ("stream", "partial_images"):  # gpt-image-1's streaming: events this server does not send
        if body.get(key) not in (None, False, 0):
            raise ApiError(400, f"'{key}' is not supported by this server (the images come in one response)",
                           "unsupported_parameter", key)
    fmt = body.get("output_format")
    fmt = "png" if fmt is None else fmt
    if fmt not in ("png", "jpeg", "webp"):
        raise ApiError(400, "'output_format' must be png, jpeg or webp", "invalid_value", "output_format")
    compression = number_field(body, "output_compression", 0, 100, 95, integer=True)
    return ImagePlan(prompt, int(n), hw, seed, steps, guidance, negative, fmt, int(compression))
