"""The Wan2.1 VAE's geometry (spec section 3.3): how much it compresses space and time (and the
config rule for time every frame count of the project is written for), the tiles it runs in when
tiling, the memory an encode or decode of a size takes, and the shapes of the pixels and latents it
takes (:func:`check_pixels`, :func:`check_latents`). :mod:`.vae` re-exports each public name."""

from __future__ import annotations

import math

import torch

from ..errors import InputError, ModelError

SPATIAL_FACTOR = 8
TEMPORAL_FACTOR = 4
#: Spatial tiles when tiling, in pixels: (height, width, stride height, stride width); diffusers'
#: defaults for AutoencoderKLWan (256-pixel tiles every 192 pixels, the 64-pixel overlap blended).
DEFAULT_TILE = (256, 256, 192, 192)


def temporal_factor(config) -> int:
    """The temporal compression a Wan VAE config (diffusers' keys) builds: ``2 ** n`` for the ``n``
    blocks but the last with ``temperal_downsample`` set (``[False, True, True]``: 4)."""
    blocks = len(config.get("dim_mult") or (1, 2, 4, 4)) - 1
    flags = config.get("temperal_downsample") or (False, True, True)
    return 2 ** sum(bool(f) for f in list(flags)[:blocks])


def check_temporal(config, where: str = "VAE") -> None:
    """A :class:`ModelError` unless the config compresses time as Wan2.1 does (:data:`TEMPORAL_FACTOR`):
    every frame count of the project (``ModelSpec.latent_frames`` ...) is written for it."""
    blocks = len(config.get("dim_mult") or (1, 2, 4, 4)) - 1
    flags = config.get("temperal_downsample")
    if flags is not None and (not isinstance(flags, (list, tuple)) or len(flags) < blocks):
        raise ModelError(f"{where} config temperal_downsample must be a list of at least {blocks} entries "
                         f"(one a block), got {str(flags)[:60]}")
    factor = temporal_factor(config)
    if factor != TEMPORAL_FACTOR:
        raise ModelError(f"{where} config (dim_mult, temperal_downsample) compresses time "
                         f"{factor}x but a Wan2.1 VAE compresses it {TEMPORAL_FACTOR}x")


def _tile_pixels(height: int, width: int, tiled: bool, tile: tuple[int, int, int, int] = DEFAULT_TILE
                 ) -> tuple[int, float]:
    """(pixels one step of the network sees, decoded tiles kept per output pixel) for a
    ``height x width`` pixel frame: the whole frame, or one tile and the tiles' overlap."""
    tile_h, tile_w, stride_h, stride_w = tile
    if not tiled or (height <= tile_h and width <= tile_w):
        return height * width, 0.0
    rows, cols = math.ceil(height / stride_h), math.ceil(width / stride_w)
    kept = rows * cols * min(height, tile_h) * min(width, tile_w) / (height * width)
    return min(height, tile_h) * min(width, tile_w), kept + 2  # + the blended rows, their concat


def decode_memory_bytes(base_dim: int, latent_frames: int, height: int, width: int, dtype_bytes: int = 4,
                        tiled: bool = False, tile: tuple[int, int, int, int] = DEFAULT_TILE) -> int:
    """See :meth:`WanVAE.decode_memory_gb`; ``height``/``width`` are latent sizes."""
    pixels = (SPATIAL_FACTOR * height) * (SPATIAL_FACTOR * width)
    frames = 1 + TEMPORAL_FACTOR * (max(latent_frames, 1) - 1)
    per_pixel = 25 if latent_frames <= 1 else 32 * TEMPORAL_FACTOR
    step, kept = _tile_pixels(SPATIAL_FACTOR * height, SPATIAL_FACTOR * width, tiled, tile)
    return int(base_dim * dtype_bytes * step * per_pixel + frames * pixels * 3 * (4 * 2 + dtype_bytes * kept))


def encode_memory_bytes(base_dim: int, frames: int, height: int, width: int, dtype_bytes: int = 4,
                        tiled: bool = False, tile: tuple[int, int, int, int] = DEFAULT_TILE) -> int:
    """See :meth:`WanVAE.encode_memory_gb`; ``height``/``width`` are pixel sizes."""
    pixels = height * width
    per_pixel = 13 if frames <= 1 else 16 * TEMPORAL_FACTOR
    step, _ = _tile_pixels(height, width, tiled, tile)
    return int(base_dim * dtype_bytes * step * per_pixel + max(frames, 1) * pixels * 3 * 4 * 2)


def check_pixels(pixels: torch.Tensor, in_channels: int) -> torch.Tensor:
    """``pixels`` for the VAE's encoder, or an :class:`InputError` saying what is wrong with them:
    (B,3,H,W) or (B,3,T,H,W) floats, sides multiples of :data:`SPATIAL_FACTOR`, 1 + 4k frames."""
    if not isinstance(pixels, torch.Tensor):
        raise InputError(f"VAE input must be a tensor, got {type(pixels).__name__}")
    shape = tuple(pixels.shape)
    if pixels.dim() not in (4, 5):
        raise InputError(f"VAE input has shape {shape}; expected (B,3,H,W) or (B,3,T,H,W)")
    if not pixels.is_floating_point():
        raise InputError(f"VAE input has dtype {pixels.dtype}; expected floating pixels in [-1, 1]")
    if pixels.shape[1] != in_channels:
        raise InputError(
            f"VAE input has {pixels.shape[1]} channels (shape {shape}); expected {in_channels}"
        )
    if any(s == 0 for s in shape):
        raise InputError(f"VAE input has an empty dimension (shape {shape})")
    h, w = shape[-2:]
    if h % SPATIAL_FACTOR or w % SPATIAL_FACTOR:
        raise InputError(
            f"VAE input size {h}x{w} (HxW) is not a multiple of {SPATIAL_FACTOR}; "
            f"resize or crop to e.g. {h // SPATIAL_FACTOR * SPATIAL_FACTOR or SPATIAL_FACTOR}x"
            f"{w // SPATIAL_FACTOR * SPATIAL_FACTOR or SPATIAL_FACTOR}"
        )
    if pixels.dim() == 5:
        t = shape[2]
        if (t - 1) % TEMPORAL_FACTOR:
            lower = 1 + (t - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR
            raise InputError(
                f"VAE input has {t} frames; the Wan VAE needs 1 + 4k frames (e.g. {lower} or "
                f"{lower + TEMPORAL_FACTOR})"
            )
    return pixels


def check_latents(latents: torch.Tensor, z_dim: int) -> torch.Tensor:
    """``latents`` for the VAE's decoder, or an :class:`InputError`: (B,z,h,w) or (B,z,T,h,w) floats."""
    if not isinstance(latents, torch.Tensor):
        raise InputError(f"VAE latents must be a tensor, got {type(latents).__name__}")
    shape = tuple(latents.shape)
    if latents.dim() not in (4, 5):
        raise InputError(
            f"VAE latents have shape {shape}; expected (B,{z_dim},h,w) or (B,{z_dim},T,h,w)"
        )
    if not latents.is_floating_point():
        raise InputError(f"VAE latents have dtype {latents.dtype}; expected a floating tensor")
    if latents.shape[1] != z_dim:
        raise InputError(
            f"VAE latents have {latents.shape[1]} channels (shape {shape}); expected {z_dim}"
        )
    if any(s == 0 for s in shape):
        raise InputError(f"VAE latents have an empty dimension (shape {shape})")
    return latents
