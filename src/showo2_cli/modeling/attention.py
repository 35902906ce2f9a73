"""Omni-attention: causal everywhere, bidirectional inside each visual block (spec §5.3).

``modality_positions`` is a long tensor ``(B, M, 2)`` of ``(offset, length)`` pairs, one per
visual block of each sequence; unused slots are ``(0, 0)``. Query ``q`` may attend to key ``k``
iff ``k <= q`` or both lie in the same block ``[o, o + n)``. Padding is never masked: pads sit
after all content, so causality already hides them.

The same boolean mask (True = may attend) drives the LLM and the flow head.
"""

from __future__ import annotations

import torch


def omni_attention_mask(modality_positions: torch.Tensor, seq_len: int, device=None) -> torch.Tensor:
    """Boolean mask ``(B, 1, L, L)``: True where attention is allowed."""
    mp = torch.as_tensor(modality_positions, dtype=torch.long)
    if mp.dim() != 3 or mp.shape[-1] != 2:
        raise ValueError(f"modality_positions must be (B, M, 2), got {tuple(mp.shape)}")
    device = device if device is not None else mp.device
    mp = mp.to(device)
    pos = torch.arange(seq_len, device=device)
    allowed = (pos[None, :] <= pos[:, None]).expand(mp.shape[0], seq_len, seq_len).clone()
    offsets, lengths = mp[..., 0], mp[..., 1]  # (B, M)
    # inside[b, m, i]: position i lies in block m of sequence b (a few (B, L) rows, no L x L temporary
    # but the mask itself: the blocks are or-ed in one at a time)
    inside = (pos[None, None, :] >= offsets[..., None]) & (pos[None, None, :] < (offsets + lengths)[..., None])
    for m in range(inside.shape[1]):
        row = inside[:, m]  # (B, L)
        allowed |= row[:, :, None] & row[:, None, :]
    return allowed[:, None]


def batch_mask(modality_positions: torch.Tensor, seq_len: int, device=None) -> torch.Tensor:
    """The omni mask of a batch of rows padded to ``seq_len``: :func:`omni_attention_mask`, or
    its first row alone ``(1, 1, L, L)`` when every row has the same blocks (a training forward
    of image-understanding rows of one format and resolution; generation rows whose captions all
    fill the text budget), which attention broadcasts over the batch with the same numbers.
    Padding is never masked, so rows with the same blocks have the same mask."""
    mp = torch.as_tensor(modality_positions, dtype=torch.long)
    if mp.dim() == 3 and mp.shape[0] > 1 and bool((mp == mp[:1]).all()):
        mp = mp[:1]
    return omni_attention_mask(mp, seq_len, device=device)


def sdpa_mask(mask_bool: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The float mask SDPA itself makes of a boolean one (0 where allowed, ``-inf`` where blocked),
    made once. Given the boolean mask, SDPA converts it in every call, and under autograd each
    layer's kernel keeps its own converted copy for the backward pass (the LLM's and the flow
    head's layers: one ``(B, 1, L, L)`` float mask each); given this, every layer gets the same
    values and keeps the one tensor. Outputs and gradients are the same bits. Under autocast the
    mask is made in autocast's dtype, the one SDPA then runs in: a mask of another dtype is cast in
    every call (training's bf16 mixed precision kept a bf16 copy per layer again)."""
    kind = mask_bool.device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):  # (not: torch's lazy device)
        dtype = torch.get_autocast_dtype(kind)
    return torch.where(mask_bool, torch.zeros((), dtype=dtype, device=mask_bool.device),
                       torch.full((), float("-inf"), dtype=dtype, device=mask_bool.device))


def shared_mask(mask_bool: torch.Tensor, attn: str, dtype: torch.dtype) -> torch.Tensor:
    """The mask of a forward whose LLM and flow head both attend under it (training's): under sdpa
    converted here, once (:func:`sdpa_mask`: 0 and ``-inf``, the same numbers in every float
    type), so one tensor serves both modules and autograd (or gradient checkpointing) keeps one;
    the other backends' forms depend on the module's dtype: each module converts it, as given."""
    if attn == "sdpa" and mask_bool.dtype == torch.bool:
        return sdpa_mask(mask_bool, dtype)
    return mask_bool


def additive_mask(mask_bool: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The official additive form: 0 where allowed, ``int64.min`` cast to ``dtype`` where blocked."""
    blocked = torch.tensor(torch.iinfo(torch.int64).min, dtype=dtype)
    return torch.where(mask_bool, torch.zeros((), dtype=dtype), blocked)


def extend_mask_for_decoding(mask_bool: torch.Tensor, new_tokens: int = 1) -> torch.Tensor:
    """Append ``new_tokens`` causal rows/columns (each new token sees everything before it)."""
    b, _, length, _ = mask_bool.shape
    total = length + new_tokens
    out = torch.zeros(b, 1, total, total, dtype=torch.bool, device=mask_bool.device)
    out[:, :, :length, :length] = mask_bool
    rows = torch.arange(length, total, device=mask_bool.device)
    out[:, :, rows, :] = torch.arange(total, device=mask_bool.device)[None, :] <= rows[:, None]
    return out


# ---- the mask in each attention backend's form (``--attn``) --------------------------------------

#: ``--attn`` names -> transformers' ``attn_implementation`` for the Qwen2 LLM.
TRANSFORMERS_ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flex": "flex_attention"}


def flex_block_mask(mask_bool: torch.Tensor, block_size: int = 128):
    """The boolean mask ``(B, 1, Lq, Lk)`` as a flex-attention ``BlockMask``.

    The mask function reads the dense mask, so every mask the project builds (omni, prefix-cache,
    decoding) keeps its exact meaning; the block structure lets flex attention skip the
    ``block_size x block_size`` tiles that are fully blocked (the upper triangle outside visual
    blocks) and apply no mask inside fully allowed ones.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    dense = mask_bool[:, 0]
    b, lq, lk = dense.shape

    def mask_mod(batch, head, q, kv):
        return dense[batch, q, kv]

    return create_block_mask(mask_mod, b, None, lq, lk, device=dense.device, BLOCK_SIZE=block_size)


def backend_mask(mask_bool: torch.Tensor | None, attn: str, dtype: torch.dtype):
    """The boolean mask as ``attn`` takes it: SDPA's float form (:func:`sdpa_mask`) for sdpa,
    additive for eager, a BlockMask for flex."""
    if mask_bool is None or not isinstance(mask_bool, torch.Tensor) or mask_bool.dtype != torch.bool:
        return mask_bool  # already converted (or none)
    if attn == "eager":
        return additive_mask(mask_bool, dtype)
    if attn == "flex":
        return flex_block_mask(mask_bool)
    return sdpa_mask(mask_bool, dtype)


_COMPILED_FLEX: dict[bool, object] = {}


def _flex(device_type: str = "cuda"):
    """flex_attention compiled once (the fused kernel; uncompiled it is a slow reference), as
    transformers does for the LLM; not re-wrapped while an outer torch.compile traces. On the CPU
    it is compiled for static shapes (one compile per shape): torch's CPU flex template, compiled
    again with dynamic shapes once a second shape arrives (a caption's first decoding step after
    its prompt), fails to build (C++ compile error, torch 2.13)."""
    from torch.nn.attention.flex_attention import flex_attention

    if torch.compiler.is_compiling():
        return flex_attention
    static = device_type == "cpu"
    if static not in _COMPILED_FLEX:
        _COMPILED_FLEX[static] = torch.compile(flex_attention, dynamic=False) if static else torch.compile(flex_attention)
    return _COMPILED_FLEX[static]


def static_flex_on_cpu() -> None:
    """Route transformers' flex attention (the LLM's, ``attn_implementation="flex_attention"``)
    through :func:`_flex` for CPU tensors, so the LLM gets the static CPU compile too; CUDA
    tensors keep transformers' own compiled function. Idempotent."""
    from ..runtime import quiet_imports

    with quiet_imports():
        import transformers.integrations.flex_attention as tf_flex

    original = tf_flex.compile_friendly_flex_attention
    if getattr(original, "showo2_static_cpu", False):
        return

    def compile_friendly_flex_attention(query, key, value, training=False, **kwargs):
        if query.device.type == "cpu" and not torch.compiler.is_compiling():
            return _flex("cpu")(query, key, value, **kwargs)
        return original(query, key, value, training=training, **kwargs)

    compile_friendly_flex_attention.showo2_static_cpu = True
    tf_flex.compile_friendly_flex_attention = compile_friendly_flex_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, attn: str = "sdpa") -> torch.Tensor:
    """Attention ``(B, H, Lq, d)`` over keys/values with as many heads, in backend ``attn``, the
    mask in that backend's form (see :func:`backend_mask`; a BlockMask always runs flex)."""
    from torch.nn.attention.flex_attention import BlockMask

    if isinstance(mask, BlockMask):
        return _flex(q.device.type)(q, k, v, block_mask=mask)
    if attn == "eager" and mask is not None and mask.is_floating_point():
        scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + mask
        return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype), v)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
