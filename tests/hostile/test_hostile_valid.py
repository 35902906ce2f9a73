"""Odd but valid inputs must work: 16-bit, grayscale, palette, CMYK, RGBA and EXIF-rotated images
(upright), a 1x1 image (upscaled), one-frame and variable-frame-rate videos, files whose name
lies about their kind (judged by content), and unicode/space paths (through a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hostile_corpus import base_env, corpus_for

from conftest import MEDIA_DIR
from showo2_cli import api
from showo2_cli import media as M
from showo2_cli.cli import main


@pytest.fixture(scope="module")
def valid(tmp_path_factory, tiny_model_dir):
    return corpus_for(tmp_path_factory, tiny_model_dir, MEDIA_DIR if MEDIA_DIR.is_dir() else None)[2]["valid"]


def encode(src, out, tiny_model_dir, capsys, *extra):
    code = main(["encode", str(src), "-o", str(out), "--vae", str(tiny_model_dir / "vae"), "--json", *extra])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(stdout)


@pytest.mark.parametrize("name,kind,frames", [
    ("gray16.png", "image", 1), ("rgb48.png", "image", 1), ("gray.png", "image", 1), ("palette.png", "image", 1),
    ("cmyk.jpg", "image", 1), ("rgba.png", "image", 1), ("one-pixel.png", "image", 1),
    ("one-frame.mp4", "video", 1), ("vfr.mp4", "video", 9),
    ("image-named.mp4", "image", 1), ("video-named.png", "video", 9),
])
def test_odd_inputs_encode(name, kind, frames, valid, tiny_model_dir, tmp_path, capsys):
    meta = encode(valid[name], tmp_path / "z.safetensors", tiny_model_dir, capsys, "--size", "32")
    assert meta["kind"] == kind and meta["frames"] == frames
    assert (meta["height"], meta["width"]) == (32, 32) and meta["shape"] == [16, 1 + (frames - 1) // 4, 4, 4]
    if kind == "video":
        assert meta["fps"] is not None and 0 < meta["fps"] < 1000
    z, _ = api.load_latents(tmp_path / "z.safetensors", z_dim=16)
    assert bool(z.isfinite().all())


def test_every_mode_reads_as_rgb_with_the_right_values(valid):
    gray16 = np.asarray(M.read_image(valid["gray16.png"]))
    assert gray16.dtype == np.uint8 and gray16.shape == (40, 56, 3)
    assert gray16[0, 0].tolist() == [0, 0, 0] and gray16[0, -1].tolist() == [255, 255, 255]  # scaled, not clipped
    rgb48 = np.asarray(M.read_image(valid["rgb48.png"]))
    assert rgb48[0, -1, 0] == 255 and rgb48[-1, 0, 1] == 255 and abs(int(rgb48[0, 0, 2]) - 156) <= 1
    base = np.asarray(M.read_image(valid["gray.png"]))
    for name in ("palette.png", "rgba.png", "cmyk.jpg"):
        img = np.asarray(M.read_image(valid[name]))
        assert img.shape == (40, 56, 3) and img.dtype == np.uint8
    assert np.asarray(M.read_image(valid["rgba.png"])).mean() > base.mean() * 0.5  # alpha dropped, not blackened
    assert M.read_image(valid["one-pixel.png"]).size == (1, 1)


@pytest.mark.parametrize("ext,tol", [(".png", 0), (".jpg", 12)])
def test_exif_rotated_picture_is_read_upright(ext, tol, valid, tiny_model_dir, tmp_path, capsys):
    rotated, upright = M.read_image(valid[f"exif-rotated{ext}"]), M.read_image(valid[f"upright{ext}"])
    assert rotated.size == upright.size == (48, 80)  # portrait, as displayed (stored 80x48)
    a, b = np.asarray(rotated).astype(int), np.asarray(upright).astype(int)
    assert np.abs(a - b).mean() <= tol / 4 and np.abs(a - b).max() <= max(tol * 4, 0)
    assert a[2, 2, 0] > 200 and a[2, 2, 1] < 60  # the red block is at the top-left
    # the encoder sees the upright picture: cropping a portrait keeps its middle rows
    za = encode(valid[f"exif-rotated{ext}"], tmp_path / "a.safetensors", tiny_model_dir, capsys, "--size", "32x48")
    zb = encode(valid[f"upright{ext}"], tmp_path / "b.safetensors", tiny_model_dir, capsys, "--size", "32x48")
    assert za["source_size"] == zb["source_size"] == [48, 80]
    la, _ = api.load_latents(tmp_path / "a.safetensors")
    lb, _ = api.load_latents(tmp_path / "b.safetensors")
    if tol == 0:
        assert np.array_equal(la.numpy(), lb.numpy())
    else:
        assert float((la - lb).abs().mean()) < 0.1


def test_odd_videos_caption_and_animate(valid, tiny_model_dir, tmp_path, capsys):
    for name in ("one-frame.mp4", "vfr.mp4"):
        code = main(["caption", str(valid[name]), "-m", str(tiny_model_dir), "--max-new-tokens", "2", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert json.loads(out)["kind"] == "video"
    code = main(["i2v", str(valid["image-named.mp4"]), "a dot", "-m", str(tiny_model_dir), "-o",
                 str(tmp_path / "v.gif"), "--steps", "2", "--frames", "5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert M.read_video(tmp_path / "v.gif").num_frames == 5


def test_unicode_and_space_paths_through_a_real_process(valid, tiny_model_dir, tmp_path, capsys):
    """Non-ASCII arguments and paths through a real process's argv, file names and stdout (encode),
    and a non-ASCII prompt from the command line into a PNG's metadata (t2i, through the entry
    point in this process: a second interpreter would only repeat the argv decoding)."""
    src = next(p for k, p in valid.items() if "ünïcødé" in k)
    folder = tmp_path / "sortie à espaces ✓"
    folder.mkdir()
    env = base_env(tmp_path / "hf")
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.cli", "encode", str(src), "-o",
                           str(folder / "latents é 1.safetensors"), "--vae", str(tiny_model_dir / "vae"), "--json",
                           "--size", "32"], capture_output=True, text=True, encoding="utf-8", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["source"] == str(src) and (folder / "latents é 1.safetensors").is_file()
    code = main(["t2i", "un chat ✓ 猫", "-m", str(tiny_model_dir), "-o", str(folder / "chat 1.png"), "--steps", "2",
                 "--seed", "1"])
    assert code == 0, capsys.readouterr().err
    assert M.read_png_metadata(folder / "chat 1.png")["prompt"] == "un chat ✓ 猫"
    assert json.loads((folder / "chat 1.json").read_text())["prompt"] == "un chat ✓ 猫"


def test_models_survives_a_broken_hugging_face_cache(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as C

    broken = tmp_path / "not-a-folder"
    broken.write_text("x")
    monkeypatch.setenv("HF_HUB_CACHE", str(broken))
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(broken))
    code = main(["models", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert any(r["name"] == "1.5B" and not r["present"] for r in json.loads(out)["models"])
