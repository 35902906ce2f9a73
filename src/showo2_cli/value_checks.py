"""Checks of one value, each raising :class:`~showo2_cli.errors.UsageError` with the option's
name: a finite number in a range, a whole number, a switch, a seed, a text (UTF-8, not empty, not
too long), one of a few names, a device name, a frame rate, a chat's context budget, a LoRA weight.

Torch-free. What every :mod:`~showo2_cli.options` ``validate()`` is made of, and what other
modules check a value they read with (a config's numbers, a server's limits); re-exported by
:mod:`~showo2_cli.options`, where their users import them.
"""

from __future__ import annotations

import math
import re
import sys

from .errors import UsageError, given, short

#: Longest prompt or question accepted, in characters (the models see a few hundred tokens).
MAX_PROMPT_CHARS = 10_000


def is_finite_number(value) -> bool:
    """A number (never a bool) that is a finite float: NaN, infinities and whole numbers too large
    for a float (``10**400`` from a JSON file: ``math.isfinite`` raises OverflowError on them) are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)


def check_number(option: str, value: float | None, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    """A finite number in [low, high] (or (low, high] with ``low_open``); None passes."""
    if value is None:
        return
    # (is_finite_number: a Python caller's 10**400 max_memory_gb passed, then overflowed in the memory check)
    ok = is_finite_number(value) and (high is None or value <= high)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        finite = "a finite number" if number and not is_finite_number(value) else "a number"
        raise UsageError(f"{option} must be {finite} {' and '.join(x for x in (lo, hi) if x)}, got {given(value)}")


def check_int(option: str, value: int | None, low: int, high: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        whole = "" if isinstance(value, int) and not isinstance(value, bool) else "a whole number "  # 5.0 is in range
        raise UsageError(f"{option} must be {whole}between {low} and {high}, got {given(value)}")


def check_flag(option: str, value) -> None:
    """A switch given in Python (``vae_sample=``, ``cache_prefix=``, ``sample=``, ``compile=``): True
    or False only; a text (``"no"``) or a number was read by its truth, the opposite of what it said."""
    if not isinstance(value, bool):
        raise UsageError(f"{option} must be True or False, got {given(value)}")


def check_seed(seed: int | None, option: str = "--seed") -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        whole = "" if isinstance(seed, int) and not isinstance(seed, bool) else "a whole number "  # 4.0, "4"
        raise UsageError(f"{option} must be {whole}between 0 and 2^63-1, got {given(seed)}")


#: The largest size a model config may declare (positions, widths, layers), and so the largest
#: context budget a chat takes (10**23 was an OverflowError reading the chat's stdin).
MAX_MODEL_SIZE = 2**24


def check_max_context(value) -> None:
    """A chat's context budget (``--max-context``): a whole number of tokens, 16 to :data:`MAX_MODEL_SIZE`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= MAX_MODEL_SIZE:
        raise UsageError(f"--max-context must be a whole number of tokens from 16 to {MAX_MODEL_SIZE}, "
                         f"got {short(value)}")


#: The largest strength a LoRA adapter is merged at, either way (ComfyUI's LoraLoader takes -100 to
#: 100): 1e300 made every merged weight infinite, refused by the merge only after the model loaded.
MAX_LORA_WEIGHT = 100.0


def check_lora_weight(value, what: str = "the LoRA weight") -> float:
    """A LoRA adapter's strength (``--lora-weight``, ``lora=[(path, weight)]``,
    ``load_lora_weights(weight=)``): a finite number
    from -:data:`MAX_LORA_WEIGHT` to :data:`MAX_LORA_WEIGHT` (1: the adapter as trained, 0: none,
    negative: subtracted). Returns it as a float."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UsageError(f"{what} must be a number, got {short(value)} ({type(value).__name__})")
    try:
        number = float(value)
    except OverflowError:  # a whole number too large for a float (10**400)
        number = math.inf
    if not math.isfinite(number) or abs(number) > MAX_LORA_WEIGHT:
        raise UsageError(f"{what} must be a finite number from -{MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g} "
                         f"(1: the adapter as trained), got {short(value)}")
    return number


def check_unicode(text: str, what: str) -> str:
    """``text`` when it can be written as UTF-8: a command-line argument holding bytes that are
    not UTF-8 arrives with lone surrogates (``\\udcff`` for the byte 0xff), which no tokenizer,
    sidecar or reply can take (a ``TypeError`` deep in the tokenizer before this check)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        char = ord(text[e.start])
        what_char = (f"the byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF
                     else f"a lone surrogate U+{char:04X}")
        raise UsageError(f"{what} is not valid UTF-8 text: {what_char} at character {e.start + 1}") from None
    return text


def check_text(text: str, what: str) -> str:
    """A prompt or question: UTF-8 text, not empty, at most MAX_PROMPT_CHARS characters."""
    if not isinstance(text, str):
        raise UsageError(f"a {what} must be text")
    if not text.strip():
        raise UsageError(f"empty {what}: give some text")
    if len(text) > MAX_PROMPT_CHARS:
        raise UsageError(f"a {what} of {len(text)} characters is too long (at most {MAX_PROMPT_CHARS})")
    return check_unicode(text, f"the {what}")


def check_prompts(prompts: list[str]) -> list[str]:
    if not prompts:
        raise UsageError("no prompt given")
    return [check_text(p, "prompt") for p in prompts]


def check_choice(option: str, value: str | None, choices, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}, got '{short(value)}'")


def check_device(device: str) -> None:

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu(:\d{1,3})?|mps|cuda(:\d{1,3})?", device.lower()):
        raise UsageError(f"--device must be auto, cuda, cuda:N, mps or cpu, got '{short(device)}'")


def check_fps(fps: float | None) -> float | None:
    if fps is not None:
        check_number("--fps", fps, 0.5, 240)
    return fps
