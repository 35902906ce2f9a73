"""The `showo2` command line: one thin function per subcommand over the Python API.

Every command parses its options, calls the library, and renders: results on stdout (plain, or
one JSON object with ``--json``), notices and progress on stderr. Errors are one line on stderr
with a documented exit code (see ``errors.py``); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from . import __version__
from .errors import ModelError, OutputError, Showo2Error, UsageError

app = typer.Typer(
    name="showo2",
    help="Run the Show-o2 unified multimodal model: understand and generate images and videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

STATE = {"debug": bool(os.environ.get("SHOWO2_DEBUG")), "json": False, "quiet": False}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No notices or progress on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cuda, mps or cpu.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 elsewhere), bf16, fp16 or fp32.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Model name, folder or Hugging Face repo id "
                                              "(default: $SHOWO2_MODEL, the cached official 1.5B, then the bundled demo).")]
VaeOpt = Annotated[Path | None, typer.Option("--vae", help="A VAE alone: Wan2.1_VAE.pth, a .safetensors or a diffusers folder.")]


# ---- rendering helpers ------------------------------------------------------------------------

def _stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def notice(message: str) -> None:
    if not STATE["quiet"] and not STATE["json"]:
        _stderr_console().print(message, markup=False)


def emit(result: dict, plain: str | None = None) -> None:
    """The command's result: a JSON object with --json, else the plain text (if any) on stdout."""
    if STATE["json"]:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    elif plain is not None:
        sys.stdout.write(plain + ("" if plain.endswith("\n") else "\n"))
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
    from .loading import build_network, find_files, read_state_dict, spec_from_files

    files = find_files(model, vae=vae)
    if not files.weights:
        raise ModelError(f"model '{model}' has no weights in '{files.root}'")
    start = time.perf_counter()
    state = read_state_dict(files.weights)
    spec = spec_from_files(files, state)
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in state.values()})
    build_network(spec, state, next(iter(state.values())).dtype, where=str(files.root))  # validates keys
    seconds = time.perf_counter() - start
    counts = _parameter_counts(state, skip_tied=spec.tie_word_embeddings)
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


def _parameter_counts(state: dict, skip_tied: bool = False) -> dict[str, int]:
    groups = {"llm": ("showo.",), "semantic": ("image_embedder_und.", "position_embedding.", "und_trans."),
              "projector+fusion": ("image_embedder_gen.", "fusion_proj."), "time": ("time_embed.", "time_embed_proj."),
              "flow_head": ("diff_proj.", "diffusion_head_a.", "diffusion_head_b.")}
    counts = dict.fromkeys(groups, 0)
    seen = set()
    for k, v in state.items():
        if skip_tied and k == "showo.lm_head.weight":
            continue
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.device.type != "meta" else k
        if key in seen:
            continue
        seen.add(key)
        for g, prefixes in groups.items():
            if k.startswith(prefixes):
                counts[g] += v.numel()
    counts["total"] = sum(counts.values())
    return counts


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
    from .loading import build_network, find_files, parse_dtype, read_state_dict, save_folder, spec_from_files
    from .modeling.vae import load_vae
    from .tokenizer import add_showo2_tokens, load_tokenizer

    target_dtype = None if dtype == "keep" else parse_dtype(dtype)
    if output.exists() and not overwrite:
        raise OutputError(f"'{output}' already exists; pass --overwrite to replace it")
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
    vae_dim: Annotated[int | None, typer.Option("--vae-dim", help="Base width of the random Wan VAE (96 is the real one).")] = None,
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Write a new randomly initialised model folder of any spec (the start of training, or for tests)."""
    _setup(json_mode, quiet)
    from .loading import init_model, parse_dtype
    from .specs import get_spec

    spec_obj = get_spec(spec)
    if vae_dim is not None and not 1 <= vae_dim <= 512:
        raise UsageError(f"--vae-dim must be between 1 and 512, got {vae_dim}")
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
    frames: Annotated[int | None, typer.Option("--frames", help="Videos: use the first N frames (rounded up to 1+4k). Default: all, rounded down.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Draw the posterior sample (official training/understanding behaviour) instead of the mean.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for --sample.")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Encode an image or a video into Wan2.1 VAE latents with metadata."""
    _setup(json_mode, quiet)
    from . import api
    from . import media as M

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    out = output or media.with_name(media.name + ".latents.safetensors")
    if out.suffix != ".safetensors":
        raise UsageError(f"latents are written as .safetensors, got '{out}'")
    M.check_output_path(out, overwrite)
    M.probe_kind(media)  # fail on a bad input before loading anything
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
    hw = api.parse_size(size) or ((resolution, resolution) if resolution else (432, 432))
    with status("loading the VAE"):
        from .modeling.vae import load_vae

        vae_model = load_vae(vae_path, dtype=dt, device=dev)
    with status(f"encoding {media.name}"):
        result = api.encode(media, vae_model, api.EncodeOptions(size=hw, frames=frames, sample=sample, seed=seed),
                            vae_name=str(vae_path))
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
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Decode latents back to an image or a video."""
    _setup(json_mode, quiet)
    from . import api
    from . import media as M

    if fps is not None and not (0 < fps <= 240):
        raise UsageError(f"--fps must be in (0, 240], got {fps}")
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    z, meta = api.load_latents(latents)
    frames_out = 1 + 4 * (z.shape[1] - 1)
    out = output or latents.with_name(latents.name.split(".")[0] + (".png" if frames_out == 1 else ".mp4"))
    ext = out.suffix.lower()
    if ext not in M.IMAGE_EXTS + M.VIDEO_EXTS:
        raise UsageError(f"unsupported output extension '{ext}': use .png/.jpg/.webp or .mp4/.webm/.gif")
    if ext in M.IMAGE_EXTS and frames_out != 1:
        raise UsageError(f"'{out}' is an image but the latents hold {frames_out} frames: use .mp4, .webm or .gif")
    M.check_output_path(out, overwrite)
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
        frames = api.decode(z, vae_model)
    rate = fps or meta.get("fps") or 8.0
    api.write_decoded(out, frames, rate, {"decoded_from": str(latents), "vae": vae_name, "fps": rate}, overwrite)
    t, h, w = frames.shape[:3]
    emit({"output": str(out), "frames": int(t), "width": int(w), "height": int(h), "fps": rate if t > 1 else None},
         f"{out}  {t} frame(s) {w}x{h}" + (f" at {rate:g} fps" if t > 1 else ""))


# ---- entry point ------------------------------------------------------------------------------

def _fail(message: str, code: int, kind: str) -> int:
    sys.stderr.write(f"showo2: error: {message}\n")
    if STATE["json"] or "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps({"error": {"kind": kind, "message": message, "exit_code": code}}) + "\n")
    sys.stderr.flush()
    sys.stdout.flush()
    return code


def main(argv: list[str] | None = None) -> int:
    import click

    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        STATE["debug"] = True
    try:
        app(args=args, prog_name="showo2", standalone_mode=False)
        return 0
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        return _fail("interrupted", 130, "interrupted")
    except KeyboardInterrupt:
        return _fail("interrupted", 130, "interrupted")
    except click.exceptions.ClickException as e:
        if STATE["debug"]:
            raise
        message = e.format_message().replace("\n", " ")
        ctx = getattr(e, "ctx", None)
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        return _fail(message + where, 2, "usage")
    except Showo2Error as e:
        if STATE["debug"]:
            raise
        return _fail(" ".join(str(e).split("\n")), e.exit_code, e.kind)
    except MemoryError:
        return _fail("out of memory", 6, "resource")
    except Exception as e:  # a bug: still one line unless --debug
        if STATE["debug"]:
            raise
        return _fail(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                     "(run with --debug for the traceback)", 1, "internal")


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
