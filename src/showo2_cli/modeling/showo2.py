"""The Show-o2 network, named after the paper and laid out like the official checkpoint.

Attribute names equal the official state-dict prefixes, so the official weights load without a
key map: ``showo`` (Qwen2.5), ``image_embedder_und`` / ``position_embedding`` / ``und_trans``
(semantic layers), ``image_embedder_gen`` (low-level projector), ``fusion_proj``, ``time_embed``
and ``time_embed_proj`` (time token), ``diff_proj``, ``diffusion_head_a`` / ``diffusion_head_b``
(flow head).

Data flow for one sequence (spec §1): token embeddings; each visual block gets a *time token*
at its first position followed by the fused dual-path tokens of its latent; Qwen2.5 runs with
the omni-attention mask; the language head reads the final normed states for text, the flow
head reads the same states for velocities, which are unpacked with the raster-chunk layout.

The network's bookkeeping (dtype and device, the heads left out and loaded, buffers, gradient
checkpointing, initialisation) is the mixin in :mod:`~showo2_cli.modeling.bookkeeping`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import quiet_imports
from ..specs import ModelSpec
from .attention import TRANSFORMERS_ATTENTION, backend_mask, static_flex_on_cpu
from .bookkeeping import HEADS as HEADS  # (re-exported: its users import it from here)
from .bookkeeping import BookkeepingMixin
from .flow_head import FinalLayer, ModulatedAttentionBlock, RotaryEmbedding, TimestepEmbedder, unpack_velocity
from .mlp import use_gated_mlp
from .semantic import PatchEmbed, fusion_projector, interpolate_position_table, semantic_encoder

with quiet_imports():
    from diffusers.utils.accelerate_utils import apply_forward_hook
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

# transformers renamed the KV-cache keyword (``past_key_values`` -> ``cache``, the old one warns and
# goes away in 5.40): pass whichever this installed version takes, so nothing warns.
_CACHE_KEYWORD = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"


def qwen2_config(spec: ModelSpec) -> Qwen2Config:
    config = Qwen2Config(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        rms_norm_eps=spec.rms_norm_eps,
        rope_theta=spec.rope_theta,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings,
        use_sliding_window=False,
        sliding_window=None,
        hidden_act=spec.hidden_act,
        rope_scaling=dict(spec.rope_scaling) if spec.rope_scaling else None,
        attention_dropout=0.0,
    )
    config._attn_implementation = "sdpa"
    return config


@dataclass
class VisualEncoding:
    """Intermediates of the dual path for one batch of frames (useful for parity checks)."""

    und_patch: torch.Tensor  # (F, N, D_s) before the position table
    semantic: torch.Tensor  # (F, N, D_s) after the semantic layers
    low_level: torch.Tensor  # (F, N, H)
    fused: torch.Tensor  # (F, N, H)
    grid: tuple[int, int]  # patch grid (h', w')


class Showo2Model(BookkeepingMixin, nn.Module):
    """The whole trainable Show-o2 network (the VAE and tokenizer live outside).

    The network has no single ``forward``: callers use the methods below. Each public one carries
    diffusers' ``apply_forward_hook``, so an accelerate offload hook (``runtime.enable_offload``)
    brings the network to its execution device whichever method runs first.
    """

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        s = spec
        self.showo = Qwen2ForCausalLM(qwen2_config(s))
        use_gated_mlp(self.showo.model.layers)  # the same MLP, in place at inference (modeling/mlp.py)
        self.image_embedder_und = PatchEmbed(s.latent_channels, s.clip_latent_dim, s.patch_size)
        self.image_embedder_gen = PatchEmbed(s.latent_channels, s.hidden_size, s.patch_size)
        self.position_embedding = nn.Embedding(s.position_embedding_rows, s.clip_latent_dim)
        self.und_trans = semantic_encoder(s.clip_latent_dim, s.semantic_layers, s.semantic_heads,
                                          s.semantic_intermediate, s.semantic_eps, s.semantic_act)
        self.fusion_proj = fusion_projector(s.clip_latent_dim, s.hidden_size)
        if s.frame_embeddings:  # the optional temporal cue (ModelSpec.frame_embeddings); off officially
            self.frame_embedding = nn.Embedding(s.frame_embeddings, s.hidden_size)
        self.time_embed = TimestepEmbedder(s.head_hidden)
        if s.hidden_size != s.head_hidden:
            self.diff_proj = nn.Sequential(nn.Linear(s.hidden_size, s.head_hidden), nn.GELU(),
                                           nn.Linear(s.head_hidden, s.head_hidden))
            self.time_embed_proj = nn.Linear(s.head_hidden, s.hidden_size)
        else:
            self.diff_proj = nn.Identity()
            self.time_embed_proj = nn.Identity()
        self.diffusion_head_a = nn.ModuleList(
            ModulatedAttentionBlock(s.head_hidden, s.head_heads, s.head_kv_heads, s.head_dim_flow,
                                    s.head_intermediate, eps=s.head_norm_eps)
            for _ in range(s.head_layers)
        )
        self.diffusion_head_b = FinalLayer(s.head_hidden, s.patch_size * s.patch_size * s.latent_channels)
        self.head_rotary = RotaryEmbedding(s.head_dim_flow, s.head_rope_theta, s.head_rope_scaling)
        self.attn = "sdpa"  # the attention backend of the LLM and the flow head (set_attention)

    def set_attention(self, attn: str) -> None:
        """Run the LLM (transformers' ``attn_implementation``) and the flow head with ``attn``:
        ``sdpa``, ``eager`` or ``flex`` (flex attention over a BlockMask of the same mask)."""
        if attn not in TRANSFORMERS_ATTENTION:
            raise ValueError(f"unknown attention backend '{attn}'")
        if attn == "flex":
            static_flex_on_cpu()
        self.showo.set_attn_implementation(TRANSFORMERS_ATTENTION[attn])
        self.attn = attn
        self.head_attention()

    def head_attention(self) -> None:
        """The flow head's blocks run the network's backend: set with it, or when the head loads on
        first use (``placement.HeadLoader``; left out, it has no blocks to set)."""
        from .parts import NotLoaded

        if not isinstance(self.diffusion_head_a, NotLoaded):
            for block in self.diffusion_head_a:
                block.self_attn.attn = self.attn

    # ---- dual path + fusion (spec §4) ---------------------------------------------------------
    @apply_forward_hook
    def encode_visual(self, latents: torch.Tensor, understanding: bool = False, copies: int = 1) -> VisualEncoding:
        """Latents ``(F, C, h, w)`` (frames flattened) -> fused tokens ``(F, N, H)``.

        ``understanding``: the position rule of the official understanding demos (see
        :meth:`position_rows`) instead of the model's forward's (generation, training).
        ``copies``: the tokens stand for that many copies of the latents (:meth:`shared_visual_tokens`):
        the patch convolutions run on the copies' batch, as the official batch runs them (PyTorch's
        CPU convolution rounds a batch of one otherwise than a batch of two; the layers after them
        round each row alike), the rest once."""
        x = latents.to(self.dtype)
        batch = x.repeat(copies, 1, 1, 1) if copies > 1 else x
        und = self.image_embedder_und(batch)[:x.shape[0]]
        grid = (x.shape[-2] // self.spec.patch_size, x.shape[-1] // self.spec.patch_size)
        pos = self.position_rows(*grid, understanding=understanding)
        semantic = self.und_trans(inputs_embeds=und + pos[None]).last_hidden_state
        low = self.image_embedder_gen(batch)[:x.shape[0]]
        fused = self.fusion_proj(torch.cat([semantic, low], dim=-1))
        return VisualEncoding(und, semantic, low, fused, grid)

    def position_rows(self, grid_h: int, grid_w: int, understanding: bool = False) -> torch.Tensor:
        """The semantic path's position embedding ``(grid_h*grid_w, D_s)`` for a token grid.

        The official rule reads the CONFIGURED grid (config.json image_latent_height x width), not
        the input's: its forward adds the table row-major as it is when the table has exactly the
        configured grid's rows (so a non-square 2x8 grid over a 4x4 table takes the rows as they
        are), else interpolates the square table bicubically to the input's grid. Its understanding
        demos (inference_mmu*.py) always add the table's first configured-grid rows as they are.
        Inputs whose grid has another token count than the configured one (which the official code
        refuses with a shape error) are interpolated."""
        rows = torch.arange(self.position_embedding.num_embeddings, device=self.device)
        table = self.position_embedding(rows)  # the weight itself, read through forward so offload hooks see it
        n, configured = grid_h * grid_w, self.spec.config_tokens
        if n == configured and (table.shape[0] == n or (understanding and table.shape[0] > n)):
            return table[:n]
        return interpolate_position_table(table, grid_h, grid_w)

    @apply_forward_hook
    def visual_tokens(self, latents: torch.Tensor, copies: int = 1) -> torch.Tensor:
        """Image ``(B, C, h, w)`` or video ``(B, C, T, h, w)`` -> ``(B, T*N, H)``, frame-major
        (``copies``: as :meth:`encode_visual`'s)."""
        if latents.dim() == 4:
            return self.encode_visual(latents, copies=copies).fused
        b, c, t, h, w = latents.shape
        frames = latents.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        fused = self.encode_visual(frames, copies=copies).fused
        fused = self.add_frame_embedding(fused.reshape(b, t, *fused.shape[1:]))
        return fused.reshape(b, t * fused.shape[2], fused.shape[3])

    @apply_forward_hook
    def add_frame_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(..., T, N, H)`` tokens of T frames plus the per-frame embedding (a no-op when off)."""
        if not self.spec.frame_embeddings:
            return tokens
        t = tokens.shape[-3]
        rows = torch.arange(t, device=tokens.device).clamp_max(self.spec.frame_embeddings - 1)
        return tokens + self.frame_embedding(rows).to(tokens.dtype)[:, None, :]

    @apply_forward_hook
    def pooled_frame_tokens(self, frame_latents: torch.Tensor, pool: int, understanding: bool = True,
                            frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """Video understanding (spec §8.3): per-frame fused tokens resized bilinearly to pool x pool.

        ``(K, C, h, w)`` -> ``(K*pool*pool, H)``, frame-major. ``understanding``: as :meth:`encode_visual`'s.
        ``frame_index`` ``(K,)``: the video's frames as indices into ``frame_latents``, then the
        distinct frames only (a short clip sampled to more frames than it has repeats frames): each
        is encoded and pooled once, and the frame embedding still follows the video's order.
        """
        enc = self.encode_visual(frame_latents, understanding=understanding)
        k, _, hidden = enc.fused.shape
        grid = enc.fused.transpose(1, 2).reshape(k, hidden, *enc.grid)
        pooled = F.interpolate(grid, size=(pool, pool), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        if frame_index is not None:
            pooled = pooled[frame_index.to(pooled.device)]
            k = pooled.shape[0]
        pooled = self.add_frame_embedding(pooled)
        return pooled.reshape(k * pool * pool, hidden)

    # ---- time token (spec §4.5) ---------------------------------------------------------------
    @apply_forward_hook
    def time_embedding(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """t ``(B,)`` -> (adaLN condition ``(B, D_f)``, time token ``(B, H)``)."""
        cond = self.time_embed(t.to(self.device))
        return cond, self.time_embed_proj(cond)

    # ---- sequence assembly --------------------------------------------------------------------
    @apply_forward_hook
    def embed_sequence(self, input_ids: torch.Tensor, visual: list[list[torch.Tensor]],
                       slots: torch.Tensor, time_tokens: torch.Tensor) -> torch.Tensor:
        """Token embeddings with each visual slot filled: time token, then its visual tokens.

        ``slots (B, M, 2)`` holds (position of the time token, 1 + number of visual tokens);
        ``visual[b][m]`` is ``(n-1, H)``; ``time_tokens (B, M, H)``. Length-0 slots are skipped.
        """
        embeds = self.showo.model.embed_tokens(input_ids.to(self.device))
        for b in range(input_ids.shape[0]):
            for m in range(slots.shape[1]):
                offset, length = int(slots[b, m, 0]), int(slots[b, m, 1])
                if length == 0:
                    continue
                embeds[b, offset] = time_tokens[b, m].to(embeds.dtype)
                embeds[b, offset + 1:offset + length] = visual[b][m].to(embeds.dtype)
        return embeds

    @apply_forward_hook
    def embed_inputs(self, input_ids: torch.Tensor, visual: list[list[torch.Tensor]], slots: torch.Tensor,
                     t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The one sequence assembly (spec §4.5-§4.6), for generation, understanding and training.

        Each slot of ``slots (B, M, 2)`` gets the time token of its row's ``t`` then the row's
        visual tokens ``visual[b][m]``. ``t`` is ``(B,)``, or ``(1,)`` for every row (understanding
        uses t = 1, the clean end). Returns (``inputs_embeds (B, L, H)``, adaLN condition ``(B, D_f)``).
        """
        cond, time_token = self.time_embedding(t)
        b, m = input_ids.shape[0], slots.shape[1]
        time_tokens = time_token[:, None].expand(b, m, -1)
        return self.embed_sequence(input_ids, visual, slots, time_tokens), cond

    @apply_forward_hook
    def hidden_states(self, input_ids: torch.Tensor, visual: list[list[torch.Tensor]], slots: torch.Tensor,
                      t: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed_inputs` then the LLM under ``mask``: (final normed hidden states, condition)."""
        embeds, cond = self.embed_inputs(input_ids, visual, slots, t)
        hidden, _ = self.llm(embeds, mask)
        return hidden, cond

    # ---- LLM + heads --------------------------------------------------------------------------
    @apply_forward_hook
    def llm(self, inputs_embeds: torch.Tensor, mask: torch.Tensor | None, position_ids=None,
            past_key_values=None, use_cache: bool = False, last_only: bool = False):
        """Qwen2.5 with the caller's mask passed as is; returns the final *normed* hidden states.

        ``last_only`` (with a cache): only the last position's state is wanted, as when a prompt is
        run to decode from it. Every layer still puts every position's keys and values in the cache,
        but the last layer runs its attention and MLP for the last position alone (its other
        outputs feed nothing), and the states returned are that position's ``(B, 1, H)``. Exact:
        the same products on fewer rows.
        """
        if position_ids is None:
            start = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(start, start + inputs_embeds.shape[1], device=inputs_embeds.device)[None]
            position_ids = position_ids.expand(inputs_embeds.shape[0], -1)
        if mask is not None:
            mask = backend_mask(mask.to(inputs_embeds.device), self.attn, inputs_embeds.dtype)
        cut = None
        if last_only and past_key_values is not None and inputs_embeds.shape[1] > 1 \
                and (mask is None or isinstance(mask, torch.Tensor)):
            last_layer = self.showo.model.layers[self.showo.config.num_hidden_layers - 1]
            cut = last_layer.register_forward_pre_hook(_last_layer_for_last_position, with_kwargs=True)
        try:
            out = self.showo.model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                                   use_cache=use_cache, **{_CACHE_KEYWORD: past_key_values})
        finally:
            if cut is not None:
                cut.remove()
        return out.last_hidden_state, getattr(out, _CACHE_KEYWORD)

    @apply_forward_hook
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        self.load_heads("lm_head")
        return self.showo.lm_head(hidden)

    @apply_forward_hook
    def flow_head(self, hidden: torch.Tensor, cond: torch.Tensor, blocks: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
        """Final normed LLM states ``(B, L, H)`` -> per-position outputs ``(B, L, p*p*C)``.

        ``cond (B, M, D_f)`` is ``time_embed(t)`` per block; ``blocks (B, M, 2)`` the
        (offset, length) spans where modulation applies.
        """
        self.load_heads("flow_head")
        b, length, _ = hidden.shape
        x = self.diff_proj(hidden)
        block_index = block_index_map(blocks, length).to(x.device)
        position_ids = torch.arange(length, device=x.device)[None].expand(b, -1)
        cos, sin = self.head_rotary(position_ids, x.dtype)
        mask = backend_mask(mask.to(x.device), self.attn, x.dtype)
        cond = cond.to(x.dtype)
        recompute = getattr(self, "head_checkpointing", False) and self.training and torch.is_grad_enabled()
        for block in self.diffusion_head_a:
            if recompute:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(block, x, cond, block_index, cos, sin, mask, use_reentrant=False)
            else:
                x = block(x, cond, block_index, cos, sin, mask)
        return self.diffusion_head_b(x, cond, block_index)

    @torch.no_grad()
    @apply_forward_hook
    def prefix_cache(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> PrefixCache:
        """Run the text prefixes (``input_ids[b, :lengths[b]]``) once through the LLM and the flow head."""
        from transformers import DynamicCache

        self.load_heads("flow_head")
        lengths = torch.as_tensor(lengths, dtype=torch.long)
        width = int(lengths.max())
        ids = input_ids[:, :width].to(self.device)
        b = ids.shape[0]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()[None, None].expand(b, 1, -1, -1)
        cache = DynamicCache()
        hidden, cache = self.llm(self.showo.model.embed_tokens(ids), causal, past_key_values=cache, use_cache=True)
        x = self.diff_proj(hidden)
        position_ids = torch.arange(width, device=x.device)[None].expand(b, -1)
        cos, sin = self.head_rotary(position_ids, x.dtype)
        outside = torch.full((b, width), -1, dtype=torch.long, device=x.device)
        cond = torch.zeros(b, 1, self.spec.head_hidden, dtype=x.dtype, device=x.device)  # unused outside blocks
        causal = backend_mask(causal, self.attn, x.dtype)
        head = []
        for block in self.diffusion_head_a:
            head.append(block.prefix_kv(x, cos, sin))
            x = block(x, cond, outside, cos, sin, causal)
        return PrefixCache(cache, head, lengths.to(self.device), width)

    def shared_visual_tokens(self, video: torch.Tensor, repeats: int) -> torch.Tensor:
        """:meth:`visual_tokens` of ``video (B', C, T, h, w)`` for ``repeats * B'`` rows ordered
        ``[x; x; ...]`` (conditional rows, then unconditional ones with the same latents).

        The dual path (semantic layers, projector, fusion) sees only the latents, so under
        classifier-free guidance it runs once and its tokens are shared by every copy, instead of
        once per copy as the official batch does: the same numbers at ``1/repeats`` of the cost.
        The patch convolutions (a small part) still run on the copies' batch: batched alone, a
        prompt's latents rounded otherwise than in the official batch (probe IA).
        """
        tokens = self.visual_tokens(video, copies=repeats)
        return tokens if repeats == 1 else tokens.repeat(repeats, 1, 1)

    @apply_forward_hook
    def velocity_with_prefix(self, prefix: PrefixCache, x_t: torch.Tensor, t: torch.Tensor,
                             first_frame_as_cond: bool = False, repeats: int = 1) -> torch.Tensor:
        """:meth:`velocity` for rows whose text prefix is cached: only the visual block is computed.

        Every row's block is its time token followed by its visual tokens, at positions
        ``lengths[b] ...``; positions after the block are never computed (they cannot affect it).
        ``repeats``: ``x_t`` holds the latents of ``B / repeats`` rows, shared by ``repeats``
        copies (:meth:`shared_visual_tokens`); the velocity is returned for all ``B`` rows.
        """
        self.load_heads("flow_head")
        is_image = x_t.dim() == 4
        video = x_t[:, :, None] if is_image else x_t
        _, c, frames, h, w = video.shape
        cond, time_token = self.time_embedding(t)
        tokens = self.shared_visual_tokens(video.to(self.device), repeats)
        b = tokens.shape[0]
        chunk = torch.cat([time_token[:, None].to(tokens.dtype), tokens], dim=1)  # (B, P, H)
        p = chunk.shape[1]
        pos = prefix.lengths[:, None] + torch.arange(p, device=chunk.device)[None]
        keys = torch.arange(prefix.width, device=chunk.device)[None] < prefix.lengths[:, None]  # (B, Lp)
        # every query of the block sees the same keys (its row's prefix, then the whole block): one
        # key mask (B, 1, 1, Lp + P) that attention broadcasts, the same numbers as the (B, 1, P, Lp + P)
        # rows it stands for without building (and converting per layer) P copies of it
        mask = torch.cat([keys, torch.ones(b, p, dtype=torch.bool, device=chunk.device)], dim=-1)[:, None, None]
        if self.attn == "flex":  # a BlockMask is built from the dense rows
            mask = mask.expand(b, 1, p, -1)
        hidden, _ = self.llm(chunk, mask, position_ids=pos, past_key_values=prefix.llm, use_cache=True)
        truncate_cache(prefix.llm, prefix.width)
        x = self.diff_proj(hidden)
        cos, sin = self.head_rotary(pos, x.dtype)
        inside = None  # every position is in block 0 (see flow_head.per_position)
        block_cond = cond[:, None].to(x.dtype)
        mask = backend_mask(mask, self.attn, x.dtype)
        for block, kv in zip(self.diffusion_head_a, prefix.head, strict=True):
            x = block(x, block_cond, inside, cos, sin, mask, kv_cache=kv)
        out = self.diffusion_head_b(x, block_cond, inside)
        v = torch.stack([unpack_velocity(out[i, 1:].float(), frames, h, w, c, self.spec.velocity_layout,
                                         self.spec.patch_size) for i in range(b)])
        if first_frame_as_cond:
            v[:, :, 0] = 0
        return v[:, :, 0] if is_image else v

    @apply_forward_hook
    def velocity(self, input_ids: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, blocks: torch.Tensor,
                 mask: torch.Tensor, first_frame_as_cond: bool = False, repeats: int = 1) -> torch.Tensor:
        """One flow-matching evaluation for generation (one visual block per sequence).

        ``x_t`` is ``(B, C, h, w)`` or ``(B, C, T, h, w)``; ``blocks (B, 1, 2)`` holds
        (time-token position, 1 + T*N); ``mask`` the boolean omni mask ``(B, 1, L, L)``.
        Returns the velocity in float32 with the shape of ``x_t``, for all ``B`` rows; with
        ``repeats`` > 1, ``x_t`` holds ``B / repeats`` rows shared by that many copies
        (:meth:`shared_visual_tokens`).
        """
        is_image = x_t.dim() == 4
        video = x_t[:, :, None] if is_image else x_t
        _, c, frames, h, w = video.shape
        tokens = self.shared_visual_tokens(video, repeats)
        b = tokens.shape[0]
        hidden, cond = self.hidden_states(input_ids, [[tokens[i]] for i in range(b)], blocks, t, mask)
        out = self.flow_head(hidden, cond[:, None], blocks, mask)
        v = torch.stack([
            unpack_velocity(out[i, int(blocks[i, 0, 0]) + 1:int(blocks[i, 0, 0]) + int(blocks[i, 0, 1])].float(),
                            frames, h, w, c, self.spec.velocity_layout, self.spec.patch_size)
            for i in range(b)
        ])
        if first_frame_as_cond:
            v[:, :, 0] = 0
        return v[:, :, 0] if is_image else v


@dataclass
class PrefixCache:
    """Keys/values of the text before each sequence's visual block, computed once per sampling run.

    The prefix ``[bos] prompt [boi]`` cannot see the visual block (causal mask), and in the flow
    head it is un-modulated, so its keys and values are the same at every denoising step.
    Rows have different prefix lengths (conditional vs unconditional); entries past a row's own
    length are padding and are masked out.
    """

    llm: object  # transformers Cache after the prefill
    head: list[dict]  # per flow-head block: {"k", "v"} (B, kv_heads, Lp, d)
    lengths: torch.Tensor  # (B,) prefix length of each row = position of its time token
    width: int  # padded prefix length Lp


def _last_layer_for_last_position(layer, args, kwargs):
    """Forward pre-hook on the LLM's last decoder layer (see :meth:`Showo2Model.llm` ``last_only``):
    put the keys/values of every position but the last in the cache (the layer's own norm,
    projections and rotary embedding), then hand the layer the last position alone, with its mask
    row, so it attends to all of them and returns that position's output."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    hidden = args[0]
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    attn = layer.self_attn
    cos, sin = kwargs["position_embeddings"]
    h = layer.input_layernorm(hidden[:, :-1])
    shape = (*h.shape[:-1], -1, attn.head_dim)
    keys = attn.k_proj(h).view(shape).transpose(1, 2)
    values = attn.v_proj(h).view(shape).transpose(1, 2)
    _, keys = apply_rotary_pos_emb(keys, keys, cos[:, :-1], sin[:, :-1])
    cache.update(keys, values, attn.layer_idx)
    kwargs = dict(kwargs, position_embeddings=(cos[:, -1:], sin[:, -1:]))
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        kwargs["attention_mask"] = mask[:, :, -1:]
    for name in ("position_ids", "cache_position"):
        if isinstance(kwargs.get(name), torch.Tensor):
            kwargs[name] = kwargs[name][..., -1:]
    return (hidden[:, -1:], *args[1:]), kwargs


def truncate_cache(cache, length: int) -> None:
    """Drop everything after ``length`` positions (negative crop = remove, in transformers 4 and 5)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def block_index_map(blocks: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, L)``: index of the block each position lies in, or -1 (blocks never overlap)."""
    blocks = torch.as_tensor(blocks, dtype=torch.long)
    pos = torch.arange(length, device=blocks.device)
    offsets, lengths = blocks[..., 0], blocks[..., 1]
    inside = (pos[None, None] >= offsets[..., None]) & (pos[None, None] < (offsets + lengths)[..., None])
    m_idx = torch.arange(blocks.shape[1], device=blocks.device)[None, :, None]
    return torch.where(inside, m_idx, torch.full_like(m_idx, -1).expand_as(inside)).amax(dim=1)
