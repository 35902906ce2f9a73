"""The latent cache of a ``[[data]]`` source (``cache = "folder"``).

Per item, the frozen VAE's posterior mean and log-variance, both in the normalised latent space,
one safetensors file each, written atomically, under a folder keyed by the source, its geometry
and the VAE's weights (the posterior sample is still drawn fresh every step).

An entry is used only when it is what :func:`.recipe.encode_missing` writes for the item: encoded
from the same media file, the tensors ``mu`` and ``logvar`` and no others, float32, both of the
shape :func:`entry_shape` gives for the source, every value one the encoder can make (finite; the
log-variance inside the VAE's clamp, normalised; the mean's square a float32). Anything else (a
folder copied from another run or version, a crafted file) is a miss: encoded anew and
overwritten. Names, dtypes and shapes are judged from the header before a tensor is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError, one_line

NAMES = ("mu", "logvar")
#: Above this a mean's square is no float32: the flow loss of such a latent is infinite.
MAX_ABS_MU = float(torch.finfo(torch.float32).max) ** 0.5


def entry_shape(role: str, frames: int, height: int, width: int, vae) -> tuple[int, ...]:
    """The shape of one item's ``mu`` (and ``logvar``) as :func:`.recipe.encode_missing` writes
    it from ``frames`` pictures of ``height`` x ``width``: ``(z, h, w)`` for one frame,
    ``(z, T', h, w)`` for a video (``T'`` the VAE's latent frames), ``(T, z, h, w)`` for a video
    encoded frame by frame (``mmu_vid``, spec §8.3)."""
    z, s = vae.z_dim, vae.spatial_factor
    h, w = height // s, width // s
    if role == "mmu_vid":
        return (frames, z, h, w)
    if frames == 1:
        return (z, h, w)
    return (z, 1 + (frames - 1) // vae.temporal_factor, h, w)


def logvar_range(vae) -> tuple[float, float]:
    """The normalised log-variances :func:`.recipe.encode_missing` can write: the VAE's clamp,
    shifted by each channel's ``2 log(1/std)`` (a float32 rounding's margin either side)."""
    from ..modeling.vae import LOGVAR_RANGE

    shift = 2.0 * torch.log(vae.stats(2)[1].flatten())
    return LOGVAR_RANGE[0] + float(shift.min()) - 1e-3, LOGVAR_RANGE[1] + float(shift.max()) + 1e-3


class LatentCache:
    """Per-item VAE posterior (mean, log-variance) files under ``folder/<key>/``; ``shape`` and
    ``logvar`` (a range) are what this run's entries hold (None: not judged)."""

    def __init__(self, folder: str | os.PathLike, key: str, shape: tuple[int, ...] | None = None,
                 logvar: tuple[float, float] | None = None):
        self.folder = Path(folder) / key
        self.key, self.shape, self.logvar = key, shape, logvar

    def path(self, item: int) -> Path:
        return self.folder / f"{item // 1000:06d}" / f"{item:09d}.safetensors"

    def get(self, item: int, media: str = "") -> dict | None:
        """The cached latent of ``item`` if it was encoded from ``media`` (:meth:`.data.Source.media`)."""
        return self.entry(item, media)[0]

    def entry(self, item: int, media: str = "") -> tuple[dict | None, str]:
        """``(latent, "")`` on a hit, ``(None, "")`` on a miss, ``(None, note)`` for an entry that is
        not what this run writes (the note, one line, names the cache folder)."""
        p = self.path(item)
        if not p.exists():
            return None, ""
        from safetensors import safe_open

        from ..weights import check_safetensors_header

        latent = None
        try:
            check_safetensors_header(p, "latent cache entry", InputError)
            with safe_open(str(p), framework="pt") as f:
                if (f.metadata() or {}).get("media", "") != media:  # another file now: encoded anew
                    return None, ""
                why = self._misfit(f)
                latent = None if why else {k: f.get_tensor(k) for k in NAMES}
        except Exception as e:  # a damaged entry is simply re-encoded
            why = f"cannot be read ({one_line(e, 100)})"
        if latent is not None:
            why = self._bad_values(latent)
        if why:
            return None, (f"the latent cache '{self.folder}' holds entries this run does not write (item {item}: "
                          f"{why}): they are encoded anew and overwritten")
        return latent, ""

    def _misfit(self, f) -> str:
        """What the header says is not this run's entry ("" when nothing)."""
        names = sorted(f.keys())
        if names != sorted(NAMES):
            return f"tensors {one_line(', '.join(names), 80) or 'none'}, not mu and logvar"
        for name in NAMES:
            part = f.get_slice(name)
            dtype, shape = part.get_dtype(), tuple(part.get_shape())
            if dtype != "F32" or (self.shape is not None and shape != tuple(self.shape)):
                want = f"F32 {tuple(self.shape)}" if self.shape is not None else "F32"
                return f"{name} is {dtype} {shape}, not {want}"
        return ""

    def _bad_values(self, latent: dict) -> str:
        mu, logvar = latent["mu"], latent["logvar"]
        if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
            return "values that are not finite"
        if mu.numel() and float(mu.abs().max()) > MAX_ABS_MU:
            return f"a mean of {float(mu.abs().max()):.3g}, whose square is no float32"
        if self.logvar is not None and logvar.numel():
            lo, hi = float(logvar.min()), float(logvar.max())
            if lo < self.logvar[0] or hi > self.logvar[1]:
                return (f"log-variances over [{lo:.3g}, {hi:.3g}], outside the VAE's "
                        f"[{self.logvar[0]:.3g}, {self.logvar[1]:.3g}]")
        return ""

    @staticmethod
    def put(path: str | os.PathLike, mu: torch.Tensor, logvar: torch.Tensor, media: str = "") -> None:
        from safetensors.torch import save_file

        from ..media import atomic_output

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path, overwrite=True) as tmp:  # the one atomic writer (full disks -> exit 5)
            save_file({"mu": mu.detach().float().cpu().contiguous(),
                       "logvar": logvar.detach().float().cpu().contiguous()}, str(tmp), metadata={"media": media})
