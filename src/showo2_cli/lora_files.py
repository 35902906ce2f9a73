"""A LoRA adapter folder found and read (:func:`read_adapter`), checked to be a plain LoRA adapter
before any model loads: peft's layout (``adapter_config.json`` and ``adapter_model.safetensors``,
or peft's older ``adapter_model.bin``), given as the folder, its weights file, a training
checkpoint or a training run; the config's fields typed, LoRA variants and what rewrites the base
model refused, the tensors floating-point and finite, the ranks those saved.
:mod:`showo2_cli.lora` merges what this reads (and re-exports its names).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ModelError, UsageError, short
from .run_folders import ADAPTER_CONFIG, ADAPTER_PICKLE, ADAPTER_WEIGHTS
from .runtime import quiet_imports


def adapter_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, config) of the adapter folder ``folder``: its ``adapter_model.safetensors``, or
    where there is none its ``adapter_model.bin`` (peft's older pickle), as peft picks them."""
    folder = Path(folder)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists() and not weights.is_symlink() and (folder / ADAPTER_PICKLE).is_file():
        weights = folder / ADAPTER_PICKLE
    return weights, folder / ADAPTER_CONFIG


def find_adapter(ref: str | os.PathLike) -> Path:
    """The adapter folder named by ``ref``: the folder itself, its weights file
    (``adapter_model.safetensors`` or ``adapter_model.bin``), a training checkpoint or a training
    run folder (its checkpoint: :func:`~showo2_cli.run_folders.run_checkpoint`)."""
    from .run_folders import run_checkpoint

    p = Path(ref).expanduser()
    if p.is_file() and p.name in (ADAPTER_WEIGHTS, ADAPTER_PICKLE):
        if p.name == ADAPTER_PICKLE and (p.parent / ADAPTER_WEIGHTS).exists():  # (the folder would read the other)
            raise UsageError(f"--lora: '{ref}': its folder holds {ADAPTER_WEIGHTS} too, which is what loads from "
                             "it; give the folder, or move the .bin to a folder of its own")
        p = p.parent
    if p.is_dir() and not adapter_files(p)[0].is_file():
        found = run_checkpoint(p)
        if found is not None:
            p = found
    if not p.exists():
        raise UsageError(f"--lora: '{ref}' does not exist (give an adapter folder, a training run or a "
                         "Hugging Face repo id: owner/name, maybe @revision)")
    if not p.is_dir() or not all(f.is_file() for f in adapter_files(p)):
        raise ModelError(f"--lora: '{ref}' is not a LoRA adapter (a folder with {ADAPTER_WEIGHTS} or "
                         f"{ADAPTER_PICKLE} and {ADAPTER_CONFIG}, or a training run of a config with a [lora] section)")
    return p


def read_adapter(ref: str | os.PathLike):
    """(peft LoraConfig, tensors, folder) of an adapter, checked to be one."""
    with quiet_imports():
        from peft import LoraConfig

    from .weights import read_json, read_state_dict

    folder = find_adapter(ref)
    weights, cfg_path = adapter_files(folder)
    try:
        raw = read_json(cfg_path)  # the project's config reader: regular file, size and depth bounded
    except ModelError as e:
        raise ModelError(f"--lora: {e}") from None
    if raw.get("peft_type") != "LORA":
        raise ModelError(f"--lora: '{cfg_path}' is not a LoRA adapter config (peft_type must be \"LORA\")")
    _check_adapter_fields(raw, cfg_path)
    try:
        config = LoraConfig.from_pretrained(str(folder))
    except (TypeError, ValueError, KeyError, AttributeError, ImportError) as e:
        raise ModelError(f"--lora: '{cfg_path}': {e}") from None
    for key in _UNSUPPORTED:  # empty ones as absent: peft built a token adapter for `trainable_token_indices: []`
        if hasattr(config, key) and getattr(config, key) in ([], {}):
            setattr(config, key, None)
    if config.use_dora or not config.target_modules:
        raise ModelError(f"--lora: '{cfg_path}': only plain LoRA adapters with target_modules are supported")
    try:  # (a .bin: torch.load(weights_only=True), memory-mapped; a pickle that would run code is refused)
        state = read_state_dict(weights)
    except ModelError as e:
        raise ModelError(f"--lora: {e}") from None
    if not state or not all("lora_" in k for k in state):
        raise ModelError(f"--lora: '{weights}' holds no LoRA tensors")
    odd = next((k for k, t in state.items() if not t.is_floating_point()), None)
    if odd is None:  # (found here, before any model loads; merging refused them only at the end)
        # (float8 has no isfinite of its own: its values are checked as float32, which holds them exactly)
        nan = next((k for k, t in state.items() if not torch.isfinite(t.float() if t.itemsize == 1 else t).all()),
                   None)
        if nan is not None:
            raise ModelError(f"--lora: '{weights}': {nan} holds NaN or infinite values")
    if odd is not None:  # an integer adapter would be truncated into the weights
        raise ModelError(f"--lora: '{weights}': {odd} is {str(state[odd].dtype).replace('torch.', '')}, "
                         "not a floating-point tensor")
    # the ranks size the adapter peft allocates: they must be those of the saved tensors
    saved = {int(t.shape[0]) for k, t in state.items() if "lora_A" in k and t.dim() == 2}
    pattern = raw.get("rank_pattern") or {}
    if not isinstance(pattern, dict):
        raise ModelError(f"--lora: '{cfg_path}': rank_pattern must be an object")
    ranks = {"r": raw.get("r"), **{f"rank_pattern['{short(k, 60)}']": v for k, v in pattern.items()}}
    for what, rank in ranks.items():
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ModelError(f"--lora: '{cfg_path}': {what} must be a positive integer, got {str(rank)[:20]}")
        if saved and rank > max(saved):
            raise ModelError(f"--lora: '{cfg_path}': {what} = {short(rank, 24)} but the saved adapter's ranks are "
                             f"{sorted(saved)[:4]}")
    return config, state, folder


#: Fields of a peft LoRA config that change what loading does beyond ``W += alpha/r * B A`` on the
#: target modules: refused unless empty (PiSSA/OLoRA/LoftQ initialisations rewrite the base weights)
_UNSUPPORTED = ("layer_replication", "modules_to_save", "trainable_token_indices", "target_parameters")


def _check_adapter_fields(raw: dict, cfg_path: Path) -> None:
    """The adapter config's fields that loading uses have their types; a plain LoRA adapter only."""
    from .options import is_finite_number as number  # (10**400 too: math.isfinite raised OverflowError on it)

    def bad(what: str) -> ModelError:
        return ModelError(f"--lora: '{cfg_path}': {what}")

    if not number(raw.get("lora_alpha", 8)) or raw.get("lora_alpha", 8) <= 0:
        raise bad(f"lora_alpha must be a positive number, got {str(raw.get('lora_alpha'))[:20]}")
    alphas = raw.get("alpha_pattern") or {}
    if not isinstance(alphas, dict) or not all(number(v) and v > 0 for v in alphas.values()):
        raise bad("alpha_pattern must map module names to positive numbers")
    dropout = raw.get("lora_dropout", 0.0)
    if not number(dropout) or not 0 <= dropout < 1:
        raise bad(f"lora_dropout must be a number from 0 to below 1, got {str(dropout)[:20]}")
    for key in ("target_modules", "exclude_modules"):
        names = raw.get(key)
        if names is not None and not isinstance(names, str) and not (
                isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise bad(f"{key} must be a name or a list of names")
    if raw.get("init_lora_weights", True) not in (True, False, "gaussian"):
        raise bad(f"init_lora_weights {str(raw.get('init_lora_weights'))[:20]!r} is not supported (it rewrites "
                  "the base weights); only plain LoRA adapters load")
    for key in ("use_rslora", "fan_in_fan_out"):
        if not isinstance(raw.get(key, False), bool):
            raise bad(f"{key} must be true or false")
    for key in _UNSUPPORTED:
        if raw.get(key) not in (None, [], {}):
            raise bad(f"{key} is not supported (only plain LoRA adapters load)")
    bias = raw.get("bias", "none")
    if bias != "none":  # "all"/"lora_only" train the base layers' biases too: not part of W += alpha/r * B A
        raise bad(f"bias '{short(bias, 20)}' is not supported (it trains the base model's biases); "
                  "only plain LoRA adapters (bias \"none\") load")
    variant = next((key for key in _variant_fields() if raw.get(key) not in (None, False, [], {})), None)
    if variant is not None:  # DoRA, aLoRA, KaSA, Arrow, ...: another forward and merge than W += alpha/r * B A
        raise bad(f"{variant} is set: a LoRA variant, not supported (only plain LoRA adapters load)")


def _variant_fields() -> list[str]:
    """The fields of peft's ``LoraConfig`` that switch on a LoRA variant (peft marks them
    ``is_lora_variant``: use_dora, alora_invocation_tokens, kasa_config, arrow_config, ...)."""
    import dataclasses

    with quiet_imports():
        from peft import LoraConfig

    return [f.name for f in dataclasses.fields(LoraConfig) if f.metadata.get("is_lora_variant")]
