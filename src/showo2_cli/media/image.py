"""Reading and writing still images: EXIF orientation, conversion of any mode to RGB, metadata."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from showo2_cli.errors import InputError, OutputError, ResourceError

from . import jpeg_markers
from .animation import ANIMATED_FORMATS, default_image
from .files import PathLike, check_input_file, quote_path
from .metadata import (
    JPEG_MAX_EXIF_BYTES,
    METADATA_KEY,
    PARAMETERS_KEY,
    exif_with_metadata,
    metadata_json,
    metadata_summary,
)
from .outputs import atomic_output, extension_refused, is_write_error, write_failed
from .probe import (
    av_video_info,
    check_undecoded_photo,
    decompression_bomb,
    error_detail,
    metadata_refused,
    resolve_max_pixels,
    too_large,
)

#: Extensions :func:`write_image` can write.
IMAGE_WRITE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
#: Extension -> PIL format name, for the extensions :func:`write_image` can write.
PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
_READ_DESCRIPTION = "a PNG/JPEG/WebP/BMP/TIFF/GIF image"
#: the still-image formats Pillow may open: EPS is left out (Pillow hands it to Ghostscript, a
#: program that has run code from hostile files), and so are videos (MPEG, FLI), scientific
#: containers and formats that need outside handlers (FITS, GRIB, BUFR, HDF5, WMF)
READ_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "CUR", "ICNS", "PCX",
                "SGI", "SUN", "PSD", "QOI", "AVIF", "JPEG2000", "DDS", "IM", "XBM", "XPM")
_EXIF_ORIENTATION = 0x0112
_ANIMATION_NAMES = {"GIF": "GIF", "PNG": "PNG", "WEBP": "WebP", "AVIF": "AVIF"}


# ---------------------------------------------------------------------------------------------
# reading
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


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; alpha is dropped (not composited)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16"):  # 16-bit by definition: 0-65535, whatever the values (a dark image stays dark)
        wide = np.asarray(im).astype(np.int64)
        gray = ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")
    if mode in ("I", "F"):  # 32-bit: 8-bit, 16-bit or [0, 1] data, judged by its range
        gray = _scale_to_uint8(np.asarray(im))
        return Image.fromarray(np.repeat(gray[..., None], 3, axis=2), "RGB")
    if mode == "PA" or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")  # resolves palette transparency; the alpha is dropped below
    elif mode == "La":
        im = im.convert("LA")
    return im.convert("RGB")


def _is_tensor(value) -> bool:
    torch = sys.modules.get("torch")  # never imported here for this: a tensor means torch is loaded
    return torch is not None and isinstance(value, torch.Tensor)


def _array_layout(shape: tuple) -> tuple[tuple, int, int]:
    """(how to index it, height, width) of an image array's shape: (H, W, C), (C, H, W), (H, W),
    with one leading batch axis of 1 allowed; read from the shape alone, before any copy."""
    lead = ()
    if len(shape) == 4 and shape[0] == 1:
        lead, shape = (0,), shape[1:]
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        ok, (h, w), channels_first = True, shape[1:], True
    else:
        ok, (h, w), channels_first = len(shape) in (2, 3), (shape[:2] if len(shape) >= 2 else (0, 0)), False
        ok = ok and (len(shape) == 2 or shape[-1] in (1, 3, 4))
    if not ok or 0 in shape:
        raise ValueError(f"an image array must be (H, W, 3) or (3, H, W), got shape {tuple(shape)}")
    return (lead, channels_first), int(h), int(w)


def array_image(value, max_pixels: int | None = None) -> Image.Image:
    """An image array or tensor read by its dtype, as diffusers' image processor reads it: uint8
    0-255, 16-bit 0-65535, other integers 0-255, floats in [0, 1]; (H, W, C), (C, H, W) or (H, W).
    Its size is checked against ``max_pixels`` from the shape alone, before anything is copied."""
    if _is_tensor(value) and (value.is_meta or value.layout != sys.modules["torch"].strided):
        raise TypeError(f"an image tensor must hold its values (a dense CPU or GPU tensor), got a "
                        f"{'meta' if value.is_meta else 'sparse'} tensor")
    (lead, channels_first), h, w = _array_layout(tuple(np.shape(value)))
    limit = resolve_max_pixels(max_pixels)
    if h * w > limit:
        raise too_large("image array", "<array>", w, h, limit)
    if _is_tensor(value):  # uint8 stays 0-255 (torchvision's read_image); floats as they are
        value = value.detach()[lead].cpu()
        arr = value.double().numpy() if value.is_floating_point() else value.numpy()
    else:
        arr = np.asarray(value)[lead]
    if arr.dtype.kind not in "buif":  # complex, dates, objects: not pixels
        raise TypeError(f"an image array must hold numbers, got dtype {arr.dtype}")
    if channels_first:
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 2:  # 16-bit pixels (PIL 'I;16', PNG 16-bit), either byte order
        arr = (arr.astype(np.float64) / 65535.0)
    elif arr.dtype.kind == "b":
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8 and arr.dtype.kind in "iu":  # other integers: 0-255 pixels
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"an integer image array must hold pixel values 0 to 255, got {arr.min()} to {arr.max()}")
        arr = arr.astype(np.uint8)
    if arr.dtype != np.uint8:
        arr = np.asarray(arr, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ValueError("an image array must hold finite values")
        low, high = float(arr.min()), float(arr.max())
        if low < -1e-3 or high > 1.0 + 1e-3:  # diffusers' convention for floats: [0, 1]
            raise ValueError(f"a float image must hold values in [0, 1] (got {low:.3g} to {high:.3g}): pass uint8 "
                             "for 0-255 pixels, or (x + 1) / 2 for [-1, 1] tensors")
        arr = (arr.clip(0.0, 1.0) * 255.0).round().astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr))


def is_animated(image: Image.Image) -> bool:
    """A PIL image holding an animation: a GIF, APNG, WebP or AVIF of several frames. Not the other
    formats Pillow opens with several frames: a JPEG with a second picture in its MPF data (the gain
    map of an Ultra HDR phone photo, a camera's preview: Pillow's ``MPO``) or a multi-page TIFF is
    one picture, its first frame, as its file is read by path."""
    return image.format in ANIMATED_FORMATS and bool(getattr(image, "is_animated", False)) and \
        int(getattr(image, "n_frames", 1)) > 1


def image_input(source, max_pixels: int | None = None, what: str = "image") -> Image.Image:
    """An image given to the library as an RGB PIL image: a path (:func:`read_image`), a PIL image
    (converted as a file's pixels are: EXIF orientation applied, 16-bit scaled, alpha dropped; a JPEG
    whose file is still open judged as :func:`read_image` judges one) or
    an array or tensor
    (:func:`array_image`).

    Raises:
        TypeError: not a path, PIL image, array or tensor.
        ValueError: an array of another shape or value range; an animated PIL image (several
            frames: a video's place takes it).
        ResourceError: more pixels than ``max_pixels`` (default ``$SHOWO2_MAX_PIXELS``).
        InputError: a PIL JPEG whose header claims more than its data holds.
    """
    if isinstance(source, (str, os.PathLike)):
        return read_image(source, max_pixels=max_pixels)
    if isinstance(source, np.ndarray) or _is_tensor(source):
        return to_rgb(array_image(source, max_pixels))
    if not isinstance(source, Image.Image):
        raise TypeError(f"{what} must be a path, a PIL image, an array or a tensor, got {type(source).__name__}")
    if is_animated(source):  # (its frames as a video's: an APNG's default image is none of them)
        count = int(source.n_frames) - default_image(source)
        raise ValueError(f"{what} is an animated image of {count} frame{'s' * (count != 1)}: give one frame "
                         "(image.seek(k), then image.copy()), or pass it where a video goes")
    limit = resolve_max_pixels(max_pixels)
    if source.width * source.height > limit:
        raise too_large(what, "<PIL image>", source.width, source.height, limit)
    if source.format in ("JPEG", "MPO") and getattr(source, "fp", None) is not None:
        try:  # (a JPEG opened from bytes keeps its file: judged as a file is, loaded or not)
            _check_jpeg_data(source.fp, f"cannot read {what} <PIL image>")
        except (OSError, ValueError):  # its file closed: nothing to judge
            pass
    try:
        source.load()  # a lazily opened image whose file was closed fails here, with its reason
    except (OSError, ValueError) as e:
        raise ValueError(f"{what}: the PIL image cannot be read ({error_detail(e)}); load() it while its file "
                         "is open") from None
    return to_rgb(_upright(source))


def _upright(im: Image.Image) -> Image.Image:
    """``im`` as displayed: its EXIF orientation applied (``ImageOps.exif_transpose``, which drops the
    tag, so an image already made upright that way is left as it is), as diffusers' ``load_image``
    does; unchanged when it has none or it cannot be applied."""
    if _exif_orientation(im) not in range(2, 9):
        return im
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return ImageOps.exif_transpose(im)
        except Exception:  # odd EXIF: keep the stored orientation
            return im


def _exif_orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_EXIF_ORIENTATION)
        return int(value) if value is not None else 1
    except Exception:  # corrupt EXIF: ignore the orientation
        return 1


#: the DCT scales a JPEG can be decoded at (libjpeg's scaled IDCT through Pillow's ``draft``): a
#: reduced decode is at most this many times smaller in pixels (1/8 of each side)
JPEG_REDUCTION = 64


#: the JPEG frames (SOF markers) libjpeg decodes reduced in one pass: sequential DCT, Huffman
#: (baseline, extended) or arithmetic coded; progressive and lossless ones are not among them
SEQUENTIAL_JPEG = (0xC0, 0xC1, 0xC9)


def _reduced_jpeg(im: Image.Image, min_side: int, limit: int) -> bool:
    """Set a JPEG over ``limit`` pixels to decode reduced in the DCT (Pillow's ``draft``: 1/2, 1/4 or
    1/8 scale, the full image never allocated) at the smallest scale whose short side is still at
    least ``min_side``, when that many pixels fit ``limit``; False (nothing set) otherwise. Only a
    sequential JPEG in one scan (:data:`SEQUENTIAL_JPEG`): a progressive one, or one whose
    components come in separate scans, holds every coefficient of the full image while it decodes
    (libjpeg's whole-image coefficient buffer: 2 bytes a pixel and component, as much memory as the
    full decode or more), and a lossless one has no DCT to reduce in (libjpeg fails on it), so
    they are refused as before."""
    if im.format not in ("JPEG", "MPO") or im.info.get("progressive") or im.info.get("progression") \
            or _jpeg_coding(im) not in [(sof, im.layers) for sof in SEQUENTIAL_JPEG]:
        return False
    width, height = im.size
    short = min(width, height)
    if short < min_side or width * height > JPEG_REDUCTION * limit:
        return False
    want = (-(-width * min_side // short), -(-height * min_side // short))  # the short side at min_side
    scale = min(width // want[0], height // want[1])
    scale = next((s for s in (8, 4, 2) if scale >= s), 1)
    if scale == 1 or -(-width // scale) * -(-height // scale) > limit:
        return False
    im.draft(None, want)
    return im.size[0] * im.size[1] <= limit and min(im.size) >= min_side


def _jpeg_coding(im: Image.Image) -> tuple[int | None, int | None]:
    """A JPEG's frame marker and how many components its first scan holds (:func:`walk_jpeg_markers`;
    None where not found or past its bound)."""
    frame, components, within = jpeg_markers.walk_jpeg_markers(im.fp)
    return (frame, components) if within else (None, None)


def read_image(path: PathLike, max_pixels: int | None = None, *, min_side: int | None = None) -> Image.Image:
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
    * ``min_side``: the short side the caller needs at least (understanding: the model's size, to
      which it resizes every image). A baseline JPEG (a phone photo) over ``max_pixels`` is then
      decoded reduced in the DCT to the smallest scale (1/2, 1/4, 1/8) whose short side is still at
      least that, when that fits the limit, instead of being refused: a 48 MP photo is decoded at
      about 3 MP without ever allocating the full image. An image within the limit is decoded in
      full as before (a reduced decode differs slightly: 0.3 to 0.5/255 on average, at most 14/255,
      once resized to 432 px, for 12 and 24 MP photos).

    Raises:
        InputError: missing/empty/unreadable file, not an image, truncated or corrupt data,
            or a video (including an animated GIF, APNG, WebP or AVIF).
        ResourceError: too many pixels.
    """
    limit = resolve_max_pixels(max_pixels)
    p = check_input_file(path, "image")
    prefix = f"cannot read image {quote_path(p)}"
    try:
        with open(p, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's warnings (corrupt EXIF, odd chunks) are not errors
            reach = limit * (JPEG_REDUCTION if min_side else 1)  # the largest header this read may take
            if reach <= (Image.MAX_IMAGE_PIXELS or 0):
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            else:
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            jpeg_markers.check_jpeg_markers(fh, prefix)  # (Pillow's own walk of them has no bound)
            try:
                im = Image.open(fh, formats=READ_FORMATS)
            except UnidentifiedImageError as e:
                check_undecoded_photo(p, prefix)
                if av_video_info(p):
                    raise InputError(f"{prefix}: it is a video, not an image") from e
                raise InputError(
                    f"{prefix}: not {_READ_DESCRIPTION} (unknown format, truncated or corrupt)"
                ) from e
            width, height = im.size
            if width * height > limit and not (min_side and _reduced_jpeg(im, min_side, limit)):
                raise too_large("image", p, width, height, limit)
            if im.format == "MPEG":
                raise InputError(f"{prefix}: it is a video, not an image")
            if is_animated(im):
                raise InputError(f"{prefix}: it is an animated {_ANIMATION_NAMES[im.format]} (a video), not an image")
            if width <= 0 or height <= 0:
                raise InputError(f"{prefix}: the image has no pixels ({width}x{height})")
            if im.format in ("JPEG", "MPO"):
                _check_jpeg_scans(p, width * height, prefix)
                _check_jpeg_data(fh, prefix)
            if im.format == "TIFF":
                _check_not_raw_preview(im, prefix)
            im.load()
            orientation = _exif_orientation(im)  # while the file is open (PNG eXIf may follow the data)
    except (InputError, ResourceError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise decompression_bomb(p, e, limit) from e
    except MemoryError as e:
        raise ResourceError(f"image {quote_path(p)} is too large to decode in memory") from e
    except PermissionError as e:
        raise InputError(f"{prefix}: permission denied") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise metadata_refused(p, e) or InputError(f"{prefix}: truncated or corrupt file ({error_detail(e)})") from e

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if orientation in range(2, 9):
                try:
                    im = ImageOps.exif_transpose(im)
                except Exception:  # odd EXIF: keep the stored orientation
                    pass
            return to_rgb(im)
    except MemoryError as e:
        raise ResourceError(f"image {quote_path(p)} is too large to convert in memory") from e
    except Exception as e:
        raise InputError(f"{prefix}: unsupported colour mode {im.mode!r} ({error_detail(e)})") from e


def _check_not_raw_preview(im: Image.Image, prefix: str) -> None:
    """Refuse a camera raw photo: a DNG (phones' RAW and ProRAW, Lightroom's exports) or another raw
    built as a TIFF (NEF, ARW, ...) opens with a small preview whose first page Pillow reads; it was
    captioned, encoded and animated silently, at its 256x171 or so. A TIFF whose first page says it
    is DNG, or a reduced-resolution copy of another image (NewSubFileType bit 0), is refused so."""
    tags = getattr(im, "tag_v2", {})
    subfile = tags.get(254, 0)
    if 50706 in tags or (isinstance(subfile, int) and subfile & 1):
        kind = "a camera raw (DNG) photo" if 50706 in tags else "a reduced-resolution copy of another image (a raw photo?)"
        raise InputError(f"{prefix}: {kind}: Pillow reads only its {im.size[0]}x{im.size[1]} preview, and this tool "
                         "develops no raw photos: export it as JPEG or PNG first (darktable, Lightroom, rawpy)")


#: a progressive JPEG is decoded scan by scan, each pass over the whole image: an ordinary one has
#: about 10 scans, a crafted one thousands (minutes of CPU for a few hundred KB). Scans x pixels
#: is bounded by this (256 scans at 64 megapixels), and scans by MAX_JPEG_SCANS.
MAX_JPEG_SCAN_PIXELS = 2**34
MAX_JPEG_SCANS = 1000


def _check_jpeg_scans(p: Path, pixels: int, prefix: str) -> None:
    """Count the start-of-scan markers (``FF DA``: entropy-coded data stuffs every ``FF`` with
    ``00``, so the pair appears only as a marker) and refuse a scan bomb before decoding."""
    cap = min(MAX_JPEG_SCANS, max(64, MAX_JPEG_SCAN_PIXELS // max(pixels, 1)))
    scans, tail = 0, b""
    with open(p, "rb") as fh:
        while scans <= cap:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            block = tail + chunk
            scans += block.count(b"\xff\xda") - tail.count(b"\xff\xda")
            tail = block[-1:]
    if scans > cap:
        raise InputError(f"{prefix}: a JPEG with more than {cap} scans for {pixels} pixels (a decoding bomb; "
                         "ordinary ones have about 10)")


def _check_jpeg_data(fh, prefix: str) -> None:
    """Refuse a JPEG whose frame claims more blocks than its file holds data for
    (:func:`~showo2_cli.media.jpeg_markers.missing_scan_data`): libjpeg fills the missing blocks with
    gray and Pillow says nothing, so a small picture whose header lies was read at the size it claims."""
    short = jpeg_markers.missing_scan_data(fh)
    if short is not None:
        width, height, needed, held = short
        raise InputError(f"{prefix}: truncated or corrupt JPEG (its header says {width}x{height}, which takes at "
                         f"least {needed:,} bytes of image data; the file holds {held:,})")


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _as_rgb_array(pixels: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(pixels, Image.Image):
        return np.asarray(to_rgb(pixels), dtype=np.uint8)
    arr = np.asarray(pixels)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"pixels must be uint8 (H, W, 3), got {arr.dtype} {tuple(arr.shape)}")
    return np.ascontiguousarray(arr)


def write_image(
    path: PathLike,
    pixels: np.ndarray | Image.Image,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    *,
    lossless: bool = False,
    quality: int = 95,
) -> Path:
    """Write an RGB image atomically; the format comes from the extension.

    * ``.png``: lossless; ``metadata`` goes in tEXt chunks: ``showo2`` (compact JSON, read
      back with :func:`read_png_metadata`) and ``parameters`` (a one-line human summary).
    * ``.jpg``/``.jpeg``: ``quality`` (0-100, default 95; from 90 the colour is not subsampled,
      4:4:4, below it 4:2:0); ``.webp``: the same, or lossless with
      ``lossless=True``. For both, the JSON goes in the EXIF UserComment tag (ASCII, or UTF-16
      where shorter); a JPEG's EXIF holds 64 KB: longer prompts are shortened to fit and listed
      under ``metadata_truncated``.
    * ``.bmp``: no metadata.

    Args:
        pixels: ``uint8 (H, W, 3)`` (or ``(1, H, W, 3)``), or a PIL image (converted to RGB).

    Raises:
        UsageError: unknown extension (the message lists the supported ones).
        OutputError: the file cannot be written (see :func:`atomic_output`).
    """
    p = Path(os.fspath(path))
    ext = p.suffix.lower()
    if ext not in PIL_FORMATS:
        raise extension_refused(path, f"use {', '.join(IMAGE_WRITE_EXTS)} for an image")
    arr = _as_rgb_array(pixels)
    from .video_write import check_output_size  # (video_write imports this module)

    check_output_size(p, arr.shape[0], arr.shape[1])
    fmt = PIL_FORMATS[ext]
    params: dict[str, Any] = {}
    if fmt == "PNG":
        if metadata:
            info = PngImagePlugin.PngInfo()
            info.add_text(METADATA_KEY, metadata_json(metadata))
            info.add_text(PARAMETERS_KEY, metadata_summary(metadata))
            params["pnginfo"] = info
    elif fmt == "JPEG":
        # full-resolution colour at high quality, as ImageMagick does from 90: libjpeg's default
        # 4:2:0 halves the chroma whatever the quality (a red edge on white was 29/255 off at 95)
        params.update(quality=int(quality), subsampling="4:4:4" if quality >= 90 else "4:2:0")
        if metadata:
            params["exif"] = exif_with_metadata(metadata, JPEG_MAX_EXIF_BYTES)
    elif fmt == "WEBP":
        params.update(quality=100 if lossless else int(quality), lossless=bool(lossless), method=4)
        if metadata:
            params["exif"] = exif_with_metadata(metadata)
    image = Image.fromarray(arr, "RGB")
    with atomic_output(p, overwrite) as tmp:
        try:
            image.save(tmp, format=fmt, **params)
        except Exception as e:  # a full disk said as every writer says it
            raise write_failed(p, e, "image") if is_write_error(e) else \
                OutputError(f"cannot write image {quote_path(p)}: {error_detail(e)}") from e
    return p
