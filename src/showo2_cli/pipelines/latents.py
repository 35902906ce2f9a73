"""Latents: media to Wan2.1 VAE latents (with metadata) and back, and the latents file format.

    from showo2_cli import load, encode, decode, EncodeOptions
    model = load("demo")
    result = encode("clip.mp4", model.vae, EncodeOptions(size=(64, 64), frames=17))
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .. import media as M
from ..errors import InputError, UsageError, short
from ..footprint import in_gb, vae_bytes
from ..modeling.vae import WanVAE
from ..options import DEFAULT_FPS, EncodeOptions, is_finite_number
from ..runtime import check_memory, cpu_by_default, dtype_label, pick_tiling

TILING_ADVICE = "tile the VAE with --vae-tiling auto"

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def _tiling_helps(vae: WanVAE, whole_gb: float, tiled_gb: float) -> bool:
    """Whether a refusal advises :data:`TILING_ADVICE`: tiling is off and lowers the estimate (a
    frame no larger than one tile is computed whole either way), as a generation's refusal advises it."""
    return vae.tiling == "off" and tiled_gb < whole_gb

# ---- sizes and frames -------------------------------------------------------------------------

@dataclass
class EncodeResult:
    latents: torch.Tensor  # (C, T', h, w) float32, normalised
    metadata: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    output: Path | None = None  # where encode_file wrote them


def read_source(source, size: int | tuple[int, int], frames: int | None = None,
                max_memory_gb: float | None = None) -> M.Media:
    """Read what :func:`encode` encodes (a path, or media in memory): an image, or a video's first
    ``frames`` frames (rounded up to 1+4k; all without), each resized and center-cropped to ``size``
    as it is decoded, so a long 4K video is never held at its decoded size
    (:attr:`~showo2_cli.media.Media.decoded_size` keeps that size)."""
    from PIL import Image

    from ..runtime import decode_budget

    def fit(frame: np.ndarray) -> np.ndarray:
        return np.asarray(M.resize_center_crop(Image.fromarray(frame), size))

    first = None if frames is None else M.round_frames(frames, "up")  # only the frames used
    return M.read_media(source, first=first, max_bytes=decode_budget(max_memory_gb), fit=fit)


def prepare_frames(media: M.Media, size: tuple[int, int], frames: int | None, notices: list[str]) -> np.ndarray:
    """Pick the frames (1+4k, with a notice when rounded) and resize/crop each to ``size`` (frames
    :func:`read_source` fitted already are taken as they are)."""
    arr = media.frames
    if media.kind == "video":
        total = arr.shape[0]
        if frames is None:
            n = M.round_frames(total, "down")
            if n != total:
                notices.append(f"{Path(media.source).name}: {total} frames is not 1+4k: using the first {n}")
        else:
            if frames < 1:
                raise UsageError(f"--frames must be at least 1, got {frames}")
            n = M.round_frames(frames, "up")
            if n > total:  # one notice: what the video has decides, not the rounding
                n = M.round_frames(total, "down")
                notices.append(f"{Path(media.source).name} has only {total} frames: using {n}")
            elif n != frames:
                notices.append(f"frames must be 1+4k: {frames} was rounded to {n}")
        arr = arr[:n]
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    if arr.shape[1:3] == (th, tw):  # read at the size already (resizing to its own size changes nothing)
        return arr
    from PIL import Image

    out = [np.asarray(M.resize_center_crop(Image.fromarray(f), size)) for f in arr]
    return np.stack(out)


@cpu_by_default
@torch.no_grad()
def encode(source, vae: WanVAE, options: EncodeOptions | None = None,
           vae_name: str | None = None, max_memory_gb: float | None = None) -> EncodeResult:
    """Encode an image or a video (a path, :class:`~showo2_cli.media.Media` already read, or what
    :func:`~showo2_cli.media.read_media` takes in memory: a PIL image, an array or tensor, a list
    of frames) into normalised Wan latents with metadata.

    Refuses (:class:`ResourceError`) a job whose estimated memory exceeds ``max_memory_gb``
    (default ``$SHOWO2_MAX_MEMORY_GB``, else the memory available on the VAE's device)."""
    opts = options or EncodeOptions()
    opts.validate()  # (never run here: a seed of -1, sample="no" and a side of 10**9 went on to torch and Pillow)
    notices: list[str] = []
    if opts.seed is not None and not opts.sample:
        notices.append("--seed has no effect without --sample (the posterior mean has no noise)")
    media = source if isinstance(source, M.Media) else read_source(source, opts.size, opts.frames, max_memory_gb)
    source = source if isinstance(source, (str, os.PathLike)) else media.source
    n_frames = 1 if media.kind == "image" else min(M.round_frames(opts.frames or media.num_frames, "up"),
                                                   max(M.round_frames(media.num_frames, "down"), 1))
    h, w = (opts.size, opts.size) if isinstance(opts.size, int) else tuple(opts.size)
    weights = in_gb(vae_bytes(vae, ("encoder",)))
    whole, in_tiles = vae.encode_memory_gb(n_frames, h, w), vae.encode_memory_gb(n_frames, h, w, True)
    tiled = pick_tiling(vae.tiling, whole, in_tiles, max_memory_gb, vae.device, weights, n_frames > 1)
    advice = "lower --size or --frames" + (f", or {TILING_ADVICE}" if _tiling_helps(vae, whole, in_tiles) else "")
    check_memory(in_tiles if tiled else whole, f"encoding {n_frames} frame(s) at {w}x{h}",
                 max_memory_gb, vae.device, advice, weights, n_frames > 1)
    frames = prepare_frames(media, opts.size, opts.frames, notices)
    pixels = M.frames_to_tensor(frames)[None]  # (1, 3, T, H, W)
    gen = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
    if opts.sample and gen is None:
        gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    latents = vae.encode(pixels, sample=opts.sample, generator=gen, tiled=tiled)[0].float().cpu()
    meta = {
        "format": "showo2-latents", "version": 1, "showo2_version": __version__,
        "source": str(source), "kind": media.kind, "frames": int(frames.shape[0]),
        "latent_frames": int(latents.shape[1]), "fps": media.fps, "height": int(frames.shape[1]),
        "width": int(frames.shape[2]), "source_frames": media.total_frames,
        "source_size": list(media.source_size), "vae": vae_name or "", "sample": opts.sample,
        "seed": opts.seed, "normalization": "(mu - mean) / std, Wan2.1 constants",
        "latents_mean": [round(float(x), 6) for x in vae.latents_mean],
        "latents_std": [round(float(x), 6) for x in vae.latents_std],
    }
    tiles = vae.tiles_used(h, w, tiled)
    if tiles is not None:  # tiles blend their seams: other latents than a whole encode's
        meta["vae_tiles"] = list(tiles)
    if vae.dtype != torch.float32:  # a half-precision VAE rounds every layer: other latents than fp32's
        meta["dtype"] = dtype_label(vae.dtype)  # --dtype's name (bf16), as generation records it
    return EncodeResult(latents, meta, notices)


def encode_file(source, vae: WanVAE, output: str | os.PathLike | None = None, options: EncodeOptions | None = None,
                *, overwrite: bool = False, vae_name: str | None = None,
                max_memory_gb: float | None = None) -> EncodeResult:
    """``showo2 encode``: :func:`encode` ``source`` (a path, or media in memory, then with an
    ``output``) and write the latents with their metadata to ``output``, else
    ``<source>.latents.safetensors`` beside it (:func:`~showo2_cli.saving.encoded_output` names
    and checks it before any work). The result's ``output`` is where they went."""
    from ..saving import encoded_output

    named = source if isinstance(source, (str, os.PathLike)) else None
    out = encoded_output(named, output, overwrite)
    result = encode(source, vae, options, vae_name=vae_name, max_memory_gb=max_memory_gb)
    result.output = save_latents(out, result.latents, result.metadata, overwrite=overwrite)
    return result


def save_latents(path: str | os.PathLike, latents: torch.Tensor, metadata: dict, overwrite: bool = False) -> Path:
    """Write ``latents (C, T', h, w)`` and their metadata (``encode``'s result, or a generated
    output's) as a ``.safetensors`` file that :func:`load_latents` and ``showo2 decode`` read."""
    from safetensors.torch import save_file

    with M.atomic_output(path, overwrite=overwrite) as tmp:
        save_file({"latents": latents.contiguous()}, str(tmp), metadata={"showo2": json.dumps(metadata)})
    return Path(path)


#: Largest latents accepted (elements): 16 channels x 65 latent frames x 512 x 512 is less.
MAX_LATENT_ELEMENTS = 1 << 29
#: The largest magnitude of a latent (or starting noise) value read from a file: normalised latents and
#: a standard normal draw are a few units; 3e38 decoded to a black picture, exit 0 (as starting noise it
#: overflowed the sampler, said to be the model's NaN weights) and 1e20 to a grey one.
MAX_LATENT_ABS = 1e4


def check_latent_values(latents: torch.Tensor, holds: str, typical: str) -> None:
    """The one check of what latents (or starting noise) hold, for every reader: a latents file
    (``decode``), ``--noise`` (the pipeline's ``latents=``), latents given to :func:`decode`. NaN
    or infinity, or a magnitude over :data:`MAX_LATENT_ABS` (``typical`` says what such values
    are), is an :class:`InputError` beginning ``holds`` (decoded, a black or grey picture)."""
    if not latents.numel():
        return
    low, high = torch.aminmax(latents.detach())  # (no copy of a 2 GB file's values)
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)):  # (NaN is propagated)
        raise InputError(f"{holds} NaN/inf values")
    largest = max(-low, high)
    if largest > MAX_LATENT_ABS:
        raise InputError(f"{holds} a value of magnitude {largest:.3g}: {typical} a few units at most "
                         f"(at most {MAX_LATENT_ABS:g} is taken)")


def load_latents(path: str | os.PathLike, z_dim: int | None = None) -> tuple[torch.Tensor, dict]:
    """Read and validate a latents file written by :func:`save_latents`."""
    from ..weights import read_one_tensor

    def pick(keys: list[str], p: Path) -> str:
        if "latents" not in keys:
            raise InputError(f"'{p}' holds no 'latents' tensor (found: {', '.join(keys[:5]) or 'nothing'})")
        return "latents"

    latents, file_meta = read_one_tensor(path, "latents", pick, MAX_LATENT_ELEMENTS)
    p, raw_meta = Path(path), file_meta.get("showo2")
    try:
        meta = json.loads(raw_meta) if raw_meta else {}
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except RecursionError as e:
        raise InputError(f"'{p}' has showo2 metadata nested too deeply") from e
    except ValueError as e:
        raise InputError(f"'{p}' has malformed showo2 metadata ({e})") from e
    _check_latents_metadata(p, meta)
    if latents.dim() == 5 and latents.shape[0] == 1:
        latents = latents[0]
    if latents.dim() == 3:
        latents = latents[:, None]
    if latents.dim() != 4:
        batch = f"; a batch of {latents.shape[0]}: save one latent a file (latents[i])" if latents.dim() == 5 else ""
        raise InputError(f"'{p}': latents must be (C, T, h, w), got shape {tuple(latents.shape)}{batch}")
    if z_dim is not None:
        check_channels(p, latents, z_dim)
    latents = latents.float()  # checked after the cast: a float64 1e300 is inf in float32
    if min(latents.shape[1:]) < 1:
        raise InputError(f"'{p}': latents are empty (shape {tuple(latents.shape)})")
    check_latent_values(latents, f"'{p}': latents hold", "a VAE's latents are")  # (as float32)
    return latents, meta


def check_channels(path: str | os.PathLike, latents: torch.Tensor, z_dim: int) -> None:
    """The latents of ``path`` have the ``z_dim`` channels the decoding VAE expects."""
    if latents.shape[0] != z_dim:
        raise InputError(f"'{Path(path)}': latents have {latents.shape[0]} channels but the VAE expects {z_dim}")


def normalize_raw(latents: torch.Tensor, vae: WanVAE) -> torch.Tensor:
    """The VAE's raw latents (diffusers' ``AutoencoderKLWan.encode(x).latent_dist.mean`` or
    ``.sample()``) -> the normalised latents :func:`decode` takes and ``encode`` writes:
    ``(z - latents_mean) / latents_std`` with the VAE's own statistics (what Wan pipelines do)."""
    mean, inv_std = vae.stats(latents.dim() + 1)  # shaped for (B, C, ...): the batch axis dropped
    return (latents.float() - mean[0].to(latents.device)) * inv_std[0].to(latents.device)


def _check_latents_metadata(p: Path, meta: dict) -> None:
    """The metadata fields the tools use must have the right types (a latents file may come from
    anywhere); unknown fields are kept as they are."""
    def bad(key: str, want: str) -> InputError:
        shown = short(json.dumps(meta[key], default=str))
        return InputError(f"'{p}': metadata field '{key}' must be {want}, got {shown}")

    fps = meta.get("fps")
    if fps is not None and (not is_finite_number(fps) or not M.MIN_FPS <= fps <= M.MAX_FPS):  # (10**400 too)
        raise bad("fps", f"a number of frames per second in [{M.MIN_FPS:g}, {M.MAX_FPS:g}] or null")
    for key in ("vae", "source", "kind", "format"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "text or null")
    for key in ("frames", "latent_frames", "height", "width", "source_frames"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise bad(key, "a whole number >= 0 or null")
    for key in ("latents_mean", "latents_std"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, list) or len(value) > 4096 or not all(
                map(is_finite_number, value))):  # (10**400 too)
            raise bad(key, "a list of finite numbers (one a latent channel) or null")


def metadata_mismatch(meta: dict, latents: torch.Tensor) -> str | None:
    """What a latents file's metadata says about the frames (``frames``, ``latent_frames``,
    ``height``, ``width``) that its ``(C, T', h, w)`` tensor contradicts, or None: the tensor is
    what decodes, so the output is not what the metadata describes."""
    t, h, w = (int(v) for v in latents.shape[1:])
    found = {"latent_frames": t, "frames": M.pixel_frames(t), "height": 8 * h, "width": 8 * w}
    wrong = [f"{key} {meta[key]} (the latents give {found[key]})" for key in found
             if meta.get(key) is not None and meta[key] != found[key]]
    return ", ".join(wrong) or None


def other_statistics(meta: dict, vae: WanVAE) -> str | None:
    """Which of the normalisation statistics recorded in a latents file's metadata (``encode``
    writes ``latents_mean``/``latents_std``, rounded to 6 decimals) differ from ``vae``'s, or None:
    latents normalised with other statistics decode to other pixels, without any error."""
    differ = []
    for key in ("latents_mean", "latents_std"):
        recorded = meta.get(key)
        if recorded is None:
            continue
        own = getattr(vae, key).float().cpu()
        if len(recorded) != own.numel() or not torch.allclose(torch.tensor(recorded, dtype=torch.float32), own,
                                                              rtol=1e-5, atol=2e-6):
            differ.append(key)
    return "/".join(differ) or None


@cpu_by_default
@torch.no_grad()
def decode(latents: torch.Tensor, vae: WanVAE, max_memory_gb: float | None = None) -> np.ndarray:
    """Normalised latents ``(C, T', h, w)`` -> uint8 frames ``(T, H, W, 3)`` (official truncation);
    :func:`decode_tiled` says the tiles it ran in too."""
    return decode_tiled(latents, vae, max_memory_gb)[0]


def recorded_decoding(meta: dict) -> tuple[tuple[int, int, int, int] | None, str | None]:
    """The VAE tiles and the dtype that a generated output's latents (``--save-latents``, whose
    metadata records them as ``vae_tiles`` and ``dtype``) were decoded with, so that decoding them
    again repeats the output; None for what the metadata does not say (or says unusably). An
    encoded file's ``vae_tiles`` are the encoder's: nothing to repeat."""
    if meta.get("kind") not in ("t2i", "t2v", "i2v"):
        return None, None
    tiles = meta.get("vae_tiles")
    ok = isinstance(tiles, list) and len(tiles) == 4 and all(type(v) is int and 8 <= v <= 65536 for v in tiles)
    ok = ok and tiles[2] <= tiles[0] and tiles[3] <= tiles[1]
    dtype = meta.get("dtype")
    return (tuple(tiles) if ok else None), (dtype if dtype in ("bf16", "fp16") else None)


@cpu_by_default
@torch.no_grad()
def decode_tiled(latents: torch.Tensor, vae: WanVAE,
                 max_memory_gb: float | None = None) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """:func:`decode`, and the tiles the VAE ran in (:meth:`WanVAE.tiles_used`: tile height, width,
    stride height, width in pixels), or None when it decoded whole: a tiled decode blends seams,
    so its frames differ and the record says so (``vae_tiles``), as generation's and encode's do.

    Refuses (:class:`ResourceError`) latents whose decoding is estimated to need more memory
    than ``max_memory_gb`` (default ``$SHOWO2_MAX_MEMORY_GB``, else the memory available). An
    image's ``(C, h, w)`` latents (what ``text_to_image`` and the pipeline's ``output_type="latent"``
    give) and numpy arrays are taken too."""
    if isinstance(latents, np.ndarray):
        latents = torch.from_numpy(latents)
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a tensor (C, T, h, w) or (C, h, w), got {type(latents).__name__}")
    if latents.dim() == 3:
        latents = latents[:, None]  # an image: one latent frame
    if latents.dim() != 4 or latents.shape[0] != vae.z_dim:
        batch = latents.dim() in (4, 5) and latents.shape[1] == vae.z_dim
        raise ValueError(f"latents must be ({vae.z_dim}, T, h, w) or ({vae.z_dim}, h, w), got {tuple(latents.shape)}"
                         + ("; decode a batch one latent at a time (latents[i])" if batch else ""))
    if min(latents.shape) == 0:  # what the latents hold, not an argument's range: an input error
        raise InputError(f"latents have an empty dimension (shape {tuple(latents.shape)})")
    check_latent_values(latents, "latents hold", "a VAE's latents are")  # (3e38 or NaN decoded to a black picture)
    t, h, w = (int(v) for v in latents.shape[1:])
    frames = M.pixel_frames(t)
    weights = in_gb(vae_bytes(vae, ("decoder",)))
    whole, in_tiles = vae.decode_memory_gb(t, h, w), vae.decode_memory_gb(t, h, w, True)
    tiled = pick_tiling(vae.tiling, whole, in_tiles, max_memory_gb, vae.device, weights, t > 1)
    check_memory(in_tiles if tiled else whole, f"decoding {tuple(latents.shape)} latents to {frames} frame(s) "
                 f"of {8 * w}x{8 * h}", max_memory_gb, vae.device,
                 TILING_ADVICE if _tiling_helps(vae, whole, in_tiles) else "", weights, t > 1)
    pixels = vae.decode(latents[None].to(vae.device), tiled=tiled)[0]
    return M.tensor_to_frames(pixels.cpu()), vae.tiles_used(8 * h, 8 * w, tiled)


def decode_output(latents: str | os.PathLike, z: torch.Tensor, meta: dict, output: str | os.PathLike | None = None,
                  raw: bool = False, overwrite: bool = False) -> Path:
    """Where decoding the latents ``z`` (read from the file ``latents``, with its metadata ``meta``)
    writes, checked before any work: ``output``, else ``<stem>.png`` (one frame) or ``<stem>.mp4``
    beside the file (a default name never replaces a file: ``-1``, ``-2``, ...). Refuses ``raw`` for
    latents whose showo2 metadata says they are normalised, an image name for several frames, and a
    name that cannot be written or whose format cannot hold the frames' size."""
    p = Path(latents)
    if raw and meta.get("format") == "showo2-latents":  # encode and --save-latents write normalised latents
        raise UsageError(f"'{short(p, 80)}' holds normalised latents (its showo2 metadata says so): drop --raw")
    frames = M.pixel_frames(int(z.shape[1]))
    if output is not None:  # as text: a trailing '/' is seen (a Path drops it)
        M.check_output_name(os.fspath(output))
    out = Path(output) if output is not None else p.with_name(_stem(p.name) + (".png" if frames == 1 else ".mp4"))
    if output is None and not overwrite:
        out = M.unique_path(out)
    ext = out.suffix.lower()
    if ext not in M.IMAGE_WRITE_EXTS + M.VIDEO_WRITE_EXTS:
        raise M.extension_refused(out, f"use {M.written_formats()}")
    if ext in M.IMAGE_EXTS and frames != 1:
        raise UsageError(f"'{out}' is an image but the latents hold {frames} frames: "
                         f"use {'/'.join(M.VIDEO_WRITE_EXTS)}")
    M.check_output_path(out, overwrite, probe=True)
    M.check_output_size(out, z.shape[2] * 8, z.shape[3] * 8)  # before the VAE decodes for minutes
    return out


@dataclass
class DecodeResult:
    output: Path
    record: dict  # what the output's metadata holds (decoded_from, vae, fps, raw, vae_tiles, dtype)
    frames: np.ndarray  # (T, H, W, 3) uint8
    notices: list[str] = field(default_factory=list)


def decode_file(latents: str | os.PathLike, vae: WanVAE, output: str | os.PathLike | None = None, *,
                fps: float | None = None, raw: bool = False, overwrite: bool = False, vae_name: str | None = None,
                max_memory_gb: float | None = None, loaded: tuple[torch.Tensor, dict] | None = None,
                on_notice: Callable[[str], None] | None = None) -> DecodeResult:
    """``showo2 decode``: a latents file (``encode``'s, ``--save-latents``', or another tool's) to an
    image or a video (:func:`decode_output` names and checks it), recorded as the command records it.
    A generated output's latents decode in the VAE tiles the output was decoded in (unless the VAE's
    ``tiling`` is ``off``); ``raw``: the file holds the VAE's raw latents (:func:`normalize_raw`).
    ``fps``: the output's rate (default: the file's, else 8). What the command prints as notices is
    in the result's ``notices`` (and given to ``on_notice`` as it comes, before the decoding).
    ``loaded``: the file's :func:`load_latents`, when read already."""
    from ..options import check_fps

    check_fps(fps)
    z, meta = loaded if loaded is not None else load_latents(latents)
    out = decode_output(latents, z, meta, output, raw, overwrite)
    notices: list[str] = []

    def say(line: str) -> None:
        notices.append(line)
        if on_notice is not None:
            on_notice(line)

    note = M.fps_note(out, fps) if fps is not None and z.shape[1] > 1 else None
    if note:
        say(note)
    shown = short(latents, 80)
    check_channels(latents, z, vae.z_dim)
    tiles = recorded_decoding(meta)[0]  # a generated output's latents decode as that output was decoded
    if tiles is not None and vae.tiling == "auto":
        say(f"decoding in the VAE tiles the output was decoded in ({tiles[0]}x{tiles[1]} pixels; "
            "--vae-tiling off decodes whole)")
    if not meta and not raw:  # written elsewhere: the two conventions look alike, and decode differently
        say(f"'{shown}' has no showo2 metadata: decoding it as normalised latents "
            "((z - latents_mean) / latents_std); pass --raw if it holds the VAE's raw latent_dist values")
    mismatch = metadata_mismatch(meta, z)
    if mismatch:
        say(f"'{shown}' metadata contradicts its latents: {mismatch}; decoding the latents as they are")
    differ = other_statistics(meta, vae)
    if differ:
        say(f"the latents were normalised with other statistics ({differ} in their metadata) than this "
            "VAE's: their pixels will be off (decode with the VAE that encoded them)")
    if raw:
        z = normalize_raw(z, vae)
    mode, tile = vae.tiling, vae.tile  # the caller's VAE is left as it was given
    try:
        if tiles is not None and mode != "off":
            vae.enable_tiling(*tiles)
        frames, used = decode_tiled(z, vae, max_memory_gb=max_memory_gb)
    finally:
        vae.tiling, vae.tile = mode, tile
    rate = M.written_fps(out, fps or meta.get("fps") or DEFAULT_FPS)  # what the file plays at (a GIF's is coarser)
    record = {"decoded_from": str(latents), **({"vae": vae_name} if vae_name else {}), "fps": rate, **({"raw": True} if raw else {})}
    if used is not None:  # tiles blend their seams: other frames than a whole decode's
        record["vae_tiles"] = list(used)
    if vae.dtype != torch.float32:  # bf16/fp16 round every layer: other pixels than fp32's
        record["dtype"] = dtype_label(vae.dtype)  # --dtype's name, as generation and encode record it
    write_decoded(out, frames, rate, record, overwrite)
    return DecodeResult(out, record, frames, notices)


def _stem(name: str) -> str:
    """``x.safetensors`` -> ``x``, ``x.latents.safetensors`` -> ``x``; a dot file keeps its dot."""
    dots = len(name) - len(name.lstrip("."))
    return name[:dots] + name[dots:].split(".")[0]


def write_decoded(path: str | os.PathLike, frames: np.ndarray, fps: float | None, metadata: dict | None,
                  overwrite: bool = False) -> Path:
    """Write decoded frames as an image (one frame, image extension) or a video (at ``fps``; None: 8)."""
    ext = Path(path).suffix.lower()
    if ext in M.IMAGE_EXTS:
        if frames.shape[0] != 1:
            raise UsageError(f"'{path}' is an image file but the latents decode to {frames.shape[0]} frames: "
                             f"use {'/'.join(M.VIDEO_WRITE_EXTS)}")
        return M.write_image(path, frames[0], metadata=metadata, overwrite=overwrite)
    if ext in M.VIDEO_EXTS:
        return M.write_video(path, frames, DEFAULT_FPS if fps is None else fps, overwrite=overwrite, metadata=metadata)
    raise M.extension_refused(path, f"use {M.written_formats()}")


__all__ = ["encode", "encode_file", "read_source", "decode", "decode_tiled", "decode_file", "decode_output", "DecodeResult", "recorded_decoding", "EncodeOptions", "EncodeResult", "save_latents", "load_latents",
           "check_latent_values", "normalize_raw", "metadata_mismatch", "other_statistics",
           "write_decoded"]
