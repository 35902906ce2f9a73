"""What a media file's header says, decoding nothing: the still-image format, size and animation
Pillow reads (:func:`pil_header`), the video streams FFmpeg finds in a container
(:func:`video_streams`, :func:`av_container`) and their codec (:func:`stream_codec`), and the photo
formats this tool does not decode (:func:`check_undecoded_photo`). What
:func:`~showo2_cli.media.probe.probe_kind` and the video checks judge a file by; re-exported by
:mod:`~showo2_cli.media.probe`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from showo2_cli.errors import InputError

from .animation import ANIMATED_FORMATS
from .files import quote_path
from .jpeg_markers import check_jpeg_markers
from .limits import decompression_bomb, metadata_refused, resolve_max_pixels


def pil_header(p: Path, max_pixels: int | None = None) -> tuple[str, tuple[int, int], bool] | None:
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


def av_container(p: Path) -> str | None:
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
    return av_container(p) == "video"
