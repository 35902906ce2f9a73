"""Training or fine-tuning a Wan-architecture VAE (``mode = "vae"``): reconstruction + KL.

``loss = l1 * |x - x̂| + l2 * (x - x̂)² + kl * KL(q(z|x) || N(0, I))``, each a per-element mean,
with ``z = mu + exp(logvar / 2) * eps`` drawn in the raw (un-normalised) latent space. The decoder
output is not clamped during training (the inference decoder clamps to [-1, 1], which would
stop gradients for out-of-range pixels). Images go through the VAE as 1-frame videos (exact
2-D fast path); videos need 1 + 4k frames.

After training from scratch the per-channel latent statistics (``latents_mean/std``, spec §3.4)
are re-estimated on a fixed set of samples, so Show-o2's normalised latents are about N(0, 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError
from ..specs import WAN21


def decode_unclamped(model, z: torch.Tensor) -> torch.Tensor:
    """diffusers ``AutoencoderKLWan._decode`` without the final clamp (same causal chunking)."""
    model.clear_cache()
    x = model.post_quant_conv(z)
    out = None
    for i in range(z.shape[2]):
        model._conv_idx = [0]
        chunk = model.decoder(x[:, :, i:i + 1], feat_cache=model._feat_map, feat_idx=model._conv_idx,
                              first_chunk=(i == 0))
        out = chunk if out is None else torch.cat([out, chunk], 2)
    model.clear_cache()
    return out


class VaeLoss(nn.Module):
    """A :class:`~showo2_cli.modeling.vae.WanVAE` plus its training loss (one forward = one step)."""

    def __init__(self, vae, l1: float, l2: float, kl: float):
        super().__init__()
        self.vae = vae
        self.l1, self.l2, self.kl = float(l1), float(l2), float(kl)

    def forward(self, pixels: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixels (B, 3, T, H, W)`` in [-1, 1]; ``eps`` the posterior noise ``(B, z, T', h, w)``."""
        model = self.vae.model
        with self.vae.fast_path():
            moments = model.encode(pixels.to(self.vae.dtype), return_dict=False)[0].parameters
            mu, logvar = moments.float().chunk(2, dim=1)
            logvar = logvar.clamp(-30.0, 20.0)
            z = mu + torch.exp(0.5 * logvar) * eps.to(mu.device)
            recon = decode_unclamped(model, z.to(self.vae.dtype)).float()
        diff = recon - pixels.float()
        l1 = diff.abs().mean()
        l2 = (diff ** 2).mean()
        kl = 0.5 * (mu ** 2 + torch.exp(logvar) - 1.0 - logvar).mean()
        loss = self.l1 * l1 + self.l2 * l2 + self.kl * kl
        return {"loss": loss, "l1": l1.detach(), "l2": l2.detach(), "kl": kl.detach(),
                "recon": recon.detach()}


@torch.no_grad()
def fit_latent_stats(vae, pixel_batches: list[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw posterior means over some pixel batches."""
    total, total_sq, count = None, None, 0
    for pix in pixel_batches:
        mu, _ = vae.encode_moments(pix)
        mu = mu.double().transpose(0, 1).reshape(mu.shape[1], -1)
        s, sq = mu.sum(1), (mu ** 2).sum(1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += mu.shape[1]
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt().clamp_min(1e-4)
    return [float(v) for v in mean], [float(v) for v in std]


def latent_shape(vae, pixels: torch.Tensor) -> tuple[int, ...]:
    """Shape of the latent of ``pixels (B, 3, T, H, W)``."""
    b, _, t, h, w = pixels.shape
    return (b, vae.z_dim, WAN21.latent_frames(t), h // vae.spatial_factor, w // vae.spatial_factor)


def build_vae(path: str | None, base_dim: int, seed: int, init_logvar: float | None = None):
    """A VAE from a file/folder/run folder, or a random Wan-architecture one."""
    from ..hub_vae import explicit_vae
    from ..modeling.vae import WanVAE
    from ..modeling.vae_files import load_vae

    if path:  # a file, a folder, a run folder, or a Hub repo id (cached, else downloaded), as --vae
        return load_vae(explicit_vae(path))
    vae = WanVAE.random(base_dim=base_dim, seed=seed)
    if init_logvar is not None:  # the log-variance half of the posterior projection's bias
        with torch.no_grad():
            vae.model.quant_conv.bias[vae.z_dim:] = init_logvar
    return vae


class VaeObjective:
    """The VAE mode of a :class:`~.trainer.Run` (see :class:`~.objective.Objective`)."""

    log_keys = ("l1", "l2", "kl")
    log_counts: dict = {}  # each term a mean over its batch's items (of one size)
    spec = None  # no Show-o2 network

    def loss_weights(self) -> dict[str, float]:
        w = self.cfg.vae_loss
        return {"l1": w.l1, "l2": w.l2, "kl": w.kl}

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.vae = None

    def find_unused_parameters(self) -> bool:
        return False

    def build(self, state):
        from .params import parameter_groups

        cfg, run = self.cfg, self.run
        src = run.resumed_from if run.resumed_from is not None else cfg.model.vae
        self.vae = build_vae(str(src) if src else None, cfg.model.vae_base_dim, cfg.seed, cfg.model.vae_init_logvar)
        self.vae.float().train()
        groups, report = parameter_groups(self.vae.model, cfg)
        return VaeLoss(self.vae, cfg.vae_loss.l1, cfg.vae_loss.l2, cfg.vae_loss.kl), groups, report

    def prepare_data(self) -> dict:
        return {}

    def inputs(self, samples, generator):
        from ..media import frames_to_tensor

        shapes = {s.pixels.shape for s in samples}
        if len(shapes) > 1:
            raise UsageError(f"{self.cfg.source}: role 'vae' sources give different sizes {sorted(shapes)}: "
                             "give them the same resolution/crop and frames")
        pixels = torch.stack([frames_to_tensor(s.pixels) for s in samples])
        eps = torch.randn(latent_shape(self.vae, pixels), generator=generator)
        return pixels.to(self.run.device), eps

    def forward(self, samples, generator, backward: bool = False) -> dict:
        pixels, eps = self.inputs(samples, generator)
        out = self.run.module(pixels, eps)
        if backward:
            self.run.acc.backward(out["loss"])
        return {k: v.detach() for k, v in out.items()}

    def unwrapped(self):
        return self.run.acc.unwrap_model(self.run.module).vae

    def ema_parameters(self) -> list:
        return list(self.unwrapped().model.parameters())

    def read_ema(self, folder: Path) -> list:
        from ..modeling.vae_files import load_vae

        return [p.detach().float() for p in load_vae(folder / "vae").model.parameters()]

    def digest_target(self) -> nn.Module:
        return self.unwrapped()

    # -- saving --
    def before_save(self) -> None:
        mode = self.cfg.vae_loss.fit_latent_stats
        if mode == "yes" or (mode == "auto" and not self.cfg.model.vae):
            self.refit_latent_stats()  # every process (same data, same weights)

    @torch.no_grad()
    def refit_latent_stats(self) -> None:
        from ..media import frames_to_tensor

        run, vae = self.run, self.unwrapped()
        n, b = self.cfg.vae_loss.stats_samples, self.cfg.batch.vae
        batches = []
        for start in range(0, n, b):
            keys = [("vae", (1 << 40) + i) for i in range(start, min(n, start + b))]
            samples = [run.dataset[k] for k in keys]
            batches.append(torch.stack([frames_to_tensor(s.pixels) for s in samples]).to(run.device))
        mean, std = fit_latent_stats(vae, batches)
        vae.latents_mean.copy_(torch.tensor(mean))
        vae.latents_std.copy_(torch.tensor(std))

    def write(self, dst: Path, step: int) -> None:
        from .checkpoint import EMA_DIR

        vae = self.unwrapped()
        vae.save_pretrained(dst / "vae")
        if self.run.ema is not None:
            with self.run.ema_weights():
                vae.save_pretrained(dst / EMA_DIR / "vae")
        (dst / "vae_info.json").write_text(json.dumps({"step": step, "config": self.cfg.source}) + "\n")

    # -- previews: reconstructions beside their originals --
    def preview(self, step: int, out_dir: Path) -> list[str]:
        from .. import media as M

        run, vae = self.run, self.unwrapped()
        samples = [run.dataset[("vae", (1 << 41) + i)] for i in range(min(4, self.cfg.batch.vae))]
        with torch.no_grad():
            pix = torch.stack([M.frames_to_tensor(s.pixels) for s in samples]).to(run.device)
            recon = vae.decode(vae.encode(pix[:, :, 0] if pix.shape[2] == 1 else pix))
        paths = []
        for i, (a, r) in enumerate(zip(pix, recon, strict=True)):
            r = r if r.dim() == 4 else r[:, None]
            pair = torch.cat([a[:, :1], r[:, :1]], dim=-1)
            p = out_dir / f"step-{step:06d}-{i:02d}.png"
            M.write_image(p, M.tensor_to_frames(pair)[0], {"step": step, "kind": "reconstruction"}, overwrite=True)
            paths.append(str(p))
        return paths

    def pre_encode(self, shard, batch_size: int = 32) -> dict:
        raise UsageError(f"{self.cfg.source}: --pre-encode fills the latent caches of mode = \"showo2\" runs")
