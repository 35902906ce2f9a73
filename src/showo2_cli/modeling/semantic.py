"""The dual-path visual encoder: semantic layers, low-level projector and fusion (spec §4).

Semantic path: a new 2x2 patch embedding on VAE latents, SigLIP's learned position table
(interpolated bicubically when the patch grid differs from the table's), then SigLIP-so400m's
encoder layers minus the last one (transformers' ``SiglipEncoder``). Low-level path: another
2x2 patch embedding to the LLM width. Fusion: ``[semantic || low-level]`` -> RMSNorm -> Linear
-> GELU(erf) -> Linear.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import quiet_imports
from .flow_head import RMSNorm

with quiet_imports():
    from transformers import SiglipVisionConfig
    from transformers.models.siglip.modeling_siglip import SiglipEncoder


class PatchEmbed(nn.Module):
    """Conv2d(C -> D, kernel p, stride p); tokens flattened row-major over the patch grid."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def semantic_encoder(dim: int, layers: int, heads: int, intermediate: int, eps: float,
                     act: str = "gelu_pytorch_tanh") -> SiglipEncoder:
    """SigLIP encoder layers (pre-LN, an ``act`` MLP (SigLIP's own: tanh-GELU), full attention) of the given size."""
    config = SiglipVisionConfig(
        hidden_size=dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        layer_norm_eps=eps,
        hidden_act=act,
        attention_dropout=0.0,
    )
    config._attn_implementation = "sdpa"
    return SiglipEncoder(config)


def interpolate_position_table(table: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """Resize a square learned table ``(N, D)`` to ``(grid_h*grid_w, D)`` (bicubic, align_corners=False)."""
    n, dim = table.shape
    side = int(round(math.sqrt(n)))
    if side * side == grid_h * grid_w and side == grid_h and side == grid_w:
        return table
    grid = table.reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
    return grid.to(table.dtype).permute(0, 2, 3, 1).reshape(grid_h * grid_w, dim)


def fusion_projector(clip_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        RMSNorm(clip_dim + hidden, eps=1e-6),
        nn.Linear(clip_dim + hidden, hidden),
        nn.GELU(),  # exact (erf) GELU
        nn.Linear(hidden, hidden),
    )
