"""The synthetic shapes world: flat-coloured shapes on plain backgrounds, still or moving.

This module defines a tiny, fully specified visual world used to train and evaluate a small demo
model. Everything is plain numpy, deterministic given a :class:`numpy.random.Generator`, and
checkable pixel by pixel.

World
-----
* A square canvas of ``canvas`` pixels (default :data:`CANVAS` = 128), RGB ``uint8``.
* One shape per scene, in one flat colour from :data:`COLOURS`, on a flat background from
  :data:`BACKGROUNDS`. No anti-aliasing.
* Shapes (:data:`SHAPES`) live in an axis-aligned square *bounding box* with integer top-left
  corner ``(x, y)`` and integer side ``s`` (``size``), ``0.4 * canvas <= s <= 0.7 * canvas``.
  Pixel ``(row r, column c)`` is the unit square ``[c, c+1) x [r, r+1)`` with centre
  ``(c + 0.5, r + 0.5)``; a pixel is painted iff its centre lies in the closed shape. In exact
  integer form (``u = 2c + 1 - 2x - s``, ``v = 2r + 1 - 2y - s``, i.e. twice the offset of the
  pixel centre from the box centre):

  - ``square``:   ``x <= c < x + s`` and ``y <= r < y + s`` (the box itself, ``s * s`` pixels);
  - ``circle``:   ``u**2 + v**2 <= s**2`` (the disc inscribed in the box);
  - ``triangle``: ``y <= r < y + s`` and ``2 * |u| <= 2 * (r - y) + 1`` (upright isosceles
    triangle with apex at the top centre ``(x + s/2, y)`` and base the bottom edge of the box;
    width == height). Its bottom row is always the full ``s`` pixels wide; when ``s`` is even no
    pixel centre lies close enough to the apex, so the top row of the box is empty.

* Videos have :data:`VIDEO_FRAMES` (17) frames. The shape moves in a straight line at constant
  speed in one of :data:`DIRECTIONS` by ``distance`` pixels over the clip,
  ``0.2 * canvas <= distance <= 0.4 * canvas``; at frame ``i`` of ``T`` the box is offset by
  ``round_half_up(distance * i / (T - 1))`` pixels (exact integer arithmetic:
  ``(2 * distance * i + T - 1) // (2 * (T - 1))``) along the direction, so the last frame is
  offset by exactly ``distance``. The box stays inside the canvas in every frame. Image ``y``
  grows downward: ``up`` decreases ``y``.

Text
----
* Image caption: ``a {colour} {shape} on a {background} background``.
* Video caption: ``a {colour} {shape} moving {direction} on a {background} background``.
* Questions (:data:`QUESTIONS_IMAGE`, :data:`QUESTIONS_VIDEO`) have one-word answers, except
  ``Describe the image.`` / ``Describe the video.`` which are answered with the caption.

Classifiers
-----------
:func:`classify_image` and :func:`classify_video` (in :mod:`.shape_classifier`, re-exported
here) recover the scene attributes from pixels with plain statistics only (no model): background
from the border median, foreground as the pixels far from it, colour from the foreground median,
shape from the foreground's fill ratio and row width profile, direction from the motion of the
foreground centroid. They accept any resolution
and tolerate blur and noise, so they can grade the outputs of a small generative model.
:func:`score` compares a classification with the expected :class:`Scene`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BACKGROUNDS",
    "CANVAS",
    "COLOURS",
    "DIRECTIONS",
    "QUESTIONS_IMAGE",
    "QUESTIONS_VIDEO",
    "SHAPES",
    "VIDEO_FRAMES",
    "Scene",
    "caption",
    "classify_image",  # noqa: F822 (from .shape_classifier, by __getattr__ below)
    "classify_video",  # noqa: F822
    "distance_range",
    "frame_offset",
    "parse_caption",
    "qa_pairs",
    "random_scene",
    "render",
    "render_image",
    "render_video",
    "scene_from_caption",
    "score",  # noqa: F822
    "shape_mask",
    "size_range",
]

CANVAS: int = 128
"""Default canvas side in pixels."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 200),
    "orange": (250, 140, 30),
}
"""Shape colours (RGB)."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
}
"""Background colours (RGB)."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
VIDEO_FRAMES: int = 17

Q_COLOUR = "What color is the shape?"
Q_SHAPE = "What shape is it?"
Q_BACKGROUND = "What color is the background?"
Q_DIRECTION = "Which way is the shape moving?"
Q_DESCRIBE_IMAGE = "Describe the image."
Q_DESCRIBE_VIDEO = "Describe the video."

QUESTIONS_IMAGE: tuple[str, ...] = (Q_COLOUR, Q_SHAPE, Q_BACKGROUND, Q_DESCRIBE_IMAGE)
"""The questions asked about an image, in the order :func:`qa_pairs` returns them."""

QUESTIONS_VIDEO: tuple[str, ...] = (Q_COLOUR, Q_SHAPE, Q_BACKGROUND, Q_DIRECTION, Q_DESCRIBE_VIDEO)
"""The questions asked about a video, in the order :func:`qa_pairs` returns them."""

# Unit step (dx, dy) of each direction; image y grows downward.
_STEP: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


# --------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------


def size_range(canvas: int = CANVAS) -> tuple[int, int]:
    """Inclusive integer range of the bounding-box side: ``[ceil(0.4 c), floor(0.7 c)]``."""
    return -(-4 * canvas // 10), 7 * canvas // 10


def distance_range(canvas: int = CANVAS) -> tuple[int, int]:
    """Inclusive integer range of the distance moved over a clip: ``[ceil(0.2 c), floor(0.4 c)]``."""
    return -(-2 * canvas // 10), 4 * canvas // 10


def frame_offset(distance: int, frame: int, frames: int = VIDEO_FRAMES) -> int:
    """Pixels travelled at ``frame`` (0-based) of a ``frames``-frame clip: ``distance * i / (T - 1)``
    rounded half up, computed exactly in integers. 0 for a single-frame clip."""
    if frames < 1 or not 0 <= frame < frames:
        raise ValueError(f"frame {frame} is not in a clip of {frames} frames")
    if frames == 1:
        return 0
    return (2 * distance * frame + frames - 1) // (2 * (frames - 1))


@dataclass(frozen=True)
class Scene:
    """One scene of the shapes world.

    ``size`` is the side of the shape's bounding box in pixels, ``(x0, y0)`` its top-left corner
    in the first frame, at ``canvas`` scale. ``direction`` is ``None`` and ``distance`` 0 for an
    image; for a video, ``distance`` is the number of pixels the box moves over the whole clip.
    """

    colour: str
    shape: str
    background: str
    size: int
    x0: int
    y0: int
    direction: str | None = None
    distance: int = 0
    canvas: int = CANVAS

    def __post_init__(self) -> None:
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; expected one of {sorted(COLOURS)}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {list(SHAPES)}")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {self.background!r}; expected one of {sorted(BACKGROUNDS)}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; expected one of {list(DIRECTIONS)}")
        if self.direction is None and self.distance != 0:
            raise ValueError("an image scene (direction None) must have distance 0")
        if self.size < 1 or self.distance < 0 or self.canvas < 1:
            raise ValueError("size and canvas must be positive and distance non-negative")

    @property
    def is_video(self) -> bool:
        """True for a moving (video) scene."""
        return self.direction is not None

    def position(self, frame: int = 0, frames: int = VIDEO_FRAMES) -> tuple[int, int]:
        """Top-left ``(x, y)`` of the bounding box at ``frame`` of a ``frames``-frame clip."""
        off = frame_offset(self.distance, frame, frames)  # validates frame; 0 for an image
        if self.direction is None:
            return self.x0, self.y0
        dx, dy = _STEP[self.direction]
        return self.x0 + dx * off, self.y0 + dy * off

    def inside(self, frames: int = VIDEO_FRAMES) -> bool:
        """Whether the bounding box lies inside the canvas in every frame."""
        n = frames if self.is_video else 1
        for i in (0, n - 1):  # motion is monotonic: the end frames are the extremes
            x, y = self.position(i, n)
            if x < 0 or y < 0 or x + self.size > self.canvas or y + self.size > self.canvas:
                return False
        return True


def _random_geometry(
    rng: np.random.Generator, direction: str | None, canvas: int
) -> tuple[int, int, int, int]:
    """``(size, x0, y0, distance)`` uniformly at random for a shape moving in ``direction``.

    Draws, in this order: size uniform in :func:`size_range`; for a video, distance uniform in
    ``[dmin, min(dmax, canvas - size)]`` (so the motion fits); then ``x0`` and ``y0`` uniform
    over the positions that keep the box inside the canvas for the whole motion.
    """
    smin, smax = size_range(canvas)
    if smin > smax or smin < 1:
        raise ValueError(f"canvas {canvas} is too small for the shapes world")
    size = int(rng.integers(smin, smax + 1))
    distance = 0
    if direction is not None:
        dmin, dmax = distance_range(canvas)
        dmax = min(dmax, canvas - size)
        if dmin > dmax or dmin < 1:
            raise ValueError(f"canvas {canvas} is too small for moving shapes")
        distance = int(rng.integers(dmin, dmax + 1))
    dx, dy = _STEP[direction] if direction is not None else (0, 0)
    free = canvas - size  # last valid top-left coordinate for a still box
    # Along the motion axis the box needs `distance` extra room, on the side it moves towards.
    xlo, xhi = (distance if dx < 0 else 0), (free - distance if dx > 0 else free)
    ylo, yhi = (distance if dy < 0 else 0), (free - distance if dy > 0 else free)
    x0 = int(rng.integers(xlo, xhi + 1))
    y0 = int(rng.integers(ylo, yhi + 1))
    return size, x0, y0, distance


def random_scene(
    rng: np.random.Generator,
    video: bool = False,
    canvas: int = CANVAS,
    frames: int = VIDEO_FRAMES,
) -> Scene:
    """A uniformly random scene (a video scene when ``video``).

    Draws, in this order: colour, shape, background (and direction for a video), each uniform;
    then the geometry (see :func:`_random_geometry`). ``frames`` only has to be at least 2 for a
    video: the motion is defined over the whole clip, whatever its length.
    """
    if video and frames < 2:
        raise ValueError("a video needs at least 2 frames")
    colour = _choice(rng, tuple(COLOURS))
    shape = _choice(rng, SHAPES)
    background = _choice(rng, tuple(BACKGROUNDS))
    direction = _choice(rng, DIRECTIONS) if video else None
    size, x0, y0, distance = _random_geometry(rng, direction, canvas)
    return Scene(colour, shape, background, size, x0, y0, direction, distance, canvas)


def _choice(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------

_CAPTION_RE = re.compile(
    r"a (?P<colour>{c}) (?P<shape>{s})(?: moving (?P<direction>{d}))? on a (?P<background>{b}) background".format(
        c="|".join(COLOURS), s="|".join(SHAPES), d="|".join(DIRECTIONS), b="|".join(BACKGROUNDS)
    )
)


def caption(scene: Scene) -> str:
    """The scene's caption, e.g. ``a red circle moving left on a black background``."""
    if scene.direction is None:
        return f"a {scene.colour} {scene.shape} on a {scene.background} background"
    return f"a {scene.colour} {scene.shape} moving {scene.direction} on a {scene.background} background"


def parse_caption(text: str) -> dict[str, str] | None:
    """``{colour, shape, background}`` (plus ``direction`` for a video caption) of a caption.

    The text must be exactly a caption of this world, up to surrounding whitespace, letter case
    and runs of whitespace between words; anything else gives ``None``.
    """
    if not isinstance(text, str):
        return None
    norm = " ".join(text.split()).lower()
    m = _CAPTION_RE.fullmatch(norm)
    if m is None:
        return None
    out = {"colour": m["colour"], "shape": m["shape"], "background": m["background"]}
    if m["direction"] is not None:
        out["direction"] = m["direction"]
    return out


def scene_from_caption(
    text: str,
    rng: np.random.Generator,
    canvas: int = CANVAS,
    video: bool | None = None,
) -> Scene | None:
    """A scene matching a caption, with random geometry (as in :func:`random_scene`).

    ``video=None`` follows the caption (a direction makes a video scene); ``True``/``False``
    additionally require a video/image caption and give ``None`` for the other kind. ``None``
    also when the text is not a valid caption.
    """
    parsed = parse_caption(text)
    if parsed is None:
        return None
    direction = parsed.get("direction")
    if video is not None and video != (direction is not None):
        return None
    size, x0, y0, distance = _random_geometry(rng, direction, canvas)
    return Scene(
        parsed["colour"], parsed["shape"], parsed["background"], size, x0, y0, direction, distance, canvas
    )


def qa_pairs(scene: Scene) -> list[tuple[str, str]]:
    """Every question about the scene with its answer, in :data:`QUESTIONS_IMAGE` /
    :data:`QUESTIONS_VIDEO` order (the describe question last)."""
    pairs = [(Q_COLOUR, scene.colour), (Q_SHAPE, scene.shape), (Q_BACKGROUND, scene.background)]
    if scene.direction is None:
        pairs.append((Q_DESCRIBE_IMAGE, caption(scene)))
    else:
        pairs.append((Q_DIRECTION, scene.direction))
        pairs.append((Q_DESCRIBE_VIDEO, caption(scene)))
    return pairs


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _box_mask(shape: str, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of a shape inside its own bounding box (local coordinates)."""
    k = np.arange(size, dtype=np.int64)
    u = (2 * k + 1 - size)[None, :]  # twice the pixel centre's offset from the box centre
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        v = (2 * k + 1 - size)[:, None]
        return u * u + v * v <= size * size
    if shape == "triangle":
        return 2 * np.abs(u) <= 2 * k[:, None] + 1
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def shape_mask(shape: str, size: int, x: int, y: int, canvas: int = CANVAS) -> np.ndarray:
    """Boolean ``(canvas, canvas)`` mask of the pixels painted for a shape whose bounding box has
    top-left ``(x, y)`` and side ``size`` (the integer rules in the module docstring). Parts outside
    the canvas are clipped."""
    local = _box_mask(shape, size)
    mask = np.zeros((canvas, canvas), dtype=bool)
    r0, r1, c0, c1 = max(y, 0), min(y + size, canvas), max(x, 0), min(x + size, canvas)
    if r0 < r1 and c0 < c1:
        mask[r0:r1, c0:c1] = local[r0 - y : r1 - y, c0 - x : c1 - x]
    return mask


def render(scene: Scene, frame: int = 0, frames: int = VIDEO_FRAMES) -> np.ndarray:
    """Frame ``frame`` of the scene as ``uint8`` ``(canvas, canvas, 3)`` RGB (frame 0 for images)."""
    x, y = scene.position(frame, frames)
    mask = shape_mask(scene.shape, scene.size, x, y, scene.canvas)
    # One 4-byte word per pixel (RGB + padding) is much faster to fill than 3-byte pixels.
    words = np.where(mask, _rgb_word(COLOURS[scene.colour]), _rgb_word(BACKGROUNDS[scene.background]))
    return np.ascontiguousarray(words.view(np.uint8).reshape(scene.canvas, scene.canvas, 4)[..., :3])


def _rgb_word(rgb: tuple[int, int, int]) -> np.uint32:
    """The bytes ``R, G, B, 0`` as one uint32 (in native byte order)."""
    return np.array([*rgb, 0], dtype=np.uint8).view(np.uint32)[0]


def render_image(scene: Scene) -> np.ndarray:
    """The scene as a still image, ``uint8`` ``(canvas, canvas, 3)`` (a video scene's first frame)."""
    return render(scene, 0, 1 if scene.direction is None else VIDEO_FRAMES)


def render_video(scene: Scene, frames: int = VIDEO_FRAMES) -> np.ndarray:
    """All frames of the scene, ``uint8`` ``(frames, canvas, canvas, 3)`` (an image scene repeats)."""
    if frames < 1:
        raise ValueError("a video needs at least 1 frame")
    return np.stack([render(scene, i, frames) for i in range(frames)])


_CLASSIFIERS = ("classify_image", "classify_video", "score")


def __getattr__(name: str):
    """The classifiers, from :mod:`.shape_classifier` (which reads this module's palette)."""
    if name in _CLASSIFIERS:
        from . import shape_classifier

        return getattr(shape_classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
