"""The Wan2.1 3D causal VAE as Show-o2 uses it (spec section 3).

The network itself is diffusers' `AutoencoderKLWan` (same layers, same numerics as the official
`WanVAE_`). This module adds what Show-o2's wrapper adds on top:

* latent normalisation with the fixed per-channel Wan constants: ``z = (mu - mean) / std``;
* Show-o2's stochastic encoding quirk: ``z = mu_normalised + exp(0.5 * logvar) * eps`` where the
  noise scale is the *raw* posterior std, NOT divided by ``std`` (spec 3.4);
* the 1 + 4k frame rule and image <-> 1-frame-video handling (spec 3.3);
* loading from the original ``Wan2.1_VAE.pth`` (safely, ``weights_only=True``), from a
  ``.safetensors`` file in either key layout, or from a diffusers folder;
* spatial tiling (``tiling``: auto/on/off, :meth:`WanVAE.tiled`) with diffusers' own tiled
  encode/decode of ``AutoencoderKLWan`` (256-pixel tiles every 192 pixels, the overlap blended),
  and memory estimates that use the tile size (:mod:`~showo2_cli.modeling.vae_geometry`, with the
  compression factors: re-exported here);
* a single-frame fast path (:mod:`~showo2_cli.modeling.vae_single_frame`): one frame through a
  causal 3x3x3 convolution as an exact 2-D convolution, about half the cost for images.
"""

from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, OutputError, UsageError
from ..runtime import one_call_at_a_time, quiet_imports
from .parts import NotLoaded  # importable from here too, where it was first
from .vae_geometry import DEFAULT_TILE as DEFAULT_TILE  # (re-exported, as below: users import them here)
from .vae_geometry import SPATIAL_FACTOR as SPATIAL_FACTOR
from .vae_geometry import TEMPORAL_FACTOR as TEMPORAL_FACTOR
from .vae_geometry import check_latents as check_latents
from .vae_geometry import check_pixels as check_pixels
from .vae_geometry import check_temporal as check_temporal
from .vae_geometry import decode_memory_bytes as decode_memory_bytes
from .vae_geometry import encode_memory_bytes as encode_memory_bytes
from .vae_geometry import temporal_factor as temporal_factor
from .vae_single_frame import single_frame_conv2d  # importable from here too, where it was first

with quiet_imports():
    from diffusers.utils.accelerate_utils import apply_forward_hook  # small: not diffusers' models

__all__ = ["VAE_PARTS", "WAN_LATENTS_MEAN", "WAN_LATENTS_STD", "NotLoaded", "WanVAE", "decode_memory_bytes",
           "encode_memory_bytes", "single_frame_conv2d"]

# Per-channel latent statistics of the Wan2.1 VAE (spec 3.4), channel order 0..15.
WAN_LATENTS_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN_LATENTS_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

#: The range :meth:`WanVAE.encode_moments` clamps the raw posterior log-variance to (diffusers' own).
LOGVAR_RANGE = (-30.0, 20.0)

#: The VAE's two halves, as the modules of diffusers' ``AutoencoderKLWan`` each runs: encoding
#: pixels uses only the first, decoding latents only the second. A VAE loaded with some of them
#: (``load_vae(parts=)``) loads the others from the same file on first use.
VAE_PARTS: dict[str, tuple[str, ...]] = {"encoder": ("encoder", "quant_conv"), "decoder": ("post_quant_conv", "decoder")}


def autoencoder_class():
    # Imported lazily: importing diffusers takes a second and most CLI commands don't need it.
    with quiet_imports():
        from diffusers import AutoencoderKLWan

    return AutoencoderKLWan


# --------------------------------------------------------------------------------------------
# The wrapper
# --------------------------------------------------------------------------------------------


class WanVAE(nn.Module):
    """Show-o2's view of the Wan2.1 VAE: normalised latents in, pixels in [-1, 1] out.

    ``self.model`` is a diffusers ``AutoencoderKLWan``; ``latents_mean``/``latents_std`` are float32
    buffers of shape (z_dim,). Loaded and random VAEs start in eval mode with gradients off (the VAE
    is frozen everywhere in Show-o2); call ``requires_grad_(True)`` to train it.

    ``encode_moments`` and ``decode`` carry diffusers' ``apply_forward_hook``: an accelerate offload
    hook (``runtime.enable_offload``) brings the VAE to ``execution_device`` when they run.

    They run one at a time per VAE (:func:`~showo2_cli.runtime.one_call_at_a_time`): ``AutoencoderKLWan`` keeps each call's
    causal-convolution caches and tiling flag on the module, so two threads encoding with one VAE
    (two captions on one pipeline, a Gradio app) would read each other's caches and get wrong
    latents without any error.
    """

    #: Where an offloaded VAE runs (set by ``runtime.enable_offload``); None = where its weights are.
    execution_device: torch.device | None = None

    def __init__(
        self,
        model: nn.Module,
        latents_mean: Sequence[float] | torch.Tensor | None = None,
        latents_std: Sequence[float] | torch.Tensor | None = None,
        fast_single_frame: bool = True,
    ) -> None:
        super().__init__()
        self.model = model
        z_dim = int(model.config.z_dim)
        if latents_mean is None:
            latents_mean = model.config.get("latents_mean", None) or WAN_LATENTS_MEAN
        if latents_std is None:
            latents_std = model.config.get("latents_std", None) or WAN_LATENTS_STD
        mean = torch.as_tensor(latents_mean, dtype=torch.float32).flatten().clone()
        std = torch.as_tensor(latents_std, dtype=torch.float32).flatten().clone()
        if mean.numel() != z_dim or std.numel() != z_dim:
            raise ModelError(
                f"VAE latent statistics have {mean.numel()} mean / {std.numel()} std values, "
                f"but the VAE has {z_dim} latent channels"
            )
        if not bool(torch.isfinite(std).all()) or bool((std == 0).any()):
            raise ModelError("VAE latents_std contains zero or non-finite values")
        check_temporal(model.config)
        self.register_buffer("latents_mean", mean)
        self.register_buffer("latents_std", std)
        self.fast_single_frame = fast_single_frame
        self.tiling = "auto"  # auto|on|off: the pipelines' choice per job (runtime.pick_tiling)
        self.tile = DEFAULT_TILE  # the tile sizes when tiling (enable_tiling)
        #: loads parts left out on load (``part_loader(self, parts)``; set by ``load_vae(parts=)``)
        self.part_loader = None
        self.train(model.training)  # the wrapper's mode is its model's (eval when loaded)
        self._call_lock = threading.RLock()  # see runtime.one_call_at_a_time

    def _apply(self, fn, recurse: bool = True):
        """Moves and casts (``to``, ``bfloat16()``, ...) keep ``latents_mean``/``latents_std``
        float32, as a load in any dtype builds them: a cast rounded them, and the same latents
        decoded up to 20/255 apart after ``.to(torch.bfloat16)`` than after a bf16 load."""
        stats = {k: self._buffers[k] for k in ("latents_mean", "latents_std")}
        super()._apply(fn, recurse)
        for k, table in stats.items():
            moved = self._buffers[k]
            if moved is not None and moved.dtype != table.dtype and not moved.is_meta:
                self._buffers[k] = table.to(moved.device)
        return self

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: a lock is not copied, a new one is made
        return {k: v for k, v in super().__getstate__().items() if k != "_call_lock"}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._call_lock = threading.RLock()

    # ---- properties ---------------------------------------------------------------------------

    @property
    def z_dim(self) -> int:
        return int(self.model.config.z_dim)

    @property
    def base_dim(self) -> int:
        return int(self.model.config.base_dim)

    @property
    def spatial_factor(self) -> int:
        return SPATIAL_FACTOR

    @property
    def temporal_factor(self) -> int:
        """Pixel frames per latent frame past the first: 2 for each block of the config's
        ``temperal_downsample`` that the encoder applies (its last block never does): 4 for Wan2.1."""
        return temporal_factor(self.model.config)

    @property
    def in_channels(self) -> int:
        return int(self.model.config.get("in_channels", 3))

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:  # offloaded (runtime.enable_offload): where it runs
            return self.execution_device
        return next(self.model.parameters()).device

    @property
    def loaded_parts(self) -> tuple[str, ...]:
        """The parts of :data:`VAE_PARTS` whose weights are loaded."""
        return tuple(part for part, names in VAE_PARTS.items()
                     if not any(isinstance(getattr(self.model, n, None), NotLoaded) for n in names))

    def load_parts(self, *parts: str) -> None:
        """Load the named parts (all when none is named) if they were left out on load: from the
        file the VAE came from, at the VAE's device and dtype, then kept. Encoding and decoding
        call it themselves."""
        unknown = [p for p in parts if p not in VAE_PARTS]
        if unknown:
            raise ValueError(f"unknown VAE part {unknown[0]!r}: the parts are {', '.join(VAE_PARTS)}")
        with self._call_lock:  # two threads' first calls load a part once
            missing = tuple(p for p in (parts or VAE_PARTS) if p not in self.loaded_parts)
            if missing:
                if self.part_loader is None:
                    raise ModelError(f"the VAE's {missing[0]} is not loaded and this VAE has no file to load it from")
                self.part_loader(self, missing)

    def num_parameters(self) -> int:
        """Parameters of the whole VAE, loaded or not."""
        return sum(p.numel() for p in self.model.parameters()) + sum(
            m.numel for m in self.model.children() if isinstance(m, NotLoaded))

    def decode_memory_gb(self, latent_frames: int, height: int, width: int, tiled: bool = False) -> float:
        """A rough upper bound of the memory (GB) decoding one ``(z, T', h, w)`` latent takes.

        The decoder runs one latent frame at a time (4 pixel frames, 1 for the first) at up to
        ``base_dim`` channels of full resolution; measured peaks are about 25 activations per
        pixel and channel for a single frame and 32 per pixel-frame for a 4-frame chunk. The
        float32 output (and its clamped copy) is added. ``tiled``: the activations of one tile, plus
        the decoded tiles kept for blending.
        """
        return decode_memory_bytes(self.base_dim, latent_frames, height, width,
                                   torch.finfo(self.dtype).bits // 8, tiled, self.tile) / 1e9

    def encode_memory_gb(self, frames: int, height: int, width: int, tiled: bool = False) -> float:
        """A rough upper bound of the memory (GB) encoding ``frames`` pixel frames of
        ``height x width`` takes (about 13 activations per pixel and channel for one frame, 16
        per pixel-frame for a 4-frame chunk, plus the float32 input)."""
        return encode_memory_bytes(self.base_dim, frames, height, width, torch.finfo(self.dtype).bits // 8,
                                   tiled, self.tile) / 1e9

    def extra_repr(self) -> str:
        return f"base_dim={self.base_dim}, z_dim={self.z_dim}, fast_single_frame={self.fast_single_frame}"

    # ---- helpers ------------------------------------------------------------------------------

    def fast_path(self) -> contextlib.AbstractContextManager:
        """The exact single-frame Conv2d fast path while encoding/decoding (a no-op when off)."""
        # The override only changes single-frame, cache-less conv calls (the first chunk of encode
        # and decode; every call for images), and is exact for them, so it is safe for any T.
        return single_frame_conv2d(self.model) if self.fast_single_frame else contextlib.nullcontext()

    def enable_tiling(self, tile_sample_min_height: int | None = None, tile_sample_min_width: int | None = None,
                      tile_sample_stride_height: int | None = None, tile_sample_stride_width: int | None = None) -> None:
        """Tile every encode/decode larger than a tile (``tiling = "on"``), with diffusers'
        ``AutoencoderKLWan.enable_tiling`` arguments: tile sizes and strides in pixels (unset ones
        keep their value; multiples of 8, a stride at most its tile). Tiles overlap by the tile
        minus the stride, and the overlap is blended."""
        tile = tuple(old if new is None else new for old, new in zip(self.tile, (
            tile_sample_min_height, tile_sample_min_width, tile_sample_stride_height, tile_sample_stride_width),
            strict=True))
        names = ("tile_sample_min_height", "tile_sample_min_width", "tile_sample_stride_height",
                 "tile_sample_stride_width")
        checked = []
        for name, v in zip(names, tile, strict=True):
            try:
                v = operator.index(v) if not isinstance(v, bool) else v  # numpy integers too
            except TypeError:
                pass
            if isinstance(v, bool) or not isinstance(v, int) or v < SPATIAL_FACTOR or v % SPATIAL_FACTOR or v > 65536:
                raise UsageError(f"{name} must be a multiple of {SPATIAL_FACTOR} pixels from {SPATIAL_FACTOR} "
                                 f"to 65536, got {v!r}")
            checked.append(v)
        tile = tuple(checked)
        for size, stride, side, given in ((tile[0], tile[2], "height", tile_sample_stride_height),
                                          (tile[1], tile[3], "width", tile_sample_stride_width)):
            if stride > size:  # as diffusers, an unset stride keeps its value (nothing is derived)
                kept = "" if given is not None else ", the current one: an unset stride keeps its value"
                fit = max(SPATIAL_FACTOR, size * 3 // 4 // SPATIAL_FACTOR * SPATIAL_FACTOR)  # the defaults' 3/4
                raise UsageError(f"tile_sample_stride_{side} ({stride}{kept}) must not exceed tile_sample_min_{side} "
                                 f"({size}): the tiles would leave gaps; pass tile_sample_stride_{side}={fit} "
                                 f"(or any multiple of {SPATIAL_FACTOR} up to {size})")
        self.tile = tile
        self.tiling = "on"

    def disable_tiling(self) -> None:
        """Never tile (``tiling = "off"``); the default ``"auto"`` tiles only what would not fit."""
        self.tiling = "off"

    def enable_slicing(self) -> None:
        """Encode/decode a batch one sample at a time (diffusers' ``use_slicing``); the pipelines
        already decode one output at a time, so this matters for batched calls of this class."""
        self.model.enable_slicing()

    def disable_slicing(self) -> None:
        self.model.disable_slicing()

    @contextlib.contextmanager
    def tiled(self, on: bool | None = None) -> Iterator[None]:
        """While active, encode/decode run in spatial tiles when ``on`` (None: ``tiling == "on"``);
        diffusers' ``enable_tiling`` with :attr:`tile` (:data:`DEFAULT_TILE` unless
        :meth:`enable_tiling` said). Inputs no larger than a tile run untiled either way."""
        on = self.tiling == "on" if on is None else on
        before = bool(getattr(self.model, "use_tiling", False))
        if on:
            self.model.enable_tiling(*self.tile)
        else:
            self.model.disable_tiling()
        try:
            yield
        finally:
            self.model.use_tiling = before

    def tiles_used(self, height: int, width: int, tiled: bool | None = None) -> tuple[int, int, int, int] | None:
        """The tiles (:attr:`tile`) an encode or decode of ``height x width`` pixel frames runs in
        with ``tiled`` (see :meth:`tiled`), or None when it runs whole: tiling off, or a frame no
        larger than one tile (diffusers' own test). A tiled result differs from a whole one."""
        on = self.tiling == "on" if tiled is None else tiled
        return self.tile if on and (height > self.tile[0] or width > self.tile[1]) else None

    def stats(self, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, 1/std) of the latent normalisation, shaped to broadcast over ``ndim``-d latents."""
        shape = (1, -1) + (1,) * (ndim - 2)
        mean = self.latents_mean.float().view(shape)
        inv_std = 1.0 / self.latents_std.float().view(shape)  # Wan keeps 1/std, as here
        return mean, inv_std

    # ---- encode / decode ----------------------------------------------------------------------

    @one_call_at_a_time
    @apply_forward_hook
    def encode_moments(self, pixels: torch.Tensor, tiled: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw posterior ``(mu, logvar)``, float32, 5-D (B, z, T', h, w); logvar clamped to [-30, 20]."""
        x = check_pixels(pixels, self.in_channels)
        self.load_parts("encoder")
        if x.dim() == 4:
            x = x.unsqueeze(2)
        x = x.to(device=self.device, dtype=self.dtype)
        with self.fast_path(), self.tiled(tiled):
            moments = self.model.encode(x, return_dict=False)[0].parameters
        mu, logvar = moments.float().chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(
        self,
        pixels: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
        tiled: bool | None = None,
    ) -> torch.Tensor:
        """Pixels (B,3,T,H,W) or (B,3,H,W) in [-1,1] -> normalised latents (B,z,T',h,w) / (B,z,h,w), fp32.

        ``sample=True`` reproduces Show-o2: ``(mu - mean)/std + exp(0.5*logvar) * eps`` with
        ``eps = torch.randn(shape, generator=generator)`` (float32, drawn on the generator's device).
        """
        mu, logvar = self.encode_moments(pixels, tiled)
        mean, inv_std = self.stats(mu.dim())
        z = (mu - mean.to(mu.device)) * inv_std.to(mu.device)
        if sample:
            noise_device = generator.device if generator is not None else z.device
            eps = torch.randn(z.shape, generator=generator, dtype=torch.float32, device=noise_device)
            z = z + torch.exp(0.5 * logvar) * eps.to(z.device)
        if pixels.dim() == 4:
            z = z.squeeze(2)
        return z

    @one_call_at_a_time
    @apply_forward_hook
    def decode(self, latents: torch.Tensor, tiled: bool | None = None) -> torch.Tensor:
        """Normalised latents (B,z,T',h,w) or (B,z,h,w) -> pixels (B,3,1+4(T'-1),8h,8w) / (B,3,8h,8w).

        Output is float32 and clamped to [-1, 1]. ``tiled``: see :meth:`tiled`.
        """
        z = check_latents(latents, self.z_dim)
        self.load_parts("decoder")
        image = z.dim() == 4
        if image:
            z = z.unsqueeze(2)
        z = z.to(device=self.device, dtype=torch.float32)
        mean, inv_std = self.stats(5)
        raw = z / inv_std.to(z.device) + mean.to(z.device)
        with self.fast_path(), self.tiled(tiled):
            out = self.model.decode(raw.to(self.dtype), return_dict=False)[0]
        out = out.float().clamp(-1.0, 1.0)
        if image:
            out = out.squeeze(2)
        return out

    # ---- saving / building --------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write a diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
        folder = Path(folder)
        self.load_parts()  # the whole VAE is written
        self.model.register_to_config(
            latents_mean=[float(v) for v in self.latents_mean.float().tolist()],
            latents_std=[float(v) for v in self.latents_std.float().tolist()],
        )
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(str(folder), safe_serialization=True)
        except OSError as exc:
            raise OutputError(f"{folder}: cannot write the VAE ({exc.strerror or exc})") from exc
        return folder

    @classmethod
    def random(
        cls,
        base_dim: int = 96,
        num_res_blocks: int = 2,
        z_dim: int = 16,
        seed: int = 0,
        dim_mult: Sequence[int] = (1, 2, 4, 4),
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
    ) -> WanVAE:
        """A randomly initialised Wan2.1-layout VAE (deterministic in ``seed``; global RNG untouched)."""
        dtype, device = resolve_dtype(dtype), resolve_device(device)
        kwargs: dict[str, Any] = dict(
            base_dim=base_dim, z_dim=z_dim, num_res_blocks=num_res_blocks, dim_mult=list(dim_mult)
        )
        if z_dim != len(WAN_LATENTS_MEAN):
            kwargs.update(latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = autoencoder_class()(**kwargs)
        move_to(model, device, dtype)
        return cls(model)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    from ..runtime import torch_dtype

    return torch_dtype(dtype)


def resolve_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"unknown device {device!r} for the VAE") from exc


def move_to(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    # nn.Module.to, not ModelMixin.to: the latter logs a bogus "should be kept in float32: []"
    # warning on every dtype cast (diffusers 0.42 tests `[] is not None`).
    nn.Module.to(model, device=device, dtype=dtype)
    return model.eval().requires_grad_(False)
