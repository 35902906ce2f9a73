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
    # inside[b, m, i]: position i lies in block m of sequence b
    inside = (pos[None, None, :] >= offsets[..., None]) & (pos[None, None, :] < (offsets + lengths)[..., None])
    inside = inside.float()
    same_block = torch.einsum("bmi,bmj->bij", inside, inside) > 0
    return (allowed | same_block)[:, None]


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
