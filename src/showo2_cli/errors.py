"""Error types the library raises and the CLI maps to one-line messages and exit codes.

Every error a user can cause (a bad file, a bad option, a missing model piece) is one of these.
The CLI prints ``str(error)`` on one line of stderr and exits with ``error.exit_code``; a full
traceback is shown only with ``--debug``. Anything else escaping the library is a bug.

Exit codes (documented in the README):

====  ==========================================================
0     success
1     internal error (a bug: please report it with ``--debug``)
2     usage error: a bad option value or a missing argument
3     input error: a media, latents or prompt file that cannot be used
4     model error: a model, tokenizer or VAE missing, incomplete or corrupt
5     output error: the output cannot be written (exists, read-only, missing folder)
6     resource error: the job would not fit in memory
130   interrupted (Ctrl-C); no partial output is left behind
====  ==========================================================
"""

from __future__ import annotations

import errno
import os
import re
from typing import Any


class Showo2Error(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code = 1
    kind = "error"
    # under a launch of several processes: every process finds this error alike (so the main one
    # alone says it); None: as its kind goes (usage and input errors are alike, see cli._fail)
    alike: bool | None = None


class UsageError(Showo2Error, ValueError):
    """An option value or combination that makes no sense; a ``ValueError`` too, as Python code
    (and diffusers) reports a bad argument, so ``except ValueError`` catches it."""

    exit_code = 2
    kind = "usage"


class ContextTooLong(UsageError):
    """A question (with its media) that does not fit in the model's context."""


class InputError(Showo2Error):
    """An input file (media, latents, prompts) that cannot be used."""

    exit_code = 3
    kind = "input"


class ModelError(Showo2Error, OSError):
    """A model, tokenizer or VAE that is missing, incomplete or corrupt; an ``OSError`` too, as
    transformers and diffusers report a model that cannot be loaded, so ``except OSError`` around
    ``from_pretrained`` catches it."""

    exit_code = 4
    kind = "model"


class NonFiniteOutput(ModelError):
    """A model whose outputs came out NaN or infinite (:func:`non_finite`): the model's fault, not
    the request's (the server answers 500, where another model error is a 400)."""


class OutputError(Showo2Error, OSError):
    """An output that cannot be written (already exists, read-only, missing folder); an
    ``OSError`` too, as Python reports a file that cannot be written."""

    exit_code = 5
    kind = "output"


class OutputExists(OutputError):
    """The output already exists (or appeared while the job ran) and ``overwrite`` is off."""


class ResourceError(Showo2Error):
    """A job that would not fit in memory or another resource limit."""

    exit_code = 6
    kind = "resource"


# ---- the one way values and exception texts are shown inside a one-line message ---------------

def non_finite(what: str) -> NonFiniteOutput:
    """The error for a model whose outputs came out NaN or infinite (``what``: "sampling gave
    latents", "the language head gave scores"): decoded, they were a black picture or a run of
    token 0 ("\\x00\\x00..."), exit 0."""
    return NonFiniteOutput(f"{what} that are NaN or infinite: the model's weights hold NaN or infinity, or half "
                      "precision overflowed (try --dtype bf16 or fp32)")


def short(value: Any, n: int = 40) -> str:
    """A value as shown inside a one-line message: at most ``n`` characters, a line break or another
    character that does not print written as its escape (``\\n``, ``\\x00``)."""
    text = str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= n else text[: n - 3] + "..."


def given(value: Any) -> str:
    """A value a check refused, as its message shows it: text quoted (``'3'``), a plain number as
    it is, anything else with its type (``1.5 (Decimal)``: "must be a number <= 100, got 1.5" misled)."""
    if isinstance(value, str):
        return f"'{short(value)}'"
    if value is None or isinstance(value, (bool, int, float)):
        return short(value)
    return f"{short(value)} ({type(value).__name__})"


def unexpanded_home(path: Any) -> str:
    """For a path that does not exist and starts with ``~``: that the shell left it as typed (it
    expands ``~`` only unquoted at the start of a word, not in ``--output=~/x.png`` nor in quotes),
    and the path meant; else ``""``."""
    text = os.fspath(path)
    if not isinstance(text, str) or not re.match(r"~[\w.-]*(/|$)", text):
        return ""
    meant = os.path.expanduser(text)
    if meant == text:
        return ""
    return f" (the shell left '~' as typed, as it does in quotes or after '=': write {short(meant, 120)})"


def did_you_mean(text: str, names: Any) -> str:
    """``"; did you mean 'demo'?"`` for a mistyped name among ``names`` (any case), else ``""``:
    the one suggestion for a name the toolkit knows (a model, a spec), as click suggests commands."""
    import difflib

    known = {str(n).lower(): str(n) for n in names}
    close = difflib.get_close_matches(str(text).lower(), known, n=1, cutoff=0.6)
    return f"; did you mean '{known[close[0]]}'?" if close else ""


def rename_options(text: str, names: dict[str, str]) -> str:
    """A message with the command line's option names (the keys of ``names``: ``--size``, or a
    phrase such as ``--vae-tiling auto``) replaced by what the reader passes instead: a pipeline's
    argument, a server request's field. The longest name matches first."""
    pattern = "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))
    return re.sub(rf"(?<![\w-])({pattern})(?![\w-])", lambda m: names[m.group(1)], str(text))


def one_line(text: Any, limit: int = 200, word: int | None = None) -> str:
    """A (library's) message as one line: terminal escapes removed, whitespace runs collapsed,
    each word longer than ``word`` characters (a value quoted whole) cut to that many, then the
    whole cut to ``limit`` characters with :func:`short`."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    if word is not None:
        text = re.sub(rf"\S{{{word + 1},}}", lambda m: short(m.group(), word), text)
    return short(" ".join(text.split()), limit)


def error_detail(exc: BaseException) -> str:
    """A short one-line description of an exception, for the end of a message (its type's name when
    it says nothing)."""
    return one_line(exc) or type(exc).__name__


def json_problem(exc: BaseException, limit: int = 200, language: str = "JSON") -> str:
    """What :func:`json.loads` refused, as the end of a sentence about the text ("the request body
    " + this): "is not valid JSON: <where and why>", or in the project's words where Python's would
    leak: nesting past the recursion limit ("maximum recursion depth exceeded while decoding a JSON
    array from a unicode string") and an integer past Python's digit limit ("Exceeds the limit (4300
    digits) for integer string conversion ...; use sys.set_int_max_str_digits() ..."). ``language``:
    the text's, for the other parsers that meet the same limits (TOML, YAML)."""
    import json
    import sys

    if isinstance(exc, RecursionError):
        return f"holds {language} nested too deeply (arrays and objects some thousand levels inside each other)"
    if isinstance(exc, ValueError) and not isinstance(exc, (json.JSONDecodeError, UnicodeError)) \
            and "integer string conversion" in str(exc):
        return f"holds a number of more than {sys.get_int_max_str_digits():,} digits"
    return f"is not valid {language}: {one_line(exc, limit) or type(exc).__name__}"


#: what an allocation failure says (torch on CPU and CUDA, the loader under `ulimit -v`; cuBLAS out of
#: GPU memory, as torch's TORCH_CUDABLAS_CHECK (ATen/cuda/Exceptions.h) words it: "CUDA error:
#: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
_OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "out of memory", "failed to allocate",
                  "failed to map segment", "std::bad_alloc", "_status_alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: MemoryError, or torch's RuntimeError (CPU: "can't allocate
    memory"; CUDA: OutOfMemoryError, "out of memory", cuBLAS' "CUBLAS_STATUS_ALLOC_FAILED"), or, under an address-space limit
    (``ulimit -v``), a memory map or a shared library that could not be mapped (``ENOMEM``:
    "Cannot allocate memory", "failed to map segment"), also as the cause of another error (a
    library's "Failed to import ..." wrapping it)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return True
        text = str(exc).lower()
        if isinstance(exc, (RuntimeError, ImportError)) and any(
                marker in text for marker in _OUT_OF_MEMORY):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def gb_text(value: float) -> str:
    """A size in GB as people read it: 2.5 GB, 120.0 MB, 3.0 KB (never "0.0 GB" beside "0.0 GB"):
    the memory guard's and the Hub cache's free-space messages."""
    for unit, scale in (("GB", 1.0), ("MB", 1e3)):
        if round(value * scale, 1) >= 1:  # (0.99996 GB: "1.0 GB", not "1000.0 MB")
            return f"{value * scale:.1f} {unit}"
    return f"{value * 1e6:.1f} KB"
