"""Semantic end-to-end tests of the bundled demo model on fresh scenes of the shapes world.

Generated pixels are judged by plain pixel statistics (`shapes.classify_*`), captions by exact
string comparison. Thresholds sit a little under what `benchmarks/demo_quality.py` measured
(see README), so a regression in training, sampling or decoding fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

from showo2_cli import media as M
from showo2_cli.loading import bundled_demo_path, load
from showo2_cli.pipelines import (
    CaptionOptions,
    GenerateOptions,
    caption,
    image_to_video,
    text_to_image,
    text_to_video,
)
from showo2_cli.training import shapes as S

pytestmark = pytest.mark.skipif(not (bundled_demo_path() / "config.json").exists(), reason="demo not bundled")

# benchmarks/demo_quality.py measured (100 images / 50 videos, the stage-5 EMA model: stages 1-4,
# then 10000 steps with a 6-block flow head): see README. These fixed-seed subsets gave caption
# 12/12, t2i colours 11/12, shape 8/12, t2v colours 7/8, t2v direction 8/8, i2v direction 8/8,
# video direction asked 12/12; the thresholds sit a little under them (chance is 1/54, 1/18, 1/3,
# 1/18, 1/4, 1/4, 1/4).
MIN_CAPTION_EXACT = 0.9
MIN_T2I_COLOURS = 0.8
MIN_T2I_SHAPE = 0.55
MIN_T2V_COLOURS = 0.75
MIN_T2V_DIRECTION = 0.75
MIN_I2V_DIRECTION = 0.75
MIN_VIDEO_DIRECTION = 0.9
# the bundled VAE (decoder-only stage C) on fresh 17-frame clips at the demo's video resolution
# (64 px, what every video task hands it and what it was trained at) measured worst-frame MSE
# 0.0031, 1.75x frame 0's (this subset: 0.0026, 1.84x); at twice that size (128 px) 0.0046 and 5.8x
# (this subset: 0.0043, 5.8x; stage B's decoder had 0.009, 8.7x)
VAE_BOUNDS = {64: (0.004, 2.0), 128: (0.008, 7.5)}  # canvas -> (worst-frame MSE, worst / frame 0)


@pytest.fixture(scope="module")
def demo():
    return load("demo")


def test_demo_is_small_and_complete(demo):
    size = sum(f.stat().st_size for f in bundled_demo_path().rglob("*") if f.is_file())
    assert size <= 30 * 2**20
    assert set(demo.spec.tasks) == {"image-understanding", "video-understanding", "t2i", "t2v", "i2v"}
    assert demo.vae is not None and demo.tokenizer is not None


def test_demo_is_the_default_without_other_models(monkeypatch, tmp_path):
    from showo2_cli import loading as api

    monkeypatch.delenv("SHOWO2_MODEL", raising=False)
    monkeypatch.setattr(api, "hf_cached_snapshot", lambda repo: None)
    name, notice = api.default_model()
    assert name == "demo" and "demo" in notice


def test_demo_captions_fresh_images(demo, tmp_path):
    rng = np.random.default_rng(2024)
    exact = []
    for i in range(12):
        scene = S.random_scene(rng)
        path = tmp_path / f"{i}.png"
        M.write_image(path, S.render_image(scene))
        answer = caption(demo, path, CaptionOptions(questions=["Describe the image."], max_new_tokens=24)).answers[0]
        exact.append(answer == S.caption(scene))
    assert np.mean(exact) >= MIN_CAPTION_EXACT


def test_demo_generates_the_prompted_colours_and_shapes(demo):
    rng = np.random.default_rng(7)
    scenes = [S.random_scene(rng) for _ in range(12)]
    images = text_to_image(demo, [S.caption(s) for s in scenes], GenerateOptions(seed=1, batch_size=12))
    scores = [S.score(s, S.classify_image(g.frames[0])) for s, g in zip(scenes, images, strict=True)]
    assert np.mean([sc["colour"] and sc["background"] for sc in scores]) >= MIN_T2I_COLOURS
    assert np.mean([sc["shape"] for sc in scores]) >= MIN_T2I_SHAPE


def test_demo_videos_keep_the_prompted_colours_and_motion(demo):
    rng = np.random.default_rng(11)
    scenes = [S.random_scene(rng, video=True) for _ in range(8)]
    videos = text_to_video(demo, [S.caption(s) for s in scenes], GenerateOptions(seed=2, batch_size=8))
    assert all(v.frames.shape[0] == demo.spec.video_frames for v in videos)
    scores = [S.score(s, S.classify_video(v.frames)) for s, v in zip(scenes, videos, strict=True)]
    assert np.mean([sc["colour"] and sc["background"] for sc in scores]) >= MIN_T2V_COLOURS
    assert np.mean([sc.get("direction", False) for sc in scores]) >= MIN_T2V_DIRECTION  # the prompted motion


def test_demo_image_to_video_moves_the_prompted_way(demo, tmp_path):
    rng = np.random.default_rng(17)
    hits = []
    for i in range(8):
        scene = S.random_scene(rng, video=True)
        still = tmp_path / f"still{i}.png"
        M.write_image(still, S.render_video(scene, 1)[0])
        (video,) = image_to_video(demo, still, [S.caption(scene)], GenerateOptions(seed=4 + i))
        hits.append(S.score(scene, S.classify_video(video.frames)).get("direction", False))
    assert np.mean(hits) >= MIN_I2V_DIRECTION


def test_demo_sees_which_way_a_shape_moves(demo, tmp_path):
    """Video understanding reads motion (the frame embeddings): the 3000-step model without them
    answered one constant direction (about 25%)."""
    rng = np.random.default_rng(13)
    hits = []
    for i in range(12):
        scene = S.random_scene(rng, video=True)
        path = tmp_path / f"v{i}.mp4"
        M.write_video(path, S.render_video(scene), 8)
        answer = caption(demo, path, CaptionOptions(questions=["Which way is the shape moving?"], max_new_tokens=8))
        hits.append(answer.answers[0] == scene.direction)
    assert np.mean(hits) >= MIN_VIDEO_DIRECTION


def test_demo_image_to_video_keeps_the_first_frame(demo, tmp_path):
    rng = np.random.default_rng(5)
    scene = S.random_scene(rng)
    path = tmp_path / "first.png"
    side = demo.spec.video_resolution
    from PIL import Image

    M.write_image(path, np.asarray(Image.fromarray(S.render_image(scene)).resize((side, side), Image.BICUBIC)))
    (video,) = image_to_video(demo, path, [S.caption(scene).replace(" on a", " moving up on a")],
                              GenerateOptions(seed=3, steps=10))
    first = S.classify_image(video.frames[0])
    assert first["colour"] == scene.colour and first["background"] == scene.background


@pytest.mark.parametrize("canvas", sorted(VAE_BOUNDS))
def test_demo_vae_round_trips_17_frame_clips(demo, canvas):
    """Every frame of a fresh 17-frame clip comes back: at the model's video resolution every
    frame's error is within 2x frame 0's, at twice that size within a small multiple (the
    5-frame-trained VAE had 75x, with frames 8-16 colour-inverted)."""
    import torch

    assert demo.spec.video_resolution == 64
    max_mse, max_ratio = VAE_BOUNDS[canvas]
    rng = np.random.default_rng(31)
    errs = []
    for _ in range(4):
        scene = S.random_scene(rng, video=True, canvas=canvas)
        frames = S.render_video(scene, 17)
        with torch.no_grad():
            rec = M.tensor_to_frames(demo.vae.decode(demo.vae.encode(M.frames_to_tensor(frames)[None]))[0])
        errs.append((((rec / 255.0) - (frames / 255.0)) ** 2).mean(axis=(1, 2, 3)))
        assert S.score(scene, S.classify_video(rec))["direction"]
    per_frame = np.mean(errs, axis=0)
    assert per_frame.max() <= max_mse and per_frame.max() <= max_ratio * per_frame[0], per_frame
