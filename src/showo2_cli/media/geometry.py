"""Sizes, resizing, frames as a player shows them (display aspect and matrix), conversion between frames
and model tensors, and valid frame counts."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from showo2_cli.errors import UsageError, short
from showo2_cli.options import MAX_SIDE  # the largest side parse_size accepts
from showo2_cli.specs import WAN21, size_hw  # (size_hw: the resizes' target, at most MAX_SIDE)
from showo2_cli.specs import whole_count as check_count  # noqa: F401  (media.video uses it)

from .image import to_rgb

if TYPE_CHECKING:
    import torch


# ---------------------------------------------------------------------------------------------
# sizes and resizing
# ---------------------------------------------------------------------------------------------


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
            raise UsageError(
                f"{option} must be N or WIDTHxHEIGHT (e.g. 432 or 640x480), got '{short(raw)}'"
            ) from None
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


#: :func:`resize_center_crop` resizes the whole image (as torchvision does, exactly) unless that
#: makes it more than this many times the output's pixels; then only the kept region is resized
MAX_RESIZE_FACTOR = 16


def resize_center_crop(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize (bicubic, antialiased) so the image covers ``size``, then center-crop to it.

    For an int, the short side becomes ``size`` and the long side ``int(size * long / short)``,
    then the center ``size x size`` is cut with torchvision's offsets
    (``round((H - h) / 2)``): the same result as torchvision
    ``Resize(size, BICUBIC) + CenterCrop(size)`` on a PIL image. For ``(h, w)`` the image is
    scaled by ``max(h / H, w / W)`` the same way, then cropped to ``h x w``.
    """
    th, tw = size_hw(size)
    width, height = img.size
    if width < 1 or height < 1:
        raise UsageError("cannot resize an empty image")
    if th / height >= tw / width:
        new_h, new_w = th, max(tw, int(th * width / height))
    else:
        new_h, new_w = max(th, int(tw * height / width)), tw
    top = int(round((new_h - th) / 2.0))
    left = int(round((new_w - tw) / 2.0))
    if new_w * new_h > MAX_RESIZE_FACTOR * tw * th:
        # a very thin image (200000x1) would first become a huge one: resize only the region the
        # crop keeps (the same sampling positions; PIL still reads the pixels around it)
        return _resize_region(img, (new_w, new_h), (left, top, left + tw, top + th))
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if (new_w, new_h) == (tw, th):
        return img
    return img.crop((left, top, left + tw, top + th))


def _resize_region(img: Image.Image, size: tuple[int, int], region: tuple[int, int, int, int]) -> Image.Image:
    """``img.resize(size, BICUBIC).crop(region)`` without making the whole resized image.

    An enlarged image is resized one pass at a time, rows (horizontal) first, as Pillow's whole
    resize does, each pass rounded to 8 bits: one ``resize(box=)`` over both axes did not give those
    pixels once its box started below the top (a 30x20000 strip at 432 was up to 23/255 off on two
    thirds of its pixels, against torchvision's ``Resize`` + ``CenterCrop``). The pixels it reads
    (the bicubic window, 2 pixels) are cut out first, the boxes taken relative to the cut: Pillow
    takes a box in float32, whose rounding of a large offset moved the weights. A reduced image
    keeps the one call, whose pass order (Pillow's choice, by the sizes) matches the whole resize.
    """
    width, height = img.size
    (new_w, new_h), (left, top, right, bottom) = size, region
    out_w, out_h = right - left, bottom - top
    sx, sy = width / new_w, height / new_h
    x0, x1, y0, y1 = left * sx, right * sx, top * sy, bottom * sy
    bicubic = Image.Resampling.BICUBIC
    if new_w <= width:  # (cut out, it was another pass order: up to 14/255 off for 640x12000)
        return img.resize((out_w, out_h), bicubic, box=(x0, y0, x1, y1))
    c0, c1 = max(0, math.floor(x0 - 3.0)), min(width, math.ceil(x1 + 3.0))  # the window: 2 pixels
    r0, r1 = max(0, math.floor(y0 - 3.0)), min(height, math.ceil(y1 + 3.0))
    cut = img.crop((c0, r0, c1, r1)) if (c0, r0, c1, r1) != (0, 0, width, height) else img
    rows = cut.resize((out_w, r1 - r0), bicubic, box=(x0 - c0, 0, x1 - c0, r1 - r0))
    return rows.resize((out_w, out_h), bicubic, box=(0, y0 - r0, out_w, y1 - r0))


def resize_and_pad(img: Image.Image, size: int | tuple[int, int]) -> Image.Image:
    """Resize (bicubic) so the whole image fits in ``size`` and center it on a black canvas.

    The limiting side matches the target exactly; the other is ``ceil(side * scale)`` (capped
    at the target), with ``scale`` the float ``target / side`` as the official
    ``resize_and_pad_image`` computes it: its rounding decides the ceiling (640x360 at 432 is
    ``ceil(360 * 0.675) = ceil(243.00000000000003)`` = 244 rows, not 243). The canvas is
    ``size x size`` for an int, ``h x w`` for ``(h, w)``; the image is pasted at
    ``((W - w') // 2, (H - h') // 2)``. The result is RGB.
    """
    th, tw = size_hw(size)
    width, height = img.size
    if width < 1 or height < 1:
        raise UsageError("cannot resize an empty image")
    if img.mode != "RGB":
        img = to_rgb(img)
    scale_w, scale_h = tw / width, th / height
    if scale_w <= scale_h:
        new_w, new_h = tw, min(th, max(1, math.ceil(height * scale_w)))
    else:
        new_w, new_h = min(tw, max(1, math.ceil(width * scale_h))), th
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if (new_w, new_h) == (tw, th):
        return img
    canvas = Image.new("RGB", (tw, th), (0, 0, 0))
    canvas.paste(img, ((tw - new_w) // 2, (th - new_h) // 2))
    return canvas


# ---------------------------------------------------------------------------------------------
# video frames as a player shows them
# ---------------------------------------------------------------------------------------------


#: sample aspect ratios outside these bounds are taken as corrupt headers and ignored (real ones,
#: DV and HDV to anamorphic film, lie between 1/2 and 2)
_SAR_BOUNDS = (Fraction(1, 10), Fraction(10))


def display_width(stream: Any, width: int) -> int:
    """The width a player shows ``width`` stored pixels at: scaled by the stream's sample aspect
    ratio (non-square pixels: a 720x480 DVD frame with SAR 32:27 is shown 853x480, as ffmpeg's
    ``scale=iw*sar:ih``); ``width`` when the pixels are square or the ratio is unset or absurd."""
    for owner in (stream, getattr(stream, "codec_context", None)):
        try:
            sar = Fraction(owner.sample_aspect_ratio) if owner is not None and owner.sample_aspect_ratio else None
        except Exception:
            sar = None
        if sar is not None and sar > 0:
            if sar == 1 or not _SAR_BOUNDS[0] <= sar <= _SAR_BOUNDS[1]:
                return width
            return max(1, int(round(width * sar)))
    return width


def _display_matrix(frame: Any) -> tuple[int, int, int, int] | None:
    """The 2x2 part ``(a, b, c, d)`` of a frame's display matrix (16.16 fixed point), if it has one."""
    try:
        from av.sidedata.sidedata import Type

        data = frame.side_data.get(Type.DISPLAYMATRIX)
        if data is None:
            return None
        m = np.frombuffer(bytes(data), dtype=np.int32)
        return int(m[0]), int(m[1]), int(m[3]), int(m[4])
    except Exception:  # an older PyAV, odd side data: the rotation alone
        return None


Orientation = tuple[tuple[int, int, int, int] | None, int]


def display_orientation(frame: Any) -> Orientation:
    """What :func:`orient` applies to ``frame``: its display matrix, else its rotation. The frames
    of a stream share them (the container's display matrix): read them from one frame and pass
    them on, as reading a PyAV frame's side data ties the frame into a reference cycle that only
    the garbage collector frees (read for every frame, hundreds of decoded frames were held at once:
    3 MB each at 1080p, 12 MB at 4K)."""
    matrix = _display_matrix(frame)
    return matrix, (0 if matrix is not None else int(getattr(frame, "rotation", 0) or 0))


def orient(arr: np.ndarray, frame: Any = None, orientation: Orientation | None = None) -> np.ndarray:
    """``arr`` as a player shows ``frame``: its display matrix applied in multiples of 90 degrees,
    mirroring included (a stored point ``(x, y)`` is shown at ``(a x + c y, b x + d y)``, FFmpeg's
    convention; a mirrored selfie has ``a < 0``), else its rotation (degrees counter-clockwise);
    another angle is left as stored. ``orientation``: :func:`display_orientation` of a frame of
    the same stream, read once (then ``frame`` is not looked at)."""
    matrix, rotation = orientation if orientation is not None else display_orientation(frame)
    if matrix is not None:
        a, b, c, d = (0 if abs(v) < 64 else (1 if v > 0 else -1) for v in matrix)  # signs (zero: < 1/1000)
        if a == d == 0 and b and c:  # a quarter turn: rows become columns
            shown = arr.transpose(1, 0, 2)[::b, ::c]
        elif b == c == 0 and a and d:
            shown = arr[::d, ::a]
        else:
            return arr
        return np.ascontiguousarray(shown) if shown is not arr else arr
    if not rotation or rotation % 90:
        return arr
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(arr, k=k)) if k else arr


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

    if not (arr.flags.c_contiguous and arr.flags.writeable):  # torch takes neither as it is
        arr = np.array(arr, copy=True)
    x = torch.from_numpy(arr).permute(3, 0, 1, 2).to(torch.float32, copy=True)
    return x.div_(255.0).sub_(0.5).div_(0.5)  # in place: one float32 copy of the frames, not three


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


# frame counts of the Wan2.1 VAE (4x temporal compression), for when no model is at hand: the formulas
# are ModelSpec's (with a loaded model, ``model.spec.latent_frames(n)`` ...)
is_valid_frames = WAN21.is_valid_frames
round_frames = WAN21.round_frames
latent_frames = WAN21.latent_frames
pixel_frames = WAN21.pixel_frames
