"""Probe A: video generation (t2v, i2v) and video outputs, as a user runs them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from showo2_cli import media as M
from showo2_cli.errors import UsageError
from showo2_cli.pipelines.latents import write_decoded
from showo2_cli.saving import plan_outputs, save_results


def _video_result(frames: int = 5) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (frames, 16, 16, 3), dtype=np.uint8)
    return SimpleNamespace(frames=pixels, latents=torch.zeros(16, 2, 2, 2),
                           params={"prompt": "p", "seed": 1, "width": 16, "height": 16, "frames": frames})


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
@pytest.mark.parametrize("fps", [0, -1, float("nan"), 0.01, 5000])
def test_save_results_refuses_a_frame_rate_no_video_is_written_at(tmp_path, monkeypatch, ext, fps):
    """``api.save_results(..., fps=0)`` wrote an 8 fps video (``fps or 8.0``), and a GIF at a
    negative rate was written at 50 fps (its delay clamped before the rate was checked), at NaN
    failed with numpy's "cannot convert float NaN to integer"."""
    monkeypatch.chdir(tmp_path)
    plans = plan_outputs("t2v", f"out{ext}", ["p"], [0], 1, seed=1)
    with pytest.raises(UsageError, match="fps must be (between|a)"):  # (--fps's range, checked first since probe FL)
        save_results([_video_result()], plans, "t2v", fps=fps)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the sidecar


def test_save_results_default_and_gif_rates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plans = plan_outputs("t2v", "a.mp4", ["p"], [0], 1, seed=1)
    assert save_results([_video_result()], plans, "t2v", fps=None)[0]["fps"] == 8.0
    plans = plan_outputs("t2v", "b.gif", ["p"], [0], 1, seed=1)
    assert save_results([_video_result()], plans, "t2v", fps=7)[0]["fps"] == pytest.approx(100 / 14)


def test_written_fps_and_write_decoded_check_the_rate(tmp_path):
    with pytest.raises(UsageError, match="fps must be between"):
        M.written_fps("x.gif", 0)
    with pytest.raises(UsageError, match="fps must be between"):
        write_decoded(tmp_path / "x.mp4", _video_result().frames, 0, None)
    assert not (tmp_path / "x.mp4").exists()


def test_a_tiled_decode_is_recorded_in_the_output_parameters(tiny_pipe):
    """A decode in tiles (``--vae-tiling on``, or ``auto`` on a job that does not fit untiled)
    blends the tiles at their seams: the frames differ from an untiled decode of the same latents
    (on the demo at 320 px, up to 82/255), yet the recorded parameters were the same, so a rerun
    from them on a machine with more memory did not give the frames back."""
    image = np.full((64, 64, 3), 200, np.uint8)
    kw = {"num_inference_steps": 2, "seed": 3, "num_frames": 5, "output_type": "np"}
    try:
        tiny_pipe.enable_vae_tiling()
        tiny_pipe.vae.enable_tiling(32, 32, 16, 16)
        tiled = tiny_pipe("p", **kw)
        tiled_i2v = tiny_pipe("p", image=image, **kw)
        small = tiny_pipe("p", height=32, width=32, **kw)  # no larger than a tile: decoded whole
        tiny_pipe.disable_vae_tiling()
        whole = tiny_pipe("p", **kw)
    finally:
        tiny_pipe.vae.tile, tiny_pipe.vae.tiling = (256, 256, 192, 192), "auto"
    assert tiled.results[0].params["vae_tiles"] == [32, 32, 16, 16]
    assert tiled_i2v.results[0].params["vae_tiles"] == [32, 32, 16, 16]
    assert "vae_tiles" not in small.results[0].params and "vae_tiles" not in whole.results[0].params
    assert torch.equal(tiled.results[0].latents, whole.results[0].latents)
    assert np.abs(tiled.frames - whole.frames).max() > 1 / 255  # what the record is for


def test_noise_of_another_length_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys, tiny_model_dir):
    """``t2v --frames 9 --noise`` with a 5-frame video's latents loaded the whole model before
    saying the shape was wrong (a minute for the 7B); it is judged from the spec first, and the
    message says which video length the file holds."""
    from safetensors.torch import save_file

    from showo2_cli.cli import generate, main

    save_file({"noise": torch.zeros(16, 2, 8, 8)}, tmp_path / "n.safetensors")
    monkeypatch.chdir(tmp_path)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(generate, "load_model", never)
    rc = main(["t2v", "x", "-m", str(tiny_model_dir), "--frames", "9", "--noise", "n.safetensors", "-o", "o.mp4"])
    assert rc == 3
    err = capsys.readouterr().err
    assert "expected (16, 3, 8, 8)" in err and "latents of a 5-frame video, not 9" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.safetensors"]


@pytest.mark.parametrize(("fps", "said"), [(8, None), (7, None), (30, 33.33), (240, 50)])
def test_a_gif_rate_far_from_the_asked_one_is_said(fps, said):
    """``t2v -o x.gif --fps 240`` wrote a 50 fps GIF (its delays are whole centiseconds, at least
    2) without a word; a rate more than 5% off the asked one now gets a notice (the CLI prints it)."""
    note = M.fps_note("x.gif", fps)
    assert (note is None) == (said is None)
    if said is not None:
        assert f"{fps:g} fps is written as {said:.4g} fps" in note
    assert M.fps_note("x.mp4", fps) is None


def test_t2v_gif_notice(tmp_path, monkeypatch, capsys, tiny_model_dir):
    from showo2_cli.cli import main

    monkeypatch.chdir(tmp_path)
    rc = main(["t2v", "x", "-m", str(tiny_model_dir), "--frames", "5", "--steps", "2", "--size", "16",
               "--fps", "240", "--seed", "1", "-o", "o.gif"])
    assert rc == 0
    assert "240 fps is written as 50 fps" in capsys.readouterr().err
    assert json.loads((tmp_path / "o.json").read_text())["fps"] == 50.0
