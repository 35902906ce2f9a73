"""Generation options and the pipeline's diffusers conventions, from a probe of t2i/t2v/i2v."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import pipelines as P


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


def test_num_frames_not_1_plus_4k_is_named_num_frames(pipe):
    """The pipeline refuses num_frames=16 naming its own argument (it said `frames must be 1+4k`,
    a name a pipeline caller never passed)."""
    with pytest.raises(ValueError, match=r"^num_frames must be 1\+4k, got 16$"):
        pipe("a", num_frames=16, num_inference_steps=2, seed=1)
    with pytest.raises(ValueError, match=r"--frames must be 1\+4k, got 16"):  # the API keeps the CLI's name
        P.GenerateOptions(frames=16).validate()


@pytest.mark.parametrize("sampler", ["euler", "heun", "unipc"])
def test_num_timesteps_counts_the_callback_steps(pipe, sampler):
    """pipe.num_timesteps is what diffusers' callbacks compare step_index with: the number of
    times callback_on_step_end runs (for heun too, whose steps make two model calls but the last)."""
    seen = []
    pipe("a", num_inference_steps=4, sampler=sampler, seed=1,
         callback_on_step_end=lambda p, i, t, kw: seen.append(i) or kw)
    assert seen == list(range(pipe.num_timesteps)) == [0, 1, 2]


def test_batch_size_one_repeats_an_output_bit_for_bit(tiny_model_dir):
    """README: image k of prompt p uses seed + p*n + k; with --batch-size 1 an output made in a
    run of several is bit-identical to the same output made alone (in a larger batch, to float
    rounding: the existing test_batching_does_not_change_per_prompt_results)."""
    from showo2_cli.loading import load

    model = load(tiny_model_dir)
    run = P.text_to_image(model, ["one", "two"], P.GenerateOptions(steps=3, seed=5, num_per_prompt=2, batch_size=1))
    alone = P.text_to_image(model, ["two"], P.GenerateOptions(steps=3, seed=8, batch_size=1))[0]
    assert run[3].seed == 8 and torch.equal(run[3].latents, alone.latents)


@pytest.mark.parametrize("sampler", ["unipc", "dpm++"])
def test_image_to_video_keeps_the_first_latent_frame_exactly(tiny_model_dir, sampler):
    """README: the image's latent is the fixed first latent frame. The multistep solvers' updates
    moved it by float rounding (2.4e-7 on the demo); every sampler now ends on it exactly."""
    import numpy as np

    from showo2_cli.loading import load

    model = load(tiny_model_dir)
    side = model.spec.video_resolution
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    opts = P.GenerateOptions(seed=2, steps=4, frames=5, guidance=100.0)
    from dataclasses import replace

    euler = P.image_to_video(model, image, ["x"], opts)[0]
    other = P.image_to_video(model, image, ["x"], replace(opts, method=sampler))[0]
    assert torch.equal(other.latents[:, 0], euler.latents[:, 0])


def test_a_callback_changing_the_guidance_scale_is_refused(pipe):
    """diffusers' CFG cut-off idiom sets pipe._guidance_scale from a step callback; the sampler
    here fixes the guidance for a call, so the change was silently ignored. It is a ValueError."""
    def cut_off(p, i, t, kw):
        if i == 1:
            p._guidance_scale = 0.0
        return kw

    with pytest.raises(ValueError, match="changed pipe._guidance_scale"):
        pipe("a", num_inference_steps=4, seed=1, guidance_scale=5.0, callback_on_step_end=cut_off)
    assert pipe.guidance_scale == 5.0
    pipe("a", num_inference_steps=3, seed=1, callback_on_step_end=lambda p, i, t, kw: kw)  # untouched: fine


def test_quantized_outputs_record_the_quantization(tiny_model_dir):
    """--quantize int8wo changed the image (up to 53/255 on the demo) while its recorded parameters
    were those of an unquantized run, so reproducing it from them gave another image."""
    pytest.importorskip("torchao")
    from showo2_cli.loading import load
    from showo2_cli.options import RuntimeOptions

    opts = P.GenerateOptions(steps=2, seed=1)
    plain = P.text_to_image(load(tiny_model_dir), ["x"], opts)[0]
    quant = P.text_to_image(load(tiny_model_dir, runtime=RuntimeOptions(quantize="int8wo")), ["x"], opts)[0]
    assert "quantize" not in plain.params and quant.params["quantize"] == "int8wo"


def test_outputs_made_with_a_given_vae_record_it(tiny_model_dir):
    """--vae decodes with another VAE (another image from the same latents), yet the recorded
    parameters named only the model, so reproducing the output from them used the model's VAE."""
    from showo2_cli.loading import load

    opts = P.GenerateOptions(steps=2, seed=1)
    assert "vae" not in P.text_to_image(load(tiny_model_dir), ["x"], opts)[0].params
    given = P.text_to_image(load(tiny_model_dir, vae=tiny_model_dir / "vae"), ["x"], opts)[0]
    assert given.params["vae"] == str(tiny_model_dir / "vae")


def test_outputs_made_in_half_precision_record_the_dtype(tiny_model_dir):
    """--dtype bf16 gives another image than float32 from the same seed, yet the recorded
    parameters were the same, so reproducing the output from them gave the float32 image."""
    from showo2_cli.loading import load

    opts = P.GenerateOptions(steps=2, seed=1)
    plain = P.text_to_image(load(tiny_model_dir), ["x"], opts)[0]
    half = P.text_to_image(load(tiny_model_dir, dtype=torch.bfloat16), ["x"], opts)[0]
    assert "dtype" not in plain.params and half.params["dtype"] == "bf16"  # --dtype's name: a re-run passes it back
    assert (plain.frames != half.frames).any()  # (this random model's flow head starts at zero: same latents)


def test_outputs_decoded_in_tiles_record_the_tiles(tiny_pipe):
    """A tiled VAE decode (--vae-tiling on, or auto on a tight memory limit) changes the image
    (seams blended: up to 105/255 on a 320 px demo image), yet the recorded parameters were those of
    an untiled run, so reproducing the output from them gave another image."""
    from showo2_cli.options import EncodeOptions
    from showo2_cli.pipelines.latents import encode

    model = tiny_pipe.model
    opts = P.GenerateOptions(steps=2, seed=1, size=(16, 272))  # wider than one 256-pixel tile
    before = model.vae.tiling
    try:
        model.vae.disable_tiling()
        plain = P.text_to_image(model, ["x"], opts)[0]
        model.vae.enable_tiling()
        tiled = P.text_to_image(model, ["x"], opts)[0]
        small = P.text_to_image(model, ["x"], P.GenerateOptions(steps=2, seed=1, size=(16, 256)))[0]
        encoded = encode(tiled.frames[0], model.vae, EncodeOptions(size=(16, 272)))  # encode's latents file too
    finally:
        model.vae.tiling = before
    assert torch.equal(plain.latents, tiled.latents) and (plain.frames != tiled.frames).any()
    assert "vae_tiles" not in plain.params and tiled.params["vae_tiles"] == [256, 256, 192, 192]
    assert "vae_tiles" not in small.params  # no larger than a tile: decoded whole, as untiled
    assert encoded.metadata["vae_tiles"] == [256, 256, 192, 192]
    assert "vae_tiles" not in encode(tiled.frames[0], model.vae, EncodeOptions(size=(16, 272))).metadata


def test_outputs_of_a_cached_repo_record_its_commit(tiny_model_dir, tmp_path, monkeypatch):
    """An output of `--model acme/tiny` recorded only that name: once the repo's main moved on,
    re-running from the record loaded other weights. The snapshot's commit is recorded now."""
    import shutil

    import huggingface_hub.constants as C

    from showo2_cli.loading import load

    cache, commit = tmp_path / "hub", "0123456789abcdef0123456789abcdef01234567"
    for k, v in {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    repo = cache / "models--acme--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    opts = P.GenerateOptions(steps=2, seed=1)
    out = P.text_to_image(load("acme/tiny"), ["x"], opts)[0]
    assert out.params["model"] == "acme/tiny" and out.params["model_revision"] == commit
    pinned = P.text_to_image(load(f"acme/tiny@{commit}"), ["x"], opts)[0]  # what the record re-runs
    assert (pinned.frames == out.frames).all() and pinned.params["model_revision"] == commit
    assert "model_revision" not in P.text_to_image(load(tiny_model_dir), ["x"], opts)[0].params  # a folder
    # probe J: a snapshot folder typed as a path (or one that only looks like one) recorded its name as
    # model_revision, and the record's --model PATH@REV named no model; a folder is the weights already
    fake = tmp_path / "copy" / "models--me--x" / "snapshots" / "my-edit"
    shutil.copytree(tiny_model_dir, fake)
    for folder in (repo / "snapshots" / commit, fake):
        assert "model_revision" not in P.text_to_image(load(folder), ["x"], opts)[0].params
