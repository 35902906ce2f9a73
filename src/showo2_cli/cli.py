"""The `showo2` command line: one thin function per subcommand over the Python API.

Every command parses its options, calls the library, and renders: results on stdout (plain, or
one JSON object with ``--json``), notices and progress on stderr. Errors are one line on stderr
with a documented exit code (see ``errors.py``); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import InputError, ModelError, OutputError, Showo2Error, UsageError

app = typer.Typer(
    name="showo2",
    help="Run the Show-o2 unified multimodal model: understand and generate images and videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

STATE = {"debug": bool(os.environ.get("SHOWO2_DEBUG")), "json": False, "quiet": False}
_ARGS: list[str] = []  # the arguments main() was called with (for errors raised before a command ran)

#: Longest prompt or question, in characters (pipelines.MAX_PROMPT_CHARS; kept here so the CLI
#: can check it without importing torch).
MAX_PROMPT_CHARS = 10_000
#: Largest prompts file read.
MAX_PROMPTS_FILE_BYTES = 64 * 1024 * 1024
DTYPE_NAMES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No notices or progress on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cuda, mps or cpu.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 elsewhere), bf16, fp16 or fp32.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name, folder or Hugging Face repo id "
                                              "(default: $SHOWO2_MODEL, the cached official 1.5B, then the bundled demo).")]
VaeOpt = Annotated[Path | None, typer.Option("--vae", help="A VAE alone: Wan2.1_VAE.pth, a .safetensors or a diffusers folder.")]
MaxMemOpt = Annotated[float | None, typer.Option("--max-memory", help="Refuse a job estimated to need more than this many GB "
                                                 "(default: $SHOWO2_MAX_MEMORY_GB, else the memory available now; 0: no limit).")]


# ---- rendering helpers ------------------------------------------------------------------------

def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def notice(message: str) -> None:
    if not STATE["quiet"] and not STATE["json"]:
        _stderr_console().print(message, markup=False)


def _write(stream, text: str) -> None:
    """Write text that may hold undecodable file names (surrogates) whatever the stream's encoding."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "utf-8"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def emit(result: dict, plain: str | None = None) -> None:
    """The command's result: a JSON object with --json, else the plain text (if any) on stdout."""
    if STATE["json"]:
        _write(sys.stdout, json.dumps(result, default=str) + "\n")
    elif plain is not None:
        _write(sys.stdout, plain + ("" if plain.endswith("\n") else "\n"))
    sys.stdout.flush()


def _setup(json_mode: bool, quiet: bool) -> None:
    STATE["json"], STATE["quiet"] = json_mode, quiet


@contextmanager
def status(message: str):
    """A spinner on stderr while a phase runs (only on a terminal, never with --quiet/--json)."""
    if STATE["quiet"] or STATE["json"] or not sys.stderr.isatty():
        yield
        return
    with _stderr_console().status(message):
        yield


def pick_device(device: str) -> str:
    import torch

    device = device.lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise UsageError(f"--device must be auto, cuda, mps or cpu, got '{device}'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: MPS is not available")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    from .loading import parse_dtype

    if dtype.lower() == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return parse_dtype(dtype)


# ---- cheap checks: every command runs them before importing torch or loading anything -----------

def check_device_name(device: str) -> None:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,3})?", device.lower()):
        raise UsageError(f"--device must be auto, cuda, cuda:N, mps or cpu, got '{_short(device)}'")


def check_dtype_name(dtype: str, names: tuple[str, ...] = DTYPE_NAMES) -> None:
    if dtype.lower() not in names:
        raise UsageError(f"unknown dtype '{_short(dtype)}'; use one of {', '.join(n for n in names if len(n) <= 4)}")


def check_number(option: str, value: float | None, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    """A finite float in [low, high] (or (low, high] with ``low_open``); None passes."""
    if value is None:
        return
    ok = math.isfinite(value) and (high is None or value <= high)
    if low is not None:
        ok = ok and (value > low if low_open else value >= low)
    if not ok:
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        raise UsageError(f"{option} must be a number {' and '.join(x for x in (lo, hi) if x)}, got {value}")


def check_seed(seed: int | None) -> None:
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be between 0 and 2^63-1, got {_short(str(seed))}")


def check_text(text: str, what: str) -> str:
    """A prompt or question: not empty, at most MAX_PROMPT_CHARS characters."""
    if not text.strip():
        raise UsageError(f"empty {what}: give some text")
    if len(text) > MAX_PROMPT_CHARS:
        raise UsageError(f"a {what} of {len(text)} characters is too long (at most {MAX_PROMPT_CHARS})")
    return text


def check_output_folder(path: Path, overwrite: bool) -> None:
    """A model folder to write: its parent exists and takes new entries; it does not exist yet
    (or --overwrite). Probed by creating and removing a hidden folder, so a read-only or pseudo
    file system fails here, before anything is built."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"'{path}' exists and is not a folder")
    if path.exists() and not overwrite:
        raise OutputError(f"'{path}' already exists; pass --overwrite to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write '{path}': folder '{parent}' does not exist")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name[:100]}.", suffix=".probe", dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write '{path}': cannot create a folder in '{parent}' ({e.strerror or e})") from e


def _short(text: str, n: int = 40) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


# ---- commands ---------------------------------------------------------------------------------

@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
):
    if debug:
        STATE["debug"] = True
    if version:
        sys.stdout.write(f"showo2 {__version__}\n")
        raise typer.Exit(0)


@app.command()
def info(
    model: Annotated[str, typer.Argument(help="Model name, folder or Hugging Face repo id.")],
    vae: VaeOpt = None,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Show a model's spec, parameter counts, dtype and where each file was found."""
    _setup(json_mode, quiet)
    from .loading import build_network, find_files, parameter_counts, read_state_dict, spec_from_files

    files = find_files(model, vae=vae)
    if not files.weights:
        raise ModelError(f"model '{model}' has no weights in '{files.root}'")
    start = time.perf_counter()
    state = read_state_dict(files.weights)
    spec = spec_from_files(files, state)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
    build_network(spec, state, next(iter(state.values())).dtype, where=str(files.root))  # validates keys
    seconds = time.perf_counter() - start
    counts = parameter_counts(state, tied=spec.tie_word_embeddings)
    result = {"model": model, "format": files.format, "spec": spec.to_dict(), "parameters": counts,
              "dtype": dtypes, "files": files.describe(), "missing": [p for p, _ in files.missing],
              "check_seconds": round(seconds, 3)}
    lines = [f"model      {model}", f"format     {files.format}  ({files.root})",
             f"weights    {', '.join(str(p.name) for p in files.weights)}  [{', '.join(dtypes)}]",
             f"LLM        Qwen2.5: hidden {spec.hidden_size}, {spec.num_layers} layers, {spec.num_heads}/{spec.num_kv_heads} heads, "
             f"vocab {spec.vocab_size}, tied embeddings {spec.tie_word_embeddings}",
             f"semantic   {spec.semantic_layers} SigLIP layers of width {spec.clip_latent_dim}, position table {spec.position_embedding_rows}",
             f"flow head  {spec.head_layers} blocks of width {spec.head_hidden} ({spec.head_heads}/{spec.head_kv_heads} heads x {spec.head_dim_flow})",
             f"geometry   {spec.resolution}px, {spec.image_latent_grid}x{spec.image_latent_grid} tokens, patch {spec.patch_size}, "
             f"max_seq_len {spec.max_seq_len}",
             f"tasks      {', '.join(spec.tasks)}"]
    lines.append("parameters " + ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    for piece, where in (("tokenizer", files.tokenizer), ("VAE", files.vae), ("LLM config", files.llm_config),
                         ("SigLIP config", files.siglip_config)):
        lines.append(f"{piece:<10} {where if where else 'not found'}")
    for piece, hint in files.missing:
        lines.append(f"missing    {piece}: {hint}")
    emit(result, "\n".join(lines))


@app.command()
def convert(
    src: Annotated[str, typer.Argument(help="An official checkpoint: folder, repo id or variant name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write.")],
    dtype: Annotated[str, typer.Option("--dtype", help="keep, bf16, fp16 or fp32.")] = "keep",
    vae: VaeOpt = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Rewrite a checkpoint as a pickle-free safetensors folder that loads memory-mapped."""
    _setup(json_mode, quiet)
    check_dtype_name(dtype, ("keep", *DTYPE_NAMES[1:]))
    check_output_folder(output, overwrite)
    from .loading import build_network, find_files, parse_dtype, read_state_dict, save_folder, spec_from_files
    from .modeling.vae import load_vae
    from .tokenizer import add_showo2_tokens, load_tokenizer

    target_dtype = None if dtype == "keep" else parse_dtype(dtype)
    start = time.perf_counter()
    files = find_files(src, vae=vae)
    if not files.weights:
        raise ModelError(f"'{src}' has no weights")
    with status("reading weights"):
        state = read_state_dict(files.weights)
        spec = spec_from_files(files, state)
        ref_dtype = target_dtype or next(iter(state.values())).dtype
        build_network(spec, {k: v for k, v in state.items()}, ref_dtype, where=str(files.root))
    tokenizer = None
    if files.tokenizer is not None:
        tokenizer = load_tokenizer(files.tokenizer)
        add_showo2_tokens(tokenizer)
    vae_model = load_vae(files.vae) if files.vae is not None else None
    for piece, hint in files.missing:
        notice(f"note: {piece} not found ({hint}); the converted folder will lack it")
    with status(f"writing {output}"):
        save_folder(output, spec, state, tokenizer=tokenizer, vae=vae_model, dtype=target_dtype, overwrite=overwrite,
                    extra={"converted_from": str(files.root)})
    seconds = time.perf_counter() - start
    size = sum(f.stat().st_size for f in output.rglob("*") if f.is_file())
    emit({"output": str(output), "seconds": round(seconds, 2), "bytes": size, "spec": spec.name,
          "dtype": dtype, "tokenizer": tokenizer is not None, "vae": vae_model is not None},
         f"{output}  ({size / 1e6:.1f} MB, {seconds:.1f} s)")


@app.command()
def init(
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder to write.")],
    spec: Annotated[str, typer.Option("--spec", help="A registry spec: tiny, 1.5B, 7B, ...")] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    dtype: Annotated[str, typer.Option("--dtype", help="fp32, bf16 or fp16.")] = "fp32",
    vae_dim: Annotated[int | None, typer.Option("--vae-dim", min=1, max=512, help="Base width of the random Wan VAE (96 is the real one).")] = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Write a new randomly initialised model folder of any spec (the start of training, or for tests)."""
    _setup(json_mode, quiet)
    from .specs import get_spec

    spec_obj = get_spec(spec)
    check_dtype_name(dtype, DTYPE_NAMES[1:])
    check_output_folder(output, overwrite)
    from .loading import init_model, parse_dtype

    with status(f"initialising a random '{spec_obj.name}' model"):
        path = init_model(spec_obj, output, seed=seed, dtype=parse_dtype(dtype), vae_base_dim=vae_dim, overwrite=overwrite)
    emit({"output": str(path), "spec": spec_obj.name, "seed": seed, "dtype": dtype}, str(path))


@app.command()
def encode(
    media: Annotated[Path, typer.Argument(help="An image or a video.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Latents file (.safetensors); default <media>.latents.safetensors.")] = None,
    model: ModelOpt = None,
    vae: VaeOpt = None,
    size: Annotated[str | None, typer.Option("--size", help="N or WIDTHxHEIGHT, multiples of 16 (default: the model's resolution, 432 for a VAE alone).")] = None,
    frames: Annotated[int | None, typer.Option("--frames", min=1, max=100000, help="Videos: use the first N frames (rounded up to 1+4k). Default: all, rounded down.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Draw the posterior sample (official training/understanding behaviour) instead of the mean.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for --sample, 0 to 2^63-1.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    max_memory: MaxMemOpt = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Encode an image or a video into Wan2.1 VAE latents with metadata."""
    _setup(json_mode, quiet)
    from . import media as M

    out = output or media.with_name(media.name + ".latents.safetensors")
    if out.suffix != ".safetensors":
        raise UsageError(f"latents are written as .safetensors, got '{out}'")
    requested = M.parse_size(size)
    check_seed(seed)
    check_device_name(device)
    check_dtype_name(dtype)
    check_number("--max-memory", max_memory, 0)
    M.check_output_path(out, overwrite, probe=True)
    source = M.read_media(media)  # the whole input is read and checked before anything loads

    from . import api

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    resolution = None
    if vae is None:
        name = model
        if name is None:
            name, msg = api.default_model()
            notice(msg)
        from .loading import find_files

        files = find_files(name)
        if files.vae is None:
            raise ModelError(f"model '{name}' has no VAE: pass --vae PATH")
        vae_path = files.vae
        from .loading import spec_from_files

        if files.format == "showo2":
            resolution = spec_from_files(files, {}).resolution
        else:
            resolution = int(files.config.get("image_latent_height") or 27) * 16
    else:
        vae_path = vae
    hw = requested or ((resolution, resolution) if resolution else (432, 432))
    with status("loading the VAE"):
        from .modeling.vae import load_vae

        vae_model = load_vae(vae_path, dtype=dt, device=dev)
    with status(f"encoding {media.name}"):
        result = api.encode(source, vae_model, api.EncodeOptions(size=hw, frames=frames, sample=sample, seed=seed),
                            vae_name=str(vae_path), max_memory_gb=max_memory)
    for n in result.notices:
        notice(n)
    api.save_latents(out, result, overwrite=overwrite)
    shape = list(result.latents.shape)
    emit({"output": str(out), "shape": shape, **result.metadata},
         f"{out}  latents {shape} from {result.metadata['frames']} frame(s) at {hw[1]}x{hw[0]}")


@app.command()
def decode(
    latents: Annotated[Path, typer.Argument(help="A latents file written by `showo2 encode` or --save-latents.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="out.png/.jpg/.webp for one frame, .mp4/.webm/.gif for videos.")] = None,
    model: ModelOpt = None,
    vae: VaeOpt = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Frames per second (default: the source's, else 8).")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    max_memory: MaxMemOpt = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Decode latents back to an image or a video."""
    _setup(json_mode, quiet)
    from . import media as M

    _check_fps(fps)
    check_device_name(device)
    check_dtype_name(dtype)
    check_number("--max-memory", max_memory, 0)
    writable = M.IMAGE_WRITE_EXTS + M.VIDEO_WRITE_EXTS
    if output is not None:
        if output.suffix.lower() not in writable:
            raise UsageError(f"cannot write '{_short(str(output), 80)}': unsupported output extension "
                             f"'{_short(output.suffix)}'; use .png/.jpg/.webp or .mp4/.webm/.gif")
        M.check_output_path(output, overwrite, probe=True)
    try:  # the cheap checks, before importing torch
        what = ("does not exist" if not latents.exists() else "is a directory" if latents.is_dir()
                else "is empty" if latents.stat().st_size == 0 else None)
    except OSError as e:
        what = f"cannot be read ({e.strerror or e})"
    if what:
        raise InputError(f"latents file '{latents}' {what}")

    from . import api

    z, meta = api.load_latents(latents)
    frames_out = 1 + 4 * (z.shape[1] - 1)
    out = output or latents.with_name(latents.name.split(".")[0] + (".png" if frames_out == 1 else ".mp4"))
    ext = out.suffix.lower()
    if ext not in writable:
        raise UsageError(f"unsupported output extension '{ext}': use .png/.jpg/.webp or .mp4/.webm/.gif")
    if ext in M.IMAGE_EXTS and frames_out != 1:
        raise UsageError(f"'{out}' is an image but the latents hold {frames_out} frames: use .mp4, .webm or .gif")
    M.check_output_path(out, overwrite, probe=True)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    vae_ref = vae
    if vae_ref is None and model is None and meta.get("vae") and Path(meta["vae"]).exists():
        vae_ref = Path(meta["vae"])
    if vae_ref is None and model is None:
        model, msg = api.default_model()
        notice(msg)
    with status("loading the VAE"):
        vae_model, vae_name = api.resolve_vae(model, vae_ref, dtype=dt, device=dev)
    z, _ = api.load_latents(latents, z_dim=vae_model.z_dim)
    with status(f"decoding {z.shape[1]} latent frame(s)"):
        frames = api.decode(z, vae_model, max_memory_gb=max_memory)
    rate = fps or meta.get("fps") or 8.0
    api.write_decoded(out, frames, rate, {"decoded_from": str(latents), "vae": vae_name, "fps": rate}, overwrite)
    t, h, w = frames.shape[:3]
    emit({"output": str(out), "frames": int(t), "width": int(w), "height": int(h), "fps": rate if t > 1 else None},
         f"{out}  {t} frame(s) {w}x{h}" + (f" at {rate:g} fps" if t > 1 else ""))


# ---- shared pieces of the model commands ------------------------------------------------------

class ProgressReporter:
    """Rich progress bars on stderr for the library's ``progress(phase, done, total)`` callback."""

    def __init__(self):
        self.bar = None
        self.tasks: dict[str, int] = {}
        if not (STATE["quiet"] or STATE["json"]) and sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TimeRemainingColumn(), console=_stderr_console(), transient=True)

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
    from . import api

    name, msg = api.default_model()
    notice(msg)
    return name


def load_model(model: str | None, device: str, dtype: str, vae: Path | None = None, need=("tokenizer", "VAE")):
    from .loading import load

    model = model_name(model)
    dev = pick_device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dev = f"cuda:{local}"
    dt = pick_dtype(dtype, dev)
    with status(f"loading {model}"):
        bundle = load(model, vae=vae, device=dev, dtype=dt, need=need)
    return bundle


def read_prompts(prompt: str | None, prompts_file: Path | None) -> list[str]:
    """The prompt and/or the lines of the prompts file ('-': stdin). An empty or over-long prompt
    is a usage error; an unreadable, empty or non-UTF-8 prompts file an input error naming it."""
    prompts: list[str] = []
    if prompt is not None:
        prompts.append(check_text(prompt, "prompt"))
    if prompts_file is not None:
        where = "stdin" if str(prompts_file) == "-" else f"'{prompts_file}'"
        try:
            if str(prompts_file) == "-":
                data = sys.stdin.buffer.read(MAX_PROMPTS_FILE_BYTES + 1)
            else:
                if not prompts_file.exists():
                    raise InputError(f"prompts file {where} does not exist")
                if prompts_file.is_dir():
                    raise InputError(f"prompts file {where} is a directory")
                if prompts_file.stat().st_size > MAX_PROMPTS_FILE_BYTES:
                    raise InputError(f"prompts file {where} is too large (more than "
                                     f"{MAX_PROMPTS_FILE_BYTES // 2**20} MiB)")
                data = prompts_file.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read prompts file {where}: {e.strerror or e}") from e
        if len(data) > MAX_PROMPTS_FILE_BYTES:
            raise InputError(f"prompts from {where} are too large (more than {MAX_PROMPTS_FILE_BYTES // 2**20} MiB)")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"prompts file {where} is not UTF-8 text (byte {e.start})") from e
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
        for i, line in lines:
            if len(line) > MAX_PROMPT_CHARS:
                raise InputError(f"prompts file {where} line {i}: a prompt of {len(line)} characters is too long "
                                 f"(at most {MAX_PROMPT_CHARS})")
        if not lines:
            raise InputError(f"prompts file {where} holds no prompt")
        prompts += [line for _, line in lines]
    if not prompts:
        raise UsageError("give a PROMPT or --prompts-file")
    return prompts


def shard() -> tuple[int, int]:
    """(rank, world size) under `accelerate launch` / torchrun, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    return (rank, world) if world > 1 else (0, 1)


def output_paths(output: Path | None, prompts: list[str], indices: list[int], n: int, seed: int, ext: str,
                 overwrite: bool, total_jobs: int) -> list[Path]:
    """One path per (prompt, k): ``-o`` as given for a single result, ``stem-NNN.ext`` (global job
    index) for several, or ``<prompt-slug>-<seed>.ext`` in the current folder when no ``-o``."""
    from . import media as M

    def seed_for(base: int, prompt_index: int, k: int, n: int) -> int:  # pipelines.seed_for, without torch
        return (base + prompt_index * n + k) % 2**63

    paths = []
    for p, i in zip(prompts, indices, strict=True):
        for k in range(n):
            if output is None:
                path = Path(f"{M.slugify(p)}-{seed_for(seed, i, k, n)}{ext}")
                path = M.unique_path(path) if not overwrite else path
            elif total_jobs == 1:
                path = output
            else:
                width = max(3, len(str(total_jobs - 1)))
                path = output.with_name(f"{output.stem}-{i * n + k:0{width}d}{output.suffix}")
            paths.append(path)
    probed = set()
    for path in paths:
        M.check_output_path(path, overwrite, probe=path.parent not in probed)
        M.check_output_path(path.with_suffix(".json"), overwrite)
        probed.add(path.parent)
    return paths


def load_noise(path: Path | None):
    if path is None:
        return None
    from safetensors import safe_open

    if not path.exists() or path.is_dir():
        raise InputError(f"noise file '{path}' does not exist or is a directory")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            key = "noise" if "noise" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"noise file '{path}' must hold one tensor (or one named 'noise')")
            noise = f.get_tensor(key)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read noise '{path}': not a safetensors file or truncated") from e
    if not noise.is_floating_point() or not noise.isfinite().all():
        raise InputError(f"noise '{path}' must be finite floating-point values, got {str(noise.dtype).replace('torch.', '')}"
                         + ("" if not noise.is_floating_point() else " with NaN/inf"))
    if noise.numel() == 0 or noise.dim() > 6:
        raise InputError(f"noise '{path}' has shape {tuple(noise.shape)}: not a latent")
    return noise


def run_generation(kind: str, prompts: list[str], output: Path | None, model: str | None, n: int, size: str | None,
                   steps: int | None, guidance: float | None, shift: float | None, seed: int | None, batch_size: int,
                   noise: Path | None, save_latents: bool, sampler: str, frames: int, fps: float, image: Path | None,
                   device: str, dtype: str, overwrite: bool, default_ext: str, allowed_exts: tuple[str, ...],
                   max_memory: float | None = None):
    from . import media as M

    # everything that can be checked without torch or the model, first
    if output is not None and output.suffix.lower() not in allowed_exts:
        raise UsageError(f"unsupported output extension '{_short(output.suffix or output)}' for {kind}: "
                         f"use {', '.join(allowed_exts)}")
    if not 1 <= n <= 1000:
        raise UsageError(f"-n/--num-images must be between 1 and 1000, got {n}")
    if sampler not in ("euler", "heun"):
        raise UsageError(f"--sampler must be euler or heun, got '{_short(sampler)}'")
    check_number("--guidance", guidance, 0, 100)
    check_number("--shift", shift, 0, None, low_open=True)
    check_number("--max-memory", max_memory, 0)
    check_seed(seed)
    check_device_name(device)
    check_dtype_name(dtype)
    hw = M.parse_size(size)
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    rank, world = shard()
    indices = list(range(len(prompts)))[rank::world]
    mine = [prompts[i] for i in indices]
    ext = output.suffix.lower() if output is not None else default_ext
    paths = output_paths(output, mine, indices, n, seed, ext, overwrite, len(prompts) * n)
    if image is not None:
        M.read_image(image)  # a bad image fails before the model loads
    noise_tensor = load_noise(noise)

    from . import api
    from . import pipelines as P

    opts = P.GenerateOptions(size=hw, steps=steps, guidance=guidance, shift=shift, seed=seed, num_per_prompt=n,
                             batch_size=batch_size, frames=frames, method=sampler, noise=noise_tensor,
                             max_memory_gb=max_memory)
    opts.validate()
    name = model_name(model)
    if mine:
        _check_generation_memory(name, kind, opts, min(batch_size, len(mine) * n), device, dtype)
    bundle = load_model(name, device, dtype)
    notice(f"seed {seed}")
    results = []
    if mine:
        with ProgressReporter() as bar:
            if kind == "t2i":
                results = P.text_to_image(bundle, mine, opts, progress=bar, indices=indices)
            elif kind == "t2v":
                results = P.text_to_video(bundle, mine, opts, progress=bar, indices=indices)
            else:
                results = P.image_to_video(bundle, image, mine, opts, progress=bar, indices=indices)
    written = []
    for path, item in zip(paths, results, strict=True):
        meta = {**item.params, "showo2_version": __version__, "kind": kind}
        if kind != "t2i":
            meta["fps"] = fps
        if image is not None:
            meta["image"] = str(image)
        if kind == "t2i":
            M.write_image(path, item.frames[0], metadata=meta, overwrite=overwrite)
        else:
            M.write_video(path, item.frames, fps, overwrite=overwrite, metadata=meta)
        record = {"output": str(path), **meta}
        if save_latents:
            lat_path = path.with_name(path.stem + ".latents.safetensors")
            lat = item.latents if item.latents.dim() == 4 else item.latents[:, None]
            meta_l = {"format": "showo2-latents", "version": 1, "kind": "image" if kind == "t2i" else "video",
                      "frames": int(item.frames.shape[0]), "fps": fps if kind != "t2i" else None,
                      "height": item.params["height"], "width": item.params["width"], **meta}
            api.save_latents(lat_path, api.EncodeResult(lat.contiguous(), meta_l), overwrite=overwrite)
            record["latents"] = str(lat_path)
        sidecar = path.with_suffix(".json")
        with M.atomic_output(sidecar, overwrite=overwrite) as tmp:
            Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
        written.append(record)
    emit({"outputs": written, "seed": seed, "rank": rank, "world_size": world},
         "\n".join(r["output"] for r in written) if written else None)


def _check_generation_memory(name: str, kind: str, opts, batch: int, device: str, dtype: str) -> None:
    """Refuse a job that cannot fit before the weights load, when the model's folder tells its
    spec (our own format; for an official checkpoint the pipeline checks once it is loaded)."""
    from . import pipelines as P
    from .loading import find_files, spec_from_files

    files = find_files(name)
    if files.format != "showo2":
        return
    spec = spec_from_files(files, {})
    video = kind != "t2i"
    side = spec.video_resolution if video else spec.resolution
    base_dim = 96
    if files.vae is not None and (Path(files.vae) / "config.json").is_file():
        try:
            base_dim = int(json.loads((Path(files.vae) / "config.json").read_text()).get("base_dim", 96))
        except (OSError, ValueError, TypeError, AttributeError):
            base_dim = 96
    dev = pick_device(device)
    P.check_generation_memory(spec, pick_dtype(dtype, dev), opts.size or (side, side), opts.frames if video else 1,
                              video, batch, opts.max_memory_gb, dev, base_dim)


SizeOpt = Annotated[str | None, typer.Option("--size", help="N or WIDTHxHEIGHT, multiples of 16, at most 4096 (default: the model's resolution).")]
StepsOpt = Annotated[int | None, typer.Option("--steps", min=2, max=10000, help="Sampling grid points; steps-1 model calls (default 50).")]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale, 0 to 100 (default 5.0; 0 = none).")]
ShiftOpt = Annotated[float | None, typer.Option("--shift", help="Time-grid shift towards the noise end, > 0 (default 3.0).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Base seed, 0 to 2^63-1 (random if absent; always printed and recorded).")]
NumOpt = Annotated[int, typer.Option("--num-images", "-n", min=1, max=1000, help="Outputs per prompt.")]
PromptsFileOpt = Annotated[Path | None, typer.Option("--prompts-file", help="One prompt a line; '-' reads stdin.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=1024, help="Outputs generated together.")]
NoiseOpt = Annotated[Path | None, typer.Option("--noise", help="Exact starting noise (.safetensors), to reproduce a run.")]
SaveLatOpt = Annotated[bool, typer.Option("--save-latents", help="Also write <output>.latents.safetensors.")]
SamplerOpt = Annotated[str, typer.Option("--sampler", help="euler (official) or heun.")]


@app.command()
def t2i(
    prompt: Annotated[str | None, typer.Argument(help="The prompt (or use --prompts-file).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="out.png/.jpg/.webp; several outputs get -000, -001, ...")] = None,
    model: ModelOpt = None, size: SizeOpt = None, steps: StepsOpt = None, guidance: GuidanceOpt = None,
    shift: ShiftOpt = None, seed: SeedOpt = None, num_images: NumOpt = 1, prompts_file: PromptsFileOpt = None,
    batch_size: BatchOpt = 4, noise: NoiseOpt = None, save_latents: SaveLatOpt = False, sampler: SamplerOpt = "euler",
    device: DeviceOpt = "auto", dtype: DtypeOpt = "auto", max_memory: MaxMemOpt = None, overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Text to image."""
    _setup(json_mode, quiet)
    run_generation("t2i", read_prompts(prompt, prompts_file), output, model, num_images, size, steps, guidance, shift,
                   seed, batch_size, noise, save_latents, sampler, 1, 8.0, None, device, dtype, overwrite, ".png",
                   (".png", ".jpg", ".jpeg", ".webp"), max_memory)


MAX_VIDEO_FRAMES = 1 + 4 * 64  # pipelines._check_frames


def _video_frames(frames: int) -> int:
    from . import media as M

    if not 1 <= frames <= MAX_VIDEO_FRAMES:
        raise UsageError(f"--frames must be between 1 and {MAX_VIDEO_FRAMES}, got {frames}")
    rounded = M.round_frames(frames, "up")
    if rounded != frames:
        notice(f"frames must be 1+4k: {frames} was rounded to {rounded}")
    return rounded


def _check_fps(fps: float | None) -> float | None:
    if fps is not None and not (0 < fps <= 240):
        raise UsageError(f"--fps must be in (0, 240], got {fps}")
    return fps


VIDEO_EXTS = (".mp4", ".webm", ".gif")


@app.command()
def t2v(
    prompt: Annotated[str | None, typer.Argument(help="The prompt (or use --prompts-file).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="out.mp4/.webm/.gif")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames, 1+4k (others rounded up with a notice).")] = 17,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second of the output.")] = 8.0,
    model: ModelOpt = None, size: SizeOpt = None, steps: StepsOpt = None, guidance: GuidanceOpt = None,
    shift: ShiftOpt = None, seed: SeedOpt = None, num_images: NumOpt = 1, prompts_file: PromptsFileOpt = None,
    batch_size: BatchOpt = 1, noise: NoiseOpt = None, save_latents: SaveLatOpt = False, sampler: SamplerOpt = "euler",
    device: DeviceOpt = "auto", dtype: DtypeOpt = "auto", max_memory: MaxMemOpt = None, overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Text to video (needs a checkpoint trained for video generation, e.g. the bundled demo)."""
    _setup(json_mode, quiet)
    run_generation("t2v", read_prompts(prompt, prompts_file), output, model, num_images, size, steps, guidance, shift,
                   seed, batch_size, noise, save_latents, sampler, _video_frames(frames), _check_fps(fps), None, device,
                   dtype, overwrite, ".mp4", VIDEO_EXTS, max_memory)


@app.command()
def i2v(
    image: Annotated[Path, typer.Argument(help="The first frame.")],
    prompt: Annotated[str | None, typer.Argument(help="The prompt (or use --prompts-file).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="out.mp4/.webm/.gif")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames, 1+4k (others rounded up with a notice).")] = 17,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second of the output.")] = 8.0,
    model: ModelOpt = None, size: SizeOpt = None, steps: StepsOpt = None, guidance: GuidanceOpt = None,
    shift: ShiftOpt = None, seed: SeedOpt = None, num_images: NumOpt = 1, prompts_file: PromptsFileOpt = None,
    batch_size: BatchOpt = 1, noise: NoiseOpt = None, save_latents: SaveLatOpt = False, sampler: SamplerOpt = "euler",
    device: DeviceOpt = "auto", dtype: DtypeOpt = "auto", max_memory: MaxMemOpt = None, overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Image to video: the image's latent is the fixed first latent frame."""
    _setup(json_mode, quiet)
    run_generation("i2v", read_prompts(prompt, prompts_file), output, model, num_images, size, steps, guidance, shift,
                   seed, batch_size, noise, save_latents, sampler, _video_frames(frames), _check_fps(fps), image, device,
                   dtype, overwrite, ".mp4", VIDEO_EXTS, max_memory)


@app.command()
def caption(
    media: Annotated[Path, typer.Argument(help="An image or a video.")],
    question: Annotated[list[str] | None, typer.Option("--question", "-q", help="A question; repeat for several (default: describe it).")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="At most this many tokens per answer.")] = 300,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy (default); > 0 samples.")] = 0.0,
    top_p: Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling (with --temperature).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", help="Top-k sampling (with --temperature).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")] = None,
    frames: Annotated[int | None, typer.Option("--frames", help="Video: frames sampled uniformly (default 32 for the real models).")] = None,
    mask: Annotated[str | None, typer.Option("--mask", help="official (the demos' shifted block) or training (training-consistent block); default: what the checkpoint declares (official for the released ones).")] = None,
    template: Annotated[str | None, typer.Option("--template", help="official (demo prompt) or training (stage-2 whitespace); default: what the checkpoint declares.")] = None,
    vae_sample: Annotated[bool, typer.Option("--vae-sample", help="Encode with the stochastic VAE sample, as the official demo.")] = False,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print tokens as they are produced.")] = True,
    model: ModelOpt = None, device: DeviceOpt = "auto", dtype: DtypeOpt = "auto",
    json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Answer questions about an image or a video (one answer per line on stdout)."""
    _setup(json_mode, quiet)
    from . import media as M

    if mask not in (None, "official", "training"):
        raise UsageError(f"--mask must be official or training, got '{_short(mask)}'")
    if template not in (None, "official", "training"):
        raise UsageError(f"--template must be official or training, got '{_short(template)}'")
    # the option checks of pipelines._validate_caption, without importing torch
    if not 1 <= max_new_tokens <= 1_000_000:
        raise UsageError(f"--max-new-tokens must be between 1 and 1000000, got {max_new_tokens}")
    check_number("--temperature", temperature, 0, 1000)
    check_number("--top-p", top_p, 0, 1, low_open=True)
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {top_k}")
    if frames is not None and not 1 <= frames <= 512:
        raise UsageError(f"--frames must be between 1 and 512, got {frames}")
    check_seed(seed)
    for q in question or []:
        check_text(q, "question")
    check_device_name(device)
    check_dtype_name(dtype)
    kind = M.probe_kind(media)
    if kind == "image":
        M.read_image(media)  # a broken or too large picture fails before the model loads
    else:
        M.check_video(media)  # so does a truncated or damaged video (without decoding it)

    from . import pipelines as P

    opts = P.CaptionOptions(questions=list(question or []), max_new_tokens=max_new_tokens, temperature=temperature,
                            top_k=top_k, top_p=top_p, seed=seed, frames=frames, mask_mode=mask, template=template,
                            vae_sample=vae_sample)
    P._validate_caption(opts)
    bundle = load_model(model, device, dtype)
    if kind == "video" and not P.supports_video_understanding(bundle):
        notice("note: this checkpoint was not trained for video understanding (use a -w-video-und model)")
    live = stream and not STATE["json"]

    def on_text(i: int, piece: str) -> None:
        sys.stdout.write(piece.replace("\n", " "))
        sys.stdout.flush()

    def on_done(i: int, answer: str) -> None:
        sys.stdout.write("\n")
        sys.stdout.flush()

    with ProgressReporter() if not live else _nullcontext() as bar:
        result = P.caption(bundle, media, opts, on_text=on_text if live else None, progress=bar,
                           on_done=on_done if live else None)
    if not live:
        emit({"media": str(media), "kind": result.kind,
              "answers": [{"question": q, "answer": a, "tokens": n}
                          for q, a, n in zip(result.questions, result.answers, result.token_counts, strict=True)],
              "seconds": round(result.seconds, 3), "frames": result.frames, "options": result.options},
             "".join(a.replace("\n", " ") + "\n" for a in result.answers))


@contextmanager
def _nullcontext():
    yield None


@app.command()
def models(json_mode: JsonOpt = False, quiet: QuietOpt = False):
    """The known variants: which are present locally (and where), what is missing, how to get it."""
    _setup(json_mode, quiet)
    from .loading import WAN_VAE_FILE, WAN_VAE_REPO, _hf_cached_file, _hf_cached_snapshot, bundled_demo_path
    from .specs import REGISTRY

    vae = _hf_cached_file(WAN_VAE_REPO, WAN_VAE_FILE)
    rows = []
    demo = bundled_demo_path()
    rows.append({"name": "demo", "repo": None, "present": (demo / "config.json").exists(),
                 "path": str(demo) if (demo / "config.json").exists() else None, "missing": [],
                 "get": [], "tasks": "all (small synthetic shapes world)"})
    for name, spec in REGISTRY.items():
        if not spec.repo_id:
            continue
        snap = _hf_cached_snapshot(spec.repo_id)
        tok = _hf_cached_snapshot(spec.llm_repo_id) if spec.llm_repo_id else None
        missing, get = [], []
        if snap is None:
            missing.append("checkpoint")
            get.append(f"hf download {spec.repo_id}")
        if tok is None:
            missing.append("tokenizer")
            get.append(f"hf download {spec.llm_repo_id}")
        if vae is None:
            missing.append("VAE")
            get.append(f"hf download {WAN_VAE_REPO} {WAN_VAE_FILE}")
        rows.append({"name": name, "repo": spec.repo_id, "present": not missing, "path": str(snap) if snap else None,
                     "missing": missing, "get": get, "tasks": ", ".join(spec.tasks)})
    env = os.environ.get("SHOWO2_MODEL")
    lines = [f"default: {env} (SHOWO2_MODEL)" if env else "default: the cached official 1.5B if present, else demo"]
    for r in rows:
        state = "ready" if r["present"] else ("missing " + ", ".join(r["missing"]) if r["missing"] else "not installed")
        lines.append(f"{r['name']:<18} {state}" + (f"  ({r['path']})" if r["path"] else ""))
        lines.append(f"{'':<18} tasks: {r['tasks']}")
        for cmd in r["get"]:
            lines.append(f"{'':<18} get: {cmd}")
    emit({"models": rows, "default_env": env}, "\n".join(lines))


def _register_train() -> None:
    from .training.command import train as train_command

    app.command("train")(train_command)


_register_train()


# ---- entry point ------------------------------------------------------------------------------

def _fail(message: str, code: int, kind: str) -> int:
    message = re.sub(r"\s*[\r\n]+\s*", " ", message).strip() or kind  # one line, whatever the message held
    try:
        _write(sys.stderr, f"showo2: error: {message}\n")
        if STATE["json"] or "--json" in _ARGS:
            _write(sys.stdout, json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}) + "\n")
        sys.stderr.flush()
        sys.stdout.flush()
    except (OSError, ValueError):  # a closed or broken stdout/stderr: the exit code still tells
        pass
    return code


def _click_exceptions():
    """Typer may vendor its own click; handle both its exception classes and click's."""
    exits, aborts, errors = [typer.Exit], [typer.Abort], []
    try:
        from typer._click import exceptions as vendored

        errors.append(vendored.ClickException)
    except ImportError:
        pass
    try:
        from click import exceptions as upstream

        exits.append(upstream.Exit)
        aborts.append(upstream.Abort)
        errors.append(upstream.ClickException)
    except ImportError:
        pass
    return tuple(exits), tuple(aborts), tuple(errors)


def main(argv: list[str] | None = None) -> int:
    exit_types, abort_types, click_types = _click_exceptions()

    args = list(sys.argv[1:] if argv is None else argv)
    _ARGS[:] = args
    # fresh state for every call (main() may run several times in one process)
    STATE.update(debug=bool(os.environ.get("SHOWO2_DEBUG")) or "--debug" in args, json=False, quiet=False)
    with warnings.catch_warnings():
        if not STATE["debug"]:  # stderr carries notices and one error line; library warnings only with --debug
            warnings.simplefilter("ignore")
        return _main(args, exit_types, abort_types, click_types)


def _main(args: list[str], exit_types, abort_types, click_types) -> int:
    try:
        rv = app(args=args, prog_name="showo2", standalone_mode=False)
        if rv == 130:  # typer turns Ctrl-C into a returned 130 when not in standalone mode
            return _fail("interrupted", 130, "interrupted")
        return rv if isinstance(rv, int) else 0
    except exit_types as e:
        return e.exit_code
    except abort_types:
        return _fail("interrupted", 130, "interrupted")
    except KeyboardInterrupt:
        return _fail("interrupted", 130, "interrupted")
    except click_types as e:
        if STATE["debug"]:
            traceback.print_exc()
        if type(e).__name__ == "NoArgsIsHelpError":
            sys.stderr.write(e.format_message() + "\n")
            return 2
        message = e.format_message().replace("\n", " ")
        ctx = getattr(e, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        return _fail(message + where, 2, "usage")
    except Showo2Error as e:
        if STATE["debug"]:  # the traceback, then the same line and exit code as without --debug
            traceback.print_exc()
        return _fail(" ".join(str(e).split("\n")), e.exit_code, e.kind)
    except MemoryError:
        if STATE["debug"]:
            traceback.print_exc()
        return _fail("out of memory", 6, "resource")
    except Exception as e:  # a bug: still one line unless --debug
        if STATE["debug"]:
            traceback.print_exc()
        return _fail(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                     "(run with --debug for the traceback)", 1, "internal")


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
