"""Probe GA: the gated MLPs (the LLM's layers and the flow head's blocks) run in place without
autograd, with the same numbers as the plain form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import enliven, gated_mlp_linears
from showo2_cli.loading import load
from showo2_cli.modeling.mlp import LLMGatedMLP, gated_mlp
from showo2_cli.sampling import guided_velocity_fn
from showo2_cli.sequences import generation_layout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_mlp_in_place_is_the_plain_form_bit_for_bit(dtype):
    gate, up, down = (m.to(dtype) for m in gated_mlp_linears())
    x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(1)).to(dtype)
    plain = down(F.silu(gate(x)) * up(x))
    with torch.no_grad():
        assert torch.equal(gated_mlp(gate, up, down, x), plain.detach())
    with torch.inference_mode():
        assert torch.equal(gated_mlp(gate, up, down, x), plain.detach())


def test_gated_mlp_keeps_autograd():
    """With autograd on, the plain form: the gradients are those of the formula."""
    mods = gated_mlp_linears()
    x = torch.randn(3, 24, generator=torch.Generator().manual_seed(2), requires_grad=True)
    gated_mlp(*mods, x).square().sum().backward()
    got = [x.grad.clone(), *(m.weight.grad.clone() for m in mods)]
    x.grad = None
    for m in mods:
        m.weight.grad = None
    gate, up, down = mods
    down(F.silu(gate(x)) * up(x)).square().sum().backward()
    for a, b in zip(got, [x.grad, *(m.weight.grad for m in mods)], strict=True):
        assert torch.equal(a, b)


def test_other_activations_keep_the_plain_form():
    gate, up, down = gated_mlp_linears()
    x = torch.randn(4, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(gated_mlp(gate, up, down, x, F.gelu), down(F.gelu(gate(x)) * up(x)))


@pytest.fixture(scope="module")
def lively(tiny_model_dir):
    model = load(tiny_model_dir)
    enliven(model.network)
    return model


def test_network_velocity_is_the_plain_mlps_bit_for_bit(lively, monkeypatch):
    """Every LLM layer runs LLMGatedMLP, and a guided prefix-cached step's velocity (no autograd,
    as sampling runs) is bit for bit the one with every MLP in the plain form (what it was)."""
    net = lively.network
    assert all(type(layer.mlp) is LLMGatedMLP for layer in net.showo.model.layers)
    # the in-place path leaves the model's weights untouched and its state dict's names unchanged
    names = set(net.state_dict())
    layout = generation_layout([[97, 98, 99, 100], [101] * 9], 1 + 16, lively.tokens, 40)
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fast = guided_velocity_fn(net, layout, 5.0, cache_prefix=True)(x, 0.3)
    from showo2_cli.modeling import mlp

    def plain(gate_proj, up_proj, down_proj, x, act=F.silu):
        return down_proj(act(gate_proj(x)) * up_proj(x))

    monkeypatch.setattr(mlp, "gated_mlp", plain)
    monkeypatch.setattr("showo2_cli.modeling.flow_head.gated_mlp", plain)
    with torch.no_grad():
        slow = guided_velocity_fn(net, layout, 5.0, cache_prefix=True)(x, 0.3)
    assert torch.equal(fast, slow)
    assert set(net.state_dict()) == names
    assert float(fast.abs().max()) > 0
