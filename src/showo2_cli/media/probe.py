"""Probing: what a media file is, whether it can be read, whether it is too large.

Files are judged by their content (headers, container structure), decoding as little as
possible. :func:`~showo2_cli.media.files.check_input_file` and :func:`resolve_max_pixels` are
the first checks of every reader in :mod:`showo2_cli.media`; :func:`check_video` checks a video
without decoding it. What a header says is :mod:`~showo2_cli.media.headers`', the pixel limit and
what is said of a file beyond it :mod:`~showo2_cli.media.limits`' (both re-exported here).
"""

from __future__ import annotations

import os
import stat
import threading
import time
import warnings
from array import array
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

from PIL import Image

from showo2_cli.errors import InputError, ResourceError
from showo2_cli.errors import error_detail as error_detail  # (re-exported: media's modules import it here)

from .animation import (
    ANIMATED_FORMATS,
    MIN_DELAY_MS,
    PLAYED_DELAY_MS,
    declared_frame_count,
    gif_frame_count,
    png_frame_count,
)
from .files import PathLike, check_input_file, quote_path
from .frame_index import CHECKED_SEEK_FORMATS, INDEXED_FORMATS, FrameIndex
from .headers import av_container, check_undecoded_photo, pil_header, stream_codec, video_streams
from .headers import av_video_info as av_video_info  # (re-exported, as below: users import them here)
from .limits import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS
from .limits import MAX_PIXELS_ENV as MAX_PIXELS_ENV
from .limits import decompression_bomb as decompression_bomb
from .limits import gif_beyond_screen, resolve_max_pixels, too_large
from .limits import metadata_refused as metadata_refused

#: Extensions usually holding still images (for listing folders; kinds are probed by content):
#: ``.jfif`` is what Chrome and Edge on Windows name a JPEG they save, ``.avif`` what browsers serve;
#: ``.heic``/``.heif`` (iPhone photos), ``.jxl`` and ``.dng`` (phones' raw photos) are listed to be refused,
#: each with what to do, not left out.
IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".jfif", ".webp", ".avif", ".heic", ".heif", ".jxl", ".dng",
                               ".bmp", ".tif", ".tiff")
#: Extensions usually holding videos (an animated GIF or APNG is a video): ``.m4v`` (Apple's
#: exports), ``.3gp`` (phones), ``.mpg``/``.mpeg`` and ``.ogv`` too; what camcorders write (AVCHD's
#: ``.mts``/``.m2ts``, ``.mod``/``.tod``, DV's ``.dv``, pro cameras' ``.mxf``), a saved HLS stream or
#: broadcast (``.ts``), DVDs (``.vob``), Flash-era web video (``.flv``/``.f4v``), Windows (``.wmv``/
#: ``.asf``) and ``.qt``: FFmpeg reads them all.
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".apng", ".m4v", ".3gp", ".mpg",
                               ".mpeg", ".ogv", ".mts", ".m2ts", ".ts", ".mod", ".tod", ".dv", ".mxf", ".vob",
                               ".flv", ".f4v", ".wmv", ".asf", ".qt")


# ---------------------------------------------------------------------------------------------
# probing
# ---------------------------------------------------------------------------------------------


def probe_kind(path: PathLike, max_pixels: int | None = None) -> str:
    """Return ``"image"`` or ``"video"`` for a media file, judged by its content, not its name.

    A GIF, PNG, WebP or AVIF with more than one frame (an animation: APNG, animated WebP or AVIF) is a video,
    with one frame an image; any other still format PIL reads is an image; a container FFmpeg
    opens with a video stream (mp4, webm, mov, mkv, avi, ...) is a video.

    Raises:
        InputError: missing path, a directory, an empty file, or content that is neither.
    """
    p = check_input_file(path, "media file")
    header = pil_header(p, max_pixels)  # (a bomb is refused against the caller's pixel limit)
    if header is not None:
        fmt, _size, animated = header
        if fmt in ANIMATED_FORMATS:
            return "video" if animated else "image"
        if fmt != "MPEG":  # PIL only identifies MPEG streams, it cannot decode them
            return "image"
    check_undecoded_photo(p, f"cannot read media file {quote_path(p)}")
    found = av_container(p)
    if found == "video":
        return "video"
    if found == "other":
        raise InputError(
            f"cannot read media file {quote_path(p)}: the file has no video stream (audio only, or no frames)"
        )
    raise InputError(
        f"cannot read media file {quote_path(p)}: not an image or video this tool can read "
        "(unknown format, truncated or corrupt)"
    )


# ---------------------------------------------------------------------------------------------
# video structure
# ---------------------------------------------------------------------------------------------


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


def _check_packets(p: Path, prefix: str) -> FrameIndex | None:
    """Demux the first video stream (no decoding, so no decoder threads) and refuse the file if
    FFmpeg logs an error or flags a packet as corrupt: that is how a truncated or damaged
    mp4/webm/mkv shows, while decoding it would quietly end early. Returns what the packets say
    of the frames (:class:`FrameIndex`) for the containers that store it, else None."""
    import av

    index = None

    with _ffmpeg_errors() as logs:
        try:
            with av.open(str(p), metadata_errors="replace") as container:
                streams = video_streams(container)[:1]
                if not streams:
                    return None  # judged by the caller ("no video stream")
                names = set((container.format.name or "").split(","))
                if names & (INDEXED_FORMATS | CHECKED_SEEK_FORMATS) and streams[0].time_base:
                    index = FrameIndex(Fraction(streams[0].time_base), checked_seeks=bool(names & CHECKED_SEEK_FORMATS))
                try:
                    listed = int(streams[0].frames or 0)  # mp4/mov: the sample table's count
                except Exception:
                    listed = 0
                packets = 0
                for packet in container.demux(streams[0]):
                    if packet.size and packet.is_corrupt:
                        raise InputError(
                            f"{prefix}: truncated or corrupt (a damaged packet at pts {packet.pts})"
                        )
                    packets += bool(packet.size)
                    if index is not None and packet.size and not packet.is_discard:
                        index.add(packet.pts, packet.is_keyframe, packet.dts)
                    found = _first_ffmpeg_error(logs)
                    if found:
                        raise InputError(f"{prefix}: truncated or corrupt ({found})")
                if 0 < packets < listed:  # the index lists frames the file no longer holds (cut short)
                    raise InputError(f"{prefix}: truncated or corrupt (the file lists {listed} frames and "
                                     f"holds {packets})")
        except (InputError, ResourceError):
            raise
        except MemoryError as e:
            raise ResourceError(f"video {quote_path(p)} is too large to read in memory") from e
        except Exception as e:
            found = _first_ffmpeg_error(logs)
            raise InputError(f"{prefix}: truncated or corrupt ({found or error_detail(e)})") from e
        found = _first_ffmpeg_error(logs)
        if found:
            raise InputError(f"{prefix}: truncated or corrupt ({found})")
    return index.finish() if index is not None else None


#: Decoding a GIF paints every frame on the whole canvas: at most this many canvas pixels over
#: all its frames (a 1080p GIF of 500 frames; a tiny file can declare an 8000x8000 canvas and
#: thousands of 1x1 frames, hours of decoding)
MAX_GIF_PIXEL_FRAMES = 2**30


def _check_gif_frames(p: Path, prefix: str, width: int, height: int) -> None:
    """Decode every frame of a GIF (or an APNG, an animated WebP or AVIF) with PIL, which (unlike FFmpeg)
    reports a truncated or damaged frame instead of silently ending the animation there; first
    refuse one whose frames would paint more than :data:`MAX_GIF_PIXEL_FRAMES` canvas pixels."""
    canvas = max(width * height, 1)
    frames = gif_frame_count(p, stop_after=MAX_GIF_PIXEL_FRAMES // canvas) or declared_frame_count(p)
    held = png_frame_count(p, stop_after=frames)
    if 0 < held < frames:  # an APNG's acTL listing 2^31 frames over 2 was "too large to decode" (exit 6)
        raise InputError(f"{prefix}: truncated or corrupt (the file lists {frames} frames and holds {held})")
    if frames * canvas > MAX_GIF_PIXEL_FRAMES:
        beyond = gif_beyond_screen("video", p, f"{width}x{height}", MAX_GIF_PIXEL_FRAMES // max(frames, 1))
        if beyond is not None:
            raise beyond
        raise ResourceError(f"video {quote_path(p)} is too large to decode: more than {frames - 1} frames on "
                            f"a {width}x{height} canvas (at most {MAX_GIF_PIXEL_FRAMES // canvas} at that size)")
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
        raise ResourceError(f"video {quote_path(p)} is too large to decode in memory") from e
    except Exception as e:
        raise InputError(f"{prefix}: truncated or corrupt GIF ({error_detail(e)})") from e


#: The structures of the last files checked whole (:func:`check_video_structure`), by the file's
#: identity: a video checked before a model loads is not demuxed again when its frames are read.
_CHECKED: OrderedDict[tuple, FrameIndex | None] = OrderedDict()
_CHECKED_LOCK = threading.Lock()
_CHECKED_FILES = 8


def _file_identity(p: Path) -> tuple | None:
    """What tells a regular file's content apart without reading it (path, device, inode, size,
    modification and change times in ns); None for anything else (a FIFO is read once)."""
    try:
        st = os.stat(p)
        return (os.path.realpath(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) \
            if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        return None


def check_video_structure(p: Path, prefix: str, limit: int) -> FrameIndex | None:
    """What can be checked of a video without decoding it (GIFs excepted): not a still image,
    not too large, no truncated or damaged packet. Returns the :class:`FrameIndex` the packets
    gave (MP4/MOV, Matroska/WebM, GIF), else None.

    A file that passed is not checked again while it is unchanged (the same identity, see
    :func:`_file_identity`): ``caption`` checks a video before the model loads and then reads it,
    and a two-hour video's packets took 1.6 s to demux each time."""
    identity = _file_identity(p)
    key = None if identity is None else (*identity, limit)
    with _CHECKED_LOCK:
        if key is not None and key in _CHECKED:
            _CHECKED.move_to_end(key)
            return _CHECKED[key]
    index = _check_structure(p, prefix, limit)
    # unchanged while checked, and not modified in the last seconds: a rewrite within the file
    # system's clock tick keeps the times (and often the size), as git's "racy" index entries
    settled = identity is not None and time.time_ns() - identity[4] > 2_000_000_000
    if settled and key == (*(_file_identity(p) or ()), limit):
        with _CHECKED_LOCK:
            _CHECKED[key] = index
            while len(_CHECKED) > _CHECKED_FILES:
                _CHECKED.popitem(last=False)
    return index


def _check_structure(p: Path, prefix: str, limit: int) -> FrameIndex | None:
    header = pil_header(p)
    if header is None:
        check_undecoded_photo(p, prefix)
    if header is not None and not (header[0] in ANIMATED_FORMATS and header[2]) and header[0] != "MPEG":
        raise InputError(f"{prefix}: it is a still image, not a video")
    if header is not None and header[0] in ANIMATED_FORMATS:
        width, height = header[1]
        if width * height > limit:
            raise too_large("video", p, width, height, limit)
        _check_gif_frames(p, prefix, width, height)
        return _gif_index(p) if header[0] == "GIF" else None
    return _check_packets(p, prefix)


def animation_format(path: PathLike) -> str | None:
    """``"GIF"``, ``"PNG"``, ``"WEBP"`` or ``"AVIF"`` for an animation in a still-image format (a video whose
    MIME type is ``image/*``), else None."""
    header = pil_header(Path(os.fspath(path)))
    return header[0] if header is not None and header[0] in ANIMATED_FORMATS and header[2] else None


def pil_animation(p: Path) -> bool:
    """True for an animation FFmpeg does not read, or not as one video, and Pillow does (APNG,
    animated WebP; an animated AVIF, in which FFmpeg finds its still first picture as a stream of
    its own before the sequence): its frames are read with Pillow (a GIF's with FFmpeg)."""
    return animation_format(p) in ("PNG", "WEBP", "AVIF")


def _gif_index(p: Path) -> FrameIndex | None:
    """A GIF's frames as FFmpeg's demuxer times them (each frame's delay: a GIF that holds its
    first frame 5 s and then plays at 10 fps), for sampling over its time; None if it cannot say.
    Each frame is shown (``FrameIndex.shown``) for its delay as browsers play it: one of 10 ms or
    less as 100 ms (:data:`~showo2_cli.media.animation.MIN_DELAY_MS`, the rule an APNG's or WebP's
    delays are read by), where FFmpeg reads a 1-centisecond delay as it is (100 fps)."""
    import av

    try:
        with av.open(str(p), metadata_errors="replace") as container:
            streams = video_streams(container)[:1]
            if not streams or not streams[0].time_base:
                return None
            index = FrameIndex(Fraction(streams[0].time_base))
            floor = Fraction(MIN_DELAY_MS, 1000) / index.time_base  # in ticks
            played = max(1, round(Fraction(PLAYED_DELAY_MS, 1000) / index.time_base))
            shown, start, replaced = array("q"), 0, False
            for packet in container.demux(streams[0]):
                if packet.size:
                    index.add(packet.pts, packet.is_keyframe, packet.dts)
                    shown.append(start)
                    delay = int(packet.duration or 0)
                    replaced |= not floor < delay < 2**40
                    start += delay if floor < delay < 2**40 else played
            if replaced:  # (else FFmpeg's times are the browsers')
                index.shown = shown
            index.duration = start  # the rate as played: FFmpeg's average rate is guessed from the first delays
            return index.finish()
    except Exception:  # the GIF was judged by PIL already: without an index it is read in order
        return None


def check_video(path: PathLike, max_pixels: int | None = None) -> None:
    """Check a video as far as possible without decoding it (a GIF is decoded): a video stream
    with a frame size within ``max_pixels``, and no truncated or damaged packet. Cheap: callers
    run it before loading a model, then read the frames they need with :func:`read_video`.

    Raises:
        InputError, ResourceError: as :func:`read_video` would for these problems.
    """
    import av

    limit = resolve_max_pixels(max_pixels)
    p = check_input_file(path, "video")
    prefix = f"cannot read video {quote_path(p)}"
    check_video_structure(p, prefix, limit)
    if pil_animation(p):  # an APNG, animated WebP or AVIF: checked whole by Pillow (FFmpeg reads no animated WebP)
        return
    try:
        with av.open(str(p), metadata_errors="replace") as container:
            streams = video_streams(container)
            if not streams:
                raise InputError(f"{prefix}: the file has no video stream")
            cc = stream_codec(streams[0], prefix)
            width, height = int(cc.width or 0), int(cc.height or 0)
    except (InputError, ResourceError):
        raise
    except Exception as e:
        raise InputError(f"{prefix}: not a video this tool can read (unknown format, truncated or corrupt: "
                         f"{error_detail(e)})") from e
    if width <= 0 or height <= 0:
        raise InputError(f"{prefix}: the video stream has no frame size (corrupt header)")
    if width * height > limit:
        raise too_large("video", p, width, height, limit)
