"""Writing videos: encoders, GIFs, the sizes and frame rates each format holds."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from showo2_cli.errors import OutputError, UsageError, short

from .files import PathLike, quote_path
from .image import PIL_FORMATS, write_image
from .metadata import container_comment, metadata_json
from .outputs import atomic_output, extension_refused, is_write_error, write_failed
from .probe import error_detail
from .video import MAX_FPS, MIN_FPS

#: Extensions :func:`write_video` can write (plus image extensions for a single frame).
VIDEO_WRITE_EXTS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".gif")

#: Extension -> (muxer, codecs to try in order) for :func:`write_video`.
VIDEO_CONTAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mp4", ("libx264", "mpeg4")),
    ".mov": ("mov", ("libx264", "mpeg4")),
    ".mkv": ("matroska", ("libx264", "libvpx-vp9", "mpeg4")),
    ".webm": ("webm", ("libvpx-vp9", "libvpx")),
}
# encoder options: high quality, constant quality. x264's macroblock tree is off: its AVX-512 code
# reads memory it never wrote, so the same frames gave another file when the heap held other bytes
_CODEC_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "medium", "x264-params": "mbtree=0"},
    "mpeg4": {"qscale": "2"},
    "libvpx-vp9": {"crf": "24", "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"},
    "libvpx": {"crf": "8", "b": "20M", "deadline": "good", "cpu-used": "2"},
}


#: the largest side each output format takes (libjpeg, libwebp, GIF's 16-bit fields, libx264)
MAX_OUTPUT_SIDE = {".jpg": 65500, ".jpeg": 65500, ".webp": 16383, ".gif": 65535, ".mp4": 16384, ".mov": 16384,
                   ".mkv": 16384}


def check_output_size(path: PathLike, height: int, width: int) -> None:
    """Refuse (UsageError) frames larger than the output format can hold, before any work (the
    encoders fail only at the end, some with a second line of their own on stderr)."""
    p = Path(os.fspath(path))
    side = MAX_OUTPUT_SIDE.get(p.suffix.lower())
    if side is not None and max(height, width) > side:
        raise UsageError(f"cannot write {quote_path(p)}: {p.suffix.lower()} holds at most {side} pixels a side, "
                         f"these frames are {width}x{height} (use .png{' or .webm' if side == 16384 else ''})")


def check_write_fps(fps: float) -> float:
    """``fps`` as a float, if a video can be written at it (:data:`MIN_FPS` to :data:`MAX_FPS`)."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise UsageError(f"fps must be a number, got {short(repr(fps))}") from None
    except OverflowError:  # a whole number too large for a float (10**400)
        value = math.inf
    if not math.isfinite(value) or not MIN_FPS <= value <= MAX_FPS:
        raise UsageError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {short(repr(fps))}")
    return value


def written_fps(path: PathLike, fps: float) -> float:
    """The frame rate a video written to ``path`` plays at: a GIF's delays are whole
    centiseconds, at least 2 (browsers slow anything shorter), so its rate is ``100 / delay``.
    A rate no video is written at (:func:`check_write_fps`) is a UsageError here too."""
    fps = check_write_fps(fps)
    if Path(os.fspath(path)).suffix.lower() == ".gif":
        return 100.0 / _gif_delay(fps)
    return fps


def fps_note(path: PathLike, fps: float) -> str | None:
    """What to tell a user who asked for ``fps`` when ``path`` plays more than 5% off it (a GIF's
    rate is ``100 / delay``: 8 fps plays at 8.33, unsaid; 30 at 33.3 and 240 at 50, said), else None."""
    rate = written_fps(path, fps)
    if abs(rate - float(fps)) <= 0.05 * float(fps):
        return None
    return (f"a GIF's frame delays are whole centiseconds, at least 2: {float(fps):g} fps is written as "
            f"{rate:.4g} fps (use .mp4 or .webm for this rate)")


def _gif_delay(fps: float) -> int:
    return max(2, int(round(100.0 / fps)))


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
    centis = _gif_delay(fps)  # GIF delays are centiseconds; < 2 plays slowly in browsers
    images = [Image.fromarray(np.ascontiguousarray(f), "RGB") for f in arr]
    params: dict[str, Any] = {
        "save_all": True,
        "append_images": images[1:],
        "duration": centis * 10,
        "loop": 0,
    }
    if metadata:
        params["comment"] = metadata_json(metadata).encode("ascii")
    images[0].save(tmp, format="GIF", **params)


def write_av(tmp: Path, arr: np.ndarray, fps: float, ext: str, metadata: dict[str, Any] | None) -> None:
    import av
    from av.video.reformatter import ColorRange, Colorspace

    muxer, candidates = VIDEO_CONTAINERS[ext]
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
    # bitexact: no random Matroska/WebM segment UID, no muxer version string: same frames, same bytes
    options = {"fflags": "+bitexact", **({"movflags": "+faststart"} if muxer in ("mp4", "mov") else {})}
    with av.open(str(tmp), mode="w", format=muxer, options=options) as container:
        if metadata:
            container.metadata["comment"] = container_comment(metadata, muxer)
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

    * The same frames, fps and metadata give the same bytes (muxed bit-exact, libx264's
      ``mbtree`` off: see ``_CODEC_OPTIONS``).
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
    check_output_size(p, arr.shape[1], arr.shape[2])
    if ext in PIL_FORMATS:
        if arr.shape[0] != 1:
            raise UsageError(
                f"cannot write a {arr.shape[0]}-frame video to image {quote_path(p)}; "
                f"use one of {', '.join(VIDEO_WRITE_EXTS)}"
            )
        return write_image(p, arr[0], metadata=metadata, overwrite=overwrite)
    if ext not in VIDEO_WRITE_EXTS:
        raise extension_refused(path, f"use {', '.join(VIDEO_WRITE_EXTS)} for a video, or an image extension "
                                      "for one frame")
    fps_value = check_write_fps(fps)
    if metadata and "fps" in metadata and ext == ".gif":  # record the rate the file plays at
        metadata = {**metadata, "fps": written_fps(p, fps_value)}
    with atomic_output(p, overwrite) as tmp:
        try:
            if ext == ".gif":
                _write_gif(tmp, arr, fps_value, metadata)
            else:
                write_av(tmp, arr, fps_value, ext, metadata)
        except OutputError:
            raise
        except Exception as e:  # a full disk said as such, not as PyAV names the temporary file
            raise write_failed(p, e, "video") if is_write_error(e) else \
                OutputError(f"cannot write video {quote_path(p)}: {error_detail(e)}") from e
    return p
