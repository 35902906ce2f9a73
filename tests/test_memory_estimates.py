"""Probe M: the generation memory estimate counts what a guided step really holds."""

from __future__ import annotations

import pytest
import torch

from showo2_cli.errors import ResourceError
from showo2_cli.pipelines import check_generation_memory, estimate_memory_gb
from showo2_cli.specs import get_spec


def _wide_spec():
    """The 1.5B's widths (LLM 1536/8960, flow head 2048/8192, 32 heads) with the demo's layout
    (64-pixel training resolution, 48 positions: a 27-token prompt budget)."""
    return get_spec("1.5B").replace(max_seq_len=48, resolution=64, resolutions=(64,))


def test_activations_count_the_mlp_intermediate_width():
    # At a short sequence the attention scores are small and the MLP dominates: per position the
    # widest layer holds four intermediate-width and eight hidden-width tensors.
    spec = _wide_spec()
    rows, seq = 8, 288
    got = estimate_memory_gb(spec, rows, seq, 0, dtype=torch.float32, vae_base_dim=1)
    attn = rows * 32 * seq * seq * 4
    acts = rows * seq * (4 * 8960 + 8 * 2048) * 4
    mask = rows * seq * seq
    assert got == pytest.approx((attn + acts + mask) / 1e9)
    wider = spec.replace(intermediate_size=2 * 8960)
    grown = estimate_memory_gb(wider, rows, seq, 0, dtype=torch.float32, vae_base_dim=1) - got
    assert grown == pytest.approx(rows * seq * 4 * 8960 * 4 / 1e9)


def test_guard_refuses_a_batch_whose_mlp_activations_do_not_fit():
    # Measured on the CPU with the 1.5B's widths (2 LLM layers, 1 head layer, random weights):
    # 4 images at 256x256 peaked at 0.55-0.70 GB over the weights; the old estimate (12 hidden
    # widths a position) said 0.31 GB and let the job run under a 0.45 GB limit.
    spec = _wide_spec()
    job = (spec, torch.float32, (256, 256), 1, False, 4)
    with pytest.raises(ResourceError, match="generating 4 image"):
        check_generation_memory(*job, max_memory_gb=0.45, vae_base_dim=1)
    assert check_generation_memory(*job, max_memory_gb=0.8, vae_base_dim=1) > 0.5


def test_video_caption_guard_counts_the_vae_encoding_a_frame():
    # The frames are VAE-encoded one at a time before the LLM runs; that encode (13 activations
    # per pixel and channel: 0.87 GB for the demo VAE at 1024x1024, 0.93 GB for the real one at
    # 432x432) was left out, so a limit below it let the job run.
    from showo2_cli import api
    from showo2_cli.pipelines.understand import check_caption_memory

    model = api.load("demo")
    encode = model.vae.encode_memory_gb(1, 1024, 1024)
    assert encode > 0.8
    model.vae.tiling = "off"  # (auto encodes such a frame in tiles: probe EH)
    with pytest.raises(ResourceError, match="understanding 2 frame"):
        check_caption_memory(model, 2, 1024, max_memory_gb=0.5)
    assert check_caption_memory(model, 2, 1024, max_memory_gb=2) >= encode
    model.vae.tiling = "auto"
    assert check_caption_memory(model, 2, 1024, max_memory_gb=0.5) < 0.5  # in 256 px tiles
