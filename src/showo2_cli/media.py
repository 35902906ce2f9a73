"""Reading and writing images and videos, and the small geometry helpers around them.

Everything here is plain functions over numpy arrays, PIL images and torch tensors; nothing
prints. torch is imported only by the two tensor conversions, so the CLI can check inputs and
outputs without paying for it. Every problem a user can cause is raised as one of the :mod:`showo2_cli.errors` types
with a one-line message that names the file:

* :class:`~showo2_cli.errors.InputError` for an input that cannot be used (missing, empty,
  a folder, truncated, corrupt, the wrong kind of media);
* :class:`~showo2_cli.errors.ResourceError` for an input too large to decode safely;
* :class:`~showo2_cli.errors.OutputError` for an output that cannot be written;
* :class:`~showo2_cli.errors.UsageError` for a bad argument value (an unknown extension, a
  size of 0, ...).

Array shape/dtype contract violations by calling code (say a float array handed to
:func:`write_image`) are programming errors and raise :class:`ValueError`.

Conventions
-----------
* Pixel arrays are ``uint8`` RGB, frames ``(T, H, W, 3)``; model tensors are
  ``(3, T, H, W)`` floats in ``[-1, 1]``.
* Size tuples are ``(height, width)``, like torchvision.
* Outputs are written atomically (:func:`atomic_output`): a hidden temporary file in the target
  folder is renamed into place only when the write succeeded, so an error or Ctrl-C never
  leaves a partial file behind.
* Images larger than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, or the environment
  variable ``SHOWO2_MAX_PIXELS``) are refused from their header, before any pixel is decoded.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
import unicodedata
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from showo2_cli.errors import InputError, OutputError, ResourceError, UsageError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTS",
    "IMAGE_WRITE_EXTS",
    "MAX_DECODED_BYTES",
    "METADATA_KEY",
    "PARAMETERS_KEY",
    "VIDEO_EXTS",
    "VIDEO_WRITE_EXTS",
    "Media",
    "atomic_output",
    "available_video_codecs",
    "check_output_path",
    "check_video",
    "frames_to_tensor",
    "is_valid_frames",
    "latent_frames",
    "numbered_paths",
    "parse_size",
    "pixel_frames",
    "probe_kind",
    "read_image",
    "read_media",
    "read_metadata",
    "read_png_metadata",
    "read_video",
    "resize_and_pad",
    "resize_center_crop",
    "round_frames",
    "slugify",
    "tensor_to_frames",
    "uniform_indices",
    "unique_path",
    "write_image",
    "write_video",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Extensions usually holding still images (for listing folders; kinds are probed by content).
IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: Extensions usually holding videos (an animated GIF is a video).
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
#: Largest image / video frame (width * height) read by default; env ``SHOWO2_MAX_PIXELS``.
DEFAULT_MAX_PIXELS: int = 8192 * 8192
#: Environment variable overriding :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS_ENV = "SHOWO2_MAX_PIXELS"
#: Refuse to decode a video whose RGB frames would take more than this many bytes.
MAX_DECODED_BYTES: int = 8 * 1024**3
#: PNG tEXt key holding the compact JSON metadata written by :func:`write_image`.
METADATA_KEY = "showo2"
#: PNG tEXt key holding a human-readable one-line summary of the metadata.
PARAMETERS_KEY = "parameters"

#: Extensions :func:`write_image` can write.
IMAGE_WRITE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Extensions :func:`write_video` can write (plus image extensions for a single frame).
VIDEO_WRITE_EXTS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".gif")

_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
# extension -> (muxer, codecs to try in order)
_VIDEO_CONTAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".mov": ("mov", ("libx264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "libvpx-vp9", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
}
# encoder options: high quality, constant-quality mode
_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "medium"},
    "mpeg4": {"qscale": "2"},
    "libvpx-vp9": {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
    "libvpx": {"crf": "8", "b": "20M", "deadline": "good", "cpu-used": "2"},
}
_READ_DESCRIPTION = "a PNG/JPEG/WebP/BMP/TIFF/GIF image"
_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286
_EXIF_ASCII_PREFIX = b"ASCII\x00\x00\x00"


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def _q(path: PathLike) -> str:
    """The path quoted for a one-line message."""
    text = os.fspath(path)
    return "'" + text.replace("\n", "\\n").replace("\r", "\\r") + "'"


def _detail(exc: BaseException) -> str:
    """A short one-line description of an exception, for the end of a message."""
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


def _resolve_max_pixels(max_pixels: int | None) -> int:
    """``max_pixels`` if given, else ``$SHOWO2_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw.replace("_", ""))
        except ValueError:
            raise UsageError(
                f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {raw!r}"
            ) from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise UsageError(f"max_pixels must be a positive whole number, got {max_pixels!r}")
    return max_pixels


def _too_large(kind: str, path: PathLike, width: int, height: int, limit: int) -> ResourceError:
    return ResourceError(
        f"{kind} {_q(path)} is too large: {width}x{height} = {width * height:,} pixels is more than "
        f"the limit of {limit:,} (set {MAX_PIXELS_ENV} to raise it)"
    )


def _check_input_file(path: PathLike, what: str) -> Path:
    """Refuse a missing path, a folder, a special file or an empty file."""
    try:
        p = Path(os.fspath(path))
    except TypeError as e:
        raise UsageError(f"not a file path: {path!r}") from e
    prefix = f"cannot read {what} {_q(p)}"
    try:
        if not p.exists():
            if p.is_symlink():
                raise InputError(f"{prefix}: broken symbolic link")
            raise InputError(f"{prefix}: no such file")
        if p.is_dir():
            raise InputError(f"{prefix}: is a directory, not a file")
        if not p.is_file():
            raise InputError(f"{prefix}: not a regular file")
        if p.stat().st_size == 0:
            raise InputError(f"{prefix}: empty file")
    except OSError as e:  # permission denied on a parent folder, name too long, ...
        raise InputError(f"{prefix}: {_detail(e)}") from e
    if not os.access(p, os.R_OK):
        raise InputError(f"{prefix}: permission denied")
    return p


# ---------------------------------------------------------------------------------------------
# probing
# ---------------------------------------------------------------------------------------------


def _pil_header(p: Path) -> tuple[str, tuple[int, int], bool] | None:
    """``(format, (w, h), animated)`` if PIL recognises the file from its header, else ``None``.

    Raises :class:`ResourceError` for a decompression bomb.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd chunks/EXIF: a header is all we want
            with Image.open(p) as im:
                fmt = im.format or ""
                size = im.size
                animated = False
                if fmt == "GIF":
                    try:
                        animated = bool(getattr(im, "is_animated", False))
                    except Exception:  # a broken second frame: judged when decoding
                        animated = False
                return fmt, size, animated
    except Image.DecompressionBombError as e:
        raise ResourceError(f"image {_q(p)} is too large: {_detail(e)}") from e
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
    ):
        return None


def _av_container(p: Path) -> str | None:
    """``"video"`` if FFmpeg opens the file as a real container with a video stream, ``"other"``
    for a container without one (audio only, or a video track with no frame), else None."""
    import av

    try:
        with av.open(str(p), metadata_errors="replace") as container:
            names = set((container.format.name or "").split(","))
            if names & {"image2", "image2pipe"} or any(n.endswith("_pipe") for n in names):
                return None  # a single still image (or garbage with an image extension)
            if len(container.streams.video) > 0:
                return "video"
            return "other" if len(container.streams) > 0 or names & {"mov", "matroska", "webm", "avi"} else None
    except Exception:
        return None


def _av_video_info(p: Path) -> bool:
    """True if FFmpeg opens the file as a real video container with a video stream."""
    return _av_container(p) == "video"


def probe_kind(path: PathLike) -> str:
    """Return ``"image"`` or ``"video"`` for a media file, judged by its content, not its name.

    A GIF with more than one frame is a video, a one-frame GIF an image; any other still format
    PIL reads is an image (animated PNG/WebP count as images: their first frame is used); a
    container FFmpeg opens with a video stream (mp4, webm, mov, mkv, avi, ...) is a video.

    Raises:
        InputError: missing path, a directory, an empty file, or content that is neither.
    """
    p = _check_input_file(path, "media file")
    header = _pil_header(p)
    if header is not None:
        fmt, _size, animated = header
        if fmt == "GIF":
            return "video" if animated else "image"
        if fmt != "MPEG":  # PIL only identifies MPEG streams, it cannot decode them
            return "image"
    found = _av_container(p)
    if found == "video":
        return "video"
    if found == "other":
        raise InputError(f"cannot read media file {_q(p)}: the file has no video stream (audio only, or no frames)")
    raise InputError(
        f"cannot read media file {_q(p)}: not an image or video this tool can read "
        "(unknown format, truncated or corrupt)"
    )


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth or float array to uint8.

    Values are taken as 8-bit if the maximum is <= 255, as 16-bit (0..65535) otherwise; float
    arrays with a maximum <= 1 are taken as 0..1. 16-bit values map with rounding
    (``v * 255 / 65535``), not by clipping.
    """
    if arr.dtype.kind == "f":
        arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(arr.max()) if arr.size else 0.0
        if top <= 1.0:
            return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        scale = 255.0 if top <= 255.0 else 65535.0
        return (np.clip(arr, 0.0, scale) * (255.0 / scale) + 0.5).astype(np.uint8)
    wide = arr.astype(np.int64)
    top = int(wide.max()) if wide.size else 0
    if top <= 255:
        return np.clip(wide, 0, 255).astype(np.uint8)
    wide = np.clip(wide, 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is dropped (not composited)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(im))
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")
    if mode == "PA" or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")  # resolves palette transparency; the alpha is dropped below
    elif mode == "La":
        im = im.convert("LA")
    return im.convert("RGB")


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
        return int(value) if value is not None else 1
    except Exception:  # corrupt EXIF: ignore the orientation
        return 1


def read_image(path: PathLike, max_pixels: int | None = None) -> Image.Image:
    """Read a still image as an RGB PIL image, upright.

    * EXIF orientation is applied (``ImageOps.exif_transpose``), so a portrait phone photo
      comes back portrait.
    * 16-bit images are scaled to 8 bits (``v * 255 / 65535``, rounded), grayscale and
      palette images expanded to RGB, CMYK converted; alpha (RGBA, LA, palette transparency)
      is dropped, keeping the underlying colours.
    * The pixel count is checked from the header before decoding: more than ``max_pixels``
      (default ``$SHOWO2_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`) raises
      :class:`ResourceError`.
    * The image is fully decoded here, so a truncated file fails now, not later.

    Raises:
        InputError: missing/empty/unreadable file, not an image, truncated or corrupt data,
            or a video (including an animated GIF).
        ResourceError: too many pixels.
    """
    limit = _resolve_max_pixels(max_pixels)
    p = _check_input_file(path, "image")
    prefix = f"cannot read image {_q(p)}"
    try:
        with open(p, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's warnings (corrupt EXIF, odd chunks) are not errors
            if limit <= (Image.MAX_IMAGE_PIXELS or 0):
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            else:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                im = Image.open(fh)
            except UnidentifiedImageError as e:
                if _av_video_info(p):
                    raise InputError(f"{prefix}: it is a video, not an image") from e
                raise InputError(
                    f"{prefix}: not {_READ_DESCRIPTION} (unknown format, truncated or corrupt)"
                ) from e
            width, height = im.size
            if width * height > limit:
                raise _too_large("image", p, width, height, limit)
            if im.format == "MPEG":
                raise InputError(f"{prefix}: it is a video, not an image")
            if im.format == "GIF" and getattr(im, "is_animated", False):
                raise InputError(f"{prefix}: it is an animated GIF (a video), not an image")
            if width <= 0 or height <= 0:
                raise InputError(f"{prefix}: the image has no pixels ({width}x{height})")
            im.load()
            orientation = _exif_orientation(im)  # while the file is open (PNG eXIf may follow the data)
    except (InputError, ResourceError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ResourceError(
            f"image {_q(p)} is too large: {_detail(e)} (set {MAX_PIXELS_ENV} to raise the limit)"
        ) from e
    except MemoryError as e:
        raise ResourceError(f"image {_q(p)} is too large to decode in memory") from e
    except PermissionError as e:
        raise InputError(f"{prefix}: permission denied") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise InputError(f"{prefix}: truncated or corrupt file ({_detail(e)})") from e

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if orientation in range(2, 9):
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # odd EXIF: keep the stored orientation
                    pass
            return _to_rgb(im)
    except MemoryError as e:
        raise ResourceError(f"image {_q(p)} is too large to convert in memory") from e
    except Exception as e:
        raise InputError(f"{prefix}: unsupported colour mode {im.mode!r} ({_detail(e)})") from e


# ---------------------------------------------------------------------------------------------
# videos
# ---------------------------------------------------------------------------------------------


@dataclass
class Media:
    """Decoded media: an image (one frame, ``fps`` None) or a video.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        frames: ``uint8`` array ``(T, H, W, 3)``, RGB; ``T == 1`` for an image.
        fps: frames per second of the source video (``None`` for an image). When frames were
            sampled (``num_frames``), this is still the *source* rate.
        source: the path it was read from.
        total_frames: how many frames the source has (``>= T`` unless sampling repeated frames).
    """

    kind: str
    frames: np.ndarray
    fps: float | None
    source: str
    total_frames: int

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return int(self.frames.shape[2])

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return int(self.frames.shape[1])

    @property
    def num_frames(self) -> int:
        """Number of frames held (``T``)."""
        return int(self.frames.shape[0])


def uniform_indices(n_total: int, num_frames: int) -> list[int]:
    """The official uniform sampling: ``[int(i) for i in np.linspace(0, n_total - 1, num_frames)]``.

    Always ``num_frames`` indices, first and last frame included; repeats when the video is
    shorter than ``num_frames``.
    """
    if n_total < 1:
        raise UsageError(f"cannot sample frames from a video with {n_total} frames")
    if num_frames < 1:
        raise UsageError(f"the number of frames to sample must be at least 1, got {num_frames}")
    return [int(i) for i in np.linspace(0, n_total - 1, num_frames)]


def _frame_rate(stream: Any) -> float:
    for attr in ("average_rate", "guessed_rate", "base_rate"):
        try:
            rate = getattr(stream, attr, None)
        except Exception:
            rate = None
        if rate:
            value = float(rate)
            if math.isfinite(value) and 0.0 < value < 10000.0:
                return value
    return 8.0


def _rotate(arr: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, multiples of 90 only)."""
    if not rotation or rotation % 90:
        return arr
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr


@contextmanager
def _ffmpeg_errors() -> Iterator[list]:
    """Collect the error messages FFmpeg logs meanwhile; the previous log level is restored after.

    PyAV keeps FFmpeg's log off by default. Use this only around work that starts no FFmpeg
    threads (opening and demuxing, not frame-threaded decoding): a decoder thread logging through
    PyAV's Python callback while the main thread joins it can deadlock, and one logging after
    the level is switched back races.
    """
    import av.logging as avlog

    previous, skip = avlog.get_level(), avlog.get_skip_repeated()
    if previous is None or previous < avlog.ERROR:
        avlog.set_level(avlog.ERROR)
    avlog.set_skip_repeated(False)  # else the same error in the next file would be swallowed
    try:
        with avlog.Capture(False) as logs:
            yield logs
    finally:
        avlog.set_skip_repeated(skip)
        if avlog.get_level() != previous:
            avlog.set_level(previous)


def _first_ffmpeg_error(logs: list) -> str | None:
    for entry in logs:
        try:
            level, name, message = entry[0], entry[1], entry[2]
        except (IndexError, TypeError):
            continue
        if level is not None and level <= 16:  # AV_LOG_ERROR
            return f"{name}: {' '.join(str(message).split())}"
    return None


def _check_packets(p: Path, prefix: str) -> None:
    """Demux the first video stream (no decoding, so no decoder threads) and refuse the file if
    FFmpeg logs an error or flags a packet as corrupt: that is how a truncated or damaged
    mp4/webm/mkv shows, while decoding it would quietly end early."""
    import av

    with _ffmpeg_errors() as logs:
        try:
            with av.open(str(p), metadata_errors="replace") as container:
                streams = list(container.streams.video[:1])
                if not streams:
                    return  # judged by the caller ("no video stream")
                for packet in container.demux(streams[0]):
                    if packet.size and packet.is_corrupt:
                        raise InputError(f"{prefix}: truncated or corrupt (a damaged packet at pts {packet.pts})")
                    found = _first_ffmpeg_error(logs)
                    if found:
                        raise InputError(f"{prefix}: truncated or corrupt ({found})")
        except (InputError, ResourceError):
            raise
        except MemoryError as e:
            raise ResourceError(f"video {_q(p)} is too large to read in memory") from e
        except Exception as e:
            found = _first_ffmpeg_error(logs)
            raise InputError(f"{prefix}: truncated or corrupt ({found or _detail(e)})") from e
        found = _first_ffmpeg_error(logs)
        if found:
            raise InputError(f"{prefix}: truncated or corrupt ({found})")


def _check_gif_frames(p: Path, prefix: str) -> None:
    """Decode every frame of a GIF with PIL, which (unlike FFmpeg) reports a truncated or
    damaged frame instead of silently ending the animation there."""
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")
            index = 0
            while True:
                try:
                    im.seek(index)
                except EOFError:
                    break
                im.load()
                index += 1
    except MemoryError as e:
        raise ResourceError(f"video {_q(p)} is too large to decode in memory") from e
    except Exception as e:
        raise InputError(f"{prefix}: truncated or corrupt GIF ({_detail(e)})") from e


def _check_video_structure(p: Path, prefix: str, limit: int) -> None:
    """What can be checked of a video without decoding it (GIFs excepted): not a still image,
    not too large, no truncated or damaged packet."""
    header = _pil_header(p)
    if header is not None and not (header[0] == "GIF" and header[2]) and header[0] != "MPEG":
        raise InputError(f"{prefix}: it is a still image, not a video")
    if header is not None and header[0] == "GIF":
        width, height = header[1]
        if width * height > limit:
            raise _too_large("video", p, width, height, limit)
        _check_gif_frames(p, prefix)
    else:
        _check_packets(p, prefix)


def check_video(path: PathLike, max_pixels: int | None = None) -> None:
    """Check a video as far as possible without decoding it (a GIF is decoded): a video stream
    with a frame size within ``max_pixels``, and no truncated or damaged packet. Cheap: callers
    run it before loading a model, then read the frames they need with :func:`read_video`.

    Raises:
        InputError, ResourceError: as :func:`read_video` would for these problems.
    """
    import av

    limit = _resolve_max_pixels(max_pixels)
    p = _check_input_file(path, "video")
    prefix = f"cannot read video {_q(p)}"
    _check_video_structure(p, prefix, limit)
    try:
        with av.open(str(p), metadata_errors="replace") as container:
            if not container.streams.video:
                raise InputError(f"{prefix}: the file has no video stream")
            cc = container.streams.video[0].codec_context
            width, height = int(cc.width or 0), int(cc.height or 0)
    except (InputError, ResourceError):
        raise
    except Exception as e:
        raise InputError(f"{prefix}: not a video this tool can read (unknown format, truncated or corrupt: "
                         f"{_detail(e)})") from e
    if width <= 0 or height <= 0:
        raise InputError(f"{prefix}: the video stream has no frame size (corrupt header)")
    if width * height > limit:
        raise _too_large("video", p, width, height, limit)


def read_video(
    path: PathLike,
    num_frames: int | None = None,
    max_pixels: int | None = None,
    max_frames: int = 100000,
) -> Media:
    """Decode a video (mp4, webm, mov, mkv, avi, animated GIF, ...) with PyAV to RGB frames.

    Args:
        path: the video file.
        num_frames: if given, return exactly this many frames sampled uniformly with
            :func:`uniform_indices` over all frames of the video (duplicates when it is
            shorter). Otherwise all frames.
        max_pixels: refuse frames with more pixels (default ``$SHOWO2_MAX_PIXELS`` or
            :data:`DEFAULT_MAX_PIXELS`).
        max_frames: refuse to return more frames than this.

    The frame rate is the stream's average rate (then its guessed rate, then 8.0). A display
    rotation (phone videos) is applied in multiples of 90 degrees. Frames whose size changes
    mid-stream are scaled to the first frame's size. When ``num_frames`` is given and the
    container states its frame count, one decoding pass suffices; otherwise frames are counted
    first (a second pass, nothing kept).

    Raises:
        InputError: missing/empty/corrupt file, no video stream, no decodable frame, a still
            image.
        ResourceError: frames too large, or the decoded frames would exceed
            :data:`MAX_DECODED_BYTES` or ``max_frames``.
        UsageError: ``num_frames`` < 1.
    """
    import av

    if num_frames is not None:
        num_frames = _check_count(num_frames, "the number of frames to read")
        if num_frames < 1:
            raise UsageError(f"the number of frames to read must be at least 1, got {num_frames}")
    limit = _resolve_max_pixels(max_pixels)
    p = _check_input_file(path, "video")
    prefix = f"cannot read video {_q(p)}"
    _check_video_structure(p, prefix, limit)

    def open_stream() -> tuple[Any, Any]:
        try:
            container = av.open(str(p), metadata_errors="replace")
        except Exception as e:
            raise InputError(
                f"{prefix}: not a video this tool can read (unknown format, truncated or corrupt: {_detail(e)})"
            ) from e
        try:
            if not container.streams.video:
                raise InputError(f"{prefix}: the file has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
        except BaseException:
            container.close()
            raise
        return container, stream

    container, stream = open_stream()
    try:
        width = int(stream.codec_context.width or 0)
        height = int(stream.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise InputError(f"{prefix}: the video stream has no frame size (corrupt header)")
        if width * height > limit:
            raise _too_large("video", p, width, height, limit)
        fps = _frame_rate(stream)
        frame_bytes = width * height * 3
        try:
            header_frames = int(stream.frames or 0)
        except Exception:
            header_frames = 0
        if header_frames <= 0:  # estimate from the duration, for the memory check only
            seconds = (container.duration or 0) / 1_000_000
            estimate = int(math.ceil(seconds * fps)) if seconds > 0 else 0
        else:
            estimate = header_frames
        wanted_count = num_frames if num_frames is not None else estimate
        if num_frames is not None and num_frames > max_frames:
            raise ResourceError(f"cannot read {num_frames} frames from {_q(p)}: the limit is {max_frames}")
        if wanted_count * frame_bytes > MAX_DECODED_BYTES:
            raise ResourceError(
                f"video {_q(p)} is too large to decode: {wanted_count} frames of {width}x{height} need "
                f"{wanted_count * frame_bytes / 1024**3:.1f} GiB (limit {MAX_DECODED_BYTES / 1024**3:.0f} GiB); "
                "sample fewer frames"
            )
    except BaseException:
        container.close()
        raise
    def decode(container: Any, stream: Any, keep: set[int] | None) -> tuple[dict[int, np.ndarray], int]:
        """Decode every frame; convert those whose index is in ``keep`` (all if None)."""
        kept: dict[int, np.ndarray] = {}
        count = 0
        try:
            for frame in container.decode(stream):
                if keep is None or count in keep:
                    if keep is None and (
                        count + 1 > max_frames or (count + 1) * frame_bytes > MAX_DECODED_BYTES
                    ):
                        raise ResourceError(
                            f"video {_q(p)} is too long to decode whole: more than {count} frames of "
                            f"{width}x{height} (limit {max_frames} frames / "
                            f"{MAX_DECODED_BYTES / 1024**3:.0f} GiB); sample fewer frames"
                        )
                    arr = frame.to_ndarray(format="rgb24", width=width, height=height)
                    kept[count] = _rotate(arr, int(getattr(frame, "rotation", 0) or 0))
                count += 1
        except (InputError, ResourceError):
            raise
        except MemoryError as e:
            raise ResourceError(f"video {_q(p)} is too large to decode in memory") from e
        except Exception as e:
            raise InputError(f"{prefix}: truncated or corrupt data after frame {count} ({_detail(e)})") from e
        return kept, count
    try:
        if num_frames is None:
            kept, total = decode(container, stream, None)
            indices = list(range(total))
        elif header_frames > 0:
            indices = uniform_indices(header_frames, num_frames)
            kept, total = decode(container, stream, set(indices))
            if total != header_frames and total > 0:  # the header lied: sample again
                container.close()
                indices = uniform_indices(total, num_frames)
                container, stream = open_stream()
                kept, total2 = decode(container, stream, set(indices))
                if total2 != total:
                    raise InputError(f"{prefix}: frame count changes between reads ({total} then {total2})")
        else:
            _none, total = decode(container, stream, set())
            if total > 0:
                container.close()
                indices = uniform_indices(total, num_frames)
                container, stream = open_stream()
                kept, _total = decode(container, stream, set(indices))
            else:
                kept, indices = {}, []
    finally:
        container.close()

    if total == 0 or not kept:
        raise InputError(f"{prefix}: no decodable video frames (empty, truncated or corrupt)")
    try:
        first = kept[indices[0]]
        out = np.empty((len(indices), *first.shape), dtype=np.uint8)
        for i, idx in enumerate(indices):
            out[i] = kept[idx]
    except (KeyError, ValueError) as e:
        raise InputError(f"{prefix}: frames could not be decoded consistently ({_detail(e)})") from e
    return Media(kind="video", frames=out, fps=fps, source=str(p), total_frames=total)


def read_media(
    path: PathLike,
    num_frames: int | None = None,
    max_pixels: int | None = None,
    max_frames: int = 100000,
) -> Media:
    """Read an image or a video, chosen by :func:`probe_kind`.

    An image gives ``Media(kind="image")`` with one frame and ``fps=None`` (``num_frames`` is
    ignored for images); a video is read with :func:`read_video`.
    """
    kind = probe_kind(path)
    if kind == "video":
        return read_video(path, num_frames=num_frames, max_pixels=max_pixels, max_frames=max_frames)
    img = read_image(path, max_pixels=max_pixels)
    frames = np.array(img, dtype=np.uint8)[None]  # writable copy
    return Media(kind="image", frames=frames, fps=None, source=os.fspath(path), total_frames=1)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


def _size_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(height, width)``; an int is a square."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        h, w = size
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (h, w)):
            raise UsageError(f"size must be whole numbers, got {size!r}")
        h, w = int(h), int(w)
    else:
        raise UsageError(f"size must be an integer or (height, width), got {size!r}")
    if h < 1 or w < 1:
        raise UsageError(f"size must be positive, got {h}x{w} (height x width)")
    return h, w


#: Largest generation/encoding side accepted by :func:`parse_size` (pixels, per side).
MAX_SIDE = 4096


def parse_size(text: str | int | None, multiple: int = 16, option: str = "--size") -> tuple[int, int] | None:
    """``"432"`` -> (432, 432); ``"640x480"`` (width x height) -> (480, 640) as (height, width).

    None stays None. Sides must be positive multiples of ``multiple`` and at most
    :data:`MAX_SIDE` pixels; anything else is a :class:`UsageError` naming ``option``.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise UsageError(f"{option} must be N or WIDTHxHEIGHT, got {text!r}")
    if isinstance(text, (int, np.integer)):
        h = w = int(text)
    else:
        raw = str(text).strip()
        parts = raw.lower().replace("*", "x").split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            raise UsageError(f"{option} must be N or WIDTHxHEIGHT (e.g. 432 or 640x480), got '{shown}'") from None
        if len(nums) == 1:
            h = w = nums[0]
        elif len(nums) == 2:
            w, h = nums
        else:
            raise UsageError(f"{option} must be N or WIDTHxHEIGHT (e.g. 432 or 640x480), got '{raw}'")
    if h <= 0 or w <= 0:
        raise UsageError(f"{option} must be positive, got {w}x{h}")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise UsageError(f"{option} {w}x{h} is too large (at most {MAX_SIDE}x{MAX_SIDE})")
    if h % multiple or w % multiple:
        raise UsageError(f"{option} sides must be multiples of {multiple} (VAE x patch), got {w}x{h}")
    return h, w


def resize_center_crop(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize (bicubic, antialiased) so the image covers ``size``, then center-crop to it.

    For an int, the short side becomes ``size`` and the long side ``int(size * long / short)``,
    then the center ``size x size`` is cut with torchvision's offsets
    (``round((H - h) / 2)``): the same result as torchvision
    ``Resize(size, BICUBIC) + CenterCrop(size)`` on a PIL image. For ``(h, w)`` the image is
    scaled by ``max(h / H, w / W)`` the same way, then cropped to ``h x w``.
    """
    th, tw = _size_hw(size)
    width, height = img.size
    if width < 1 or height < 1:
        raise UsageError("cannot resize an empty image")
    if th / height >= tw / width:
        new_h, new_w = th, max(tw, int(th * width / height))
    else:
        new_h, new_w = max(th, int(tw * height / width)), tw
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = int(round((new_h - th) / 2.0))
    left = int(round((new_w - tw) / 2.0))
    if (new_w, new_h) == (tw, th):
        return img
    return img.crop((left, top, left + tw, top + th))


def resize_and_pad(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize (bicubic) so the whole image fits in ``size`` and center it on a black canvas.

    The limiting side matches the target exactly; the other is ``ceil(side * scale)`` (capped
    at the target). The canvas is ``size x size`` for an int, ``h x w`` for ``(h, w)``; the
    image is pasted at ``((W - w') // 2, (H - h') // 2)``. The result is RGB.
    """
    th, tw = _size_hw(size)
    width, height = img.size
    if width < 1 or height < 1:
        raise UsageError("cannot resize an empty image")
    if img.mode != "RGB":
        img = _to_rgb(img)
    if tw / width <= th / height:
        new_w, new_h = tw, min(th, max(1, math.ceil(height * tw / width)))
    else:
        new_w, new_h = min(tw, max(1, math.ceil(width * th / height))), th
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if (new_w, new_h) == (tw, th):
        return img
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(img, ((tw - new_w) // 2, (th - new_h) // 2))
    return canvas


# ---------------------------------------------------------------------------------------------
# tensors and frame counts
# ---------------------------------------------------------------------------------------------


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (T, H, W, 3)`` (or ``(H, W, 3)``) frames to a float32 ``(3, T, H, W)`` tensor in ``[-1, 1]``.

    Uses ``(x / 255 - 0.5) / 0.5``, the model's normalisation.
    """
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
    import torch

    x = torch.from_numpy(np.array(arr, copy=True)).permute(3, 0, 1, 2).to(torch.float32)
    return (x / 255.0 - 0.5) / 0.5


def tensor_to_frames(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``(3, T, H, W)`` or ``(3, H, W)`` tensor in ``[-1, 1]`` to ``uint8 (T, H, W, 3)`` frames.

    The official conversion, truncating (no rounding): ``uint8(clamp((x + 1) / 2, 0, 1) * 255)``;
    e.g. 0.999 becomes 254. NaN becomes 0. Works for any float dtype and device.
    """
    import torch

    t = torch.as_tensor(x).detach()
    if t.ndim == 3:
        t = t.unsqueeze(1)
    if t.ndim != 4 or t.shape[0] != 3:
        raise ValueError(f"expected a (3, T, H, W) or (3, H, W) tensor, got shape {tuple(t.shape)}")
    t = t.to(device="cpu", dtype=torch.float32)
    t = torch.nan_to_num(t, nan=-1.0)
    t = torch.clamp((t + 1.0) / 2.0, 0.0, 1.0) * 255.0
    return t.to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def _check_count(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise UsageError(f"{what} must be a whole number, got {n!r}")
    return int(n)


def is_valid_frames(n: int) -> bool:
    """True if ``n`` is a frame count the video VAE accepts: ``1 + 4k`` with ``k >= 0``."""
    return not isinstance(n, bool) and isinstance(n, (int, np.integer)) and n >= 1 and (n - 1) % 4 == 0


def round_frames(n: int, mode: str = "up") -> int:
    """The nearest valid frame count (``1 + 4k``) at or above (``"up"``) or below (``"down"``) ``n``.

    16 -> 17 (up) or 13 (down); 17 -> 17. Counts below 1 (0) give 1 in both modes, the
    smallest valid count; a negative count is a :class:`UsageError`.
    """
    n = _check_count(n, "the number of frames")
    if mode not in ("up", "down"):
        raise UsageError(f"round mode must be 'up' or 'down', got {mode!r}")
    if n < 0:
        raise UsageError(f"the number of frames cannot be negative, got {n}")
    if n <= 1:
        return 1
    k = (n - 1) // 4 if mode == "down" else -(-(n - 1) // 4)
    return 1 + 4 * k


def latent_frames(n: int) -> int:
    """Latent frames for ``n`` pixel frames: ``1 + (n - 1) // 4`` (the VAE's 4x temporal stride)."""
    n = _check_count(n, "the number of frames")
    if n < 1:
        raise UsageError(f"the number of frames must be at least 1, got {n}")
    return 1 + (n - 1) // 4


def pixel_frames(t_latent: int) -> int:
    """Pixel frames decoded from ``t_latent`` latent frames: ``1 + 4 * (t_latent - 1)``."""
    t_latent = _check_count(t_latent, "the number of latent frames")
    if t_latent < 1:
        raise UsageError(f"the number of latent frames must be at least 1, got {t_latent}")
    return 1 + 4 * (t_latent - 1)


# ---------------------------------------------------------------------------------------------
# output paths
# ---------------------------------------------------------------------------------------------


def check_output_path(path: PathLike, overwrite: bool = False, probe: bool = False) -> Path:
    """Check that ``path`` can be written; return it as a Path.

    Call this before expensive work so a bad output fails early. :func:`atomic_output` runs the
    same checks. Without ``probe`` nothing is written. With ``probe=True`` the hidden temporary
    file :func:`atomic_output` would use is created and removed at once, which catches what
    permission bits cannot tell (a read-only or pseudo file system, a full quota, running as
    root); the target itself is never touched.

    Raises:
        OutputError: the folder does not exist or is not a folder, the folder is read-only,
            the target is a directory, or the target exists and ``overwrite`` is False.
    """
    p = Path(os.fspath(path))
    if not p.name or p.name in (".", ".."):
        raise OutputError(f"cannot write {_q(p)}: not a file name")
    parent = p.parent
    try:
        if p.is_dir():
            raise OutputError(f"cannot write {_q(p)}: it is a directory")
        if not parent.exists():
            raise OutputError(f"cannot write {_q(p)}: folder {_q(parent)} does not exist")
        if not parent.is_dir():
            raise OutputError(f"cannot write {_q(p)}: {_q(parent)} is not a folder")
        if (p.exists() or p.is_symlink()) and not overwrite:
            raise OutputError(f"{_q(p)} exists; pass --overwrite to replace it")
        try:
            name_max = int(os.pathconf(parent, "PC_NAME_MAX"))
        except (OSError, ValueError, AttributeError):
            name_max = 255
        if len(os.fsencode(p.name)) > name_max:
            raise OutputError(f"cannot write {_q(p)}: the file name is longer than {name_max} bytes")
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise OutputError(f"cannot write {_q(p)}: the file name is too long") from e
        raise OutputError(f"cannot write {_q(p)}: {e.strerror or _detail(e)}") from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {_q(p)}: folder {_q(parent)} is read-only (permission denied)")
    if probe:
        _unlink_quiet(_make_temp(p))
    return p


def _make_temp(target: Path) -> Path:
    """Create an empty hidden temporary file next to ``target`` keeping its suffix."""
    stem = target.name[:100]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    last: OSError | None = None
    for _ in range(100):
        tmp = target.parent / f".{stem}.{secrets.token_hex(4)}.tmp{target.suffix}"
        try:
            fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, like a normal new file
        except FileExistsError as e:
            last = e
            continue
        except PermissionError as e:
            raise OutputError(
                f"cannot write {_q(target)}: folder {_q(target.parent)} is read-only "
                f"({e.strerror or _detail(e)})"
            ) from e
        except OSError as e:
            if e.errno == errno.EROFS:
                raise OutputError(
                    f"cannot write {_q(target)}: folder {_q(target.parent)} is on a read-only file system"
                ) from e
            raise OutputError(
                f"cannot write {_q(target)}: cannot create a file in folder {_q(target.parent)} "
                f"({e.strerror or _detail(e)})"
            ) from e
        os.close(fd)
        return tmp
    raise OutputError(f"cannot write {_q(target)}: no free temporary name ({_detail(last or OSError())})")


def _unlink_quiet(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move ``tmp`` to ``target``; without ``overwrite`` never replace a file that appeared meanwhile."""
    try:
        if not overwrite:
            try:
                os.link(tmp, target)  # fails if the target exists: no clobbering, even racing
            except FileExistsError as e:
                raise OutputError(f"{_q(target)} exists; pass --overwrite to replace it") from e
            except OSError:  # no hard links on this filesystem
                if target.exists() or target.is_symlink():
                    raise OutputError(f"{_q(target)} exists; pass --overwrite to replace it") from None
                os.replace(tmp, target)
            else:
                _unlink_quiet(tmp)
        else:
            os.replace(tmp, target)
    except OutputError:
        raise
    except IsADirectoryError as e:
        raise OutputError(f"cannot write {_q(target)}: it is a directory") from e
    except OSError as e:
        raise OutputError(f"cannot write {_q(target)}: {_detail(e)}") from e


@contextmanager
def atomic_output(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    The temporary file is created (empty) in the same folder, hidden, named
    ``.{name}.{random}.tmp{suffix}`` so encoders that choose a format from the suffix still
    work. When the ``with`` body finishes it is moved into place (``os.replace``, or a no-clobber
    hard link when ``overwrite`` is False); on any exception, KeyboardInterrupt included, it is
    deleted and the exception propagates. The checks of :func:`check_output_path` run first.

    Raises:
        OutputError: see :func:`check_output_path`; also when the rename fails.
    """
    target = check_output_path(path, overwrite)
    tmp = _make_temp(target)
    try:
        yield tmp
        _commit(tmp, target, overwrite)
    except BaseException:
        _unlink_quiet(tmp)
        raise


def unique_path(path: PathLike) -> Path:
    """``path`` if nothing is there, else the first free ``stem-1.ext``, ``stem-2.ext``, ..."""
    p = Path(os.fspath(path))
    if not (p.exists() or p.is_symlink()):
        return p
    i = 1
    while True:
        candidate = p.with_name(f"{p.stem}-{i}{p.suffix}")
        if not (candidate.exists() or candidate.is_symlink()):
            return candidate
        i += 1


def numbered_paths(path: PathLike, n: int, overwrite: bool = False) -> list[Path]:
    """Output paths for ``n`` results written to ``path``.

    * ``n == 1``: ``[path]`` unchanged (the caller's overwrite check applies to it).
    * ``n > 1``: ``stem-000.ext``, ``stem-001.ext``, ... (0-based, zero-padded to at least 3
      digits, more when ``n > 1000``). Existing files are never clobbered: unless
      ``overwrite`` is True, if any ``stem-NNN.ext`` already exists in the folder the
      numbering continues after the highest existing number, so a second run adds a new batch.
    """
    n = _check_count(n, "the number of outputs")
    if n < 1:
        raise UsageError(f"the number of outputs must be at least 1, got {n}")
    p = Path(os.fspath(path))
    if n == 1:
        return [p]
    start = 0
    if not overwrite:
        pattern = re.compile(re.escape(p.stem) + r"-(\d{3,})" + re.escape(p.suffix) + r"\Z")
        existing: list[int] = []
        try:
            if p.parent.is_dir():
                for entry in os.scandir(p.parent):
                    m = pattern.match(entry.name)
                    if m:
                        existing.append(int(m.group(1)))
        except OSError:
            existing = []
        if existing:
            start = max(existing) + 1
    width = max(3, len(str(start + n - 1)))
    return [p.with_name(f"{p.stem}-{i:0{width}d}{p.suffix}") for i in range(start, start + n)]


_WINDOWS_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(10)),
    *(f"lpt{i}" for i in range(10)),
}


def slugify(text: str, max_len: int = 40) -> str:
    """A safe file-name stem from a prompt: lowercase ASCII letters, digits and single dashes.

    Accents are folded (``café`` -> ``cafe``), everything else becomes a dash, the result is cut
    to ``max_len`` characters (at a dash when possible) and never starts or ends with a dash;
    an empty result is ``"output"``.
    """
    if max_len < 1:
        raise UsageError(f"max_len must be at least 1, got {max_len}")
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if len(slug) > max_len:
        cut = slug[: max_len + 1]
        slug = cut.rsplit("-", 1)[0] if "-" in cut[1:] else slug[:max_len]
        slug = slug[:max_len].strip("-")
    if not slug:
        return "output"
    if slug in _WINDOWS_RESERVED:
        slug = f"{slug}-output"[:max_len].strip("-") or "output"
    return slug


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _metadata_json(metadata: dict[str, Any]) -> str:
    """Compact ASCII JSON (non-JSON values via ``str``)."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=True, default=str)


def _metadata_summary(metadata: dict[str, Any]) -> str:
    """A human-readable one-line summary: ``prompt | key: value, key: value``."""
    parts: list[str] = []
    prompt = metadata.get("prompt")
    if prompt not in (None, ""):
        parts.append(" ".join(str(prompt).split()))
    items = []
    for key, value in metadata.items():
        if key == "prompt":
            continue
        shown = (
            value
            if isinstance(value, (str, int, float, bool)) or value is None
            else json.dumps(value, default=str)
        )
        items.append(f"{key}: {' '.join(str(shown).split())}")
    if items:
        parts.append(", ".join(items))
    text = " | ".join(parts)
    return text.encode("latin-1", "replace").decode("latin-1")


def _as_rgb_array(pixels: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(pixels, Image.Image):
        return np.asarray(_to_rgb(pixels), dtype=np.uint8)
    arr = np.asarray(pixels)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"pixels must be uint8 (H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def _exif_with_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = _EXIF_ASCII_PREFIX + text.encode("ascii")
    return exif.tobytes()


def write_image(
    path: PathLike,
    pixels: np.ndarray | Image.Image,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    *,
    lossless: bool = False,
) -> Path:
    """Write an RGB image atomically; the format comes from the extension.

    * ``.png``: lossless; ``metadata`` goes in tEXt chunks: ``showo2`` (compact JSON, read
      back with :func:`read_png_metadata`) and ``parameters`` (a one-line human summary).
    * ``.jpg``/``.jpeg``: quality 95; ``.webp``: quality 95, or lossless with
      ``lossless=True``. For both, the JSON goes in the EXIF UserComment tag (ASCII).
    * ``.bmp``: no metadata.

    Args:
        pixels: ``uint8 (H, W, 3)`` (or ``(1, H, W, 3)``), or a PIL image (converted to RGB).

    Raises:
        UsageError: unknown extension (the message lists the supported ones).
        OutputError: the file cannot be written (see :func:`atomic_output`).
    """
    p = Path(os.fspath(path))
    ext = p.suffix.lower()
    if ext not in _PIL_FORMATS:
        raise UsageError(
            f"cannot write image {_q(p)}: unknown extension {ext or '(none)'!r} "
            f"(supported: {', '.join(IMAGE_WRITE_EXTS)})"
        )
    arr = _as_rgb_array(pixels)
    fmt = _PIL_FORMATS[ext]
    params: dict[str, Any] = {}
    if fmt == "PNG":
        if metadata:
            info = PngImagePlugin.PngInfo()
            info.add_text(METADATA_KEY, _metadata_json(metadata))
            info.add_text(PARAMETERS_KEY, _metadata_summary(metadata))
            params["pnginfo"] = info
    elif fmt == "JPEG":
        params["quality"] = 95
        if metadata:
            params["exif"] = _exif_with_comment(_metadata_json(metadata))
    elif fmt == "WEBP":
        params.update(quality=100 if lossless else 95, lossless=bool(lossless), method=4)
        if metadata:
            params["exif"] = _exif_with_comment(_metadata_json(metadata))
    image = Image.fromarray(arr, "RGB")
    with atomic_output(p, overwrite) as tmp:
        try:
            image.save(tmp, format=fmt, **params)
        except Exception as e:
            raise OutputError(f"cannot write image {_q(p)}: {_detail(e)}") from e
    return p


def available_video_codecs() -> dict[str, str | None]:
    """The encoder :func:`write_video` uses for each video extension in this PyAV build (None: none)."""
    return {ext: _pick_codec(codecs) for ext, (_fmt, codecs) in _VIDEO_CONTAINERS.items()} | {".gif": "PIL"}


def _pick_codec(candidates: Sequence[str]) -> str | None:
    import av

    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except Exception:
            continue
        return name
    return None


def _as_video_array(frames: np.ndarray) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or min(arr.shape[:3]) < 1:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {arr.dtype} {tuple(arr.shape)}")
    return arr


def _write_gif(tmp: Path, arr: np.ndarray, fps: float, metadata: dict[str, Any] | None) -> None:
    centis = max(2, int(round(100.0 / fps)))  # GIF delays are centiseconds; < 2 plays slowly in browsers
    images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in arr]
    params: dict[str, Any] = {
        "save_all": True,
        "append_images": images[1:],
        "duration": centis * 10,
        "loop": 0,
    }
    if metadata:
        params["comment"] = _metadata_json(metadata).encode("ascii")
    images[0].save(tmp, format="GIF", **params)


def _write_av(tmp: Path, arr: np.ndarray, fps: float, ext: str, metadata: dict[str, Any] | None) -> None:
    import av
    from av.video.reformatter import ColorRange, Colorspace

    muxer, candidates = _VIDEO_CONTAINERS[ext]
    codec = _pick_codec(candidates)
    if codec is None:
        raise OutputError(
            f"cannot write {ext} video: this PyAV build has none of the encoders {', '.join(candidates)}"
        )
    t, h, w, _ = arr.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:  # yuv420p needs even sizes: repeat the last row/column
        arr = np.pad(arr, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
    with av.open(str(tmp), mode="w", format=muxer, options=options) as container:
        if metadata:
            container.metadata["comment"] = _metadata_json(metadata)
        stream = container.add_stream(codec, rate=rate)
        stream.width = w + pad_w
        stream.height = h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = dict(_CODEC_OPTIONS.get(codec, {}))
        cc = stream.codec_context
        # BT.709, limited range, tagged so players convert back with the same matrix
        cc.colorspace = 1
        cc.color_primaries = 1
        cc.color_trc = 1
        cc.color_range = 1
        for i in range(t):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr[i]), format="rgb24")
            frame = frame.reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG
            )
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_video(
    path: PathLike,
    frames: np.ndarray,
    fps: float,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``uint8 (T, H, W, 3)`` RGB frames as a video atomically; the format comes from the extension.

    * ``.mp4``/``.mov``: H.264 (``libx264``, crf 18, yuv420p, BT.709 tagged, faststart), or
      ``mpeg4`` if this PyAV has no libx264. ``.mkv``: the same codecs.
    * ``.webm``: VP9 (``libvpx-vp9``, crf 24), or VP8 (``libvpx``).
    * For these, odd widths/heights are padded to even by repeating the last row/column
      (yuv420p needs even sizes), so a 433x433 video is stored as 434x434; ``metadata`` goes in
      the container's ``comment`` tag as compact JSON (see :func:`read_metadata`).
    * ``.gif``: Pillow, all frames, 256-colour palette per frame, delay ``round(100 / fps)``
      centiseconds (at least 2, i.e. at most 50 fps), looping forever; ``metadata`` goes in a
      GIF comment. Pillow merges identical consecutive frames into one longer frame.
    * An image extension (``.png``, ``.jpg``, ...) is allowed for a single frame only and
      writes it with :func:`write_image`.

    Raises:
        UsageError: unknown extension, several frames to an image extension, bad ``fps``.
        OutputError: the file cannot be written.
    """
    p = Path(os.fspath(path))
    ext = p.suffix.lower()
    arr = _as_video_array(frames)
    if ext in _PIL_FORMATS:
        if arr.shape[0] != 1:
            raise UsageError(
                f"cannot write a {arr.shape[0]}-frame video to image {_q(p)}; "
                f"use one of {', '.join(VIDEO_WRITE_EXTS)}"
            )
        return write_image(p, arr[0], metadata=metadata, overwrite=overwrite)
    if ext not in VIDEO_WRITE_EXTS:
        raise UsageError(
            f"cannot write video {_q(p)}: unknown extension {ext or '(none)'!r} "
            f"(supported: {', '.join(VIDEO_WRITE_EXTS)}, or an image extension for one frame)"
        )
    try:
        fps_value = float(fps)
    except (TypeError, ValueError):
        raise UsageError(f"fps must be a number, got {fps!r}") from None
    if not math.isfinite(fps_value) or fps_value <= 0 or fps_value > 1000:
        raise UsageError(f"fps must be between 0 and 1000, got {fps!r}")
    with atomic_output(p, overwrite) as tmp:
        try:
            if ext == ".gif":
                _write_gif(tmp, arr, fps_value, metadata)
            else:
                _write_av(tmp, arr, fps_value, ext, metadata)
        except OutputError:
            raise
        except Exception as e:
            raise OutputError(f"cannot write video {_q(p)}: {_detail(e)}") from e
    return p


# ---------------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------------


def _parse_json_dict(text: str | bytes | None) -> dict[str, Any] | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_png_metadata(path: PathLike) -> dict[str, Any] | None:
    """The JSON dict stored by :func:`write_image` in a PNG's ``showo2`` text chunk, or None.

    None when the file is a PNG without (valid) metadata.

    Raises:
        InputError: the file is missing, unreadable or not a PNG.
    """
    p = _check_input_file(path, "image")
    try:
        with Image.open(p) as im:
            if im.format != "PNG":
                raise InputError(
                    f"cannot read PNG metadata from {_q(p)}: not a PNG file ({im.format or 'unknown'})"
                )
            value = im.info.get(METADATA_KEY)
            if value is None:
                text = getattr(im, "text", {}) or {}  # chunks after the image data
                value = text.get(METADATA_KEY)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"cannot read PNG metadata from {_q(p)}: not a PNG file or corrupt ({_detail(e)})"
        ) from e
    return _parse_json_dict(value)


def read_metadata(path: PathLike) -> dict[str, Any] | None:
    """Metadata written by :func:`write_image` or :func:`write_video`, from any of their formats.

    PNG text chunk, JPEG/WebP EXIF UserComment, GIF comment, or mp4/webm/mov/mkv ``comment``
    tag. None when the file has no (valid) metadata.

    Raises:
        InputError: the file is missing or neither an image nor a video.
    """
    p = _check_input_file(path, "media file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF: a missing comment is not an error
            with Image.open(p) as im:
                fmt = im.format
                if fmt == "PNG":
                    value = im.info.get(METADATA_KEY) or (getattr(im, "text", {}) or {}).get(METADATA_KEY)
                    return _parse_json_dict(value)
                if fmt == "GIF":
                    return _parse_json_dict(im.info.get("comment"))
                if fmt in ("JPEG", "WEBP", "MPO", "TIFF"):
                    raw = im.getexif().get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT)
                    if isinstance(raw, bytes):
                        raw = raw[len(_EXIF_ASCII_PREFIX) :] if raw.startswith(_EXIF_ASCII_PREFIX) else raw
                    return _parse_json_dict(raw)
                return None
    except UnidentifiedImageError:
        pass
    except Exception:
        return None
    import av

    try:
        with av.open(str(p), metadata_errors="replace") as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
    except Exception as e:
        raise InputError(f"cannot read metadata from {_q(p)}: not an image or video ({_detail(e)})") from e
    return _parse_json_dict(tags.get("comment"))
