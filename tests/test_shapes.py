"""The synthetic shapes world: rendering, text and the pixel-statistics classifiers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image

from showo2_cli.training import shapes as S

COMBOS = list(itertools.product(S.COLOURS, S.SHAPES, S.BACKGROUNDS))
STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def code(rgb) -> np.ndarray:
    """One int32 per pixel (0xRRGGBB), for fast exact colour comparisons."""
    a = np.asarray(rgb, dtype=np.int32)
    return (a[..., 0] << 16) | (a[..., 1] << 8) | a[..., 2]


def painted(img: np.ndarray, scene: S.Scene) -> np.ndarray:
    """Mask of the shape-coloured pixels, checking that every pixel is shape or background."""
    px = code(img)
    fg = px == code(S.COLOURS[scene.colour])
    assert np.all(fg | (px == code(S.BACKGROUNDS[scene.background]))), \
        "a pixel is neither the shape colour nor the background colour"
    return fg


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def check_frame(img: np.ndarray, scene: S.Scene, x: int, y: int) -> None:
    """Independent geometric checks of one rendered frame with the box at (x, y)."""
    c, s = scene.canvas, scene.size
    assert img.shape == (c, c, 3) and img.dtype == np.uint8
    assert 0 <= x and 0 <= y and x + s <= c and y + s <= c, "box leaves the canvas"
    mask = painted(img, scene)
    # shape colour at the centre of the box (inside every shape)
    assert tuple(img[int(y + s / 2), int(x + s / 2)]) == S.COLOURS[scene.colour]
    # canvas corners outside the box are background
    for r, col in ((0, 0), (0, c - 1), (c - 1, 0), (c - 1, c - 1)):
        if not (x <= col < x + s and y <= r < y + s):
            assert tuple(img[r, col]) == S.BACKGROUNDS[scene.background]
    bx0, by0, bx1, by1 = bbox(mask)
    assert x <= bx0 and y <= by0 and bx1 <= x + s and by1 <= y + s, "paint outside the bounding box"
    area = int(mask.sum())
    widths = mask[y : y + s].sum(axis=1)
    if scene.shape == "square":
        assert (bx0, by0, bx1, by1) == (x, y, x + s, y + s) and area == s * s
    elif scene.shape == "circle":
        assert (bx0, by0, bx1, by1) == (x, y, x + s, y + s)
        assert abs(area - math.pi * s * s / 4) < 0.03 * s * s
        sub = mask[y : y + s, x : x + s]
        assert np.array_equal(sub, sub[::-1]) and np.array_equal(sub, sub[:, ::-1]) and np.array_equal(sub, sub.T)
        assert widths[s // 2] == s and widths[0] < s / 2 and widths[-1] < s / 2
    else:  # triangle: apex at the top, base = bottom edge, width == height
        assert (bx0, bx1, by1) == (x, x + s, y + s) and by0 <= y + 1
        assert abs(area - s * s / 2) < 0.03 * s * s
        assert widths[-1] == s, "the base is the bottom edge of the box"
        assert np.all(np.diff(widths) >= 0), "row widths grow from top to bottom"
        assert widths[: s // 4].mean() < 0.5 * widths[-s // 4 :].mean()
        assert widths[s // 4] <= s // 4 + 2 and abs(int(widths[s // 2]) - s / 2) <= 2
        sub = mask[y : y + s, x : x + s]
        assert np.array_equal(sub, sub[:, ::-1]), "isosceles: symmetric about the vertical axis"


# ------------------------------------------------------------------------------------------ text


def test_constants():
    assert S.CANVAS == 128 and S.VIDEO_FRAMES == 17
    assert S.SHAPES == ("circle", "square", "triangle")
    assert S.DIRECTIONS == ("left", "right", "up", "down")
    assert S.COLOURS == {
        "red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220),
        "yellow": (240, 210, 40), "purple": (150, 60, 200), "orange": (250, 140, 30),
    }
    assert S.BACKGROUNDS == {"black": (20, 20, 20), "white": (240, 240, 240), "gray": (128, 128, 128)}
    assert S.size_range(128) == (52, 89) and S.distance_range(128) == (26, 51)


def test_captions_and_questions_exact():
    img = S.Scene("red", "circle", "black", 60, 10, 20)
    vid = S.Scene("blue", "triangle", "gray", 60, 10, 20, "up", 30)
    assert S.caption(img) == "a red circle on a black background"
    assert S.caption(vid) == "a blue triangle moving up on a gray background"
    assert S.QUESTIONS_IMAGE == (
        "What color is the shape?", "What shape is it?", "What color is the background?", "Describe the image.",
    )
    assert S.QUESTIONS_VIDEO == (
        "What color is the shape?", "What shape is it?", "What color is the background?",
        "Which way is the shape moving?", "Describe the video.",
    )
    assert S.qa_pairs(img) == [
        ("What color is the shape?", "red"), ("What shape is it?", "circle"),
        ("What color is the background?", "black"),
        ("Describe the image.", "a red circle on a black background"),
    ]
    assert S.qa_pairs(vid) == [
        ("What color is the shape?", "blue"), ("What shape is it?", "triangle"),
        ("What color is the background?", "gray"), ("Which way is the shape moving?", "up"),
        ("Describe the video.", "a blue triangle moving up on a gray background"),
    ]


def test_parse_caption_round_trip_and_rejects():
    rng = np.random.default_rng(0)
    for colour, shape, bg in COMBOS:
        for direction in (None, *S.DIRECTIONS):
            want = {"colour": colour, "shape": shape, "background": bg}
            if direction:
                want["direction"] = direction
            text = S.caption(S.Scene(colour, shape, bg, 60, 0, 0, direction, 30 if direction else 0))
            assert S.parse_caption(text) == want
            assert S.parse_caption(f"  {text.upper()}\n") == want
            scene = S.scene_from_caption(text, rng)
            assert scene is not None and S.caption(scene) == text and scene.inside()
            assert S.scene_from_caption(text, rng, video=direction is None) is None
    for bad in ("", "a pink circle on a black background", "a red circle on a black background.",
                "red circle on a black background", "a red circle moving sideways on a black background",
                "a red circle on a blue background", "a red circle on a black background and more"):
        assert S.parse_caption(bad) is None
        assert S.scene_from_caption(bad, rng) is None


def test_scene_validation():
    with pytest.raises(ValueError):
        S.Scene("pink", "circle", "black", 60, 0, 0)
    with pytest.raises(ValueError):
        S.Scene("red", "circle", "black", 60, 0, 0, None, 10)
    with pytest.raises(ValueError):
        S.Scene("red", "hexagon", "black", 60, 0, 0)


# ------------------------------------------------------------------------------------- rendering


def test_every_image_combination_renders_as_specified():
    rng = np.random.default_rng(1)
    for colour, shape, bg in COMBOS:
        for _ in range(3):
            scene = S.scene_from_caption(f"a {colour} {shape} on a {bg} background", rng)
            assert scene is not None and scene.direction is None and scene.distance == 0
            assert 0.4 * 128 <= scene.size <= 0.7 * 128
            img = S.render_image(scene)
            assert np.array_equal(img, S.render(scene))
            check_frame(img, scene, scene.x0, scene.y0)


def test_every_video_combination_renders_as_specified():
    rng = np.random.default_rng(2)
    for (colour, shape, bg), direction in itertools.product(COMBOS, S.DIRECTIONS):
        scene = S.scene_from_caption(f"a {colour} {shape} moving {direction} on a {bg} background", rng)
        assert scene is not None and scene.direction == direction
        assert 0.4 * 128 <= scene.size <= 0.7 * 128 and 0.2 * 128 <= scene.distance <= 0.4 * 128
        vid = S.render_video(scene)
        assert vid.shape == (17, 128, 128, 3) and vid.dtype == np.uint8
        dx, dy = STEP[direction]
        px = code(vid)
        masks = px == code(S.COLOURS[colour])
        assert np.all(masks | (px == code(S.BACKGROUNDS[bg])))
        offsets = []
        for i in range(17):
            off = math.floor(scene.distance * i / 16 + 0.5)  # round half up
            x, y = scene.x0 + dx * off, scene.y0 + dy * off
            assert scene.position(i) == (x, y)
            assert 0 <= x and 0 <= y and x + scene.size <= 128 and y + scene.size <= 128
            if i in (0, 8, 16):
                assert np.array_equal(vid[i], S.render(scene, i))
                check_frame(vid[i], scene, x, y)
            # every frame is the first one moved by the offset (nothing clipped, same shape)
            assert np.array_equal(masks[i], np.roll(masks[0], (dy * off, dx * off), axis=(0, 1)))
            offsets.append(off)
        # straight line at constant speed, the whole distance in the right direction
        assert offsets[-1] == scene.distance
        steps = np.diff(offsets)
        assert steps.min() >= 1 and steps.max() - steps.min() <= 1
        b0, b1 = bbox(masks[0]), bbox(masks[-1])
        assert (b1[0] - b0[0], b1[1] - b0[1]) == (dx * scene.distance, dy * scene.distance)


def test_random_scenes_cover_the_world_and_stay_inside():
    rng = np.random.default_rng(3)
    seen: dict[str, set] = {"colour": set(), "shape": set(), "background": set(), "direction": set()}
    sizes, dists = set(), set()
    for k in range(3000):
        video = k % 2 == 1
        sc = S.random_scene(rng, video=video)
        assert sc.is_video == video and sc.inside()
        lo, hi = (sc.x0, sc.y0), (sc.x0 + sc.size, sc.y0 + sc.size)
        assert min(lo) >= 0 and max(hi) <= 128 and 52 <= sc.size <= 89
        if video:
            assert 26 <= sc.distance <= 51
            for i in (0, 16):
                x, y = sc.position(i)
                assert 0 <= x <= 128 - sc.size and 0 <= y <= 128 - sc.size
            seen["direction"].add(sc.direction)
            dists.add(sc.distance)
        for key in ("colour", "shape", "background"):
            seen[key].add(getattr(sc, key))
        sizes.add(sc.size)
    assert seen["colour"] == set(S.COLOURS) and seen["shape"] == set(S.SHAPES)
    assert seen["background"] == set(S.BACKGROUNDS) and seen["direction"] == set(S.DIRECTIONS)
    assert sizes == set(range(52, 90)) and dists == set(range(26, 52))


def test_other_canvas_and_frame_counts():
    rng = np.random.default_rng(4)
    for canvas in (32, 64, 100):
        for video in (False, True):
            sc = S.random_scene(rng, video=video, canvas=canvas)
            assert sc.canvas == canvas and sc.inside(9)
            vid = S.render_video(sc, frames=9)
            assert vid.shape == (9, canvas, canvas, 3)
            assert np.array_equal(vid[0], S.render_image(sc))
    sc = S.random_scene(rng, video=True)
    with pytest.raises(ValueError):
        S.render(sc, 17)
    assert S.frame_offset(30, 16, 17) == 30 and S.frame_offset(30, 0, 17) == 0


def test_deterministic():
    a = [S.random_scene(np.random.default_rng(7), video=True) for _ in range(2)]
    assert a[0] == a[1]


# ----------------------------------------------------------------------------------- classifiers


_NOISE_BANK = np.random.default_rng(12345).standard_normal((48, 128, 128, 3), dtype=np.float32)


def _b14641(a: np.ndarray) -> np.ndarray:
    """Unnormalised [1, 4, 6, 4, 1] filter along axis 1 of (N, H, W, 3) uint16, edges replicated."""
    p = np.concatenate([a[:, :1], a[:, :1], a, a[:, -1:], a[:, -1:]], axis=1)
    n = a.shape[1]
    return p[:, :n] + p[:, 4 : n + 4] + 4 * (p[:, 1 : n + 1] + p[:, 3 : n + 3]) + 6 * p[:, 2 : n + 2]


def blur(a: np.ndarray) -> np.ndarray:
    """Slight blur of (N, H, W, 3) uint8: separable binomial kernel [1, 4, 6, 4, 1] / 16 (sigma 1 px),
    in exact uint16 arithmetic (16 * 16 * 255 < 2**16); returns float32."""
    b = _b14641(_b14641(a.astype(np.uint16)).swapaxes(1, 2)).swapaxes(1, 2)
    return b.astype(np.float32) * np.float32(1 / 256)


def degrade(frames: np.ndarray, res: int, noise: float, blurred: bool, rng: np.random.Generator) -> np.ndarray:
    """Downscale (PIL bilinear) to ``res``, optionally blur (sigma 1 px at ``res``) and add Gaussian
    noise (std ``noise``) to (..., H, W, 3) uint8. Each frame's noise is a randomly chosen, randomly
    signed slice of a fixed bank of Gaussian samples (much faster than drawing fresh noise)."""
    shape = frames.shape
    if res == shape[-2] and not noise and not blurred:
        return frames
    a = frames.reshape(-1, *shape[-3:])
    if res != shape[-2]:
        a = np.stack([np.asarray(Image.fromarray(f).resize((res, res), Image.BILINEAR)) for f in a])
    a = blur(a) if blurred else a.astype(np.float32)
    if noise:
        idx = rng.integers(0, len(_NOISE_BANK), len(a))
        sign = rng.choice(np.array([-1.0, 1.0], np.float32), len(a))[:, None, None, None]
        a += _NOISE_BANK[idx, :res, :res] * (noise * sign)
    return np.clip(a + 0.5, 0, 255).astype(np.uint8).reshape(*shape[:-3], res, res, 3)


CONDITIONS = [(128, 0.0, False), (64, 0.0, False), (128, 10.0, True), (64, 10.0, True)]


@pytest.mark.parametrize(("res", "noise", "blurred"), CONDITIONS)
def test_classify_image_is_perfect(res, noise, blurred):
    rng = np.random.default_rng(100 + res + int(noise))
    wrong = []
    for _ in range(300):
        sc = S.random_scene(rng)
        pred = S.classify_image(degrade(S.render_image(sc), res, noise, blurred, rng))
        if not all(S.score(sc, pred).values()):
            wrong.append((sc, pred))
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[0]}"


@pytest.mark.parametrize(("res", "noise", "blurred"), CONDITIONS)
def test_classify_video_is_perfect(res, noise, blurred):
    rng = np.random.default_rng(200 + res + int(noise))
    wrong = []
    for _ in range(100):
        sc = S.random_scene(rng, video=True)
        pred = S.classify_video(degrade(S.render_video(sc), res, noise, blurred, rng))
        result = S.score(sc, pred)
        assert set(result) == {"colour", "shape", "background", "direction"}
        if not all(result.values()):
            wrong.append((sc, pred))
        assert pred["motion"] > 0.15 * res
    assert not wrong, f"{len(wrong)} wrong, first: {wrong[0]}"


def test_classify_clean_image_details():
    sc = S.Scene("green", "square", "white", 60, 10, 20)
    pred = S.classify_image(S.render_image(sc))
    assert pred["bbox"] == (10, 20, 70, 80) and pred["fill"] == 1.0
    assert pred["centroid"] == (40.0, 50.0)
    assert S.score(sc, pred) == {"colour": True, "shape": True, "background": True}
    wrong = dict(pred, shape="circle")
    assert S.score(sc, wrong)["shape"] is False
    # floats in [0, 1] and RGBA are accepted
    assert S.classify_image(S.render_image(sc) / 255.0)["shape"] == "square"
    rgba = np.concatenate([S.render_image(sc), np.full((128, 128, 1), 255, np.uint8)], axis=-1)
    assert S.classify_image(rgba)["colour"] == "green"


def test_classifiers_on_blank_inputs():
    for name, rgb in S.BACKGROUNDS.items():
        blank = np.empty((64, 48, 3), np.uint8)
        blank[...] = rgb
        pred = S.classify_image(blank)
        assert pred["background"] == name
        assert pred["colour"] is None and pred["shape"] is None and pred["bbox"] is None
        noisy = degrade(np.broadcast_to(blank[:48, :48], (5, 48, 48, 3)).copy(), 48, 10.0, False,
                        np.random.default_rng(0))
        vpred = S.classify_video(noisy)
        assert vpred["background"] == name and vpred["colour"] is None
        assert vpred["direction"] is None and vpred["motion"] == 0.0
    sc = S.Scene("red", "circle", "black", 60, 10, 20)
    assert S.classify_video(S.render_video(sc, 3))["direction"] is None  # a still scene
    one = S.classify_video(S.render_image(sc)[None])
    assert one["shape"] == "circle" and one["direction"] is None
    assert S.score(S.Scene("red", "circle", "black", 60, 0, 0, "left", 30), one)["direction"] is False
