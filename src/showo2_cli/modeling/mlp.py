"""The gated MLP of the LLM's decoder layers and of the flow head's blocks, run in place at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..runtime import quiet_imports

with quiet_imports():
    from transformers.models.qwen2.modeling_qwen2 import Qwen2MLP


def gated_mlp(gate_proj, up_proj, down_proj, x: torch.Tensor, act=F.silu) -> torch.Tensor:
    """``down_proj(act(gate_proj(x)) * up_proj(x))``.

    Without autograd, a SiLU gate is taken in place in ``gate_proj``'s output and the product is
    written into it: the same numbers (the same elementwise kernels on the same values, bit for
    bit), without two fresh ``(..., intermediate)`` tensors per call, whose allocation and first
    touch cost more than the SiLU itself (about 7% of the MLP's time in a guided t2i step at 432 px
    on a CPU). With autograd on, the plain form (the backward needs the gate's input); so too where
    a forward hook can hold the gate's output (:func:`output_may_be_kept`).
    """
    if torch.is_grad_enabled() or act is not F.silu or output_may_be_kept(gate_proj):
        return down_proj(act(gate_proj(x)) * up_proj(x))
    h = F.silu(gate_proj(x), inplace=True)
    return down_proj(h.mul_(up_proj(x)))


def output_may_be_kept(module: torch.nn.Module) -> bool:
    """Whether a forward hook sees ``module``'s output (one of its own, of a module inside it, or a
    global one): a hook may keep that tensor (activations captured for inspection or calibration),
    or return one it keeps (a patched activation, a cache), and writing into it in place would change
    what the hook holds, or every later call's result. peft's LoRA layers return a fresh sum, the
    quantized (torchao) and offloaded (accelerate) layers a fresh tensor: those stay in place."""
    if torch.nn.modules.module._global_forward_hooks:
        return True
    return any(m._forward_hooks for m in module.modules())


class LLMGatedMLP(Qwen2MLP):
    """transformers' ``Qwen2MLP`` (its weights and names) with its forward through :func:`gated_mlp`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.silu if self.config.hidden_act == "silu" else self.act_fn
        return gated_mlp(self.gate_proj, self.up_proj, self.down_proj, x, act)


def use_gated_mlp(layers) -> None:
    """Give each Qwen2 decoder layer's ``mlp`` :class:`LLMGatedMLP`'s forward, in place (the same
    module, weights and state dict; only its class changes)."""
    for layer in layers:
        if type(layer.mlp) is Qwen2MLP:
            layer.mlp.__class__ = LLMGatedMLP
