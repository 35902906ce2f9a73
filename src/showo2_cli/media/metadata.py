"""Generation metadata stored in outputs: PNG text chunks, EXIF UserComment, GIF and container comments."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

from PIL import Image, UnidentifiedImageError

from showo2_cli.errors import InputError

from .files import PathLike, check_input_file, quote_path
from .jpeg_markers import check_jpeg_markers
from .probe import error_detail

#: PNG tEXt key holding the compact JSON metadata written by :func:`write_image`.
METADATA_KEY = "showo2"
#: PNG tEXt key holding a human-readable one-line summary of the metadata.
PARAMETERS_KEY = "parameters"
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286
_EXIF_ASCII_PREFIX = b"ASCII\x00\x00\x00"
_EXIF_UNICODE_PREFIX = b"UNICODE\x00"
#: The most EXIF bytes (with its ``Exif\0\0`` header) a JPEG holds: one APP1 segment of 65535
#: bytes, less its 2-byte length.
JPEG_MAX_EXIF_BYTES = 65533
#: Key listing the texts shortened so that the metadata fits in a JPEG's EXIF.
TRUNCATED_KEY = "metadata_truncated"
#: The most bytes of a text tag (the ``comment``) in a QuickTime ``.mov``: FFmpeg's mov muxer
#: writes its length in 16 bits, so a longer one wrapped (96,220 bytes read back as the last 30,684)
MOV_MAX_TEXT_BYTES = 65535


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def metadata_json(metadata: dict[str, Any]) -> str:
    """Compact ASCII JSON (non-JSON values via ``str``)."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=True, default=str)


def metadata_summary(metadata: dict[str, Any]) -> str:
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
    # every character kept: Pillow's ``add_text`` stores text beyond Latin-1 as a UTF-8 iTXt chunk
    return " | ".join(parts).replace("\x00", " ")


def _exif_bytes(comment: bytes) -> bytes:
    exif = Image.Exif()
    exif.endian = ">"  # the byte order the UNICODE comment is written in
    exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = comment
    return exif.tobytes()


def _exif_comment(metadata: dict[str, Any]) -> bytes:
    """The smaller of the two UserComment encodings exiftool and Windows read: ASCII JSON (other
    characters as ``\\u`` escapes, 6 bytes each) or UTF-16 JSON (``UNICODE``, 2 or 4 bytes each)."""
    ascii_json = _EXIF_ASCII_PREFIX + metadata_json(metadata).encode("ascii")
    text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, default=str)
    unicode_json = _EXIF_UNICODE_PREFIX + text.encode("utf-16-be", "surrogatepass")
    return min(ascii_json, unicode_json, key=len)


def fit_metadata(metadata: dict[str, Any], size: Callable[[dict[str, Any]], int], max_bytes: int,
                 where: str) -> dict[str, Any]:
    """``metadata`` itself when ``size(metadata)`` (its bytes as a format stores it) is at most
    ``max_bytes``; else a copy whose longest texts (the prompts) are shortened, longest first,
    until it fits, their keys listed under :data:`TRUNCATED_KEY` (the sidecar ``.json`` keeps them
    whole). ``where`` names the place for the error when even that cannot make it fit."""
    used = size(metadata)
    if used <= max_bytes:
        return metadata
    shortened = dict(metadata)
    shortened[TRUNCATED_KEY] = []
    while used > max_bytes:
        texts = [(len(v), k) for k, v in shortened.items() if isinstance(v, str) and len(v) > 16]
        if not texts:
            raise ValueError(f"the metadata does not fit in {max_bytes} bytes of {where}")
        _, key = max(texts)
        value = shortened[key]
        over = used - max_bytes
        # at most 12 bytes a character (a surrogate pair as two escapes): cut at least that much,
        # and at most half, so that texts of like length end alike (the first one was cut to 16)
        keep = max(16, min(len(value) * 3 // 4, max(len(value) // 2, len(value) - over // 12 - 1)))
        shortened[key] = value[:keep]
        if key not in shortened[TRUNCATED_KEY]:
            shortened[TRUNCATED_KEY].append(key)
        used = size(shortened)
    return shortened


def exif_with_metadata(metadata: dict[str, Any], max_bytes: int | None = None) -> bytes:
    """EXIF whose UserComment holds ``metadata`` as JSON (see :func:`_exif_comment`).

    With ``max_bytes`` (a JPEG's :data:`JPEG_MAX_EXIF_BYTES`), metadata that does not fit is
    shortened by :func:`fit_metadata`.
    """
    if max_bytes is not None:
        metadata = fit_metadata(metadata, lambda m: len(_exif_bytes(_exif_comment(m))), max_bytes, "EXIF")
    return _exif_bytes(_exif_comment(metadata))


def container_comment(metadata: dict[str, Any], muxer: str) -> str:
    """A video container's ``comment`` tag: :func:`metadata_json`, shortened by
    :func:`fit_metadata` where the container holds less (:data:`MOV_MAX_TEXT_BYTES`)."""
    if muxer == "mov":
        metadata = fit_metadata(metadata, lambda m: len(metadata_json(m)), MOV_MAX_TEXT_BYTES, "a .mov comment")
    return metadata_json(metadata)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _parse_json_dict(text: str | bytes | None) -> dict[str, Any] | None:
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # (a text nested deeper than Python's recursion limit: not ours)
        return None
    return value if isinstance(value, dict) else None


def _user_comment_text(raw: Any, endian: str | None) -> str | bytes | None:
    """An EXIF UserComment's text: ``ASCII`` or ``UNICODE`` (UTF-16 in the EXIF's byte order)."""
    if not isinstance(raw, bytes):
        return raw
    if raw.startswith(_EXIF_UNICODE_PREFIX):
        codec = "utf-16-le" if endian == "<" else "utf-16-be"
        return raw[len(_EXIF_UNICODE_PREFIX) :].decode(codec, "replace")
    return raw[len(_EXIF_ASCII_PREFIX) :] if raw.startswith(_EXIF_ASCII_PREFIX) else raw


def read_png_metadata(path: PathLike) -> dict[str, Any] | None:
    """The JSON dict stored by :func:`write_image` in a PNG's ``showo2`` text chunk, or None.

    None when the file is a PNG without (valid) metadata.

    Raises:
        InputError: the file is missing, unreadable or not a PNG.
    """
    p = check_input_file(path, "image")
    try:
        with open(p, "rb") as fh:
            check_jpeg_markers(fh, f"cannot read PNG metadata from {quote_path(p)}")  # (before Pillow's unbounded walk)
            im = Image.open(fh)
            if im.format != "PNG":
                raise InputError(
                    f"cannot read PNG metadata from {quote_path(p)}: "
                    f"not a PNG file ({im.format or 'unknown'})"
                )
            value = im.info.get(METADATA_KEY)
            if value is None:
                text = getattr(im, "text", {}) or {}  # chunks after the image data
                value = text.get(METADATA_KEY)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"cannot read PNG metadata from {quote_path(p)}: not a PNG file or corrupt ({error_detail(e)})"
        ) from e
    return _parse_json_dict(value)


def read_metadata(path: PathLike) -> dict[str, Any] | None:
    """Metadata written by :func:`write_image` or :func:`write_video`, from any of their formats.

    PNG text chunk, JPEG/WebP EXIF UserComment, GIF comment, or mp4/webm/mov/mkv ``comment``
    tag. None when the file has no (valid) metadata.

    Raises:
        InputError: the file is missing or neither an image nor a video.
    """
    p = check_input_file(path, "media file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns about odd EXIF: a missing comment is not an error
            with open(p, "rb") as fh:
                check_jpeg_markers(fh, f"cannot read metadata from {quote_path(p)}")  # (Pillow's walk: unbounded)
                im = Image.open(fh)
                fmt = im.format
                if fmt == "PNG":
                    value = im.info.get(METADATA_KEY) or (getattr(im, "text", {}) or {}).get(METADATA_KEY)
                    return _parse_json_dict(value)
                if fmt == "GIF":
                    return _parse_json_dict(im.info.get("comment"))
                if fmt in ("JPEG", "WEBP", "MPO", "TIFF"):
                    exif = im.getexif()
                    raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_USER_COMMENT)
                    return _parse_json_dict(_user_comment_text(raw, exif.endian))
                return None
    except UnidentifiedImageError:
        pass
    except InputError:
        raise
    except Exception:
        return None
    import av

    try:
        with av.open(str(p), metadata_errors="replace") as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}
    except Exception as e:
        raise InputError(
            f"cannot read metadata from {quote_path(p)}: not an image or video ({error_detail(e)})"
        ) from e
    return _parse_json_dict(tags.get("comment"))
