"""The OpenAI error shape of ``showo2 serve``: :class:`ApiError` and the HTTP form of the
library's errors."""

from __future__ import annotations

import errno
import logging

from ..errors import (
    ContextTooLong,
    InputError,
    ModelError,
    NonFiniteOutput,
    OutputError,
    ResourceError,
    Showo2Error,
    UsageError,
    is_out_of_memory,
    rename_options,
)
from ..options import MAX_MEMORY_ENV

log = logging.getLogger("showo2.serve")

#: the command line's options in the library's advice, as a client of this server reads them: the
#: request's fields, and the server's own memory limit (``serve --max-memory``, which no request sets)
SERVE_NAMES = {
    "--size": "size", "--batch-size": "n", "--num-images": "n", "--steps": "steps", "--guidance": "guidance",
    "--seed": "seed", "--negative-prompt": "negative_prompt", "--max-new-tokens": "max_tokens",
    "--temperature": "temperature", "--top-p": "top_p",
    "lower --frames": "the server reads a fixed number of frames of any video",
    # the limit is the server's (``serve --max-memory``, else the variable), which a client cannot pass
    "--max-memory": "the server's max-memory setting",
    f"--max-memory or {MAX_MEMORY_ENV}": f"the server's max-memory setting or {MAX_MEMORY_ENV}",
    # a server started with ``--vae-tiling off``: tiling is the server's setting too
    "--vae-tiling auto": "the server's vae-tiling setting at auto",
    # a model whose outputs overflowed half precision (errors.non_finite): the server's --dtype
    "--dtype bf16 or fp32": "the server's dtype setting at bf16 or fp32",
}


class ApiError(Exception):
    """A request the server refuses: its HTTP status and the OpenAI error fields. ``retry=False``:
    sending the request again cannot help, though its status is one the OpenAI SDKs retry (a 500);
    the answer then says so in ``x-should-retry: false``, the header those SDKs obey."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type_: str | None = None, retry: bool | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.retry = status, message, code, param, retry
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def shutting_down() -> ApiError:
    """A request still running (or still sending its body) when the drain timeout ends (or a
    second Ctrl-C forces the exit)."""
    return ApiError(503, "the server is shutting down: the request was stopped before it finished",
                    "shutting_down", type_="server_error")


def api_error_of(exc: BaseException) -> ApiError:
    """The HTTP form of a library error (one line) or of a bug (500, details in the log only)."""
    if isinstance(exc, ApiError):
        return exc
    from ..dialogue import Cancelled

    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, Showo2Error):  # its advice names the command line's options
        message = rename_options(message, SERVE_NAMES)
    if isinstance(exc, Cancelled):
        return ApiError(499, "the request was cancelled", "cancelled")
    if isinstance(exc, ResourceError):
        return ApiError(422, message, "too_large")
    if isinstance(exc, InputError):
        return ApiError(400, message, "invalid_input")
    if isinstance(exc, ContextTooLong):  # the code OpenAI clients look for before trimming a history
        return ApiError(400, message, "context_length_exceeded", "messages")
    if isinstance(exc, UsageError):
        return ApiError(400, message, "invalid_value")
    if isinstance(exc, NonFiniteOutput):  # the served model's fault, not the request's: and the same again
        return ApiError(500, message, "server_error", retry=False)  # (the SDKs ran it 3 times)
    if isinstance(exc, ModelError):
        return ApiError(400, message, "unsupported")
    if is_out_of_memory(exc):
        return ApiError(500, "out of memory on the server", "out_of_memory")
    cause = exc.__cause__ if isinstance(exc, OutputError) and exc.__cause__ is not None else exc
    full = getattr(cause, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(cause)
    if isinstance(exc, OutputError) or full:  # the server writes nothing but its temporary files
        log.error("cannot write a temporary file: %s", message)  # where: in the server's log only
        if full:  # (a request's upload, a generated image before it is sent)
            return ApiError(507, "the server's disk is full: no space left for its temporary files",
                            "insufficient_storage")
        # (a read-only or forbidden folder: the SDKs' two retries would run the same generation again to fail)
        return ApiError(500, "the server cannot write its temporary files", "server_error", retry=False)
    if isinstance(exc, Showo2Error):
        return ApiError(500, message, "server_error")
    log.error("internal error: %s: %s", type(exc).__name__, message, exc_info=exc)
    return ApiError(500, f"internal error ({type(exc).__name__})", "internal_error")
