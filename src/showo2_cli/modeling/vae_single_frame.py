"""The Wan2.1 VAE's single-frame fast path (used by :class:`~showo2_cli.modeling.vae.WanVAE`).

With one input frame and no causal cache, a causal 3x3x3 convolution sees two zero-padded frames
and the real one, so only the last temporal slice of its kernel touches data. Running it as a 2-D
convolution with ``weight[:, :, -1]`` is exact and about halves the cost of encoding/decoding
images.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import quiet_imports

__all__ = ["single_frame_conv2d"]


def _causal_conv_cls():
    with quiet_imports():
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d

    return WanCausalConv3d


def _single_frame_forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
    """`WanCausalConv3d.forward` replacement, bound to one conv instance while the fast path is on.

    With no cache, the causal conv zero-pads ``2 * pad_t`` frames in front. For one input frame and
    ``2 * pad_t == k_t - 1`` the padded clip is exactly ``k_t`` frames long, the output has one frame,
    and every kernel slice but the last multiplies zeros: a 2-D conv with ``weight[:, :, -1]`` is
    the same computation. Anything else goes to the original forward.
    """
    pad = self._padding  # (w, w, h, h, 2*pad_t, 0)
    if (
        cache_x is None
        and x.dim() == 5
        and x.shape[2] == 1
        and pad[4] == self.kernel_size[0] - 1
        and pad[5] == 0
        and pad[0] == pad[1]
        and pad[2] == pad[3]
        and self.dilation[0] == 1
        and self.padding_mode == "zeros"
    ):
        out = F.conv2d(
            x[:, :, 0],
            self.weight[:, :, -1],
            self.bias,
            stride=self.stride[1:],
            padding=(pad[2], pad[0]),
            dilation=self.dilation[1:],
            groups=self.groups,
        )
        return out.unsqueeze(2)
    return type(self).forward(self, x, cache_x)


@contextlib.contextmanager
def single_frame_conv2d(model: nn.Module) -> Iterator[None]:
    """While active, every `WanCausalConv3d` of ``model`` runs single-frame, cache-less calls as conv2d.

    Exact by construction (see `_single_frame_forward`); calls with a cache or several frames use
    the original 3-D path. Nesting is allowed; the instance-level override is removed on exit. A
    conv under an accelerate hook (sequential offload) keeps its hook: the forward the hook calls
    (``_old_forward``) is the one replaced, so offloaded decoding computes exactly the same.
    """
    conv_cls = _causal_conv_cls()
    patched = []
    try:
        for module in model.modules():
            if not isinstance(module, conv_cls):
                continue
            hooked = "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__
            attr = "_old_forward" if hooked else "forward"
            current = module.__dict__.get(attr)
            if hooked and getattr(current, "__func__", None) is _single_frame_forward:
                continue  # nested
            if not hooked and attr in module.__dict__:
                continue  # already overridden (nested, or someone else's)
            setattr(module, attr, types.MethodType(_single_frame_forward, module))
            patched.append((module, attr, current))
        yield
    finally:
        for module, attr, previous in patched:
            if previous is None:
                delattr(module, attr)
            else:
                setattr(module, attr, previous)
