"""The limits of ``showo2 serve`` (:class:`ServerConfig`, its options' defaults) and the checks of
its keys and origins. Torch-free and FastAPI-free, as :mod:`showo2_cli.options` is: ``showo2 serve
--help`` and the command's checks read it without importing the server."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError, short
from .options import DEFAULT_MAX_NEW_TOKENS, MAX_SIDE, STEPS_RANGE, check_int

#: Seconds ``showo2 serve`` waits, on its way out, for the running and queued requests to finish.
DRAIN_TIMEOUT = 60.0


def check_port(port: int) -> None:
    """A TCP port, 0 (any free one) to 65535: a larger one was taken modulo 65536 by the system's
    address lookup (70000 listened on 4464) and a negative one was said to be the host's fault."""
    check_int("--port", port, 0, 65535)


@dataclass
class ServerConfig:
    """The limits of ``showo2 serve`` (its options' defaults are these), checked in its requests."""

    model_id: str = "demo"  # the model's name in the API (its id in /v1/models and in answers)
    model_aliases: tuple[str, ...] = ()  # other names requests may give it (``--served-model-name`` after the first)
    api_key: str | None = None
    max_queue: int = 16  # requests waiting behind the running ones
    parallel: int = 1  # requests run at once, their answers decoded in one batch (1: one at a time, exact)
    # prompt positions run between two steps of the answers decoding (chunked prefill, vLLM's name; 0: a prompt whole)
    max_num_batched_tokens: int = 512
    max_body_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096  # per input image
    max_images: int = 8  # input images per chat request
    max_messages: int = 256
    default_max_tokens: int = DEFAULT_MAX_NEW_TOKENS  # a chat request without max_tokens
    max_tokens: int = 2048
    max_n: int = 4
    max_steps: int = 200
    max_size: int = 1024  # generated image side, pixels
    max_text_chars: int = 262_144  # characters of text in one chat request (32 a token of an 8k context)
    allow_origins: tuple[str, ...] = ()  # browser origins allowed by CORS ("*": any); none: no CORS
    request_timeout: float = 15.0  # seconds for a request's headers, and for its body and its answer beyond
    # BODY_MIN_RATE
    keep_alive_timeout: float = 5.0  # seconds an idle connection stays open after an answer (uvicorn's default)

    #: the whole-number limits and their ranges (those with a ``showo2 serve`` option: the option's)
    LIMITS = {"max_queue": (0, 100_000), "parallel": (1, 64), "max_num_batched_tokens": (0, 1_000_000), "max_body_bytes": (1024, 4096 * 2**20), "max_image_pixels": (1, 2**31),
              "max_images": (0, 1024), "max_messages": (1, 100_000), "default_max_tokens": (1, 1_000_000),
              "max_tokens": (1, 1_000_000), "max_n": (1, 128), "max_steps": STEPS_RANGE, "max_size": (16, MAX_SIDE),
              "max_text_chars": (1, 2**31)}
    #: the ``showo2 serve`` option of each field, for its messages (``errors.rename_options``)
    OPTIONS = {"model_id": "--model", "model_aliases": "--served-model-name", "api_key": "--api-key", "allow_origins": "--allow-origin",
               "max_queue": "--max-queue", "parallel": "--parallel",
               "max_num_batched_tokens": "--max-num-batched-tokens", "max_image_pixels": "--max-input-pixels", "max_tokens": "--max-tokens",
               "max_n": "--max-n", "max_steps": "--max-steps", "max_size": "--max-size",
               "request_timeout": "--request-timeout", "keep_alive_timeout": "--timeout-keep-alive"}

    def validate(self) -> None:
        """Check every field (a :class:`UsageError` naming the first wrong one): ``showo2 serve``
        calls it with its options' values, and :func:`showo2_cli.serve.create_app` (so ``serve()``
        and ``server_for()``) with a Python caller's config, before anything starts."""
        if not isinstance(self.model_id, str) or not self.model_id.strip() or not self.model_id.isprintable():
            raise UsageError(f"model_id must be a non-empty printable name, got '{short(self.model_id)}'")
        aliases = self.model_aliases
        if isinstance(aliases, str) or not isinstance(aliases, (tuple, list)) or not all(
                isinstance(a, str) and a.strip() and a.isprintable() for a in aliases):
            raise UsageError(f"model_aliases must be a tuple of non-empty printable names, got {short(aliases)}")
        if self.api_key is not None and not is_bearer_token(self.api_key):
            raise UsageError("api_key must be None or printable ASCII without spaces (what a client sends as "
                             "'Authorization: Bearer KEY')")
        origins = self.allow_origins
        if isinstance(origins, str) or not isinstance(origins, (tuple, list)) or not all(map(is_origin, origins)):
            raise UsageError(f"allow_origins must be a tuple of *, null or scheme://host[:port] (no path), got "
                             f"{short(origins)}")
        for name, (low, high) in self.LIMITS.items():
            if getattr(self, name) is None:  # (check_int lets None pass, an option not given; here every limit has a
                # value: None failed the first request that compared it, max_num_batched_tokens=None every answer)
                raise UsageError(f"{name} must be a whole number between {low} and {high}, got None")
            check_int(name, getattr(self, name), low, high)
        for name in ("request_timeout", "keep_alive_timeout"):
            seconds = getattr(self, name)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0.1 <= seconds <= 86400:
                shown = f"{seconds:g}" if isinstance(seconds, (int, float)) else short(seconds)  # also NaN
                raise UsageError(f"{name} must be between 0.1 and 86400 seconds, got {shown}")

    def check_attention(self, attn: str) -> None:
        """Parallel answers' batched step runs sdpa or eager, not flex (compiled per shape, and the step's
        mask grows a column a token): checked before the model loads on the command line, by
        :func:`showo2_cli.serve.create_app` for a Python caller's loaded model."""
        if self.parallel > 1 and attn == "flex":
            raise UsageError("parallel answers (--parallel above 1) need attention sdpa or eager (--attn), not flex")


def is_bearer_token(key) -> bool:
    """What a client can send in ``Authorization: Bearer KEY``: printable ASCII without spaces."""
    return isinstance(key, str) and bool(key) and all(33 <= ord(c) <= 126 for c in key)


def is_origin(origin) -> bool:
    """A browser origin CORS may allow: ``*``, ``null`` (pages from files, sandboxed frames) or
    ``scheme://host[:port]`` (a browser's ``Origin``: no path, no trailing slash)."""
    return isinstance(origin, str) and (origin in ("*", "null")
                                        or re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#]+", origin) is not None)
