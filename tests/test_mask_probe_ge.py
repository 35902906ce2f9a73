"""Probe GE: the dense omni mask of training and uncached generation is converted once per module
(SDPA's own float form), not once per attention layer, with the same outputs and gradients."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import enliven
from showo2_cli.loading import load
from showo2_cli.modeling import attention
from showo2_cli.modeling.attention import backend_mask, omni_attention_mask
from showo2_cli.sequences import generation_layout


@pytest.fixture(scope="module")
def lively(tiny_model_dir):
    model = load(tiny_model_dir)
    enliven(model.network)
    return model


def _step(net, layout, x):
    """A training-style forward (the recipe's: hidden states, then the flow head under the same
    omni mask) and backward; returns (output, parameter gradients, distinct saved mask-sized
    tensors). Saved tensors are counted by storage, as autograd keeps them for the backward."""
    length = layout.seq_len
    mask = omni_attention_mask(layout.blocks, length)
    saved: dict[int, tuple] = {}

    def pack(t):
        if t.shape[-2:] == (length, length):
            saved[t.untyped_storage().data_ptr()] = (tuple(t.shape), t.dtype)
        return t

    net.zero_grad(set_to_none=True)
    tokens = net.visual_tokens(x)
    t = torch.full((x.shape[0],), 0.4)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        hidden, cond = net.hidden_states(layout.input_ids, [[tok] for tok in tokens], layout.blocks, t, mask)
        out = net.flow_head(hidden, cond[:, None], layout.blocks, mask)
    (out.float().square().mean() + hidden.float().mean()).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return out.detach(), grads, saved


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_training_forward_keeps_one_mask_per_module(lively, monkeypatch, attn):
    """Under sdpa, every LLM and flow-head layer used to be handed the boolean mask, which SDPA
    converted to a float (B, 1, L, L) mask in each call and kept one per layer for the backward
    (2 + 2 in the tiny model; 28 + 10 in the 1.5B one). Now one converted mask per module is kept,
    and the output and every gradient are the same bits as with the per-layer conversions."""
    net = lively.network
    layout = generation_layout([[97, 98, 99, 100], [101] * 9], 1 + 2 * 16, lively.tokens, 60, video=True)
    rows = layout.input_ids.shape[0]  # conditional and unconditional rows of different lengths
    x = torch.randn(rows, 16, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    layers = net.spec.num_layers + net.spec.head_layers
    net.set_attention(attn)
    try:
        got, got_grads, saved = _step(net, layout, x)
        monkeypatch.setattr(attention, "sdpa_mask", lambda mask_bool, dtype: mask_bool, raising=False)  # the old form
        want, want_grads, old_saved = _step(net, layout, x)
    finally:
        net.set_attention("sdpa")
    assert got.abs().max() > 0.05 and len(got_grads) > 20
    assert torch.equal(got, want)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in got_grads.items():
        assert torch.equal(grad, want_grads[name]), name
    if attn == "sdpa":
        assert len(old_saved) >= layers  # what the old form kept: one float copy per layer
        assert len(saved) == 2, saved  # the LLM's and the flow head's
        assert all(dtype == torch.float32 for _, dtype in saved.values())
    else:  # eager was already converted once per module
        assert len(saved) == len(old_saved)


def test_sdpa_mask_is_what_sdpa_makes_of_the_boolean_mask():
    mask = omni_attention_mask(torch.tensor([[[3, 5]], [[2, 7]]]), 12)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        form = backend_mask(mask, "sdpa", dtype)
        assert form.dtype == dtype and form.shape == mask.shape
        assert torch.equal(form == 0, mask) and bool(torch.isneginf(form[~mask]).all())
        assert backend_mask(form, "sdpa", dtype) is form  # converted once
        q, k, v = (torch.randn(2, 3, 12, 8, generator=torch.Generator().manual_seed(i)).to(dtype) for i in range(3))
        sdpa = torch.nn.functional.scaled_dot_product_attention
        assert torch.equal(attention.attend(q, k, v, form), sdpa(q, k, v, attn_mask=mask))
    assert torch.equal(attention.sdpa_mask(mask, torch.float32), backend_mask(mask, "sdpa", torch.float32))


def _train_step(tmp_path, name, checkpointing=False):
    """One optimizer step of a tiny run (a t2i forward, an mmu forward); returns the losses and the
    distinct float (B, 1, L, L) masks autograd kept, per forward."""
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.trainer import train
    from test_train import tiny_config

    kept: list[set[int]] = []

    def pack(t):
        # counted per forward: a mask freed after one forward's backward may leave its address to the
        # next forward's (a set over the whole step counted that one as kept by neither)
        if t.dim() == 4 and t.shape[1] == 1 and t.shape[-1] == t.shape[-2] > 1 and t.is_floating_point():
            kept[-1].add(t.untyped_storage().data_ptr())
        return t

    import showo2_cli.training.recipe as recipe

    forward = recipe.Showo2Loss.forward

    def counted(self, batch, totals=None):
        kept.append(set())
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            return forward(self, batch, totals)

    raw = tiny_config(tmp_path / name, **{"optim.max_steps": 1, "run.gradient_checkpointing": checkpointing})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe.Showo2Loss, "forward", counted)
        train(parse_config(raw, source=name))
    lines = [json.loads(x) for x in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if "loss" in x], [len(k) for k in kept]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_a_training_step_keeps_one_mask_per_forward(tmp_path, monkeypatch, checkpointing):
    """A real training step (the recipe's forward: the LLM, then the flow head on the generation
    rows): one float mask kept per forward, the LLM's and the flow head's the same tensor (without
    checkpointing: 2 + 2 per forward in the tiny model before), and the same loss bits."""
    losses, kept = _train_step(tmp_path, "new", checkpointing)
    monkeypatch.setattr(attention, "sdpa_mask", lambda mask_bool, dtype: mask_bool, raising=False)  # the old form
    import showo2_cli.training.recipe as recipe

    monkeypatch.setattr(recipe, "shared_mask", lambda mask_bool, attn, dtype: mask_bool, raising=False)
    old_losses, old_kept = _train_step(tmp_path, "old", checkpointing)
    assert losses == old_losses and len(losses) >= 1
    assert len(kept) >= 2
    if checkpointing:  # the layers' inputs are kept (the mask: one float tensor now, the bool before)
        assert all(n <= 1 for n in kept), kept
    else:
        assert all(n == 1 for n in kept), kept
        assert all(n >= 4 for n in old_kept), old_kept
