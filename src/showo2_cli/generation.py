"""Latent generation with the flow head: the guided velocity of a layout and the sampler loop.

Shared by t2i, t2v, i2v and training-time previews. Rows of a layout are
``[conditional prompts..., unconditional prompts...]``; the guided velocity is computed for the
conditional half and (as the official sampler does) reused for the unconditional half, so only
one copy of the state is carried.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .modeling.attention import omni_attention_mask
from .sampling import guided, sample, time_grid, uses_uncond
from .sequences import Layout


def select_rows(layout: Layout, rows: list[int]) -> Layout:
    return Layout(layout.input_ids[rows], layout.slots[rows], layout.blocks[rows])


def guided_velocity_fn(network, layout: Layout, guidance: float, trim: bool = True, cache_prefix: bool = False,
                       first_frame_as_cond: bool = False) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``v(x, t)`` for ``x`` of the conditional rows (B, C, [T,] h, w), guidance applied.

    Conditional and unconditional rows run in one batched forward. ``trim`` drops the positions
    after the visual block (eoi, eos, pads): they cannot influence the velocity. ``cache_prefix``
    computes the text before the block once and reuses its keys/values at every step (needs one
    block per row that is the row's time token plus visual tokens, i.e. a generation layout).
    """
    batch = layout.input_ids.shape[0] // 2
    if not uses_uncond(guidance):
        layout = select_rows(layout, list(range(batch)))
    if trim:
        layout = layout.trimmed()
    device = network.device
    ids = layout.input_ids.to(device)
    rows = ids.shape[0]
    if cache_prefix:
        prefix = network.prefix_cache(ids, layout.slots[:, 0, 0])
        mask = None
    else:
        mask = omni_attention_mask(layout.blocks, layout.seq_len, device=device)

    @torch.no_grad()
    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        x_in = x if rows == x.shape[0] else torch.cat([x, x], dim=0)
        t_vec = torch.full((rows,), float(t), dtype=torch.float32, device=device)
        if cache_prefix:
            v = network.velocity_with_prefix(prefix, x_in.to(device), t_vec, first_frame_as_cond=first_frame_as_cond)
        else:
            v = network.velocity(ids, x_in.to(device), t_vec, layout.blocks, mask, first_frame_as_cond=first_frame_as_cond)
        v = v.to(x.device)
        if rows == x.shape[0]:
            return v
        return guided(v[:batch], v[batch:], guidance)

    return velocity


def generate_latents(network, layout: Layout, noise: torch.Tensor, guidance: float, steps: int, shift: float,
                     method: str = "euler", trim: bool = True, cache_prefix: bool = False,
                     first_frame_as_cond: bool = False, callback=None, trajectory: list | None = None) -> torch.Tensor:
    """Integrate from ``noise`` (float32, conditional rows only) to clean latents."""
    velocity = guided_velocity_fn(network, layout, guidance, trim=trim, cache_prefix=cache_prefix,
                                  first_frame_as_cond=first_frame_as_cond)
    return sample(velocity, noise.float(), time_grid(steps, shift), method=method, callback=callback,
                  trajectory=trajectory)
