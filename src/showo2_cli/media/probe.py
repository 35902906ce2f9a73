"""Probing: what a media file is, whether it can be read, whether it is too large.

Files are judged by their content (headers, container structure), decoding as little as
possible. :func:`~showo2_cli.media.files.check_input_file` and :func:`resolve_max_pixels` are
the first checks of every reader in :mod:`showo2_cli.media`; :func:`check_video` checks a video
without decoding it.
"""

from __future__ import annotations

import os
import re
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

from PIL import Image, UnidentifiedImageError

from showo2_cli.errors import (
    InputError,
    ResourceError,
    UsageError,
    error_detail,
)

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
from .jpeg_markers import check_jpeg_markers

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
#: Largest image / video frame (width * height) read by default; env ``SHOWO2_MAX_PIXELS``.
DEFAULT_MAX_PIXELS: int = 8192 * 8192
#: Environment variable overriding :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS_ENV = "SHOWO2_MAX_PIXELS"


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------


def resolve_max_pixels(max_pixels: int | None) -> int:
    """``max_pixels`` if given, else ``$SHOWO2_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`; Pillow is
    let open images of that many pixels (:func:`_let_pillow_open`)."""
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw.replace("_", ""))
        except ValueError:
            max_pixels = 0
        if max_pixels <= 0:
            raise UsageError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, got {raw[:40]!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise UsageError(f"max_pixels must be a positive whole number, got {max_pixels!r}")
    _let_pillow_open(max_pixels)
    return max_pixels


_PILLOW_LIMIT_LOCK = threading.Lock()


def _let_pillow_open(limit: int) -> None:
    """Raise Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``: a warning above it,
    an error above twice it, 179 million pixels by default) to ``limit`` where that is higher: an
    image within a limit the user raised (``SHOWO2_MAX_PIXELS``, ``max_pixels``) was refused with
    Pillow's message, which nothing the user could set changed. Never lowered (another caller's
    larger limit stands; each reader checks its own limit from the header, before decoding), and
    left alone when Pillow's check is off (None)."""
    with _PILLOW_LIMIT_LOCK:
        if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = limit


def decompression_bomb(path: PathLike, exc: BaseException, limit: int | None = None) -> ResourceError | InputError:
    """PIL refused an image as a decompression bomb: say its size against OUR limit, not PIL's."""
    limit = resolve_max_pixels(limit)
    m = re.search(r"\((\d+) pixels\)", str(exc))
    if m and int(m.group(1)) > limit:
        beyond = _gif_beyond_screen("image", path, f"{int(m.group(1)):,} pixels", limit)
        if beyond is not None:
            return beyond
        return ResourceError(f"image {quote_path(path)} is too large: {int(m.group(1)):,} pixels is more than the "
                             f"limit of {limit:,} (set {MAX_PIXELS_ENV} to raise it)")
    return ResourceError(f"image {quote_path(path)} is too large: {error_detail(exc)}")


def metadata_refused(path: PathLike, exc: BaseException) -> InputError | None:
    """Pillow refused a PNG for its metadata, not its pixels: a compressed text chunk (zTXt, iTXt:
    XMP, ImageMagick's raw EXIF or XMP profile) or an ICC profile of more than 1 MB once
    decompressed, or text chunks of more than 64 MB (``PngImagePlugin.MAX_TEXT_CHUNK`` and
    ``MAX_TEXT_MEMORY``, its guards against zlib bombs). Said as such, with what to do: it was
    "not an image or video this tool can read" (or "truncated or corrupt")."""
    text = str(exc)
    if not isinstance(exc, ValueError) or ("MAX_TEXT_CHUNK" not in text and "MAX_TEXT_MEMORY" not in text):
        return None
    return InputError(f"cannot read image {quote_path(path)}: its metadata (a compressed text chunk or ICC profile "
                      "over 1 MB, or text over 64 MB) is more than Pillow reads; remove it (mogrify -strip, or "
                      "exiftool -all=) and try again")


def _gif_beyond_screen(kind: str, path: PathLike, reach: str, limit: int) -> InputError | None:
    """A GIF whose logical screen fits ``limit`` but whose frames ``reach`` past it (Pillow grows
    its canvas to hold a frame wherever the file places it): a 213-byte file placing a frame at
    60000,60000 was "too large ... set SHOWO2_MAX_PIXELS to raise it" (a limit to raise, exit 6),
    where browsers clip frames to the screen. Said to be corrupt (exit 3); None for another file."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
    except (OSError, TypeError, ValueError):  # "<array>", a file gone: the size is what is said
        return None
    if len(head) < 10 or head[:6] not in (b"GIF87a", b"GIF89a"):
        return None
    width, height = int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if not 0 < width * height <= limit:
        return None
    return InputError(f"cannot read {kind} {quote_path(path)}: truncated or corrupt (its frames reach {reach}, "
                      f"outside its logical screen of {width}x{height})")


def too_large(kind: str, path: PathLike, width: int, height: int, limit: int) -> ResourceError | InputError:
    beyond = _gif_beyond_screen(kind, path, f"{width}x{height}", limit)
    if beyond is not None:
        return beyond
    return ResourceError(
        f"{kind} {quote_path(path)} is too large: {width}x{height} = {width * height:,} pixels is more than "
        f"the limit of {limit:,} (set {MAX_PIXELS_ENV} to raise it)"
    )


# ---------------------------------------------------------------------------------------------
# probing
# ---------------------------------------------------------------------------------------------


def _pil_header(p: Path, max_pixels: int | None = None) -> tuple[str, tuple[int, int], bool] | None:
    """``(format, (w, h), animated)`` if PIL recognises the file from its header, else ``None``.

    Raises :class:`ResourceError` for a decompression bomb.
    """
    max_pixels = resolve_max_pixels(max_pixels)  # (Pillow is let open what the limit allows)
    try:
        with open(p, "rb") as fh:  # (Pillow's own walk of a JPEG's markers has no bound)
            check_jpeg_markers(fh, f"cannot read media file {quote_path(p)}")
    except OSError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd chunks/EXIF: a header is all we want
            with Image.open(p) as im:
                fmt = im.format or ""
                size = im.size
                animated = False
                if fmt in ANIMATED_FORMATS:
                    try:
                        animated = bool(getattr(im, "is_animated", False)) and int(im.n_frames) > 1
                    except Exception:  # a broken second frame: judged when decoding
                        animated = False
                return fmt, size, animated
    except Image.DecompressionBombError as e:
        raise decompression_bomb(p, e, max_pixels) from e
    except ValueError as e:
        refused = metadata_refused(p, e)
        if refused is not None:
            raise refused from None
        return None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        EOFError,
        IndexError,
        KeyError,
        TypeError,
    ):
        return None


def video_streams(container) -> list:
    """The container's video streams that are moving pictures: not the cover art an audio file
    carries as an ``attached_pic`` "video" stream, nor a ``dependent`` one that is only a part of
    a picture (a tile of a HEIF photo's grid)."""
    from av.stream import Disposition

    skip = int(Disposition.attached_pic) | int(Disposition.dependent)
    return [s for s in container.streams.video if not (int(s.disposition) & skip)]


def stream_codec(stream, prefix: str):
    """The codec context of a video stream, which PyAV leaves None where FFmpeg knows no decoder
    for the stream's codec (a corrupt codec tag, an unsupported codec): :class:`InputError`."""
    cc = stream.codec_context
    if cc is None:
        raise InputError(f"{prefix}: its video stream's codec is unknown (corrupt, or none FFmpeg decodes)")
    return cc


#: the ``ftyp`` brands of a HEIF still image (an iPhone's or a Galaxy's HEIC photo), and of a HEIF
#: image sequence: FFmpeg opens a still as a one-frame video, and a tiled one (as phones write
#: them) as one video stream a tile
_HEIF_STILL_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"mif1", b"mif2"})
_HEIF_SEQUENCE_BRANDS = frozenset({b"msf1", b"hevc", b"hevx", b"hevm", b"hevs"})
#: a JPEG XL file opens with its bare codestream's marker, or with its ISO container's signature box
_JXL_SIGNATURES = (b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")


def check_undecoded_photo(p: Path, prefix: str) -> None:
    """Refuse a photo in a format this tool does not decode, in one line that says what to do (it was
    "unknown format, truncated or corrupt"): a HEIF (HEIC) still image (Pillow reads none, and
    FFmpeg gives a tiled one's first tile as a one-frame video), a JPEG XL image (neither Pillow nor
    this FFmpeg decodes one: what `file` calls "JPEG XL codestream" or "container")."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return
    if head.startswith(_JXL_SIGNATURES):
        raise InputError(f"{prefix}: a JPEG XL image, which this tool does not decode: convert it to PNG or JPEG "
                         "first (djxl photo.jxl photo.png)")
    if len(head) < 16 or head[4:8] != b"ftyp":
        return
    body = head[8:max(16, min(int.from_bytes(head[:4], "big"), len(head)))]
    brands = {body[:4]} | {body[i:i + 4] for i in range(8, len(body) - 3, 4)}  # major, then compatible
    if brands & _HEIF_STILL_BRANDS and not brands & _HEIF_SEQUENCE_BRANDS:
        raise InputError(f"{prefix}: a HEIF (HEIC) photo, which this tool does not decode: convert it to JPEG "
                         "or PNG first (or open it with pillow-heif and pass the PIL image)")


def _av_container(p: Path) -> str | None:
    """``"video"`` if FFmpeg opens the file as a real container with a video stream, ``"other"``
    for a container without one (audio only, or a video track with no frame), else None."""
    import av

    try:
        with av.open(str(p), metadata_errors="replace") as container:
            names = set((container.format.name or "").split(","))
            if names & {"image2", "image2pipe"} or any(n.endswith("_pipe") for n in names):
                return None  # a single still image (or garbage with an image extension)
            if video_streams(container):
                return "video"
            if len(container.streams) > 0 or names & {"mov", "matroska", "webm", "avi"}:
                return "other"
            return None
    except Exception:
        return None


def av_video_info(p: Path) -> bool:
    """True if FFmpeg opens the file as a real video container with a video stream."""
    return _av_container(p) == "video"


def probe_kind(path: PathLike, max_pixels: int | None = None) -> str:
    """Return ``"image"`` or ``"video"`` for a media file, judged by its content, not its name.

    A GIF, PNG, WebP or AVIF with more than one frame (an animation: APNG, animated WebP or AVIF) is a video,
    with one frame an image; any other still format PIL reads is an image; a container FFmpeg
    opens with a video stream (mp4, webm, mov, mkv, avi, ...) is a video.

    Raises:
        InputError: missing path, a directory, an empty file, or content that is neither.
    """
    p = check_input_file(path, "media file")
    header = _pil_header(p, max_pixels)  # (a bomb is refused against the caller's pixel limit)
    if header is not None:
        fmt, _size, animated = header
        if fmt in ANIMATED_FORMATS:
            return "video" if animated else "image"
        if fmt != "MPEG":  # PIL only identifies MPEG streams, it cannot decode them
            return "image"
    check_undecoded_photo(p, f"cannot read media file {quote_path(p)}")
    found = _av_container(p)
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
        beyond = _gif_beyond_screen("video", p, f"{width}x{height}", MAX_GIF_PIXEL_FRAMES // max(frames, 1))
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
    header = _pil_header(p)
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
    header = _pil_header(Path(os.fspath(path)))
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
