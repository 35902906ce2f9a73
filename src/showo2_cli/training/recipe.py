"""The Show-o2 training recipe (spec §7, §12): sequences, noising, and the joint NTP + flow loss.

One step's samples become one batch of rows that goes through ONE forward pass:

* **generation rows** (t2i, t2v; spec §8.1/§8.4): ``[bos] caption [boi] (time)(visual) [eoi] [eos]``,
  the caption replaced by "" with probability ``cond_dropout``. The latent ``x1`` is mixed with
  noise ``x0`` at ``t`` (shifted logit-normal, §7.2): ``x_t = t*x1 + (1-t)*x0``; the target is
  ``u = x1 - x0`` packed in the model's velocity layout (official: raster-chunk, §6.4). No text loss.
* **understanding rows** (mmu, mmu_vid; §12.2) in the ``captioning`` (stage 1),
  ``pretraining`` (stage 2a/2b) or ``tuning`` (stage 2c, ChatML with the system prompt) format,
  with the clean latent (``t = 1``) and labels on the answer tokens only (captioning also
  supervises ``boi``/``eoi``, as the official code does). No flow loss.

Rows are padded at the end with ``[PAD]`` to the longest row; the omni mask is built from every
row's visual block. With ``batch.split = "role"`` each role's rows form their own batch (padded
only to their own longest row) and the step's loss is the sum of the batches' losses, each
divided by the whole step's token and element counts: the same loss and gradients as one batch. ``loss = ntp * L_ntp + flow * L_flow`` with ``L_ntp`` the token-mean
cross-entropy of shifted labels and ``L_flow`` the element-mean squared error over the visual
positions of generation rows (the time-token row excluded; §7.3).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError, UsageError
from ..modeling.attention import batch_mask, shared_mask
from ..modeling.flow_head import pack_velocity
from ..sequences import IGNORE
from ..sequences import TrainingRows as TextBuilder  # the row writer lives with the inference rows
from .data import Sample
from .schema import LossConfig

# ---- t sampling (spec §7.2) -------------------------------------------------------------------

def shift_t(t: torch.Tensor, seq_len: torch.Tensor | float) -> torch.Tensor:
    """The resolution shift: mu on the line through (256, 0.5) and (4096, 1.15), k = e^mu,
    ``sigma' = k*sigma / (1 + (k-1)*sigma)`` with ``sigma = 1 - t``. Pushes t towards noise."""
    m = 0.65 / 3840
    b = 0.5 - 256 * m
    k = torch.exp(m * torch.as_tensor(seq_len, dtype=torch.float64) + b)
    sigma = 1 - t.double()
    sigma = k * sigma / (1 + (k - 1) * sigma)
    return (1 - sigma).to(t.dtype)


def sample_t(n: int, seq_lens: list[int], cfg: LossConfig, generator: torch.Generator) -> torch.Tensor:
    """``n`` flow times in [0, 1] (t = 0 noise, 1 data), one per generation sample."""
    if cfg.t_sampling == "logit_normal":
        t = torch.sigmoid(torch.randn(n, generator=generator) * cfg.t_std + cfg.t_mean)
    else:
        t = torch.rand(n, generator=generator)
    if cfg.t_shift:
        t = shift_t(t, torch.tensor(seq_lens, dtype=torch.float64))
    return t.float()


# ---- the batch ------------------------------------------------------------------------------

@dataclass
class VisualGroup:
    """Rows whose visual inputs share a shape, encoded in one call."""

    kind: str  # "latent" (images (B,C,h,w) / videos (B,C,T,h,w)) or "frames" (pooled video understanding)
    rows: list[int]
    x: torch.Tensor
    pool: int = 0


@dataclass
class Batch:
    input_ids: torch.Tensor  # (R, L)
    labels: torch.Tensor  # (R, L), IGNORE where not supervised
    slots: torch.Tensor  # (R, 1, 2): time-token position, 1 + visual tokens ((0, 0): none)
    t: torch.Tensor  # (R,) float32; 1 for understanding rows
    groups: list[VisualGroup]
    gen_rows: list[int]  # rows with a flow target
    targets: list[torch.Tensor]  # packed velocity targets (n_visual, p*p*C), one per gen row
    roles: list[str] = field(default_factory=list)

    def to(self, device) -> Batch:
        return Batch(self.input_ids.to(device), self.labels.to(device), self.slots.to(device), self.t.to(device),
                     [VisualGroup(g.kind, g.rows, g.x.to(device), g.pool) for g in self.groups],
                     self.gen_rows, [u.to(device) for u in self.targets], self.roles)

    @property
    def rows(self) -> int:
        return self.input_ids.shape[0]


def num_visual_positions(latent_shape: tuple[int, ...], patch: int, role: str, pool: int = 0) -> int:
    """Positions of a visual block including its time token (spec §4.6)."""
    if role == "mmu_vid":
        return 1 + latent_shape[0] * pool * pool
    h, w = latent_shape[-2:]
    frames = latent_shape[1] if len(latent_shape) == 4 else 1
    return 1 + frames * (h // patch) * (w // patch)


def assemble(items: list[dict], text: TextBuilder, patch: int, pad_id: int) -> Batch:
    """Rows from prepared items (each with role, latent x, t, target, text fields)."""
    ids_rows, label_rows, slots, ts, gen_rows, targets, roles = [], [], [], [], [], [], []
    groups: dict[tuple, VisualGroup] = {}
    for r, it in enumerate(items):
        role = it["role"]
        roles.append(role)
        if role in ("t2i", "t2v"):
            x = it["x"]
            nv = num_visual_positions(tuple(x.shape), patch, role)
            ids, slot = text.generation(it["prompt"], nv, it["max_seq_len"], video=role == "t2v")
            labels = [IGNORE] * len(ids)
            gen_rows.append(r)
            targets.append(it["target"])
        else:
            sample = it["sample"]
            x = it.get("x")
            nv = num_visual_positions(tuple(x.shape), patch, role, it.get("pool", 0)) if x is not None else 0
            ids, labels, slot = text.understanding(sample, nv, it["max_seq_len"])
        if slot[1]:
            kind = "frames" if role == "mmu_vid" else "latent"
            key = (kind, tuple(x.shape), it.get("pool", 0))
            group = groups.setdefault(key, VisualGroup(kind, [], [], it.get("pool", 0)))
            group.rows.append(r)
            group.x.append(x)
        ids_rows.append(ids)
        label_rows.append(labels)
        slots.append([list(slot)])
        ts.append(float(it["t"]))
    length = max(len(r) for r in ids_rows)
    input_ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for r, (ids, lab) in enumerate(zip(ids_rows, label_rows, strict=True)):
        input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[r, :len(lab)] = torch.tensor(lab, dtype=torch.long)
    for g in groups.values():
        g.x = torch.stack(g.x)
    return Batch(input_ids, labels, torch.tensor(slots, dtype=torch.long), torch.tensor(ts, dtype=torch.float32),
                 list(groups.values()), gen_rows, targets, roles)


# ---- turning samples into a batch ---------------------------------------------------------------

@dataclass
class RecipeContext:
    """What :func:`prepare_batch` needs besides the samples."""

    spec: object  # ModelSpec
    text: TextBuilder
    vae: object | None  # WanVAE (frozen); None when every latent is cached
    loss: LossConfig
    max_seq_len: dict[int, int]  # per source index
    pool: dict[int, int]  # mmu_vid sources: pooled grid
    t_dtype: torch.dtype = torch.float32  # bf16 in bf16 runs (spec §7.2: t is cast to bf16)
    vae_device: torch.device | str = "cpu"
    vae_autocast: object = contextlib.nullcontext  # the VAE runs under bf16 autocast in bf16 runs (spec §12.1)


@torch.no_grad()
def encode_missing(samples: list[Sample], vae, device, autocast=contextlib.nullcontext) -> None:
    """Fill ``sample.latent`` (normalised posterior mean and log-variance, CPU float32) for every
    sample that has pixels, batching equal shapes; store cache entries where asked."""
    from ..media import frames_to_tensor
    from .latent_cache import LatentCache, entry_shape

    todo: dict[tuple, list[Sample]] = {}
    for s in samples:
        if s.latent is None and s.pixels is not None:
            per_frame = s.role == "mmu_vid"
            todo.setdefault((per_frame, s.pixels.shape), []).append(s)
    if todo and vae is None:
        raise UsageError("training needs the VAE to encode pixels (model.vae)")
    for (per_frame, shape), group in todo.items():
        want = entry_shape(group[0].role, *shape[:3], vae)  # one sample's latent, as the cache checks it
        pix = torch.stack([frames_to_tensor(s.pixels) for s in group])  # (B, 3, T, H, W)
        if per_frame:  # video understanding: every frame alone (spec §8.3)
            b, c, t, h, w = pix.shape
            pix = pix.permute(0, 2, 1, 3, 4).reshape(b * t, c, 1, h, w)
        elif pix.shape[2] == 1:
            pix = pix[:, :, 0]
        with autocast():
            mu, logvar = vae.encode_moments(pix.to(device))
        mean, inv_std = vae.stats(mu.dim())
        mu = (mu - mean.to(mu.device)) * inv_std.to(mu.device)
        # the posterior in the normalised space (a raw sample z ~ N(mu, e^logvar), normalised, has
        # log-variance logvar + 2 log(1/std)), so x1 = mu + e^(logvar/2) eps is the official sample
        logvar = logvar.float() + 2.0 * torch.log(inv_std.to(logvar.device))
        mu, logvar = mu.float().cpu(), logvar.float().cpu()
        b = len(group)  # (B*T, C, 1, h, w) -> (B, T, C, h, w) frame by frame; (B, C, 1, h, w) -> (B, C, h, w)
        raw = (b * want[0], want[1], 1, *want[2:]) if per_frame else (b, want[0], want[1] if len(want) == 4 else 1, *want[-2:])
        if tuple(mu.shape) != raw or tuple(logvar.shape) != raw:
            raise ModelError(f"the VAE encoded pixels of shape {tuple(pix.shape)} to latents of shape "
                             f"{tuple(mu.shape)}; its z_dim and factors give {raw}")
        mu, logvar = mu.reshape(b, *want), logvar.reshape(b, *want)
        for i, s in enumerate(group):
            s.latent = {"mu": mu[i].clone(), "logvar": logvar[i].clone()}
            if s.cache_path:
                LatentCache.put(s.cache_path, s.latent["mu"], s.latent["logvar"], s.cache_media)


def prepare_items(samples: list[Sample], ctx: RecipeContext, generator: torch.Generator) -> list[dict]:
    """Encode and noise one step's samples (one item per sample). All randomness comes from
    ``generator``, drawn in sample order, so a step is a pure function of (samples, generator seed)."""
    encode_missing(samples, ctx.vae, ctx.vae_device, ctx.vae_autocast)
    spec, lc = ctx.spec, ctx.loss
    items = []
    for s in samples:
        item = {"role": s.role, "sample": s, "max_seq_len": ctx.max_seq_len[s.source]}
        x1 = None
        if s.latent is not None:
            mu, logvar = s.latent["mu"], s.latent["logvar"]
            if lc.vae_sample:
                eps = torch.randn(mu.shape, generator=generator)
                x1 = mu + torch.exp(0.5 * logvar) * eps
            else:
                x1 = mu.clone()
        if s.role in ("t2i", "t2v"):
            drop = float(torch.rand((), generator=generator)) < lc.cond_dropout
            item["prompt"] = "" if drop else s.text
            item["x1"] = x1
            item["nv"] = num_visual_positions(tuple(x1.shape), spec.patch_size, s.role)
        else:
            if s.role == "mmu_vid":
                item["pool"] = ctx.pool[s.source]
            item["x"] = x1
            item["t"] = 1.0
        items.append(item)
    gen = [it for it in items if "x1" in it]
    if gen:
        t = sample_t(len(gen), [it["nv"] for it in gen], lc, generator).to(ctx.t_dtype).float()
        for ti, it in zip(t, gen, strict=True):
            x1 = it["x1"]
            x0 = torch.randn(x1.shape, generator=generator)
            it["t"] = float(ti)
            it["x"] = ti * x1 + (1 - ti) * x0
            u = x1 - x0
            it["target"] = pack_velocity(u if u.dim() == 4 else u[:, None], spec.patch_size, spec.velocity_layout)
    return items


def prepare_batch(samples: list[Sample], ctx: RecipeContext, generator: torch.Generator) -> Batch:
    """One step's samples as ONE batch, every row padded to the longest."""
    return assemble(prepare_items(samples, ctx, generator), ctx.text, ctx.spec.patch_size, ctx.text.tokens.pad)


def prepare_batches(samples: list[Sample], ctx: RecipeContext, generator: torch.Generator,
                    split: str = "role") -> list[Batch]:
    """One step's samples as one batch per role (``split = "role"``, in order of first appearance,
    each padded only to its own longest row) or one batch (``"none"``). The items, and so every
    random draw, are the same either way."""
    items = prepare_items(samples, ctx, generator)
    if split == "none":
        groups = [items]
    else:
        by_role: dict[str, list[dict]] = {}
        for it in items:
            by_role.setdefault(it["role"], []).append(it)
        groups = list(by_role.values())
    return [assemble(g, ctx.text, ctx.spec.patch_size, ctx.text.tokens.pad) for g in groups]


def batch_counts(batch: Batch) -> tuple[int, int]:
    """(supervised next-token positions, flow target elements) of a batch: the loss denominators."""
    n_tokens = int((batch.labels[:, 1:] != IGNORE).sum())
    return n_tokens, sum(int(u.numel()) for u in batch.targets)


# ---- the loss module ----------------------------------------------------------------------------

class Showo2Loss(nn.Module):
    """The network plus its training loss, so one ``forward`` is one step (and DDP syncs it)."""

    def __init__(self, network, ntp: float, flow: float):
        super().__init__()
        self.network = network
        self.ntp_coeff, self.flow_coeff = float(ntp), float(flow)

    def forward(self, batch: Batch, totals: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """The loss of one batch. ``totals`` = (supervised tokens, flow elements) of the whole step
        when the step runs as several batches: each batch's sums are divided by the step's totals,
        so the batches' losses add up to the loss of the step as one padded batch."""
        net = self.network
        rows = batch.rows
        hidden_size = net.spec.hidden_size
        visual: list[list[torch.Tensor]] = [[torch.zeros(0, hidden_size)] for _ in range(rows)]
        for g in batch.groups:
            if g.kind == "frames":
                tokens = [net.pooled_frame_tokens(x, g.pool, understanding=False) for x in g.x]
            else:
                tokens = list(net.visual_tokens(g.x))
            for r, tok in zip(g.rows, tokens, strict=True):
                visual[r] = [tok]
        mask = shared_mask(batch_mask(batch.slots, batch.input_ids.shape[1], device=net.device), net.attn, net.dtype)
        hidden, cond = net.hidden_states(batch.input_ids, visual, batch.slots, batch.t, mask)

        zero = hidden.new_zeros((), dtype=torch.float32)
        # next-token prediction on the supervised positions only (same mean as full logits)
        shifted = batch.labels[:, 1:]
        valid = shifted != IGNORE
        n_tokens = int(valid.sum())
        tok_total, elem_total = totals if totals is not None else (n_tokens, None)
        if n_tokens:
            logits = net.logits(hidden[:, :-1][valid])
            ntp = F.cross_entropy(logits.float(), shifted[valid], reduction="sum") / max(tok_total, 1)
        else:  # keep every parameter in the graph (DDP)
            ntp = zero + 0.0 * net.logits(hidden[:1, :1]).float().sum()

        # flow matching on the visual positions of generation rows (time token excluded)
        n_elems = 0
        if batch.gen_rows:
            idx = torch.tensor(batch.gen_rows, device=hidden.device)
            every = len(batch.gen_rows) == rows or len(mask) == 1  # (the mask itself then: mask[idx] is a copy)
            out = net.flow_head(hidden[idx], cond[idx][:, None], batch.slots[idx], mask if every else mask[idx])
            sq = zero
            for j, r in enumerate(batch.gen_rows):
                offset, span = int(batch.slots[r, 0, 0]), int(batch.slots[r, 0, 1])
                pred = out[j, offset + 1:offset + span].float()
                target = batch.targets[j].float()
                sq = sq + ((pred - target) ** 2).sum()
                n_elems += target.numel()
            flow = sq / (elem_total if elem_total is not None else n_elems)
        else:
            flow = zero + 0.0 * net.flow_head(hidden[:1], cond[:1, None], batch.slots[:1], mask[:1]).float().sum()
        loss = self.ntp_coeff * ntp + self.flow_coeff * flow
        return {"loss": loss, "ntp": ntp.detach(), "flow": flow.detach(),
                "tokens": torch.tensor(n_tokens), "flow_elements": torch.tensor(n_elems)}


def seq_budget(source_max: int | None, spec, num_visual: int, understanding: bool) -> int:
    """A source's row budget: its max_seq_len, else the model's, grown to fit the visual block."""
    if source_max is not None:
        return source_max
    return max(spec.max_seq_len, num_visual + (256 if understanding else 68))


def check_budget(index: int, source_max: int, num_visual: int, role: str) -> None:
    need = num_visual + 4
    if source_max < need:
        raise UsageError(f"data[{index}].max_seq_len: {source_max} is too short for the {num_visual} visual "
                         f"positions of a '{role}' row (needs at least {need})")


def visual_positions_for(role: str, resolution: int, frames: int, spec, pool: int) -> int:
    grid = resolution // spec.latent_multiple
    if role == "mmu_vid":
        return 1 + frames * pool * pool
    t = spec.latent_frames(frames) if role == "t2v" else 1
    return 1 + t * grid * grid

