"""The flow head: time embedding, adaLN-modulated transformer blocks and the final layer (spec §4.5, §6).

The head reads the LLM's final normed hidden states (through ``diff_proj``), runs
``head_layers`` DiT-style blocks over the *whole* sequence with the omni mask, and predicts
``p*p*C`` velocity values per position. adaLN modulation applies only at positions inside a
visual block; text and pad positions pass through the plain pre-norm block (shift 0, scale 0,
gate 1). Attention is GQA with per-head RMS QK-norm applied before a llama3-scaled RoPE. Its
output rows and the latent they stand for: :func:`unpack_velocity` / :func:`pack_velocity`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import attend
from .mlp import gated_mlp


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to the input dtype, then scaled (Qwen2 convention)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of t in [0, 1] (used as is, cos first) followed by an MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def frequencies(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        dtype = self.mlp[0].weight.dtype
        return self.mlp(self.frequencies(t, self.freq_dim).to(dtype))


def llama3_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    """RoPE inverse frequencies with the llama3 long-context rule (spec §6.2)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if not scaling or scaling.get("rope_type", "default") == "default":
        return inv
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for absolute positions; buffers are rebuilt, never loaded."""

    def __init__(self, head_dim: int, theta: float, scaling: dict | None):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, theta, scaling
        self.register_buffer("inv_freq", llama3_inv_freq(head_dim, theta, scaling), persistent=False)

    def reset_buffers(self, device=None) -> None:
        self.inv_freq = llama3_inv_freq(self.head_dim, self.theta, self.scaling).to(device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype):
        freqs = position_ids.float()[..., None] * self.inv_freq.float()[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class HeadAttention(nn.Module):
    attn = "sdpa"  # the attention backend (Showo2Model.set_attention sets it with the LLM's)

    def __init__(self, hidden: int, heads: int, kv_heads: int, head_dim: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q_proj = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(head_dim, eps=1e-6)
        self.k_norm = RMSNorm(head_dim, eps=1e-6)

    def forward(self, x, cos, sin, mask, kv_cache: dict | None = None):
        b, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, length, self.heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, length, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, length, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = cos[:, None], sin[:, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if kv_cache is not None:  # a fixed prefix whose keys/values were computed once
            k = torch.cat([kv_cache["k"].expand(b, -1, -1, -1), k], dim=2)
            v = torch.cat([kv_cache["v"].expand(b, -1, -1, -1), v], dim=2)
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        out = attend(q, k, v, mask, self.attn)
        return self.o_proj(out.transpose(1, 2).reshape(b, length, -1))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return gated_mlp(self.gate_proj, self.up_proj, self.down_proj, x)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` in float32, cast back."""
    return (x.float() * (1 + scale.float()) + shift.float()).to(x.dtype)


def per_position(params: torch.Tensor, block_index: torch.Tensor, outside: float) -> torch.Tensor:
    """Spread per-block values ``(B, M, D)`` to positions ``(B, L, D)``.

    ``block_index[b, i]`` is the block that position ``i`` belongs to, or -1; positions outside
    every block get ``outside`` (0 for shift/scale, 1 for gates). ``block_index`` None: every
    position is in block 0, and the values are returned as ``(B, 1, D)`` for the caller's
    arithmetic to broadcast (the same numbers, without a ``(B, L, D)`` copy of each).
    """
    if block_index is None:
        return params[:, :1]
    idx = block_index.clamp(min=0)[..., None].expand(-1, -1, params.shape[-1])
    gathered = params.gather(1, idx)
    return torch.where(block_index[..., None] >= 0, gathered, torch.full_like(gathered, outside))


class ModulatedAttentionBlock(nn.Module):
    """Pre-norm transformer block with adaLN shift/scale/gate for attention and MLP."""

    def __init__(self, hidden, heads, kv_heads, head_dim, intermediate, eps=1e-5):
        super().__init__()
        self.self_attn = HeadAttention(hidden, heads, kv_heads, head_dim)
        self.mlp = SwiGLU(hidden, intermediate)
        self.input_layernorm = RMSNorm(hidden, eps=eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps=eps)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden, bias=True))

    def forward(self, x, cond, block_index, cos, sin, mask, kv_cache=None):
        mods = self.adaLN_modulation(cond).chunk(6, dim=-1)  # each (B, M, D)
        shift1, scale1, shift2, scale2 = (per_position(m, block_index, 0.0) for m in (mods[0], mods[1], mods[3], mods[4]))
        gate1, gate2 = (per_position(m, block_index, 1.0) for m in (mods[2], mods[5]))
        x = x + gate1 * self.self_attn(modulate(self.input_layernorm(x), shift1, scale1), cos, sin, mask, kv_cache)
        x = x + gate2 * self.mlp(modulate(self.post_attention_layernorm(x), shift2, scale2))
        return x

    def prefix_kv(self, x, cos, sin) -> dict:
        """Keys/values of an un-modulated text prefix (constant across denoising steps)."""
        h = self.input_layernorm(x)
        attn = self.self_attn
        b, length, _ = h.shape
        k = attn.k_norm(attn.k_proj(h).view(b, length, attn.kv_heads, attn.head_dim)).transpose(1, 2)
        v = attn.v_proj(h).view(b, length, attn.kv_heads, attn.head_dim).transpose(1, 2)
        c, s = cos[:, None], sin[:, None]
        return {"k": k * c + rotate_half(k) * s, "v": v}


class FinalLayer(nn.Module):
    """RMSNorm, adaLN shift/scale (block positions only), linear to p*p*C values."""

    def __init__(self, hidden: int, out_dim: int):
        super().__init__()
        self.norm_final = RMSNorm(hidden, eps=1e-6)
        self.linear = nn.Linear(hidden, out_dim, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x, cond, block_index):
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=-1)
        shift, scale = per_position(shift, block_index, 0.0), per_position(scale, block_index, 0.0)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ---- the output layout: raster-chunk (official, spec §6.4) or patch-aligned ----------------

def unpack_velocity(rows: torch.Tensor, frames: int, height: int, width: int, channels: int,
                    layout: str = "raster", patch_size: int = 2) -> torch.Tensor:
    """Rows ``(T*N, p*p*C)`` -> latent ``(C, T, h, w)`` (``ModelSpec.velocity_layout``).

    ``raster`` (official): row ``r`` of a frame holds raster positions ``4r .. 4r+3`` of the full
    ``h x w`` grid (``p*p`` consecutive positions, channel fastest); not a 2x2 spatial patch.
    ``patch``: row ``r`` holds the ``p x p`` patch at grid position ``r`` (row-major), the patch the
    same token embeds; within a row the order is (patch row, patch column, channel).
    """
    if layout == "patch":
        p = patch_size
        return (rows.reshape(frames, height // p, width // p, p, p, channels)
                .permute(5, 0, 1, 3, 2, 4).reshape(channels, frames, height, width))
    per_row = rows.shape[-1] // channels
    return rows.reshape(frames, -1, per_row, channels).reshape(frames, height, width, channels).permute(3, 0, 1, 2)


def pack_velocity(latent: torch.Tensor, patch_size: int = 2, layout: str = "raster") -> torch.Tensor:
    """Inverse of :func:`unpack_velocity`: ``(C, T, h, w)`` -> ``(T*N, p*p*C)`` (training targets)."""
    c, t, h, w = latent.shape
    p = patch_size
    if layout == "patch":
        return latent.reshape(c, t, h // p, p, w // p, p).permute(1, 2, 4, 3, 5, 0).reshape(-1, p * p * c)
    return latent.permute(1, 2, 3, 0).reshape(t, -1, p * p * c).reshape(-1, p * p * c)
