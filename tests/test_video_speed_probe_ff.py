"""Probe FF: the prefix-cached velocity (t2v / i2v / t2i sampling) attends under a key mask and
modulates by broadcasting, with the same numbers as the dense forms it replaces."""

from __future__ import annotations

import pytest
import torch

from conftest import enliven
from showo2_cli.loading import load
from showo2_cli.modeling import flow_head
from showo2_cli.sampling import guided_velocity_fn
from showo2_cli.sequences import generation_layout


@pytest.fixture(scope="module")
def lively(tiny_model_dir):
    """The tiny model with its zero-initialised flow-head layers given small random values (the
    official init makes v = 0), as in test_inference.py."""
    model = load(tiny_model_dir)
    enliven(model.network)
    return model


POSITIONS = 1 + 3 * 16  # a step's block: the time token and 3 latent frames of 16 tokens


def _video_case(model, negatives=None):
    # two prompts of different lengths and empty unconditional rows: the prefix key mask blocks
    # some keys of every row but the longest
    layout = generation_layout([[97, 98, 99, 100], [101] * 9], POSITIONS, model.tokens, 80, video=True,
                               negatives=negatives)
    x = torch.randn(2, 16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return layout, x


def _velocity(net, layout, x, first_frame_as_cond=False):
    return guided_velocity_fn(net, layout, 5.0, cache_prefix=True, first_frame_as_cond=first_frame_as_cond)(x, 0.3)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("i2v", [False, True], ids=["t2v", "i2v"])
def test_prefix_velocity_key_mask_equals_the_dense_mask(lively, monkeypatch, attn, i2v):
    """Every attention of a prefix-cached step gets a (B, 1, 1, keys) mask, no (B, 1, P, keys) one,
    and the velocity is bit for bit the one computed with every mask expanded to its P query rows and
    every modulation spread to its P positions (what the step computed before)."""
    net = lively.network
    layout, x = _video_case(lively, negatives=[[120, 121], []])
    sdpa = torch.nn.functional.scaled_dot_product_attention
    seen: list[tuple] = []

    def recording(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            seen.append(tuple(attn_mask.shape))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    def dense(q, k, v, attn_mask=None, **kw):
        if attn_mask is not None:
            attn_mask = attn_mask.expand(*attn_mask.shape[:2], q.shape[-2], k.shape[-2]).contiguous()
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    spread = flow_head.per_position

    def spread_everywhere(params, block_index, outside):
        if block_index is None:  # the positions of a prefix-cached step: all in block 0
            return params[:, :1].expand(-1, POSITIONS, -1).contiguous()
        return spread(params, block_index, outside)

    net.set_attention(attn)
    try:
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
        got = _velocity(net, layout, x, first_frame_as_cond=i2v)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", dense)
        monkeypatch.setattr(flow_head, "per_position", spread_everywhere)
        want = _velocity(net, layout, x, first_frame_as_cond=i2v)
    finally:
        net.set_attention("sdpa")
    assert got.abs().max() > 0.05  # a real velocity
    assert torch.equal(got, want), float((got - want).abs().max())
    if attn == "sdpa":
        llm_layers, head_layers = net.showo.config.num_hidden_layers, len(net.diffusion_head_a)
        # the prefix's own causal passes aside, the step's attentions all see a key mask
        step = seen[-(llm_layers + head_layers):]
        assert len(step) == llm_layers + head_layers
        assert all(s[-2] == 1 for s in step), step
    if i2v:
        assert torch.equal(got[:, :, 0], torch.zeros_like(got[:, :, 0]))


def test_per_position_without_block_index_is_block_zero_everywhere():
    params = torch.randn(2, 3, 5)
    spread = flow_head.per_position(params, torch.zeros(2, 7, dtype=torch.long), 0.0)
    short = flow_head.per_position(params, None, 0.0)
    assert short.shape == (2, 1, 5)
    assert torch.equal(short.expand(-1, 7, -1), spread)
