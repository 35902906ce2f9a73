"""The public Python API; the CLI is a thin layer over these functions.

    from showo2_cli import load, encode, decode
    model = load("showlab/show-o2-1.5B")
    result = encode("clip.mp4", model.vae, EncodeOptions(size=432, frames=17))
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

from . import __version__
from . import media as M
from .errors import InputError, ModelError, ResourceError, UsageError
from .loading import Showo2, _hf_cached_snapshot, bundled_demo_path, find_files, load
from .media import parse_size
from .modeling.vae import WanVAE, load_vae

Progress = Callable[[str, int, int], None]  # (phase, done, total)

DEFAULT_OFFICIAL = "showlab/show-o2-1.5B"


def default_model() -> tuple[str, str]:
    """The model to use when none is named, and a one-line notice saying which and why."""
    env = os.environ.get("SHOWO2_MODEL")
    if env:
        return env, f"using model '{env}' (from SHOWO2_MODEL)"
    if _hf_cached_snapshot(DEFAULT_OFFICIAL) is not None:
        return DEFAULT_OFFICIAL, f"using model '{DEFAULT_OFFICIAL}' (found in the Hugging Face cache)"
    if (bundled_demo_path() / "config.json").exists():
        return "demo", "using the bundled demo model (set SHOWO2_MODEL or pass --model for another)"
    raise ModelError("no model given and none found: pass --model NAME|FOLDER, set SHOWO2_MODEL, "
                     f"or get the official one with: hf download {DEFAULT_OFFICIAL}")


def resolve_vae(model: str | None = None, vae: str | os.PathLike | None = None,
                dtype: torch.dtype = torch.float32, device="cpu") -> tuple[WanVAE, str]:
    """A VAE from an explicit path, else the named model's, else the default model's."""
    if vae is not None:
        return load_vae(vae, dtype=dtype, device=device), str(vae)
    name = model if model is not None else default_model()[0]
    files = find_files(name)
    if files.vae is None:
        raise ModelError(f"model '{name}' has no VAE: pass --vae PATH")
    return load_vae(files.vae, dtype=dtype, device=device), str(files.vae)


# ---- memory guard -----------------------------------------------------------------------------

MAX_MEMORY_ENV = "SHOWO2_MAX_MEMORY_GB"


def available_memory_gb(device: str | torch.device = "cpu") -> float | None:
    """Memory a job on ``device`` can use now: free GPU memory on CUDA, else the available RAM
    (``MemAvailable``, capped by a cgroup limit when there is one). None when unknown."""
    dev = torch.device(device)
    if dev.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(dev)
            return free / 1e9
        except Exception:
            return None
    found: float | None = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024 / 1e9
                    break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
        except (AttributeError, ValueError, OSError):
            found = None
    try:  # a container's own limit (cgroup v2)
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip() or 0)
            room = max(int(limit) - used, 0) / 1e9
            found = room if found is None else min(found, room)
    except (OSError, ValueError):
        pass
    return found


def memory_limit_gb(option: float | None = None, device: str | torch.device = "cpu") -> tuple[float | None, str]:
    """The memory limit for a job and where it comes from: ``--max-memory`` (``option``), else
    ``$SHOWO2_MAX_MEMORY_GB``, else the memory available on ``device``. 0 means no limit."""
    if option is not None:
        value, source = option, "--max-memory"
    else:
        raw = os.environ.get(MAX_MEMORY_ENV, "").strip()
        if raw:
            try:
                value = float(raw)
            except ValueError:
                raise UsageError(f"{MAX_MEMORY_ENV} must be a number of GB, got {raw!r}") from None
            source = MAX_MEMORY_ENV
        else:
            return available_memory_gb(device), "available memory"
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{source} must be a number of GB >= 0 (0: no limit), got {value}")
    return (value or None), source


def check_memory(need_gb: float, what: str, option: float | None = None,
                 device: str | torch.device = "cpu", advice: str = "") -> None:
    """Raise :class:`ResourceError` when ``need_gb`` (an estimate) exceeds the memory limit."""
    limit, source = memory_limit_gb(option, device)
    if limit is None or need_gb <= limit:
        return
    where = "of available memory" if source == "available memory" else f"allowed by {source}"
    raise ResourceError(f"{what} needs about {need_gb:.1f} GB, more than the {limit:.1f} GB {where}"
                        + (f"; {advice}" if advice else "")
                        + f" (raise the limit with --max-memory or {MAX_MEMORY_ENV})")


# ---- sizes and frames -------------------------------------------------------------------------

@dataclass
class EncodeOptions:
    size: tuple[int, int] = (432, 432)  # (height, width); resize short side + center crop
    frames: int | None = None  # videos: first N frames (rounded up to 1+4k); None = all, rounded down
    sample: bool = False  # the official stochastic posterior sample instead of the mean
    seed: int | None = None


@dataclass
class EncodeResult:
    latents: torch.Tensor  # (C, T', h, w) float32, normalised
    metadata: dict = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)


def prepare_frames(media: M.Media, size: tuple[int, int], frames: int | None, notices: list[str]) -> np.ndarray:
    """Pick the frames (1+4k, with a notice when rounded) and resize/crop each to ``size``."""
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
            if n != frames:
                notices.append(f"frames must be 1+4k: {frames} was rounded to {n}")
            if n > total:
                n = M.round_frames(total, "down")
                notices.append(f"{Path(media.source).name} has only {total} frames: using {n}")
        arr = arr[:n]
    from PIL import Image

    out = [np.asarray(M.resize_center_crop(Image.fromarray(f), size)) for f in arr]
    return np.stack(out)


@torch.no_grad()
def encode(source: str | os.PathLike | M.Media, vae: WanVAE, options: EncodeOptions | None = None,
           vae_name: str | None = None, max_memory_gb: float | None = None) -> EncodeResult:
    """Encode an image or a video (a path, or :class:`~showo2_cli.media.Media` already read)
    into normalised Wan latents with metadata.

    Refuses (:class:`ResourceError`) a job whose estimated memory exceeds ``max_memory_gb``
    (default ``$SHOWO2_MAX_MEMORY_GB``, else the memory available on the VAE's device)."""
    opts = options or EncodeOptions()
    notices: list[str] = []
    media = source if isinstance(source, M.Media) else M.read_media(source)
    source = media.source if isinstance(source, M.Media) else source
    n_frames = 1 if media.kind == "image" else min(M.round_frames(opts.frames or media.num_frames, "up"),
                                                   max(M.round_frames(media.num_frames, "down"), 1))
    h, w = (opts.size, opts.size) if isinstance(opts.size, int) else tuple(opts.size)
    check_memory(vae.encode_memory_gb(n_frames, h, w), f"encoding {n_frames} frame(s) at {w}x{h}", max_memory_gb,
                 vae.device, "lower --size or --frames")
    frames = prepare_frames(media, opts.size, opts.frames, notices)
    pixels = M.frames_to_tensor(frames)[None]  # (1, 3, T, H, W)
    gen = torch.Generator().manual_seed(opts.seed) if opts.seed is not None else None
    if opts.sample and gen is None:
        gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))
    latents = vae.encode(pixels, sample=opts.sample, generator=gen)[0].float().cpu()
    meta = {
        "format": "showo2-latents", "version": 1, "showo2_version": __version__,
        "source": str(source), "kind": media.kind, "frames": int(frames.shape[0]),
        "latent_frames": int(latents.shape[1]), "fps": media.fps, "height": int(frames.shape[1]),
        "width": int(frames.shape[2]), "source_frames": media.total_frames,
        "source_size": [media.width, media.height], "vae": vae_name or "", "sample": opts.sample,
        "seed": opts.seed, "normalization": "(mu - mean) / std, Wan2.1 constants",
        "latents_mean": [round(float(x), 6) for x in vae.latents_mean],
        "latents_std": [round(float(x), 6) for x in vae.latents_std],
    }
    return EncodeResult(latents, meta, notices)


def save_latents(path: str | os.PathLike, result: EncodeResult, overwrite: bool = False) -> Path:
    from safetensors.torch import save_file

    with M.atomic_output(path, overwrite=overwrite) as tmp:
        save_file({"latents": result.latents.contiguous()}, str(tmp),
                  metadata={"showo2": json.dumps(result.metadata)})
    return Path(path)


def load_latents(path: str | os.PathLike, z_dim: int | None = None) -> tuple[torch.Tensor, dict]:
    """Read and validate a latents file written by :func:`save_latents`."""
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise InputError(f"latents file '{p}' does not exist")
    if p.is_dir():
        raise InputError(f"latents file '{p}' is a directory")
    try:
        with safe_open(str(p), framework="pt") as f:
            keys = list(f.keys())
            raw_meta = (f.metadata() or {}).get("showo2")
            if "latents" not in keys:
                raise InputError(f"'{p}' holds no 'latents' tensor (found: {', '.join(keys[:5]) or 'nothing'})")
            latents = f.get_tensor("latents")
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"cannot read latents '{p}': not a safetensors file or truncated "
                         f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
    try:
        meta = json.loads(raw_meta) if raw_meta else {}
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise InputError(f"'{p}' has malformed showo2 metadata ({e})") from e
    _check_latents_metadata(p, meta)
    if not latents.is_floating_point():
        raise InputError(f"'{p}': latents must be floating point, got {str(latents.dtype).replace('torch.', '')}")
    if latents.dim() == 5 and latents.shape[0] == 1:
        latents = latents[0]
    if latents.dim() == 3:
        latents = latents[:, None]
    if latents.dim() != 4:
        raise InputError(f"'{p}': latents must be (C, T, h, w), got shape {tuple(latents.shape)}")
    if z_dim is not None and latents.shape[0] != z_dim:
        raise InputError(f"'{p}': latents have {latents.shape[0]} channels but the VAE expects {z_dim}")
    if latents.shape[2] < 1 or latents.shape[3] < 1 or not torch.isfinite(latents).all():
        raise InputError(f"'{p}': latents are empty or hold NaN/inf values")
    return latents.float(), meta


def _check_latents_metadata(p: Path, meta: dict) -> None:
    """The metadata fields the tools use must have the right types (a latents file may come from
    anywhere); unknown fields are kept as they are."""
    def bad(key: str, want: str) -> InputError:
        shown = json.dumps(meta[key], default=str)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        return InputError(f"'{p}': metadata field '{key}' must be {want}, got {shown}")

    fps = meta.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float))
                            or not math.isfinite(fps) or not 0 < fps <= 1000):
        raise bad("fps", "a number of frames per second in (0, 1000] or null")
    for key in ("vae", "source", "kind", "format"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "text or null")
    for key in ("frames", "latent_frames", "height", "width", "source_frames"):
        value = meta.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise bad(key, "a whole number >= 0 or null")


@torch.no_grad()
def decode(latents: torch.Tensor, vae: WanVAE, max_memory_gb: float | None = None) -> np.ndarray:
    """Normalised latents ``(C, T', h, w)`` -> uint8 frames ``(T, H, W, 3)`` (official truncation).

    Refuses (:class:`ResourceError`) latents whose decoding is estimated to need more memory
    than ``max_memory_gb`` (default ``$SHOWO2_MAX_MEMORY_GB``, else the memory available)."""
    t, h, w = (int(v) for v in latents.shape[1:])
    frames = 1 + 4 * (t - 1)
    check_memory(vae.decode_memory_gb(t, h, w), f"decoding {tuple(latents.shape)} latents to {frames} frame(s) of "
                 f"{8 * w}x{8 * h}", max_memory_gb, vae.device)
    pixels = vae.decode(latents[None].to(vae.device))[0]
    return M.tensor_to_frames(pixels.cpu())


def write_decoded(path: str | os.PathLike, frames: np.ndarray, fps: float | None, metadata: dict | None,
                  overwrite: bool = False) -> Path:
    """Write decoded frames as an image (one frame, image extension) or a video."""
    ext = Path(path).suffix.lower()
    if ext in M.IMAGE_EXTS:
        if frames.shape[0] != 1:
            raise UsageError(f"'{path}' is an image file but the latents decode to {frames.shape[0]} frames: "
                             "use .mp4, .webm or .gif")
        return M.write_image(path, frames[0], metadata=metadata, overwrite=overwrite)
    if ext in M.VIDEO_EXTS:
        return M.write_video(path, frames, fps or 8.0, overwrite=overwrite, metadata=metadata)
    raise UsageError(f"unsupported output extension '{ext or path}': use .png/.jpg/.webp or .mp4/.webm/.gif")


__all__ = ["Showo2", "load", "encode", "decode", "EncodeOptions", "EncodeResult", "save_latents",
           "load_latents", "write_decoded", "default_model", "resolve_vae", "parse_size", "available_memory_gb",
           "memory_limit_gb", "check_memory", "MAX_MEMORY_ENV"]
