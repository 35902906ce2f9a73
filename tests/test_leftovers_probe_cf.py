"""Fidelity and waste leftovers (probe CF)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from showo2_cli import pipelines as P
from showo2_cli import sampling


def _image(side: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)


@pytest.mark.parametrize("sampler", ["euler", "dpm++"])
def test_one_frame_image_to_video_runs_no_network(tiny_model_dir, monkeypatch, sampler):
    """``i2v --frames 1``: the only latent frame is the image's, fixed, so nothing is sampled. It
    ran the LLM and the flow head at every step (and loaded the flow head) for a velocity that is
    0; the same output now comes without them, the step callbacks still called."""
    from showo2_cli.loading import load

    model = load(tiny_model_dir, heads=())
    image = _image(model.spec.video_resolution)
    opts = P.GenerateOptions(seed=3, steps=4, frames=1, guidance=4.0, method=sampler, batch_size=1)
    steps = []

    def on_step(i, n, t, x):
        steps.append((i, n, tuple(x.shape)))

    fast = P.image_to_video(model, image, ["x", "y"], opts, on_step=on_step)
    assert "flow_head" not in model.network.loaded_heads()  # never loaded
    assert [s[:2] for s in steps] == [(i, 3) for i in range(1, 4)] * 2
    with monkeypatch.context() as m:  # the old path: the network run at every step
        m.setattr(sampling, "still_video", lambda latents: False)
        slow = P.image_to_video(model, image, ["x", "y"], opts)
    assert "flow_head" in model.network.loaded_heads()
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
        assert a.params == b.params and a.frames.shape[0] == 1


def test_one_frame_image_to_video_calls_no_velocity(tiny_model_dir, monkeypatch):
    """The network's velocity (and the prefix cache's text forward) are not called at all."""
    from showo2_cli.loading import load

    model = load(tiny_model_dir)
    net = type(model.network)

    def boom(*a, **k):
        raise AssertionError("the network ran")

    for name in ("velocity", "velocity_with_prefix", "prefix_cache"):
        monkeypatch.setattr(net, name, boom)
    image = _image(model.spec.video_resolution)
    for cache in (False, True):
        out = P.image_to_video(model, image, ["x"], P.GenerateOptions(seed=1, steps=3, frames=1, cache_prefix=cache))
        assert out[0].latents.shape[1] == 1
    with pytest.raises(AssertionError, match="the network ran"):  # more frames do sample
        P.image_to_video(model, image, ["x"], P.GenerateOptions(seed=1, steps=3, frames=5))


def test_a_dynamic_rope_scaling_is_refused_in_one_line(tmp_path, tiny_model_dir, capsys):
    """A ``dynamic`` (NTK) RoPE scaling: the official code recomputes every position's frequencies
    from the whole sequence's length at each step (and keeps the longest length seen); the KV cache
    here kept the keys rotated at their own time, so answers past ``max_position_embeddings``
    differed, silently. Such a config is refused on load, both formats; linear still loads."""
    import json
    import shutil
    from pathlib import Path

    from showo2_cli.cli import main
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load

    variant = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-m"
    official = tmp_path / "official"
    shutil.copytree(variant / "model", official)
    shutil.copy(variant / "vae" / "wan21_vae.safetensors", official / "wan21_vae.safetensors")
    config = official / "llm" / "config.json"
    data = json.loads(config.read_text())
    for scaling in ({"rope_type": "dynamic", "factor": 2.0}, {"type": "dynamic", "factor": 4.0}):
        config.write_text(json.dumps({**data, "rope_scaling": scaling}))
        with pytest.raises(ModelError, match=r"rope_scaling 'dynamic' \(NTK\) is not supported.*key/value cache"):
            load(official, need=())
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    spec_file = folder / "config.json"
    saved = json.loads(spec_file.read_text())
    saved["showo2"]["spec"]["rope_scaling"] = {"rope_type": "dynamic", "factor": 2.0}
    spec_file.write_text(json.dumps(saved))
    assert main(["info", str(folder)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'dynamic' (NTK) is not supported" in err[0]
    saved["showo2"]["spec"]["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    spec_file.write_text(json.dumps(saved))
    assert load(folder, need=()).spec.rope_scaling == {"rope_type": "linear", "factor": 2.0}


def test_a_dtype_move_keeps_the_vae_statistics_of_a_load_in_that_dtype():
    """``pipe.to(torch.bfloat16)`` (or ``model.to(dtype=)``) rounded the VAE's ``latents_mean`` /
    ``latents_std`` to bf16, which a bf16 load keeps float32: the same latents decoded 7/255 apart
    on the demo's VAE (20/255 on the parity set's). A move now equals the load, buffers and decoded pixels
    (``Showo2.to`` moves the VAE with ``nn.Module.to``, which the pipeline's ``to`` calls)."""
    from showo2_cli.loading import load

    moved = load("demo")
    moved.to(dtype=torch.bfloat16)
    loaded = load("demo", dtype=torch.bfloat16)
    for name in ("latents_mean", "latents_std"):
        a, b = getattr(moved.vae, name), getattr(loaded.vae, name)
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b), name
    z = torch.randn(1, moved.spec.latent_channels, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(moved.vae.decode(z), loaded.vae.decode(z))
    moved.vae.bfloat16().float()  # any cast, and back: the float32 load's statistics
    assert torch.equal(moved.vae.latents_std, load("demo").vae.latents_std)


def test_the_shift_help_gives_the_first_step_every_sampler_takes():
    """``--sampler dpm++``/``unipc`` at ``--shift`` 0.01 gave poor images (probe AQ): not the
    solvers (their noise levels stay distinct, and the official Euler is as far from a converged
    sample, rms 0.84 on the demo), but the shift: below 1 the grid crowds the clean end, and the
    first of 30 steps goes from noise level 1 to 0.22 in every sampler. ``--help`` says so, with the
    grid's own number."""
    import re
    import typing

    from showo2_cli.cli import generate

    help_text = typing.get_args(generate.ShiftOpt)[1].help
    found = re.search(r"at ([\d.]+) the first of (\d+) steps takes the noise level from 1 to ([\d.]+)", help_text)
    assert found, help_text
    shift, steps, level = float(found[1]), int(found[2]), float(found[3])
    grid = sampling.time_grid(steps, shift)
    assert round(1 - float(grid[1]), 2) == level
    for method in ("unipc", "dpm++"):
        sigmas = sampling.diffusers_scheduler(method, grid, shift).sigmas
        assert abs(float(sigmas[1]) - level) < 0.01 and bool((sigmas[:-2] > sigmas[1:-1]).all())
    sampling.check_schedule("dpm++", steps, shift)  # a valid schedule: not refused


def test_one_frame_i2v_from_the_command_line_loads_no_head(tmp_path, monkeypatch, media_dir):
    """``showo2 i2v IMAGE --frames 1`` loaded the flow head (1.75 GB of the 1.5B in bf16) for a
    video it never samples; it now loads neither head, and saves the network path's latents."""
    from showo2_cli.cli import generate, main

    loaded = []
    real = generate.load_model

    def spy(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(generate, "load_model", spy)
    photo = next(p for p in sorted(media_dir.iterdir()) if p.suffix == ".jpg")
    args = ["i2v", str(photo), "a cat", "--size", "64", "--steps", "3", "--seed", "2", "--save-latents"]
    assert main([*args, "--frames", "1", "-o", str(tmp_path / "one.mp4")]) == 0
    assert "flow_head" not in loaded[-1].network.loaded_heads()
    from safetensors.torch import load_file

    from showo2_cli import media as M
    from showo2_cli.loading import load

    saved = next(iter(load_file(tmp_path / "one.latents.safetensors").values()))
    with monkeypatch.context() as m:  # the network path, every head loaded: the same latents
        m.setattr(sampling, "still_video", lambda latents: False)
        model = load("demo")
        opts = P.GenerateOptions(seed=2, steps=3, frames=1, size=(64, 64))
        ran = P.image_to_video(model, M.read_image(photo), ["a cat"], opts)[0]
    assert torch.equal(saved.reshape(ran.latents.shape), ran.latents)


def test_one_frame_i2v_is_judged_without_the_flow_head(tiny_model_dir):
    """The memory check of a one-frame ``i2v`` counted the flow head's weights, which it no longer
    loads or runs: a limit between the two (with the job's working memory) refused it."""
    from showo2_cli.footprint import weights_gb
    from showo2_cli.loading import load

    model = load(tiny_model_dir, heads=())
    side = model.spec.video_resolution
    without = weights_gb(model, (), ("encoder", "decoder"))[0]
    with_head = weights_gb(model, ("flow_head",), ("encoder", "decoder"))[0]
    assert with_head > without
    run = P.generation_memory_gb(model.spec, model.dtype, (side, side), 1, True, 1, model.vae.base_dim,
                                 vae_tile=model.vae.tile)
    opts = P.GenerateOptions(seed=1, steps=2, frames=1, max_memory_gb=run + (without + with_head) / 2)
    assert len(P.image_to_video(model, _image(side), ["x"], opts)) == 1
    from showo2_cli.errors import ResourceError

    with pytest.raises(ResourceError):  # five frames run the head: refused at that limit
        P.image_to_video(model, _image(side), ["x"], replace(opts, frames=5))
