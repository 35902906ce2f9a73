"""Training configuration: plain TOML (or YAML) files, one dataclass per section, every field checked.

A config has a few top-level keys and one table per concern::

    mode = "showo2"            # "showo2" (the two-stage recipe) or "vae" (train a Wan-architecture VAE)
    seed = 0
    output_dir = "runs/tiny"   # relative paths are relative to the config file

    [model]      what to start from: init (a checkpoint) or init_spec (from scratch), the VAE, the tokenizer
    [[data]]     one table per source: kind (shapes|pairs|llava), role (t2i|mmu|t2v|mmu_vid|vae), ...
    [batch]      samples per step *per process* for each role
    [optim]      AdamW, learning-rate groups by name substring, frozen substrings, schedule, steps, clipping
    [loss]       NTP/flow coefficients, conditional dropout, the t distribution
    [vae_loss]   (mode = "vae") reconstruction and KL weights
    [ema]        an exponential moving average of the weights (decay, start step)
    [lora]       (mode = "showo2") train a LoRA adapter on a frozen base instead of the weights
    [run]        checkpointing, logging, previews, mixed precision, device

Every problem is a :class:`~showo2_cli.errors.UsageError` on one line that names the field, e.g.
``config.toml: data[0].kind: must be one of shapes, pairs, llava (got 'shape')``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any

from ..errors import UsageError, json_problem
from ..options import MAX_CONFIG_BYTES
from .checks import check_paths, validate
from .schema import SECTIONS, ConfigError, DataSource, GroupConfig, TrainConfig, WeightsConfig, field_error

# ---- generic typed construction ----------------------------------------------------------------

def _type_name(tp) -> str:
    if tp is float:
        return "a number"
    if tp is int:
        return "a whole number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if tp is list:
        return "a list"
    if tp is dict:
        return "a table"
    return str(tp)


def _coerce(value: Any, tp, where: str):
    """Check ``value`` against a field's annotation (int, float, str, bool, list, dict, X | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if value is None:
        raise field_error(where, f"must be {_type_name(tp)}, got nothing")
    if tp is bool:
        if not isinstance(value, bool):
            raise field_error(where, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise field_error(where, f"must be a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str):
                try:
                    float(value)
                    hint = " (text, not a number: YAML reads 1e-4 as text; write 1.0e-4)"
                except ValueError:
                    pass
            shown = repr(value[:40]) if isinstance(value, str) else repr(value)
            raise field_error(where, f"must be a number, got {shown}{hint}")
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            number = math.inf
        if not math.isfinite(number):
            raise field_error(where, f"must be a finite number, got {str(value)[:40]}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise field_error(where, f"must be a string, got {value!r}")
        return value
    if tp is list:
        if not isinstance(value, (list, tuple)):
            raise field_error(where, f"must be a list, got {value!r}")
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise field_error(where, f"must be a table, got {value!r}")
        return dict(value)
    raise AssertionError(f"unsupported annotation {tp}")


def _build(cls, raw: Any, where: str):
    """An instance of dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise field_error(where, f"must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise field_error(f"{where}.{unknown[0]}" if where else unknown[0],
                    f"unknown field (known: {', '.join(names)})")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], f"{where}.{name}" if where else name)
    return cls(**values)


# ---- reading ------------------------------------------------------------------------------------

def toml_module() -> types.ModuleType:
    """The TOML reader: the standard library's ``tomllib`` (Python 3.11+), else its backport
    ``tomli`` (a dependency on Python 3.10), the same API."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def read_raw(path: Path) -> dict:
    """The file's mapping: TOML (``.toml``) or YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    from ..media import decode_text, read_limited

    path = Path(path)
    suffix = path.suffix.lower()
    # a regular file of at most MAX_CONFIG_BYTES, in one bounded read that judges it (missing, a URL, a
    # folder; a FIFO waited for ever, /dev/zero was read until memory ran out)
    data = read_limited(path, MAX_CONFIG_BYTES, "config", UsageError)
    try:  # UTF-8 (a byte-order mark, as Notepad writes, was "not valid TOML"), or UTF-16 with its mark
        text = decode_text(data)
    except UnicodeDecodeError as e:
        raise UsageError(f"cannot read config '{path}': {e}") from e
    try:
        if suffix == ".toml":
            raw = toml_module().loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UsageError(f"config '{path}': reading YAML needs PyYAML (pip install pyyaml)") from None
            raw = yaml.safe_load(text)
        elif suffix == ".json":
            raw = json.loads(text)
        else:
            raise UsageError(f"config '{path}': unknown format '{suffix or '(none)'}'; use .toml, .yaml or .json")
    except UsageError:
        raise
    except Exception as e:  # TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError; Python's nesting and digit limits
        raise UsageError(f"config '{path}' {json_problem(e, 400, suffix.lstrip('.').upper())}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UsageError(f"config '{path}' must hold a table of settings at the top level")
    return raw


def parse_config(raw: dict, source: str = "<config>", base_dir: Path | None = None,
                 overrides: dict | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a mapping (``overrides`` are applied on top)."""
    raw = dict(raw)
    for key, value in (overrides or {}).items():
        _set_path(raw, key, value)
    prefix = source
    top = {k: v for k, v in raw.items() if k not in SECTIONS and k != "data"}
    known_top = ("mode", "seed", "output_dir")
    for k in top:
        if k not in known_top:
            raise field_error(f"{prefix}: {k}", f"unknown field (known: {', '.join(known_top + tuple(SECTIONS) + ('data',))})")
    cfg = TrainConfig(source=source)
    if "mode" in raw:
        cfg.mode = _coerce(raw["mode"], str, f"{prefix}: mode")
    if "seed" in raw:
        cfg.seed = _coerce(raw["seed"], int, f"{prefix}: seed")
    if "output_dir" in raw:
        cfg.output_dir = _coerce(raw["output_dir"], str, f"{prefix}: output_dir")
    for name, cls in SECTIONS.items():
        if name in raw:
            setattr(cfg, name, _build(cls, raw[name], f"{prefix}: {name}"))
    data = raw.get("data", [])
    if not isinstance(data, list):
        raise field_error(f"{prefix}: data", "must be a list of tables ([[data]] in TOML)")
    cfg.data = [_build(DataSource, d, f"{prefix}: data[{i}]") for i, d in enumerate(data)]
    cfg.model.weights = [_build(WeightsConfig, w, f"{prefix}: model.weights[{i}]")
                         for i, w in enumerate(cfg.model.weights)]
    cfg.optim.groups = [_build(GroupConfig, g, f"{prefix}: optim.groups[{i}]") for i, g in enumerate(cfg.optim.groups)]
    if base_dir is not None:
        check_paths(cfg, prefix)
        _resolve_paths(cfg, base_dir)
    validate(cfg, prefix)
    return cfg


def load_config(path: str | os.PathLike, overrides: dict | None = None) -> TrainConfig:
    """Read and validate a config file; relative paths in it are relative to the file."""
    path = Path(path)
    raw = read_raw(path)
    return parse_config(raw, source=str(path), base_dir=path.resolve().parent, overrides=overrides)


def _set_path(raw: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = raw
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{'.'.join(parts[:i + 1])}' is not a table (set it whole)")
    node[parts[-1]] = value


def _resolve(base: Path, value: str | None, always_path: bool = False) -> str | None:
    """A path relative to the config file; a bare model name or repo id stays a name."""
    if not value:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    local = base / p
    if always_path or local.exists() or value.startswith((".", "~")) or len(Path(value).parts) > 2:
        return str(local)
    return value


def _resolve_vae(base: Path, value: str | None) -> str | None:
    """``model.vae``: a path relative to the config file, or, naming no file there, a Hub repo id
    (maybe ``@revision``) as ``--vae`` takes one (:mod:`showo2_cli.hub_vae`), kept as a name."""
    from ..hub_vae import vae_repo

    if value and not (base / Path(value).expanduser()).exists() and vae_repo(value) is not None:
        return value
    return _resolve(base, value, always_path=True)


def _resolve_paths(cfg: TrainConfig, base: Path) -> None:
    if cfg.output_dir and not Path(cfg.output_dir).expanduser().is_absolute():
        cfg.output_dir = str((base / cfg.output_dir).resolve())
    cfg.model.init = _resolve(base, cfg.model.init)
    cfg.model.vae = _resolve_vae(base, cfg.model.vae)
    cfg.model.tokenizer = _resolve(base, cfg.model.tokenizer)
    for w in cfg.model.weights:
        w.path = _resolve(base, w.path)
    for s in cfg.data:
        for name in ("path", "root", "cache"):
            v = getattr(s, name)
            if v and not Path(v).expanduser().is_absolute():
                setattr(s, name, str(base / v))
            elif v:
                setattr(s, name, str(Path(v).expanduser()))
