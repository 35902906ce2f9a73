"""Parity probe AO (round seven): paths no fixture covered before.

* ``--vae-sample`` on a video: the official video demo encodes its K frames as ONE batch of K
  one-frame videos, and the stochastic sample draws its noise with one ``randn_like`` over that
  batch, so every frame gets its own draw. Each frame was encoded with a generator re-seeded
  for it, so all K frames got the same noise (a still video's frames came out identical).
  Checked against the official ``WanVAE_.sample`` after ``torch.manual_seed(seed)``: 1.4e-6
  now, 7.8 before (tiny VAE of the public set).
* ``--vae-sample`` without a seed drew seed 0's noise on every run (the official draw is new each
  run), and ``--seed`` with it was called unused for greedy answers: a seed is now drawn and
  recorded, and the notice leaves ``--seed`` out.
* Image-to-video (``first_frame_as_cond``) parity runs as the ``i2v`` case of every bundled set
  (``tests/test_parity.py``, made by ``benchmarks/make_parity_set.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from showo2_cli import media as M
from showo2_cli.dialogue import encode_media
from showo2_cli.loading import load
from showo2_cli.options import CaptionOptions
from showo2_cli.pipelines.understand import caption

VARIANT_G = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"


@pytest.fixture(scope="module")
def model():
    """The smallest official-format model (bundled set variant-g, 48 px)."""
    return load(VARIANT_G / "model", vae=VARIANT_G / "vae" / "wan21_vae.safetensors")


def _still_video(side: int, frames: int) -> np.ndarray:
    video = np.full((frames, side, side, 3), 120, np.uint8)
    video[:, side // 4:side // 2, side // 3:side - 4] = (210, 40, 30)
    return video


@torch.no_grad()
def test_each_video_frame_draws_its_own_vae_noise_as_the_official_batch_does(model):
    spec, net, vae = model.spec, model.network, model.vae
    k, seed = 3, 11
    video = _still_video(spec.resolution, k)
    got = encode_media(model, video, CaptionOptions(frames=k, vae_sample=True, seed=seed)).tokens
    per_frame = got.reshape(k, -1, got.shape[-1])
    # a still video: the frames differ only by their noise, which must not be one draw repeated
    assert (per_frame[0] - per_frame[1]).abs().max() > 1e-2
    assert (per_frame[1] - per_frame[2]).abs().max() > 1e-2

    # the official sample: mean + exp(logvar / 2) * randn_like over the (K, 16, 1, h, w) batch,
    # with the seed as torch.manual_seed gives it to the default CPU generator
    pixels = M.frames_to_tensor(video).permute(1, 0, 2, 3)[:, :, None]  # (K, 3, 1, H, W)
    mean = vae.encode(pixels, sample=False)
    _, logvar = vae.encode_moments(pixels)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
    latents = (mean + torch.exp(0.5 * logvar) * eps)[:, :, 0]
    want = net.pooled_frame_tokens(latents, spec.und_video_pool)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_an_image_draws_the_same_noise_as_before(model):
    """One frame: the first slice of the draw, as the official image demo's ``randn_like``."""
    spec, net, vae = model.spec, model.network, model.vae
    image = _still_video(spec.resolution, 1)[0]
    got = encode_media(model, image, CaptionOptions(vae_sample=True, seed=5)).tokens
    pixels = M.frames_to_tensor(image[None]).permute(1, 0, 2, 3)[:, :, None]
    mean = vae.encode(pixels, sample=False)
    _, logvar = vae.encode_moments(pixels)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5))
    want = net.encode_visual((mean + torch.exp(0.5 * logvar) * eps)[:, :, 0], understanding=True).fused[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_seed_is_used_by_the_vae_sample_even_when_decoding_is_greedy():
    assert CaptionOptions(seed=3).unused_sampling_options() == ["--seed"]
    assert CaptionOptions(seed=3, vae_sample=True).unused_sampling_options() == []  # no "has no effect" notice
    assert CaptionOptions(seed=3, vae_sample=True, top_k=5).unused_sampling_options() == ["--top-k"]


@torch.no_grad()
def test_a_vae_sample_without_a_seed_is_drawn_and_recorded(model):
    """As the official demo's draw, each run's noise is its own (not always seed 0), and the seed
    recorded in the result repeats it."""
    image = _still_video(model.spec.resolution, 1)[0]
    opts = CaptionOptions(vae_sample=True, max_new_tokens=3)
    torch.manual_seed(0)
    first = caption(model, image, opts)
    second = caption(model, image, opts)
    seeds = first.options["seed"], second.options["seed"]
    assert None not in seeds and seeds[0] != seeds[1]
    again = caption(model, image, CaptionOptions(vae_sample=True, max_new_tokens=3, seed=seeds[0]))
    assert again.answers == first.answers and again.options["seed"] == seeds[0]
