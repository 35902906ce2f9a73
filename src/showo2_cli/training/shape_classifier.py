"""The shapes world's classifiers: the scene attributes of an image or a video of
:mod:`.shapes`, recovered from plain pixel statistics (no model), and :func:`score`, a
classification against the expected :class:`~.shapes.Scene`. See :mod:`.shapes` ("Classifiers")
for what they measure; they are re-exported there.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from .shapes import BACKGROUNDS, COLOURS

if TYPE_CHECKING:
    from .shapes import Scene


_BG_NAMES = tuple(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[k] for k in _BG_NAMES], dtype=np.float64)
_FG_NAMES = tuple(COLOURS)
_FG_RGB = np.array([COLOURS[k] for k in _FG_NAMES], dtype=np.float64)

# Shape templates: (fill ratio, row width / bbox width at 15%, 50% and 85% of the bbox height).
_TEMPLATES: dict[str, np.ndarray] = {
    "circle": np.array([np.pi / 4, 2 * np.sqrt(0.15 * 0.85), 1.0, 2 * np.sqrt(0.15 * 0.85)]),
    "square": np.array([1.0, 1.0, 1.0, 1.0]),
    "triangle": np.array([0.5, 0.15, 0.5, 0.85]),
}
_BANDS = ((0.10, 0.20), (0.45, 0.55), (0.80, 0.90))

_MIN_THRESHOLD = 30.0  # RGB distance below which a pixel is never foreground
_MIN_FOREGROUND = 0.005  # fraction of the image below which there is no foreground
_ROW_KEEP = 0.03  # rows/columns with fewer foreground pixels than this x the fullest are ignored


def _is_unit_float(a: np.ndarray) -> bool:
    """Whether ``a`` holds floats in ``[0, 1]`` (to be scaled to 0..255)."""
    if np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_):
        return False
    finite = a[np.isfinite(a)]
    return finite.size > 0 and float(finite.max()) <= 1.0


def _as_rgb(pixels: np.ndarray, unit: bool | None = None) -> np.ndarray:
    """``(..., H, W, 3)`` float64 in 0..255 from uint8/float RGB, RGBA or grayscale ``(H, W)``.

    ``unit``: whether floats are in ``[0, 1]``; ``None`` decides from the array itself.
    """
    a = np.asarray(pixels)
    if a.ndim == 2 or (a.ndim >= 3 and a.shape[-1] not in (1, 3, 4)):
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    elif a.shape[-1] == 4:
        a = a[..., :3]
    if unit is None:
        unit = _is_unit_float(a)
    out = a.astype(np.float64)
    if not np.issubdtype(a.dtype, np.integer):
        out = np.nan_to_num(out)
    return out * 255.0 if unit else out


def _box3(img: np.ndarray) -> np.ndarray:
    """3x3 mean filter with edge replication (``(H, W, C)``)."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    return sum(p[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9.0


def _nearest(rgb: np.ndarray, names: tuple[str, ...], table: np.ndarray) -> str:
    return names[int(np.argmin(((table - rgb) ** 2).sum(axis=1)))]


def _analyse(img: np.ndarray) -> dict[str, Any]:
    """Classification of one ``(H, W, 3)`` float image plus the foreground centroid."""
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        return {"background": None, "colour": None, "shape": None, "fill": None, "bbox": None,
                "centroid": None, "foreground": 0.0, "widths": None}
    ring = max(1, min(h, w) // 32)
    border = np.concatenate([
        img[:ring].reshape(-1, 3), img[-ring:].reshape(-1, 3),
        img[ring:-ring or None, :ring].reshape(-1, 3), img[ring:-ring or None, -ring:].reshape(-1, 3),
    ])
    bg_rgb = np.median(border, axis=0)
    out: dict[str, Any] = {
        "background": _nearest(bg_rgb, _BG_NAMES, _BG_RGB),
        "colour": None, "shape": None, "fill": None, "bbox": None, "centroid": None,
        "foreground": 0.0, "widths": None,
    }
    # Denoise before thresholding, as much as the border's noise asks for (clean images stay sharp).
    noise = 1.4826 * float(np.median(np.abs(border - bg_rgb)))
    passes = 0 if noise < 3 or min(h, w) < 3 else 1 if noise < 15 else 2 if noise < 30 else 3
    smooth = img
    for _ in range(passes):
        smooth = _box3(smooth)
    dist = np.sqrt(((smooth - bg_rgb) ** 2).sum(axis=-1))
    threshold = max(_MIN_THRESHOLD, 0.5 * float(np.percentile(dist, 99)))
    mask = dist > threshold
    rows = mask.sum(axis=1)
    cols = mask.sum(axis=0)
    if mask.sum() < max(1.0, _MIN_FOREGROUND * h * w):
        return out
    keep_r = np.flatnonzero(rows >= max(1.0, _ROW_KEEP * rows.max()))
    keep_c = np.flatnonzero(cols >= max(1.0, _ROW_KEEP * cols.max()))
    y0, y1, x0, x1 = int(keep_r[0]), int(keep_r[-1]) + 1, int(keep_c[0]), int(keep_c[-1]) + 1
    box = mask[y0:y1, x0:x1]
    bh, bw = box.shape
    area = float(box.sum())
    fill = area / float(bh * bw)
    row_w = box.sum(axis=1) / float(bw)
    widths = []
    for lo, hi in _BANDS:
        a, b = int(np.floor(lo * bh)), int(np.ceil(hi * bh))
        widths.append(float(row_w[a : max(b, a + 1)].mean()))
    feats = np.array([fill, *widths])
    shape = min(_TEMPLATES, key=lambda k: float(np.abs(_TEMPLATES[k] - feats).sum()))
    # Colour: median of the foreground core (the half of the mask farthest from the background),
    # read from the unsmoothed pixels.
    fg_dist = dist[mask]
    core = mask & (dist >= np.median(fg_dist))
    colour_rgb = np.median(img[core], axis=0)
    ys, xs = np.nonzero(mask)
    out.update(
        colour=_nearest(colour_rgb, _FG_NAMES, _FG_RGB),
        shape=shape,
        fill=fill,
        bbox=(x0, y0, x1, y1),
        centroid=(float(xs.mean()) + 0.5, float(ys.mean()) + 0.5),
        foreground=float(mask.mean()),
        widths=tuple(widths),
    )
    return out


def classify_image(pixels: np.ndarray) -> dict[str, Any]:
    """Attributes of an image of the shapes world, from plain pixel statistics.

    Accepts any ``(H, W, 3)`` RGB array (``uint8``, or floats in 0..255 or 0..1; RGBA and
    grayscale are converted), blurry, noisy or at another resolution than the canvas. Returns:

    * ``background``: the background colour nearest to the median of the border pixels;
    * ``colour``: the shape colour nearest to the median of the foreground core (foreground =
      pixels farther (RGB distance) from the measured background than half the 99th percentile
      distance, and than 30; measured on a copy smoothed by 0 to 3 passes of a 3x3 mean filter,
      as many as the noise level of the border asks for); ``None`` when there is no foreground
      (under 0.5 % of the image);
    * ``shape``: the template nearest (L1) to the features ``(fill ratio of the foreground's
      bounding box, mean row width / box width at 10-20 %, 45-55 % and 80-90 % of its height)``:
      circle ``(pi/4, 0.71, 1, 0.71)``, square ``(1, 1, 1, 1)``, triangle ``(0.5, 0.15, 0.5,
      0.85)``; ``None`` without foreground;
    * ``fill`` and ``widths``: those features; ``bbox``: ``(x0, y0, x1, y1)`` of the foreground
      (ends exclusive, rows/columns with under 3 % of the fullest one's count ignored);
    * ``centroid``: ``(x, y)`` of the foreground in pixels; ``foreground``: its image fraction.
    """
    img = _as_rgb(pixels)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {np.shape(pixels)}")
    return _analyse(img)


def classify_video(frames: np.ndarray) -> dict[str, Any]:
    """Attributes of a video of the shapes world: ``(T, H, W, 3)``, any ``T >= 1``, ``H``, ``W``.

    ``background``, ``colour`` and ``shape`` are the majority over up to 5 evenly spaced frames
    (first, middle and last included; ties go to the middle frame's value), with ``fill``,
    ``bbox``, ``widths`` of the middle frame. ``direction`` comes from the motion of the
    foreground centroid between the first and last frames along its larger axis (``up`` =
    decreasing ``y``); ``motion`` is that displacement in pixels (Euclidean). ``direction`` is
    ``None`` when either end frame has no foreground or the centroid moved less than 2 % of the
    frame side.
    """
    vid = np.asarray(frames)
    if vid.ndim == 3 and vid.shape[-1] in (1, 3, 4):  # a single image
        vid = vid[None]
    if vid.ndim not in (3, 4):
        raise ValueError(f"expected a (T, H, W, 3) video, got shape {np.shape(frames)}")
    t = vid.shape[0]
    if t == 0:
        raise ValueError("empty video")
    idx = sorted({int(round(v)) for v in np.linspace(0, t - 1, min(t, 5))} | {(t - 1) // 2})
    unit = _is_unit_float(vid)  # floats in [0, 1], judged on the whole clip
    per = {i: _analyse(_as_rgb(vid[i], unit)) for i in idx}
    mid = per[(t - 1) // 2]
    out = dict(mid)
    for key in ("background", "colour", "shape"):
        votes = Counter(per[i][key] for i in idx if per[i][key] is not None)
        if votes:
            best = max(votes.values())
            winners = [k for k, n in votes.items() if n == best]
            out[key] = mid[key] if mid[key] in winners else winners[0]
    first, last = per[0], per[t - 1]
    out["direction"], out["motion"] = None, 0.0
    if first["centroid"] is not None and last["centroid"] is not None:
        dx = last["centroid"][0] - first["centroid"][0]
        dy = last["centroid"][1] - first["centroid"][1]
        out["motion"] = float(np.hypot(dx, dy))
        if out["motion"] >= 0.02 * max(vid.shape[1], vid.shape[2]):
            if abs(dx) >= abs(dy):
                out["direction"] = "right" if dx > 0 else "left"
            else:
                out["direction"] = "down" if dy > 0 else "up"
    out["frames_used"] = idx
    return out


def score(expected: Scene, predicted: dict[str, Any]) -> dict[str, bool]:
    """Per-attribute correctness of a classification: ``colour``, ``shape``, ``background``, and
    ``direction`` for a video scene."""
    keys = ["colour", "shape", "background"] + (["direction"] if expected.is_video else [])
    return {k: predicted.get(k) == getattr(expected, k) for k in keys}
