"""``encode`` and ``decode``: media to Wan2.1 VAE latents (with metadata) and back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ModelError, short
from ..options import DEFAULT_FPS, MAX_SIDE, EncodeOptions, check_fps
from .common import (
    DeviceOpt,
    Dtype,
    JsonOpt,
    MaxMemOpt,
    ModelOpt,
    OverwriteOpt,
    QuietOpt,
    VaeOpt,
    VaeTilingOpt,
    emit,
    fetch_vae_if_needed,
    model_name,
    notice,
    setup,
    status,
    value,
)

#: encode/decode default to float32 (latents to compare or reuse elsewhere); auto is the model commands' default
LatentsDtypeOpt = Annotated[Dtype, typer.Option("--dtype", case_sensitive=False, help="fp32 by default (exact latents); auto: bf16 on "
                                                "CUDA, fp32 elsewhere.")]

DecodeDtypeOpt = Annotated[Dtype | None, typer.Option(
    "--dtype", case_sensitive=False, show_default=False,
    help="Default: the dtype a generated output's latents record (its --dtype), else fp32; auto: bf16 on CUDA, "
         "fp32 elsewhere.")]


def encode(
    media: Annotated[Path, typer.Argument(help="An image or a video.")],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Latents file (.safetensors); default <media>.latents.safetensors.")] = None,
    model: ModelOpt = None,
    vae: VaeOpt = None,
    size: Annotated[str | None, typer.Option("--size", help=f"N or WIDTHxHEIGHT, multiples of 16, at most {MAX_SIDE} (default: the model's resolution, {EncodeOptions.size[0]} for a VAE alone).")] = None,
    frames: Annotated[int | None, typer.Option("--frames", min=1, max=100000, help="Videos: use the first N frames (rounded up to 1+4k). Default: all, rounded down.")] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Draw the posterior sample (official training/understanding behaviour) instead of the mean.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for --sample, 0 to 2^63-1.")] = None,
    device: DeviceOpt = "auto",
    dtype: LatentsDtypeOpt = Dtype.fp32,
    max_memory: MaxMemOpt = None,
    vae_tiling: VaeTilingOpt = "auto",
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Encode an image or a video into Wan2.1 VAE latents with metadata."""
    setup(json_mode, quiet)
    from .. import media as M
    from ..options import RuntimeOptions
    from ..saving import encoded_output

    if output is not None:  # taken as text: a trailing '/' is seen (a Path drops it)
        M.check_output_name(output)
    requested = M.parse_size(size)
    RuntimeOptions(device, value(dtype), max_memory, vae_tiling=value(vae_tiling)).validate()
    EncodeOptions(frames=frames, sample=sample, seed=seed).validate()
    out = encoded_output(media, output, overwrite)  # (the library's encode_file names and checks it again)
    # read_media's first checks, before torch is imported: a missing input fails at once, and so does a
    # truncated or damaged video (a cut-off download was refused only after torch, diffusers and the model)
    if M.probe_kind(media) == "video":
        M.check_video(media)
    from ..model_config import spec_from_files
    from ..model_files import find_files

    if vae is not None:  # a Hub repo id's VAE: its download announced, with progress
        vae_path = fetch_vae_if_needed(vae)
    resolution = None
    if vae is None or model is not None:  # a model: its resolution, and its VAE unless --vae names another
        name = model_name(model)
        files = find_files(name, vae=vae)
        if files.vae is None:
            raise ModelError(f"model '{name}' has no VAE: pass --vae PATH")
        vae_path = files.vae  # --vae when given (checked by find_files)
        if files.format == "showo2":
            resolution = spec_from_files(files, {}).resolution
        else:
            resolution = int(files.config["image_latent_height"]) * 16  # (required by check_official_config)
    hw = requested or ((resolution, resolution) if resolution else EncodeOptions.size)
    from ..pipelines import latents as L
    from ..runtime import pick_device, pick_dtype

    # the input is read and checked before the VAE loads: the frames --frames uses (1+4k), else all,
    # each resized to the output's size as it is decoded
    source = L.read_source(media, hw, frames, max_memory)
    dev = pick_device(device)
    dt = pick_dtype(value(dtype), dev)
    with status("loading the VAE"):
        from ..modeling.vae_files import load_vae

        vae_model = load_vae(vae_path, dtype=dt, device=dev, parts=("encoder",))
        vae_model.tiling = value(vae_tiling)
    with status(f"encoding {media.name}"):
        result = L.encode_file(source, vae_model, out, EncodeOptions(size=hw, frames=frames, sample=sample, seed=seed),
                               overwrite=overwrite, vae_name=str(vae_path), max_memory_gb=max_memory)
    for n in result.notices:
        notice(n)
    shape = list(result.latents.shape)
    notice(f"latents {shape} from {result.metadata['frames']} frame(s) at {hw[1]}x{hw[0]}")
    emit({"output": str(out), "shape": shape, **result.metadata}, str(out))  # stdout: the path alone, as t2i's


def decode(
    latents: Annotated[Path, typer.Argument(help="A latents file written by `showo2 encode` or --save-latents.")],
    output: Annotated[str | None, typer.Option("--output", "-o", help="out.png/.jpg/.webp/.bmp for one frame, .mp4/.webm/.gif/.mov/.mkv for videos.")] = None,
    model: ModelOpt = None,
    vae: VaeOpt = None,
    fps: Annotated[float | None, typer.Option("--fps", help=f"Frames per second of the output, 0.5 to 240 (default: the source's, else {DEFAULT_FPS:g}).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="The file holds the VAE's raw latents (diffusers' latent_dist.mean or .sample()), "
                                      "not normalised ones ((z - latents_mean) / latents_std, what encode writes and Wan pipelines' "
                                      "output_type='latent' gives).")] = False,
    device: DeviceOpt = "auto",
    dtype: DecodeDtypeOpt = None,
    max_memory: MaxMemOpt = None,
    vae_tiling: VaeTilingOpt = "auto",
    overwrite: OverwriteOpt = False,
    json_mode: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Decode latents back to an image or a video."""
    setup(json_mode, quiet)
    from .. import media as M
    from ..options import RuntimeOptions

    check_fps(fps)
    RuntimeOptions(device, value(dtype) if dtype is not None else "fp32", max_memory,
                   vae_tiling=value(vae_tiling)).validate()
    if output is not None:  # taken as text: a trailing '/' is seen (a Path drops it)
        M.check_output_name(output)
        if Path(output).suffix.lower() not in M.IMAGE_WRITE_EXTS + M.VIDEO_WRITE_EXTS:
            raise M.extension_refused(Path(output), f"use {M.written_formats()}")
        M.check_output_path(Path(output), overwrite, probe=True)
    M.check_input_file(latents, "latents file")  # the cheap checks, before importing torch (a FIFO was "empty")

    from ..loading import resolve_vae
    from ..pipelines import latents as L
    from ..runtime import pick_device, pick_dtype

    z, meta = L.load_latents(latents)
    out = L.decode_output(latents, z, meta, output, raw, overwrite)  # every check of the output, before the load
    # a generated output's latents decode as that output was decoded (its dtype and VAE tiles)
    made_in = L.recorded_decoding(meta)[1]
    dev = pick_device(device)
    dt = pick_dtype(value(dtype) if dtype is not None else made_in or "fp32", dev)
    if dtype is None and made_in:
        notice(f"decoding in {made_in}, as the output was made (--dtype fp32 to change)")
    # the VAE is the user's choice (--vae, --model, else the default model); a path recorded in the
    # latents file is only a hint: a data file never chooses which files the program opens
    chosen = vae is not None or model is not None
    if not chosen:
        model = model_name(None)
    if vae is not None:  # a Hub repo id's VAE: its download announced, with progress
        fetch_vae_if_needed(vae)
    with status("loading the VAE"):
        vae_model, vae_name = resolve_vae(model, vae, dtype=dt, device=dev, parts=("decoder",))
        vae_model.tiling = value(vae_tiling)
    if not chosen and meta.get("vae") and not _same_file(meta["vae"], vae_name):
        notice(f"the latents were encoded with '{short(meta['vae'], 80)}'; decoding with the default model's "
               "VAE (pass --vae to choose)")
    with status(f"decoding {z.shape[1]} latent frame(s)"):  # (the file was read above: not again)
        result = L.decode_file(latents, vae_model, out, fps=fps, raw=raw, overwrite=overwrite, vae_name=vae_name,
                               max_memory_gb=max_memory, loaded=(z, meta), on_notice=notice)
    t, h, w = result.frames.shape[:3]
    rate = result.record["fps"]
    notice(f"{t} frame(s) {w}x{h}" + (f" at {rate:g} fps" if t > 1 else ""))
    emit({"output": str(result.output), "frames": int(t), "width": int(w), "height": int(h),
          "fps": rate if t > 1 else None, **{k: result.record[k] for k in ("vae_tiles", "dtype") if k in result.record}},
         str(result.output))


def _same_file(recorded: str, used: str) -> bool:
    """Whether a VAE path recorded in a latents file names the VAE being used."""
    try:
        return os.path.samefile(recorded, used)
    except (OSError, ValueError):  # gone, unreadable or not a path: not the same
        return False
