"""Probe GM: the in-place gated MLP (probe GA) keeps to the plain form where a forward hook can hold
the gate projection's output: written into in place, what the hook kept (or returned, and keeps
returning) was changed, and with it every later call's result."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import gated_mlp_linears
from showo2_cli.modeling.mlp import gated_mlp, output_may_be_kept


def _mlp(seed=0):
    mods = gated_mlp_linears(seed)
    return mods, torch.randn(2, 5, 24, generator=torch.Generator().manual_seed(seed + 10))


def _plain(gate, up, down, x):
    return down(F.silu(gate(x)) * up(x))


def test_a_hook_keeping_the_gate_output_keeps_it_unchanged():
    (gate, up, down), x = _mlp()
    kept = []
    gate.register_forward_hook(lambda mod, args, out: kept.append(out))
    with torch.no_grad():
        got = gated_mlp(gate, up, down, x)
        want = F.linear(x, gate.weight)
    assert torch.equal(kept[0], want)  # it held SiLU(gate) * up before
    with torch.no_grad():
        assert torch.equal(got, _plain(gate, up, down, x))


def test_a_hook_returning_a_kept_tensor_gives_the_same_result_each_call():
    """Activation patching: a hook that answers a fixed tensor for the gate's output; in place, the
    first call turned it into SiLU(patch) * up, and the second call read that (a different result)."""
    (gate, up, down), x = _mlp(1)
    patch = torch.randn(2, 5, 40, generator=torch.Generator().manual_seed(5))
    original = patch.clone()
    gate.register_forward_hook(lambda mod, args, out: patch)
    with torch.inference_mode():
        first = gated_mlp(gate, up, down, x)
        second = gated_mlp(gate, up, down, x)
    assert torch.equal(patch, original)
    assert torch.equal(first, second)
    assert torch.equal(first, down(F.silu(original) * up(x)))


def test_hooks_inside_the_gate_and_global_ones_count():
    (gate, up, down), x = _mlp(2)
    wrapped = torch.nn.Sequential(gate)  # a wrapper (as peft's base_layer) whose inner layer is hooked
    assert not output_may_be_kept(wrapped)
    kept = []
    handle = gate.register_forward_hook(lambda mod, args, out: kept.append(out))
    assert output_may_be_kept(wrapped)
    with torch.no_grad():
        gated_mlp(wrapped, up, down, x)
        assert torch.equal(kept[-1], F.linear(x, gate.weight))
    handle.remove()
    assert not output_may_be_kept(wrapped)
    handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, args, out: kept.append(out))
    try:
        assert output_may_be_kept(wrapped)
        with torch.no_grad():
            gated_mlp(gate, up, down, x)
            assert torch.equal(kept[-3], F.linear(x, gate.weight))  # gate's output, then up's, then down's
    finally:
        handle.remove()
    assert not output_may_be_kept(wrapped)
