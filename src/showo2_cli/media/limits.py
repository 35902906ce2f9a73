"""The pixel limit every media reader checks first, and what is said of a file beyond it.

:func:`resolve_max_pixels` is the limit (an argument, ``$SHOWO2_MAX_PIXELS`` or
:data:`DEFAULT_MAX_PIXELS`), which Pillow is let open; :func:`too_large` and
:func:`decompression_bomb` say a file is beyond it (or, for a GIF whose frames reach past its
screen, that it is corrupt: :func:`gif_beyond_screen`); :func:`metadata_refused` says Pillow's own
limits on a PNG's metadata refused it. Re-exported by :mod:`~showo2_cli.media.probe`.
"""

from __future__ import annotations

import os
import re
import threading

from PIL import Image

from showo2_cli.errors import InputError, ResourceError, UsageError, error_detail

from .files import PathLike, quote_path

#: Largest image / video frame (width * height) read by default; env ``SHOWO2_MAX_PIXELS``.
DEFAULT_MAX_PIXELS: int = 8192 * 8192
#: Environment variable overriding :data:`DEFAULT_MAX_PIXELS`.
MAX_PIXELS_ENV = "SHOWO2_MAX_PIXELS"


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
        beyond = gif_beyond_screen("image", path, f"{int(m.group(1)):,} pixels", limit)
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


def gif_beyond_screen(kind: str, path: PathLike, reach: str, limit: int) -> InputError | None:
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
    beyond = gif_beyond_screen(kind, path, f"{width}x{height}", limit)
    if beyond is not None:
        return beyond
    return ResourceError(
        f"{kind} {quote_path(path)} is too large: {width}x{height} = {width * height:,} pixels is more than "
        f"the limit of {limit:,} (set {MAX_PIXELS_ENV} to raise it)"
    )
