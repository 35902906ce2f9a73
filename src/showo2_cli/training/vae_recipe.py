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

import torch
from torch import nn


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


class VaeObjective(nn.Module):
    """A :class:`~showo2_cli.modeling.vae.WanVAE` plus its training loss (one forward = one step)."""

    def __init__(self, vae, l1: float, l2: float, kl: float):
        super().__init__()
        self.vae = vae
        self.l1, self.l2, self.kl = float(l1), float(l2), float(kl)

    def forward(self, pixels: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """``pixels (B, 3, T, H, W)`` in [-1, 1]; ``eps`` the posterior noise ``(B, z, T', h, w)``."""
        model = self.vae.model
        with self.vae._fast():
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
    return (b, vae.z_dim, 1 + (t - 1) // vae.temporal_factor, h // vae.spatial_factor, w // vae.spatial_factor)
