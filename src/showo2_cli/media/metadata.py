"""Generation metadata stored in outputs: PNG text chunks, EXIF UserComment, GIF and container comments."""

from __future__ import annotations

import json
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from showo2_cli.errors import InputError

from .probe import PathLike, check_input_file, error_detail, quote_path

#: PNG tEXt key holding the compact JSON metadata written by :func:`write_image`.
METADATA_KEY = "showo2"
#: PNG tEXt key holding a human-readable one-line summary of the metadata.
PARAMETERS_KEY = "parameters"
_EXIF_IFD = 0x8769
_EXIF_USER_COMMENT = 0x9286
_EXIF_ASCII_PREFIX = b"ASCII\x00\x00\x00"


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
    text = " | ".join(parts)
    return text.encode("latin-1", "replace").decode("latin-1")


def exif_with_comment(text: str) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(_EXIF_IFD)[_EXIF_USER_COMMENT] = _EXIF_ASCII_PREFIX + text.encode("ascii")
    return exif.tobytes()


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
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_png_metadata(path: PathLike) -> dict[str, Any] | None:
    """The JSON dict stored by :func:`write_image` in a PNG's ``showo2`` text chunk, or None.

    None when the file is a PNG without (valid) metadata.

    Raises:
        InputError: the file is missing, unreadable or not a PNG.
    """
    p = check_input_file(path, "image")
    try:
        with Image.open(p) as im:
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
        raise InputError(
            f"cannot read metadata from {quote_path(p)}: not an image or video ({error_detail(e)})"
        ) from e
    return _parse_json_dict(tags.get("comment"))
