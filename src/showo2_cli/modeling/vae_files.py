"""Reading a Wan2.1 VAE from the files users have: an original ``.pth``, a ``.safetensors`` file or
a diffusers folder, with its config (spec 3.4). Sizes come from the weights' shapes and are checked
before anything is built; every failure is one line naming the file."""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, error_detail, short
from ..hub import DIFFUSERS_VAE_WEIGHTS
from ..options import is_finite_number
from ..runtime import quiet_imports
from ..weights import (
    TORCH_SUFFIXES,
    WEIGHT_SUFFIXES,
    check_fit,
    file_stamp,
    first,
    one_line,
    read_json,
    read_state_dict,
)
from .vae import (
    VAE_PARTS,
    NotLoaded,
    WanVAE,
    autoencoder_class,
    check_temporal,
    move_to,
    resolve_device,
    resolve_dtype,
)

__all__ = ["check_base_dim", "header_sizes", "load_vae"]

# Original (WanVAE_) constructor kwargs -> diffusers AutoencoderKLWan kwargs.
_ORIGINAL_CONFIG_KEYS = {
    "dim": "base_dim",
    "z_dim": "z_dim",
    "dim_mult": "dim_mult",
    "num_res_blocks": "num_res_blocks",
    "attn_scales": "attn_scales",
    "temperal_downsample": "temperal_downsample",
    "dropout": "dropout",
}


def load_vae(
    path: str | Path,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    parts: tuple[str, ...] | list[str] = tuple(VAE_PARTS),
) -> WanVAE:
    """Load a Wan2.1 VAE from an original ``.pth``, a ``.safetensors`` file or a diffusers folder.

    A ``config.json`` beside the weights (diffusers or original constructor kwargs) supplies the
    architecture options and ``latents_mean``/``latents_std``; base_dim, z_dim and the channel
    counts always come from the weights' shapes. Without one, the Wan2.1 defaults apply.
    ``parts``: the halves of :data:`~showo2_cli.modeling.vae.VAE_PARTS` to load now (the whole
    file is checked either way); the others load from the same file on first use
    (:meth:`WanVAE.load_parts`), with the same values. Every failure is a one-line `ModelError`
    naming the file.
    """
    parts = check_parts(parts)
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    weights, config_path = vae_source(Path(path).expanduser())
    stamp = file_stamp(weights)
    sd, kwargs, layout = _read(weights, config_path)
    model = _build_and_load(sd, kwargs, weights, layout, dtype, device, parts)
    vae = WanVAE(model)
    if len(parts) < len(VAE_PARTS):
        vae.part_loader = functools.partial(_load_later, weights, stamp, dtype)
    return vae


def check_parts(parts) -> tuple[str, ...]:
    """``parts`` as a tuple of :data:`VAE_PARTS` names, at least one, each once; a ValueError otherwise."""
    parts = (parts,) if isinstance(parts, str) else tuple(dict.fromkeys(parts))
    unknown = [p for p in parts if p not in VAE_PARTS]
    if unknown or not parts:
        raise ValueError(f"VAE parts must be some of {', '.join(VAE_PARTS)}, got {list(parts)!r}")
    return parts


def _read(weights: Path, config_path: Path | None) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(diffusers-layout state dict, checked constructor kwargs, the file's layout)."""
    sd, layout = _to_diffusers_layout(read_state_dict(weights), weights)
    kwargs = _init_kwargs(read_json(config_path)) if config_path is not None else {}
    kwargs.update(_infer_kwargs(sd, weights))
    _check_sizes(kwargs, config_path or weights)
    _check_stats(kwargs, config_path or weights)
    return sd, kwargs, layout


@torch.inference_mode(False)  # a caller's inference mode would make the weights inference tensors (no autograd)
def _load_later(weights: Path, stamp: tuple, load_dtype: torch.dtype, vae: WanVAE, parts: tuple[str, ...]) -> None:
    """Load ``parts`` of ``vae`` (loaded in part from ``weights``) as loading them at first would
    have: into the modules built then, in the dtype of the load, then to the VAE's present device,
    dtype and mode, ordinary tensors even where the first use runs under ``torch.inference_mode()``.
    All or nothing: every tensor is checked before any is placed."""
    try:
        same = file_stamp(weights) == stamp
    except OSError:
        same = False
    if not same:
        raise ModelError(f"{weights}: the VAE file changed or went away since it was loaded; load the model again")
    sd, _ = _to_diffusers_layout(read_state_dict(weights), weights)
    modules = {name: getattr(vae.model, name).meta_module for part in parts for name in VAE_PARTS[part]}
    states = {name: {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")} for name in modules}
    for name, module in modules.items():
        check_fit(module.state_dict(), states[name], weights, what=f"the VAE's {name}")
    first_param = next(vae.model.parameters())
    for name, module in modules.items():
        module.load_state_dict(states[name], strict=True, assign=True)
        move_to(module, torch.device("cpu"), load_dtype)
        move_to(module, first_param.device, first_param.dtype)
        setattr(vae.model, name, module.train(vae.model.training).requires_grad_(first_param.requires_grad))


def _to_diffusers_layout(sd: dict[str, torch.Tensor], path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if "encoder.conv_in.weight" in sd:
        return sd, "diffusers"
    if "encoder.conv1.weight" in sd:
        with quiet_imports():
            from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

        try:
            return convert_wan_vae_to_diffusers(sd), "original Wan"
        except (ValueError, KeyError, IndexError) as e:  # a key diffusers cannot place ("decoder.upsamples.x.")
            raise ModelError(f"{path}: not a Wan2.1 VAE state dict in the original layout (converting it to "
                             f"diffusers' failed: {error_detail(e)})") from e
    raise ModelError(
        f"{path}: not a Wan2.1 VAE state dict (no encoder.conv1.weight or encoder.conv_in.weight; "
        f"keys start with {first(sorted(sd))})"
    )


#: Settings every Wan2.1 VAE has: RGB in and out, 8x spatial and 4x temporal compression, no patchify.
_WAN21_FIXED = {"in_channels": 3, "out_channels": 3, "scale_factor_spatial": 8, "scale_factor_temporal": 4,
                "patch_size": 1, "is_residual": False}

#: What a Wan-architecture VAE can be: a config outside these bounds is refused before building.
_SIZE_LIMITS = {"base_dim": 1024, "z_dim": 256, "num_res_blocks": 16}


def _check_sizes(kwargs: dict[str, Any], where: Path) -> None:
    for key, high in _SIZE_LIMITS.items():
        v = kwargs.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= high):
            raise ModelError(f"{where}: VAE config {key} = {str(v)[:40]} is outside 1..{high}")
    for key in ("dim_mult", "attn_scales", "temperal_downsample"):
        v = kwargs.get(key)
        if v is not None and (not isinstance(v, (list, tuple)) or len(v) > 8):
            raise ModelError(f"{where}: VAE config {key} must be a list of at most 8 entries")
    for v in kwargs.get("dim_mult") or []:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 16:
            raise ModelError(f"{where}: VAE config dim_mult entries must be whole numbers 1..16, got {str(v)[:40]}")
    # what Show-o2's Wan2.1 VAE is (Wan2.2's patchified 12-channel VAE is another model)
    for key, wanted in _WAN21_FIXED.items():
        v = kwargs.get(key)
        if v is not None and (v is not wanted if isinstance(wanted, bool) else isinstance(v, bool) or v != wanted):
            raise ModelError(f"{where}: VAE config {key} = {str(v)[:40]} but a Wan2.1 VAE has {wanted}")
    check_temporal(kwargs, f"{where}: VAE")
    v = kwargs.get("dropout")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1):
        raise ModelError(f"{where}: VAE config dropout must be a number in [0, 1), got {str(v)[:40]}")


def check_base_dim(value, where: Path) -> int:
    """``value`` when it is a base_dim a Wan-architecture VAE can have (a whole number in
    1..``_SIZE_LIMITS``'s bound); a one-line :class:`ModelError` naming ``where`` otherwise."""
    _check_sizes({"base_dim": value}, where)
    return value


def _init_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the keys of a (diffusers or original) VAE config that `AutoencoderKLWan` accepts."""
    params = inspect.signature(autoencoder_class().__init__).parameters
    if "base_dim" in config:  # diffusers format
        return {k: v for k, v in config.items() if k in params and k != "self"}
    if "dim" in config and "z_dim" in config:  # original WanVAE_ constructor kwargs
        out = {new: config[old] for old, new in _ORIGINAL_CONFIG_KEYS.items() if old in config}
        for key in ("latents_mean", "latents_std"):
            if key in config:
                out[key] = config[key]
        return out
    # Some other config (e.g. the Show-o2 model's): only the latent statistics, if any.
    return {k: config[k] for k in ("latents_mean", "latents_std") if k in config}


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    t = sd.get(key)
    return tuple(t.shape) if t is not None else None


def _infer_kwargs(sd: Mapping[str, torch.Tensor], path: Path) -> dict[str, Any]:
    """base_dim, z_dim and in/out channels from the weights' shapes (they override any config)."""
    out: dict[str, Any] = {}
    conv_in = _shape(sd, "encoder.conv_in.weight")
    if conv_in is not None:
        if len(conv_in) != 5:
            raise ModelError(
                f"{path}: encoder conv_in weight has shape {conv_in}; expected a 5-D Conv3d weight"
            )
        out["base_dim"], out["in_channels"] = conv_in[0], conv_in[1]
    post = _shape(sd, "post_quant_conv.weight")
    quant = _shape(sd, "quant_conv.weight")
    if post is not None and len(post) >= 1:
        out["z_dim"] = post[0]
    elif quant is not None and len(quant) >= 1:
        out["z_dim"] = quant[0] // 2
    conv_out = _shape(sd, "decoder.conv_out.weight")
    if conv_out is not None and len(conv_out) == 5:
        out["out_channels"] = conv_out[0]
        if conv_in is not None and conv_out[1] != conv_in[0]:
            out["decoder_base_dim"] = conv_out[1]
    return out


def _check_stats(kwargs: dict[str, Any], source: Path) -> None:
    z_dim = int(kwargs.get("z_dim", 16))
    for key in ("latents_mean", "latents_std"):
        if key not in kwargs:
            continue
        values = kwargs[key]
        if not isinstance(values, (list, tuple)) or len(values) != z_dim:
            n = len(values) if isinstance(values, (list, tuple)) else type(values).__name__
            raise ModelError(f"{source}: {key} must be a list of {z_dim} numbers (found {n})")
        odd = [v for v in values if not isinstance(v, (int, float))]
        if odd:  # (was "must be a list of 16 numbers (found 16)")
            raise ModelError(f"{source}: {key} must be a list of {z_dim} numbers (found {short(repr(odd[0]))} among them)")
        if not all(map(is_finite_number, values)):  # (10**400 too)
            raise ModelError(f"{source}: {key} contains non-finite values")
        if key == "latents_std" and any(v == 0 for v in values):
            raise ModelError(f"{source}: latents_std contains zero")


def _build_and_load(
    sd: dict[str, torch.Tensor],
    kwargs: dict[str, Any],
    path: Path,
    layout: str,
    dtype: torch.dtype,
    device: torch.device,
    parts: tuple[str, ...] = tuple(VAE_PARTS),
) -> nn.Module:
    cls = autoencoder_class()
    try:
        with torch.device("meta"):
            model = cls(**kwargs)
    except Exception as exc:
        raise ModelError(f"{path}: VAE config cannot build AutoencoderKLWan ({one_line(exc)})") from exc
    arch = f"base_dim {model.config.base_dim}, z_dim {model.config.z_dim}"
    check_fit(model.state_dict(), sd, path, what=f"a Wan2.1 VAE ({arch}; {layout} layout)")
    left_out = {name: part for part, names in VAE_PARTS.items() if part not in parts for name in names}
    for name, part in left_out.items():  # kept on 'meta' inside the stand-in, for WanVAE.load_parts
        setattr(model, name, NotLoaded(part, getattr(model, name)))
    sd = {k: v for k, v in sd.items() if k.split(".", 1)[0] not in left_out}
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"{path}: cannot load the VAE weights ({one_line(exc)})") from exc
    leftover = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if leftover:
        raise ModelError(f"{path}: VAE tensors not initialised by the file: {first(leftover)}")
    return move_to(model, device, dtype)


def _diffusers_folder(folder: Path) -> Path | None:
    for candidate in (folder, folder / "vae"):
        if os.path.isfile(candidate / "config.json") and any(  # (os.path: False for a link to a name too long)
            os.path.isfile(candidate / n) for n in DIFFUSERS_VAE_WEIGHTS
        ):
            return candidate
    return None


def _single_weight_file(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES)
    named = [p for p in files if p.name == "Wan2.1_VAE.pth"]
    if named:
        return named[0]
    for suffixes in ((".safetensors",), TORCH_SUFFIXES):
        group = [p for p in files if p.suffix.lower() in suffixes]
        if len(group) == 1:
            return group[0]
        if len(group) > 1:
            index = sorted(p.name for p in folder.glob("*.index.json"))
            if index:  # (no one of the shards is the VAE: passing one fails the fit check)
                raise ModelError(f"{folder}: the VAE is sharded ({index[0]}): showo2 reads a VAE of one weight file")
            raise ModelError(
                f"{folder}: several candidate VAE files ({first([p.name for p in group])}); pass the file itself"
            )
    raise ModelError(
        f"{folder}: no VAE found (expected config.json + diffusion_pytorch_model.safetensors, a vae/ "
        "subfolder, or a Wan2.1_VAE.pth / .safetensors file)"
    )


def vae_source(path: Path) -> tuple[Path, Path | None]:
    """(weights file, config.json or None) for a file or folder path."""
    if not path.exists():
        raise ModelError(f"{path}: VAE not found (no such file or folder)")
    if path.is_dir():
        folder = _diffusers_folder(path)
        if folder is not None:
            weights = next(folder / n for n in DIFFUSERS_VAE_WEIGHTS if (folder / n).is_file())
            return weights, folder / "config.json"
        path = _single_weight_file(path)
    config = path.parent / "config.json"
    return path, (config if config.is_file() else None)


#: The original Wan layout's names of the modules outside the encoder and the decoder, in diffusers' names.
_ORIGINAL_NAMES = {"conv1": "quant_conv", "conv2": "post_quant_conv"}


def header_sizes(path: str | Path) -> tuple[int | None, dict[str, int]] | None:
    """(base_dim, parameters per top-level module in diffusers' names) of the VAE that
    :func:`load_vae` would read from ``path``, with no tensor read: a safetensors file from its
    header (a header of too many tensors or a name given twice is refused first, as the load refuses
    it), a pickled one (``Wan2.1_VAE.pth``, a ``.bin``) in torch's zip format from its pickle, its
    storages memory-mapped and never touched (``torch.load(mmap=True, weights_only=True)``, through
    the load's own reader and checks): the memory guard's figures before a load. None for a legacy
    (non-zip) pickle, which torch can only read whole; a :class:`ModelError` for a file that cannot
    be read."""
    weights, _config = vae_source(Path(path).expanduser())
    if not weights.is_file():  # a FIFO would block the read (the load refuses it so)
        raise ModelError(f"weight file '{weights}' is not a regular file")
    if weights.suffix.lower() != ".safetensors":
        shapes = _pickled_shapes(weights)
        if shapes is None:
            return None
    else:
        shapes = _header_shapes(weights)
    conv_in = shapes.get("encoder.conv_in.weight") or shapes.get("encoder.conv1.weight")
    if conv_in is not None:  # what the load refuses, refused here (a base_dim of 10^9 in an empty tensor
        if len(conv_in) != 5:  # was a job "needing 409600 GB", exit 6, where the file is broken)
            raise ModelError(f"{weights}: encoder conv_in weight has shape {conv_in}; expected a 5-D Conv3d weight")
        check_base_dim(conv_in[0], weights)
    counts: dict[str, int] = {}
    for key, shape in shapes.items():
        top = key.split(".", 1)[0]
        top = _ORIGINAL_NAMES.get(top, top)
        counts[top] = counts.get(top, 0) + math.prod(shape)
    return (int(conv_in[0]) if conv_in else None), counts


def _header_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    from ..errors import error_detail
    from ..weights import check_safetensors_header

    check_safetensors_header(weights, "weights")
    try:
        with safe_open(str(weights), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # (safetensors' own errors are no OSError subclass)
        raise ModelError(f"cannot read weights '{weights}' ({error_detail(e)})") from e


def _pickled_shapes(weights: Path) -> dict[str, tuple[int, ...]] | None:
    """The tensors' shapes of a pickled file in torch's zip format, read as the load reads it but
    memory-mapped (no storage byte is read); None for a legacy pickle (torch reads it whole)."""
    import zipfile

    try:
        if not zipfile.is_zipfile(weights):
            return None
    except OSError:
        return None
    state = read_state_dict(weights)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    del state
    return shapes
