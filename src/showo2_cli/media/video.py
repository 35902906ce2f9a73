"""Reading videos: the :class:`Media` result, frame sampling (writing them: :mod:`.video_write`)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from showo2_cli.errors import InputError, ResourceError, UsageError
from showo2_cli.options import DEFAULT_FPS

from .animation import PilFrames
from .files import PathLike, check_input_file, quote_path
from .frame_index import decode_picked, uniform_indices
from .geometry import check_count, display_orientation, display_width, orient
from .image import image_input, is_animated, read_image
from .probe import (
    check_video_structure,
    error_detail,
    pil_animation,
    probe_kind,
    resolve_max_pixels,
    stream_codec,
    too_large,
    video_streams,
)

#: Refuse to decode a video whose RGB frames would take more than this many bytes.
MAX_DECODED_BYTES: int = 8 * 1024**3
#: The frame rates a video is read or written at; a source's rate outside them is not used
MIN_FPS: float = 0.1
MAX_FPS: float = 1000.0
# ---------------------------------------------------------------------------------------------
# reading
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
        decoded_size: ``(width, height)`` of the frames as decoded (after rotation), before a
            ``fit`` made them smaller; None: the frames' own size.
    """

    kind: str
    frames: np.ndarray
    fps: float | None
    source: str
    total_frames: int
    decoded_size: tuple[int, int] | None = None

    @property
    def source_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames as decoded, before any ``fit``."""
        return self.decoded_size or (self.width, self.height)

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


def _frame_rate(stream: Any) -> float:
    """The stream's frame rate: its average rate, then its guessed rate (a slower one than
    :data:`MIN_FPS` is that; an absurd one is skipped), else 8.0. Never the time base's tick rate
    (``base_rate``), which is not a frame rate (a 1000-second-per-frame video had 1000 fps)."""
    for attr in ("average_rate", "guessed_rate"):
        try:
            rate = getattr(stream, attr, None)
            value = float(rate) if rate else 0.0
        except Exception:
            value = 0.0
        if math.isfinite(value) and 0 < value <= MAX_FPS:
            return max(value, MIN_FPS)
    return DEFAULT_FPS


def read_video(
    path: PathLike,
    num_frames: int | None = None,
    max_pixels: int | None = None,
    max_frames: int = 100000,
    first: int | None = None,
    max_bytes: int | None = None,
    fit: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Media:
    """Decode a video (mp4, webm, mov, mkv, avi, animated GIF, ...) with PyAV to RGB frames.

    Args:
        path: the video file.
        num_frames: if given, return exactly this many frames sampled uniformly over the video
            (duplicates when it is shorter): at a constant frame rate the official indices
            (:func:`uniform_indices`), at a variable one the frames shown at evenly spaced
            instants (:meth:`~showo2_cli.media.frame_index.FrameIndex.pick`). Otherwise all frames.
        max_pixels: refuse frames with more pixels (default ``$SHOWO2_MAX_PIXELS`` or
            :data:`DEFAULT_MAX_PIXELS`).
        max_frames: refuse to return more frames than this.
        first: without ``num_frames``: only the first ``first`` frames are decoded and returned
            (``total_frames`` then counts only those).
        max_bytes: the decoded frames kept may take at most this much memory (the job's memory
            limit, :func:`showo2_cli.runtime.decode_budget`); never more than
            :data:`MAX_DECODED_BYTES`. Checked from the header before decoding where it states
            the frame count, and while decoding.
        fit: applied to each kept frame as soon as it is decoded (say, the resize a model's input
            needs), so only fitted frames are held: 32 frames of a 4K video are 0.8 GB decoded,
            18 MB at 432x432. ``max_bytes`` is then judged on the fitted frames (what is kept),
            ``max_pixels`` on the decoded ones; :attr:`Media.decoded_size` keeps the decoded size.

    The frame rate is the stream's average rate (then its guessed rate, then 8.0). A display
    matrix (a phone's rotation, a mirror) is applied in multiples of 90 degrees, and non-square pixels (a sample
    aspect ratio other than 1: DVD, HDV, anamorphic footage) are scaled to the display aspect, as a
    player shows them (720x480 at 32:27 is read 853x480). Frames whose size changes mid-stream are
    scaled to the first frame's (display) size. When ``num_frames`` is given, an MP4/MOV or
    Matroska/WebM file is decoded only in the groups of pictures that hold the sampled frames
    (:func:`~showo2_cli.media.frame_index.decode_picked`: an hour of video costs about
    ``num_frames`` groups of pictures); another container is decoded in order, in one pass where
    it states its frame count, else after counting them (a second pass, nothing kept).

    Raises:
        InputError: missing/empty/corrupt file, no video stream, no decodable frame, a still
            image.
        ResourceError: frames too large (any frame, also one whose size changes mid-stream),
            or the decoded frames would exceed ``max_bytes`` or ``max_frames``.
        UsageError: ``num_frames`` < 1.
    """
    import av

    if num_frames is not None:
        num_frames = check_count(num_frames, "the number of frames to read")
        if num_frames < 1:
            raise UsageError(f"the number of frames to read must be at least 1, got {num_frames}")
    limit = resolve_max_pixels(max_pixels)
    budget = MAX_DECODED_BYTES if max_bytes is None else max(1, min(int(max_bytes), MAX_DECODED_BYTES))
    p = check_input_file(path, "video")
    prefix = f"cannot read video {quote_path(p)}"
    index = check_video_structure(p, prefix, limit)
    index = index if index is not None and index.usable and len(index) > 0 else None
    if pil_animation(p):  # an APNG, animated WebP or AVIF: FFmpeg reads no animated WebP
        return _read_pil_animation(p, prefix, num_frames, limit, max_frames, first, budget, fit)

    def open_stream() -> tuple[Any, Any]:
        try:
            container = av.open(str(p), metadata_errors="replace")
        except Exception as e:
            raise InputError(
                f"{prefix}: not a video this tool can read "
                f"(unknown format, truncated or corrupt: {error_detail(e)})"
            ) from e
        try:
            streams = video_streams(container)
            if not streams:
                raise InputError(f"{prefix}: the file has no video stream")
            stream = streams[0]
            stream.thread_type = "AUTO"
        except BaseException:
            container.close()
            raise
        return container, stream

    container, stream = open_stream()
    try:
        cc = stream_codec(stream, prefix)
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise InputError(f"{prefix}: the video stream has no frame size (corrupt header)")
        shown = display_width(stream, width)  # non-square pixels: frames are read at the display aspect
        if max(width, shown) * height > limit:  # decoded at the stored size, then scaled to the shown one
            raise too_large("video", p, max(width, shown), height, limit)
        width = shown
        fps = _frame_rate(stream)
        if index is not None and index.rate() is not None:  # a GIF's rate as it is played
            fps = min(max(index.rate(), MIN_FPS), MAX_FPS)
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
        if num_frames is None and first is not None:
            estimate = min(estimate, first) if estimate > 0 else 0
        wanted_count = num_frames if num_frames is not None else estimate
        if num_frames is not None and num_frames > max_frames:
            raise ResourceError(
                f"cannot read {num_frames} frames from {quote_path(p)}: the limit is {max_frames}"
            )
        # a count from the duration is only an estimate (a 5-frame video may last hours):
        # then the limit is enforced while decoding
        exact = num_frames is not None or header_frames > 0

        def check_count_fits(kept_bytes: int, size: str) -> None:
            if exact and wanted_count * kept_bytes > budget:
                raise ResourceError(
                    f"video {quote_path(p)} is too large to decode: {wanted_count} frames of "
                    f"{size} need {wanted_count * kept_bytes / 1e9:.1f} GB "
                    f"(limit {budget / 1e9:.1f} GB); sample fewer frames or raise --max-memory"
                )

        if fit is None:  # else judged on the first fitted frame, before any other is decoded
            check_count_fits(frame_bytes, f"{width}x{height}")
    except BaseException:
        container.close()
        raise
    # what one kept frame takes (the fitted size once known) and the first frame's decoded size
    kept_frame: dict[str, Any] = {"bytes": frame_bytes, "shape": "", "decoded": None, "orientation": None}

    def convert(frame: Any, position: int, kept: dict[int, np.ndarray], keep_all: bool) -> None:
        """Check the frame (its size may change mid-stream, the memory budget) and keep it as RGB."""
        if frame.width * frame.height > limit:
            raise too_large("video", p, frame.width, frame.height, limit)
        def too_long() -> ResourceError:
            return ResourceError(
                f"video {quote_path(p)} is too long to decode: more than {len(kept)} frames of "
                f"{kept_frame['shape'] or f'{width}x{height}'} (limit {max_frames} frames / "
                f"{budget / 1e9:.1f} GB); sample fewer frames or raise --max-memory"
            )

        if (fit is None and (len(kept) + 1) * frame_bytes > budget) or (keep_all and position + 1 > max_frames):
            raise too_long()
        if kept_frame["orientation"] is None:  # the stream's, read from one frame (see display_orientation)
            kept_frame["orientation"] = display_orientation(frame)
        arr = orient(frame.to_ndarray(format="rgb24", width=width, height=height), orientation=kept_frame["orientation"])
        if kept_frame["decoded"] is None:
            kept_frame["decoded"] = (int(arr.shape[1]), int(arr.shape[0]))
        if fit is not None:  # judged on what is kept: one decoded frame at a time is never held longer
            arr = fit(arr)
            if not kept_frame["shape"]:  # the first fitted frame: what every kept frame takes
                kept_frame["bytes"] = max(int(arr.nbytes), 1)
                kept_frame["shape"] = f"{arr.shape[1]}x{arr.shape[0]}"
                check_count_fits(kept_frame["bytes"], kept_frame["shape"])
            if (len(kept) + 1) * kept_frame["bytes"] > budget:
                raise too_long()
        kept[position] = arr

    def failing(count: int, e: Exception) -> Exception:
        if isinstance(e, (InputError, ResourceError)):
            return e
        if isinstance(e, MemoryError):
            return ResourceError(f"video {quote_path(p)} is too large to decode in memory")
        return InputError(f"{prefix}: truncated or corrupt data after frame {count} ({error_detail(e)})")

    def decode(container: Any, stream: Any, keep: set[int] | None) -> tuple[dict[int, np.ndarray], int]:
        """Decode every frame; convert those whose index is in ``keep`` (all if None)."""
        kept: dict[int, np.ndarray] = {}
        count = 0
        try:
            for frame in container.decode(stream):
                if keep is None and first is not None and count >= first:
                    break
                if frame.width * frame.height > limit:  # the size may change mid-stream
                    raise too_large("video", p, frame.width, frame.height, limit)
                if keep is None or count in keep:
                    convert(frame, count, kept, keep is None)
                count += 1
        except Exception as e:
            raise failing(count, e) from e
        return kept, count

    def decode_seeking(container: Any, stream: Any, picks: list[int]) -> dict[int, np.ndarray] | None:
        """Only the groups of pictures holding ``picks`` (:func:`decode_picked`); None: read in order."""
        kept: dict[int, np.ndarray] = {}
        try:
            done = decode_picked(container, stream, index, picks, lambda f, pos: convert(f, pos, kept, False))
        except Exception as e:
            raise failing(len(kept), e) from e
        return kept if done is not None else None
    try:
        if num_frames is None:
            kept, total = decode(container, stream, None)
            indices = list(range(total))
        elif index is not None or header_frames > 0:
            count = len(index) if index is not None else header_frames
            indices = index.pick(num_frames) if index is not None else uniform_indices(count, num_frames)
            seeked = decode_seeking(container, stream, indices) if index is not None else None
            if seeked is not None:
                kept, total = seeked, count
            else:
                if index is not None:  # the stream did not keep to its index: read it in order
                    container.close()
                    container, stream = open_stream()
                kept, total = decode(container, stream, set(indices))
            if total != count and total > 0:  # the header lied: sample again
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
        out = np.empty((len(indices), *kept[indices[0]].shape), dtype=np.uint8)
        last_use = {idx: i for i, idx in enumerate(indices)}
        for i, idx in enumerate(indices):
            out[i] = kept[idx]
            if last_use[idx] == i:  # each decoded frame is freed once copied: one copy at a time
                del kept[idx]
    except (KeyError, ValueError) as e:
        raise InputError(f"{prefix}: frames could not be decoded consistently ({error_detail(e)})") from e
    return Media(kind="video", frames=out, fps=fps, source=str(p), total_frames=total,
                 decoded_size=kept_frame["decoded"] if fit is not None else None)


def _read_pil_animation(p: Path, prefix: str, num_frames, limit: int, max_frames: int, first, budget: int,
                        fit) -> Media:
    """An APNG's, animated WebP's or AVIF's frames, read with Pillow and sampled over their delays."""
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")
            return _media_in_memory(im, num_frames, limit, max_frames, first, budget, name=str(p), fit=fit)
    except (InputError, ResourceError, UsageError):
        raise
    except MemoryError as e:
        raise ResourceError(f"video {quote_path(p)} is too large to decode in memory") from e
    except Exception as e:  # checked whole before: a file changed meanwhile
        raise InputError(f"{prefix}: truncated or corrupt ({error_detail(e)})") from e


def read_media(
    path,
    num_frames: int | None = None,
    max_pixels: int | None = None,
    max_frames: int = 100000,
    first: int | None = None,
    max_bytes: int | None = None,
    fit: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Media:
    """Read an image or a video: a file (chosen by :func:`probe_kind`), or media in memory.

    An image gives ``Media(kind="image")`` with one frame and ``fps=None`` (``num_frames`` and
    ``first`` are ignored for images); a video file is read with :func:`read_video`. In memory,
    a PIL image, an array or a tensor is an image (:func:`~showo2_cli.media.image.image_input`),
    and a list of them, or a ``(T, H, W, 3)`` / ``(T, 3, H, W)`` array or tensor with ``T > 1``,
    is a video's frames (what a video pipeline returns), whose ``fps`` is unknown (None).
    ``fit`` is applied to each frame as it is read (:func:`read_video`): only fitted frames are held.
    """
    if not isinstance(path, (str, os.PathLike)):
        return _media_in_memory(path, num_frames, max_pixels, max_frames, first, max_bytes, fit=fit)
    kind = probe_kind(path, max_pixels)
    if kind == "video":
        return read_video(path, num_frames=num_frames, max_pixels=max_pixels, max_frames=max_frames, first=first,
                          max_bytes=max_bytes, fit=fit)
    frame = np.array(read_image(path, max_pixels=max_pixels), dtype=np.uint8)  # writable copy
    decoded = (int(frame.shape[1]), int(frame.shape[0]))
    frames = (frame if fit is None else np.asarray(fit(frame), dtype=np.uint8))[None]
    return Media(kind="image", frames=frames, fps=None, source=os.fspath(path), total_frames=1,
                 decoded_size=decoded if fit is not None else None)


def _media_in_memory(source, num_frames, max_pixels, max_frames, first, max_bytes, name: str = "<frames>",
                     fit=None) -> Media:
    if num_frames is not None:
        num_frames = check_count(num_frames, "the number of frames to read")
    if isinstance(source, Image.Image) and is_animated(source):  # a GIF, APNG, WebP or AVIF opened by PIL
        source = PilFrames(source)
    elif isinstance(source, (list, tuple)) and len(source) == 1:
        source = source[0]  # one frame: an image (a list of one image is no video)
    is_frames = isinstance(source, (list, tuple, PilFrames)) or \
        (getattr(source, "ndim", 0) == 4 and source.shape[0] > 1)
    if not is_frames:
        frame = np.array(image_input(source, max_pixels), dtype=np.uint8)
        decoded = (int(frame.shape[1]), int(frame.shape[0]))
        frames = (frame if fit is None else np.asarray(fit(frame), dtype=np.uint8))[None]
        return Media(kind="image", frames=frames, fps=None, source="<image>", total_frames=1,
                     decoded_size=decoded if fit is not None else None)
    total = len(source)
    if total < 1:
        raise UsageError("a video given as frames needs at least one frame")
    index = source.index() if isinstance(source, PilFrames) else None  # an animation's frame delays
    picked = (index.pick(num_frames) if index is not None else uniform_indices(total, num_frames)) \
        if num_frames is not None else range(min(total, first) if first is not None else total)
    if len(picked) > max_frames:
        raise ResourceError(f"the video has {len(picked)} frames, more than the limit of {max_frames}")
    budget = MAX_DECODED_BYTES if max_bytes is None else max(1, min(int(max_bytes), MAX_DECODED_BYTES))
    frames: list[np.ndarray] = []
    first_shape = None
    for i in picked:
        frame = np.asarray(image_input(source[i], max_pixels, f"video frame {i}"), dtype=np.uint8)
        first_shape = first_shape or frame.shape
        if frame.shape != first_shape:
            listed = "; a list of images is one video's frames (several images: one call each)" \
                if isinstance(source, (list, tuple)) else ""
            raise ValueError(f"video frame {i} is {frame.shape[1]}x{frame.shape[0]}, frame 0 "
                             f"{first_shape[1]}x{first_shape[0]}: the frames of a video share one size{listed}")
        kept = frame if fit is None else fit(frame)  # the memory limit is judged on what is kept
        if kept.nbytes * len(picked) > budget:
            raise ResourceError(f"{len(picked)} frames of {kept.shape[1]}x{kept.shape[0]} need "
                                f"{kept.nbytes * len(picked) / 2**30:.1f} GiB, more than the memory limit of "
                                f"{budget / 2**30:.1f} GiB")
        frames.append(kept)
    fps = source.fps() if isinstance(source, PilFrames) and index is not None else None
    fps = None if fps is None else min(max(fps, MIN_FPS), MAX_FPS)
    return Media(kind="video", frames=np.stack(frames), fps=fps, source=name, total_frames=total,
                 decoded_size=(int(first_shape[1]), int(first_shape[0])) if fit is not None else None)
