"""What every command shares: the output state (``--json``/``--quiet``), notices, results,
progress on stderr, the common option types and the model loading step.

Commands parse their options into :mod:`showo2_cli.options` objects, call ``validate()`` once,
call the library, and render through :func:`emit`. Nothing here imports torch at import time.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import OutputError, UsageError, short
from ..options import (
    ATTN_BACKENDS,
    DTYPES,
    MASK_MODES,
    OFFLOAD_MODES,
    QUANTIZE,
    SAMPLERS,
    TEMPLATES,
    VAE_TILING,
)


def debug_from_env() -> bool:
    """``$SHOWO2_DEBUG`` as a switch: unset, empty, ``0``, ``false``, ``no`` or ``off`` is off
    (``SHOWO2_DEBUG=0`` turned tracebacks on: any text did)."""
    return os.environ.get("SHOWO2_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


STATE = {"debug": debug_from_env(), "json": False, "quiet": False}


def is_file(text: str) -> bool:
    """Whether a word the user typed names an existing file (for advice on misplaced arguments)."""
    try:
        return os.path.isfile(text)
    except (OSError, ValueError):  # a name too long, a NUL
        return False


def safe_text(text: str) -> str:
    """Text for a terminal: control characters (ESC, BEL, vertical tab, form feed, U+2028, ...)
    are shown escaped, so a file name cannot drive the terminal or break a one-line message; so
    are the bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069: the
    "Trojan Source" set rustc lints), which made a terminal that orders text right to left show
    the rest of a line reversed (``'nope\u202e.jpg': no such file``). Right-to-left letters and
    the invisible marks (U+200E, U+200F) are text and stay."""
    out = []
    for ch in str(text):
        o = ord(ch)
        if ch in "\n\t":
            out.append(ch)
        elif (o < 0x20 or o == 0x7F or 0x80 <= o < 0xA0 or ch in "\u2028\u2029\u0085"
              or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def notice(message: str) -> None:
    """One line on stderr (a newline from a file's metadata cannot forge a second one). In one
    run of a launch's processes (:func:`one_voice`), another process than the main one keeps it for
    the main one to say, once, and the main one keeps what it said."""
    line = " ".join(str(message).splitlines())
    if STATE.get("held") is not None:
        STATE["held"].append(line)
        return
    if STATE.get("said") is not None:
        STATE["said"].add(line)
    if not STATE["quiet"] and not STATE["json"]:
        write(sys.stderr, safe_text(line) + "\n")


def one_voice() -> None:
    """This command is one run made by a launch's several processes (:func:`~showo2_cli.processes.process_rank`):
    from now on the main process says the notices, each once (it says those another process kept
    that it did not say itself: :func:`held_notices`), and alone shows live progress."""
    from ..processes import launch_rendezvous, process_rank

    if launch_rendezvous() and process_rank()[0]:
        STATE["held"] = []
    elif launch_rendezvous():
        STATE["said"] = set()


def held_notices() -> list[str]:
    """The notices this process kept for the main one (see :func:`one_voice`), now given up."""
    held, STATE["held"] = STATE.get("held") or [], None
    return held


def one_answer_line(text: str) -> str:
    """An answer (or a streamed piece of one) as part of its one line on stdout (``caption``,
    ``chat``): a line break or a carriage return in it is a space (a ``\\r`` sent a terminal's
    cursor back over the answer), and every other control character is shown escaped
    (:func:`safe_text`): a model's text cannot move the cursor, retitle or clear the terminal.
    A tab is kept (it only moves to the next tab stop on the same line). ``--json`` keeps the
    exact text (JSON escapes it)."""
    return safe_text(text.replace("\r", " ").replace("\n", " "))


def notice_unused_sampling(opts) -> None:
    """Say so when sampling options are given to a greedy decode (a CaptionOptions' sampling)."""
    from ..options import unused_sampling_note

    note = unused_sampling_note(opts)
    if note:
        notice(note)


def write(stream, text: str) -> None:
    """Write text that may hold undecodable file names (surrogates) whatever the stream's encoding;
    a stream that refuses it (a full disk, ``> /dev/full``) is an :class:`OutputError` (exit 5),
    a reader gone away (``| head -c1``) stays a ``BrokenPipeError``."""
    if stream is None:
        return
    try:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))
    except OSError as e:
        raise _refused(stream, e) from e


def flush(stream) -> None:
    """Flush stdout or stderr, with :func:`write`'s errors."""
    if stream is None:
        return
    try:
        stream.flush()
    except OSError as e:
        raise _refused(stream, e) from e


def _refused(stream, e: OSError) -> OSError:
    if isinstance(e, BrokenPipeError):
        return e
    name = "standard output" if stream is sys.stdout else "standard error" if stream is sys.stderr else "the output"
    return OutputError(f"cannot write to {name} ({e.strerror or e})")


def emit(result: dict, plain: str | None = None) -> None:
    """The command's result: a JSON object with --json, else the plain text (if any) on stdout."""
    if STATE["json"]:
        write(sys.stdout, json.dumps(result, default=str) + "\n")
    elif plain is not None:
        write(sys.stdout, plain + ("" if plain.endswith("\n") else "\n"))
    flush(sys.stdout)
    STATE["emitted"] = True  # the command's result is out: an interruption now changes nothing


def partial(result: dict, plain: str | None) -> None:
    """What a command finished before it failed or was interrupted (the outputs already written):
    the error report carries it (``--json``: beside ``error`` in the one object; else the plain
    text on stdout, as :func:`emit` would give it), so the caller learns what is on disk."""
    STATE["partial"] = (result, plain)


def setup(json_mode: bool, quiet: bool, result: str | None = None) -> None:
    """The command's output modes. ``result``: what its stdout carries when that is the whole of
    its result (a caption's answers, ``info``'s details; every ``--json`` object is), refused at once
    on a closed stdout (``>&-``), before any work, where it would be lost (GNU tools learn it at the
    write: "write error: Bad file descriptor", exit 1). Path lines after written files, ``--version``
    and ``--help`` only inform: a closed stdout stays the null device for them."""
    STATE["json"], STATE["quiet"] = json_mode, quiet
    if STATE.get("stdout_closed") and (json_mode or result):
        what = "the JSON result (--json)" if json_mode else result
        raise OutputError(f"standard output is closed (>&-), and {what} would be lost there: send it to a file, or "
                          "to /dev/null to drop it")


def live_stderr() -> bool:
    """Whether stderr shows a live display (a spinner, progress bars): a terminal that moves its
    cursor. A pipe or a file gets none (no ``\\r`` lines in a log), nor does a dumb terminal
    (``TERM=dumb``: Emacs' shell, some CI consoles), where rich cannot redraw a line and left an
    empty one."""
    return (not (STATE["quiet"] or STATE["json"]) and STATE.get("held") is None  # a launch's main process only
            and sys.stderr is not None and sys.stderr.isatty()
            and not stderr_console().is_dumb_terminal)


@contextmanager
def status(message: str):
    """A spinner on stderr while a phase runs (only on a terminal, never with --quiet/--json)."""
    if not live_stderr():
        yield
        return
    with stderr_console().status(message):
        yield


def progress_bar(transient: bool = True, stats: bool = False):
    """The one rich progress bar on stderr: the task's name, the bar, done/total, (with ``stats``
    the task's ``stats`` field, as ``train`` shows loss and rate,) time elapsed and time left
    (labelled ``eta`` beside the stats). A ``transient`` bar is wiped when done."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    middle = [TextColumn("{task.fields[stats]}")] if stats else []
    eta = [TextColumn("eta")] if stats else []
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *middle,
                    TimeElapsedColumn(), *eta, TimeRemainingColumn(), console=stderr_console(), transient=transient)


class ProgressReporter:
    """Rich progress bars on stderr for the library's ``progress(phase, done, total)`` callback
    (the model commands' renderer; training's renderer shows the same :func:`progress_bar`)."""

    def __init__(self):
        self.bar = None
        self.tasks: dict[str, int] = {}
        if live_stderr():
            self.bar = progress_bar()

    def __enter__(self):
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def __call__(self, phase: str, done: int, total: int) -> None:
        if self.bar is None:
            return
        if phase not in self.tasks:
            self.tasks[phase] = self.bar.add_task(phase, total=total)
        self.bar.update(self.tasks[phase], completed=done, total=total)


def model_name(model: str | None) -> str:
    """The named model, else the default one (with a one-line notice saying which)."""
    if model is not None:
        return model
    from ..loading import default_model

    name, msg = default_model()
    notice(msg)
    return name


def fetch_if_needed(model: str, vae: str | os.PathLike | None = None) -> None:
    """A variant or repo id that is not cached, when online: pull it (and its tokenizer, and its VAE
    unless ``vae``, the command's ``--vae``, is given) with progress bars, before anything loads it
    or reads it (the checks before a load call it too). A local model without a VAE of its own
    takes ``$SHOWO2_VAE``'s: a Hub repo id there not cached yet is downloaded here, announced."""
    from ..hub import is_local, needs_download, pull, resolve_root

    if vae is not None:
        fetch_vae_if_needed(vae)
    if needs_download(model, vae):
        notice(f"downloading {model} into the Hugging Face cache")
        with ProgressReporter() as progress:
            pull(model, progress=progress, vae=vae)
    elif vae is None and is_local(model):  # (a Hub model's pull fetches it with the model)
        from ..errors import ModelError
        from ..hub_vae import env_vae_download

        try:
            env = env_vae_download(resolve_root(model, local_files_only=True)[1])
        except ModelError:  # a folder that is no model: the load says what is wrong
            env = None
        if env is not None:
            fetch_vae_if_needed(env)


def fetch_vae_if_needed(vae: str | os.PathLike) -> Path:
    """``--vae``'s VAE: a path that does not exist is the load's own line, before any download is
    announced; a Hub repo id not cached yet is downloaded (its VAE's files only), announced, with
    progress bars. Returns where it is."""
    from ..hub_vae import explicit_vae, needs_vae_download

    if not needs_vae_download(vae):
        return explicit_vae(vae)
    notice(f"downloading the VAE {vae} into the Hugging Face cache")
    with ProgressReporter() as progress:
        return explicit_vae(vae, progress)


def load_model(model: str | None, runtime, vae: Path | None = None, need=("tokenizer", "VAE"),
               lora: list | None = None, vae_parts: tuple[str, ...] = ("encoder", "decoder"),
               heads: tuple[str, ...] | None = None):
    """Resolve (downloading when needed), load, and place the model as ``runtime``
    (:class:`~showo2_cli.options.RuntimeOptions`, the command's :func:`with_runtime_options`) says:
    its device and dtype, its ``offload`` (weights in CPU memory behind accelerate's hooks that run
    them on the device), attention backend, compilation, VAE tiling, quantization and memory limit,
    all applied by ``loading.load``; the adapters (:func:`adapters`) are merged into the weights first.
    ``vae_parts``: the halves of the VAE the command uses (the others load on first use, see
    ``loading.load``); ``heads``: the network's heads loaded now, the others on first use (None:
    each on first use)."""
    from ..hub import check_name

    model = model_name(model)
    check_name(model)  # a name that names nothing fails before torch is imported
    from ..loading import load
    from ..runtime import pick_device, pick_dtype

    dev = pick_device(runtime.device)
    dt = pick_dtype(runtime.dtype, dev)
    fetch_if_needed(model, vae)
    with status(f"loading {short(model, 60)}"):
        bundle = load(model, vae=vae, device=dev, dtype=dt, need=need, runtime=runtime, lora=tuple(lora or ()),
                      vae_parts=vae_parts, heads=heads)  # load applies runtime's offload
    for adapter in bundle.adapters:
        scaled = isinstance(adapter, dict)  # {"path", "weight"}: merged at another strength than 1
        notice(f"merged the LoRA adapter {adapter['path'] if scaled else adapter}"
               + (f" at weight {adapter['weight']:g}" if scaled else ""))
    return bundle


# ---- option types shared by the commands (choices are enums, so --help lists them) -------------

#: ``--dtype``: auto and every name of the one dtype table (``bf16`` and ``bfloat16`` alike, any case),
#: as ``init``, ``convert`` and the Python API take them
Dtype = Enum("Dtype", {"auto": "auto", **{name: name for name in DTYPES}}, type=str)


Sampler = Enum("Sampler", {name: name for name in SAMPLERS}, type=str)
Offload = Enum("Offload", {name: name for name in OFFLOAD_MODES}, type=str)


Attn = Enum("Attn", {name: name for name in ATTN_BACKENDS}, type=str)
VaeTiling = Enum("VaeTiling", {name: name for name in VAE_TILING}, type=str)
Quantize = Enum("Quantize", {name: name for name in QUANTIZE}, type=str)


MaskMode = Enum("MaskMode", {name: name for name in MASK_MODES}, type=str)
Template = Enum("Template", {name: name for name in TEMPLATES}, type=str)


def value(choice) -> str | None:
    """The plain string of an enum choice (typer passes the member)."""
    return None if choice is None else getattr(choice, "value", choice)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No notices or progress on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", case_sensitive=False, help="auto: bf16 on CUDA, fp32 elsewhere.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name, folder or Hugging Face repo id, "
                                              "repo@revision to pin one (default: $SHOWO2_MODEL, the cached official "
                                              "1.5B, then the bundled demo).")]
def _vae_name(ref: str | None) -> str | None:
    """``--vae`` as typed (text, not a ``Path``, which made ``./acme/vae`` ``acme/vae``: a folder
    meant, read as a Hub repo id); an empty one is refused (a ``Path`` made it the current folder)."""
    if ref is not None and not ref.strip():
        raise UsageError("--vae: the name is empty (give a VAE file or folder, or a Hugging Face repo id)")
    return ref


VaeOpt = Annotated[str | None, typer.Option("--vae", metavar="<path>", callback=_vae_name, help="A VAE alone: Wan2.1_VAE.pth, a .safetensors, a diffusers "
                                             "folder, a VAE training run (its latest checkpoint) or a Hugging Face "
                                             "repo id, repo@revision (its vae/ or its root) (default: the "
                                             "model's, then $SHOWO2_VAE).")]
OffloadOpt = Annotated[Offload, typer.Option("--offload", help="Keep the weights in CPU memory (accelerate): model = one "
                                             "component on the device at a time, sequential = one layer at a time (least memory, slowest).")]
def _existing_adapters(refs: list[str] | None) -> list[str] | None:
    """``--lora``'s check as the command line is parsed, before the command runs: a path that does
    not exist and is no Hugging Face repo id fails first, without torch (it failed after the
    imports, the default model's lookup and the model files' checks: about 20 s on a busy machine)."""
    from ..hub import check_adapter_name

    for ref in refs or ():
        check_adapter_name(ref)
    return refs


LoraOpt = Annotated[list[str] | None, typer.Option("--lora", metavar="<path>", callback=_existing_adapters, help="A LoRA adapter (a folder with adapter_model.safetensors "
                                                    "or adapter_model.bin, a Hugging Face repo id, repo@revision to pin one, "
                                                    "or a `showo2 train` run with [lora]) merged into the model's weights; "
                                                    "repeatable, applied in order.")]


def _checked_weights(weights: list[float] | None) -> list[float] | None:
    """``--lora-weight``'s check as the command line is parsed: each a finite number within
    :data:`~showo2_cli.value_checks.MAX_LORA_WEIGHT` ("nan", "inf" and 1e999 parse as numbers)."""
    from ..options import check_lora_weight

    for weight in weights or ():
        check_lora_weight(weight, "--lora-weight")
    return weights


LoraWeightOpt = Annotated[list[float] | None, typer.Option(
    "--lora-weight", metavar="<weight>", callback=_checked_weights, help="The strength of each --lora adapter, in "
    "their order, one per --lora: WEIGHT times its update (1: as trained, 0.5: half, 0: none, negative: subtracted; "
    "-100 to 100; diffusers' adapter_weights). Default: 1 each.")]


def adapters(lora: list[str] | None, weights: list[float] | None) -> list:
    """The adapters of ``--lora`` with their ``--lora-weight`` as ``load(lora=)`` takes them:
    ``(path, weight)`` pairs, one weight per adapter (else a UsageError), or the paths alone."""
    from ..errors import UsageError

    lora = list(lora or ())
    if not weights:
        return lora
    if len(weights) != len(lora):
        raise UsageError(f"{len(weights)} --lora-weight for {len(lora)} --lora: give one weight per adapter, in the "
                         "order of the --lora options")
    return [(ref, float(weight)) for ref, weight in zip(lora, weights, strict=True)]


MaxMemOpt = Annotated[float | None, typer.Option("--max-memory", help="Refuse a job estimated to need more than this many GB: "
                                                 "the weights it runs plus its working memory (default: $SHOWO2_MAX_MEMORY_GB, "
                                                 "else the memory available now; 0: no limit).")]
AttnOpt = Annotated[Attn, typer.Option("--attn", help="Attention backend of the LLM and flow head: sdpa (default), "
                                        "eager, or flex (flex attention over the omni block mask; compiled, best on CUDA).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the LLM and flow head (the first call of "
                                          "each shape compiles; CPU needs a C++ compiler).")]
VaeTilingOpt = Annotated[VaeTiling, typer.Option("--vae-tiling", help="Decode/encode in 256-pixel spatial tiles: auto "
                                                 "(only when the job would not fit the memory limit otherwise), on, off.")]
QuantizeOpt = Annotated[Quantize, typer.Option("--quantize", help="Weight-only quantization of the LLM and flow head: "
                                               "none, int8wo (int8 weights with per-row scales, torchao) or nf4 "
                                               "(4-bit NormalFloat weights, bitsandbytes).")]


#: The runtime options of every command that runs the model (``caption``, ``t2i``, ``t2v``,
#: ``i2v``, ``chat``, ``serve``), one per field of :class:`~showo2_cli.options.RuntimeOptions`, in
#: ``--help``'s order: (parameter, option type, default). :func:`with_runtime_options` gives them to
#: a command, so none can leave one out.
RUNTIME_PARAMS = (("device", DeviceOpt, "auto"), ("dtype", DtypeOpt, "auto"), ("max_memory", MaxMemOpt, None),
                  ("offload", OffloadOpt, "none"), ("attn", AttnOpt, "sdpa"), ("compile_", CompileOpt, False),
                  ("vae_tiling", VaeTilingOpt, "auto"), ("quantize", QuantizeOpt, "none"))


def with_runtime_options(command):
    """A command that runs the model takes every runtime option, declared once here: its
    parameter ``runtime`` becomes the options of :data:`RUNTIME_PARAMS` (in its place in
    ``--help``), and the command gets them as one validated
    :class:`~showo2_cli.options.RuntimeOptions` (checked before anything else runs), which
    :func:`load_model` hands to ``loading.load``, the one place that applies them."""
    import functools
    import inspect

    signature = inspect.signature(command, eval_str=True)
    params = list(signature.parameters.values())
    at = [p.name for p in params].index("runtime")
    added = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind)
             for name, kind, default in RUNTIME_PARAMS]
    params[at:at + 1] = added

    @functools.wraps(command)
    def run(**kwargs):
        from ..options import RuntimeOptions

        v = {name: value(kwargs.pop(name)) for name, _kind, _default in RUNTIME_PARAMS}
        runtime = RuntimeOptions(v["device"], v["dtype"], v["max_memory"], offload=v["offload"], attn=v["attn"],
                                 compile=v["compile_"], vae_tiling=v["vae_tiling"], quantize=v["quantize"])
        runtime.validate()  # before the command's own checks, and long before any model loads
        return command(runtime=runtime, **kwargs)

    run.__signature__ = signature.replace(parameters=params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    del run.__wrapped__  # typer reads the signature above, not the command's
    return run
