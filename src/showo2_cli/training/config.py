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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError

MODES = ("showo2", "vae")
KINDS = ("shapes", "pairs", "llava")
ROLES = ("t2i", "mmu", "t2v", "mmu_vid", "vae")
GEN_ROLES = ("t2i", "t2v")
UND_ROLES = ("mmu", "mmu_vid")
FORMATS = ("captioning", "pretraining", "tuning")
PREPROCESS = ("crop", "pad")
SCHEDULES = ("constant", "cosine")
UNGROUPED = ("train", "frozen")
T_SAMPLING = ("logit_normal", "uniform")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
FIT_STATS = ("auto", "yes", "no")
SPLITS = ("role", "none")
TRACKERS = ("tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive")  # accelerate's names


class ConfigError(UsageError):
    """A config problem: one line naming the file and the field."""


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


# ---- the sections ----------------------------------------------------------------------------

@dataclass
class ModelConfig:
    init: str | None = None  # a Show-o2 checkpoint to start from: folder, variant name or cached repo id
    init_spec: str | None = None  # or: a registry spec ("tiny", "1.5B", ...) built from scratch
    spec: dict = field(default_factory=dict)  # ModelSpec field overrides: of init_spec (e.g. num_layers = 4), or of
    #                                            init's spec where every weight still fits (e.g. velocity_layout)
    vae: str | None = None  # VAE file/folder, or a `showo2 train` VAE run folder (its latest checkpoint)
    vae_base_dim: int = 8  # width of a random Wan-architecture VAE when `vae` is not given (96 = real)
    vae_init_logvar: float = -6.0  # random VAE: initial posterior log-variance (narrow, so the decoder
    #                                 sees the encoder's signal from the first step)
    tokenizer: str | None = None  # from scratch: a tokenizer folder or cached repo id (default: byte-level)
    weights: list = field(default_factory=list)  # [WeightsConfig]: pretrained parts loaded into init_spec


@dataclass
class WeightsConfig:
    """Pretrained weights for part of a from-scratch network (e.g. Qwen2.5 into ``showo.``, the
    pre-distilled semantic layers), as the official stage 1a starts (spec §12.3)."""

    path: str = ""  # a weights file, a folder of them, or a cached Hugging Face repo id
    prefix: str = ""  # prepended to every key (Qwen2.5's "model.layers..." -> "showo.model.layers...")
    rename: dict = field(default_factory=dict)  # key-prefix replacements applied first {"old.": "new."}
    strict: bool = True  # every key must land in the network (else: unknown keys are ignored)


@dataclass
class DataSource:
    kind: str = ""  # shapes | pairs | llava
    role: str = ""  # t2i | mmu | t2v | mmu_vid | vae
    path: str | None = None  # pairs: a folder or a .jsonl of {path, prompt}; llava: a .json or .jsonl
    root: str | None = None  # where relative media paths start (default: the data file's folder)
    resolution: int | None = None  # pixels per side (multiple of 16); default: the model's
    frames: int | None = None  # t2v: pixel frames (1+4k); mmu_vid: frames sampled; vae: 1 = images
    format: str | None = None  # understanding: captioning | pretraining | tuning
    preprocess: str | None = None  # crop (resize + center crop) | pad (resize + pad on black)
    size: int | None = None  # shapes: number of distinct scenes (default: a new scene every sample)
    weight: float = 1.0  # share of its role's samples when a role has several sources
    max_seq_len: int | None = None  # token budget of a row (default: the model's max_seq_len)
    min_res: int = 0  # skip images whose shorter side is below this (spec §10)
    cache: str | None = None  # folder for pre-encoded VAE latents (mean and log-variance)
    crop: int | None = None  # vae role: random square crops of this side (default: no crop)
    pool: int | None = None  # mmu_vid: per-frame token grid after pooling (default: the model's)


@dataclass
class BatchConfig:
    """Samples per step and per process (the global batch is this times the number of processes)."""

    t2i: int = 0
    mmu: int = 0
    t2v: int = 0
    mmu_vid: int = 0
    vae: int = 0
    # How a step's rows run: "role" (one forward per role, each trimmed to its own longest row,
    # gradients accumulated; the same loss and per-token weighting as one padded batch) or "none"
    # (every row in one forward, padded to the longest).
    split: str = "role"

    def of(self, role: str) -> int:
        return int(getattr(self, role))


@dataclass
class GroupConfig:
    name: str = ""
    patterns: list = field(default_factory=list)  # parameter-name substrings
    lr: float = 1e-4
    weight_decay: float | None = None  # default: optim.weight_decay


@dataclass
class OptimConfig:
    lr: float = 1e-4  # learning rate of trainable parameters outside every group
    groups: list = field(default_factory=list)  # [GroupConfig]; the first matching group wins
    frozen: list = field(default_factory=list)  # parameter-name substrings never trained
    ungrouped: str = "train"  # parameters in no group: "train" (at optim.lr) or "frozen"
    weight_decay: float = 0.0  # AdamW decoupled weight decay (matrices only; not biases/norms)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    schedule: str = "constant"  # constant | cosine (after the warmup)
    warmup_steps: int = 0
    warmup_ratio: float | None = None  # alternative: a fraction of the total steps
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of each group's lr
    max_steps: int | None = None  # total optimizer steps
    epochs: float | None = None  # alternative: passes over the sources of `epoch_role`
    epoch_role: str = "mmu"
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    grad_accumulation: int = 1  # micro-batches (of [batch]'s size) whose gradients make one optimizer step


@dataclass
class LossConfig:
    ntp: float = 1.0  # next-token-prediction coefficient (stage 1: 0.2, stage 2: 1.0)
    flow: float = 1.0  # flow-matching coefficient
    cond_dropout: float = 0.1  # probability of an empty caption for generation samples (CFG)
    t_sampling: str = "logit_normal"  # logit_normal (official) | uniform
    t_mean: float = 0.0  # logit-normal location
    t_std: float = 1.0  # logit-normal scale
    t_shift: bool = True  # resolution-dependent shift towards noise (spec §7.2)
    vae_sample: bool = True  # draw the VAE posterior sample (official) instead of its mean


@dataclass
class VaeLossConfig:
    l1: float = 1.0  # mean absolute reconstruction error weight
    l2: float = 0.0  # mean squared reconstruction error weight
    kl: float = 1e-6  # KL(q(z|x) || N(0, I)) weight, per latent element
    fit_latent_stats: str = "auto"  # re-estimate latents_mean/std at each save (auto: when from scratch)
    stats_samples: int = 64  # samples used to estimate them


@dataclass
class EmaConfig:
    """An exponential moving average of the trained weights (diffusers' EMAModel): checkpoints
    hold it in ``ema/`` (a loadable model folder); previews and packaging use it."""

    decay: float = 0.0  # 0 = off; e.g. 0.999 (the warm-up (1+n)/(10+n) caps it early on)
    start_step: int = 0  # optimizer steps before the average starts following the weights


@dataclass
class LoraConfig:
    """A LoRA adapter (peft) on a frozen base: only the low-rank matrices train, checkpoints hold
    only the adapter (``adapter_model.safetensors`` + ``adapter_config.json``, peft's layout)."""

    rank: int = 0  # 0 = off (train the weights themselves)
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.0  # dropout on the adapter's input
    # linear layers adapted: names ending with one of these (Qwen2.5's attention and MLP) ...
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                          "gate_proj", "up_proj", "down_proj"])
    within: list = field(default_factory=lambda: ["showo."])  # ... under these name prefixes ([] = anywhere)


@dataclass
class RunConfig:
    save_every: int = 1000  # steps between checkpoints (a final one is always written)
    keep_last: int = 3  # checkpoints kept (0 keeps all)
    log_every: int = 10  # steps between metrics lines
    eval_every: int = 0  # steps between losses on a fixed batch (0: off)
    sample_every: int = 0  # steps between preview images (0: off)
    sample_prompts: list = field(default_factory=list)
    sample_steps: int | None = None  # sampler grid points (default: the model's)
    sample_guidance: float | None = None  # CFG scale (default: the model's)
    mixed_precision: str = "auto"  # auto (bf16 on a CUDA device that has it, else no) | no | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    num_workers: int = 0  # data-loading worker processes per training process
    tf32: bool = True  # allow TF32 matmuls on CUDA
    gradient_checkpointing: bool = False  # recompute each layer's activations in the backward (less memory)
    log_with: list = field(default_factory=list)  # accelerate trackers beside metrics.jsonl: tensorboard, wandb, ...


@dataclass
class TrainConfig:
    mode: str = "showo2"
    seed: int = 0
    output_dir: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: list = field(default_factory=list)  # [DataSource]
    batch: BatchConfig = field(default_factory=BatchConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    vae_loss: VaeLossConfig = field(default_factory=VaeLossConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    run: RunConfig = field(default_factory=RunConfig)
    source: str = "<config>"  # where it was read from (not a config key)

    # ---- helpers ----
    def roles(self) -> list[str]:
        """Roles with a positive batch size, in a fixed order."""
        return [r for r in ROLES if self.batch.of(r) > 0]

    def sources(self, role: str) -> list[tuple[int, DataSource]]:
        return [(i, s) for i, s in enumerate(self.data) if s.role == role]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def data_signature(self) -> dict:
        """What fixes the sample order: resuming with a different signature changes the data."""
        sig = {"seed": self.seed, "data": [dataclasses.asdict(s) for s in self.data],
               "batch": {r: self.batch.of(r) for r in ROLES}, "mode": self.mode}
        if self.optim.grad_accumulation != 1:  # (absent at 1: the signature of earlier runs)
            sig["grad_accumulation"] = self.optim.grad_accumulation
        return sig


SECTIONS = {"model": ModelConfig, "batch": BatchConfig, "optim": OptimConfig, "loss": LossConfig,
            "vae_loss": VaeLossConfig, "ema": EmaConfig, "lora": LoraConfig, "run": RunConfig}


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
        raise _fail(where, f"must be {_type_name(tp)}, got nothing")
    if tp is bool:
        if not isinstance(value, bool):
            raise _fail(where, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise _fail(where, f"must be a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(where, f"must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise _fail(where, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _fail(where, f"must be a string, got {value!r}")
        return value
    if tp is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(where, f"must be a list, got {value!r}")
        return list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise _fail(where, f"must be a table, got {value!r}")
        return dict(value)
    raise AssertionError(f"unsupported annotation {tp}")


def _build(cls, raw: Any, where: str):
    """An instance of dataclass ``cls`` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise _fail(where, f"must be a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise _fail(f"{where}.{unknown[0]}" if where else unknown[0],
                    f"unknown field (known: {', '.join(names)})")
    values = {}
    for name in names:
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], f"{where}.{name}" if where else name)
    return cls(**values)


def _one_of(value, options, where):
    if value not in options:
        raise _fail(where, f"must be one of {', '.join(options)} (got {value!r})")


#: Samples per step and process for one role ([batch]): beyond it a step could not fit anywhere
MAX_BATCH = 4096


def _positive(value, where, zero_ok=False):
    if value is None:
        return
    if value < 0 or (value == 0 and not zero_ok):
        raise _fail(where, f"must be {'zero or more' if zero_ok else 'positive'}, got {value!r}")


def _strings(values, where):
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise _fail(f"{where}[{i}]", f"must be a non-empty string, got {v!r}")


# ---- reading ------------------------------------------------------------------------------------

def read_raw(path: Path) -> dict:
    """The file's mapping: TOML (``.toml``) or YAML (``.yaml``/``.yml``) or JSON (``.json``)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"config '{path}' does not exist")
    if path.is_dir():
        raise UsageError(f"config '{path}' is a folder, not a file")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read config '{path}': {e}") from e
    try:
        if suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
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
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError
        detail = " ".join(str(e).split())
        raise UsageError(f"config '{path}' is not valid {suffix.lstrip('.').upper()}: {detail}") from e
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
            raise _fail(f"{prefix}: {k}", f"unknown field (known: {', '.join(known_top + tuple(SECTIONS) + ('data',))})")
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
        raise _fail(f"{prefix}: data", "must be a list of tables ([[data]] in TOML)")
    cfg.data = [_build(DataSource, d, f"{prefix}: data[{i}]") for i, d in enumerate(data)]
    cfg.model.weights = [_build(WeightsConfig, w, f"{prefix}: model.weights[{i}]")
                         for i, w in enumerate(cfg.model.weights)]
    cfg.optim.groups = [_build(GroupConfig, g, f"{prefix}: optim.groups[{i}]") for i, g in enumerate(cfg.optim.groups)]
    if base_dir is not None:
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
    for p in parts[:-1]:
        node = node.setdefault(p, {})
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


def _resolve_paths(cfg: TrainConfig, base: Path) -> None:
    if cfg.output_dir and not Path(cfg.output_dir).expanduser().is_absolute():
        cfg.output_dir = str((base / cfg.output_dir).resolve())
    cfg.model.init = _resolve(base, cfg.model.init)
    cfg.model.vae = _resolve(base, cfg.model.vae, always_path=True)
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


# ---- validation -----------------------------------------------------------------------------

def validate(cfg: TrainConfig, prefix: str = "<config>") -> None:
    """Check every field and the combinations; the first problem raises a one-line ConfigError."""
    w = f"{prefix}: "
    _one_of(cfg.mode, MODES, w + "mode")
    if not 0 <= cfg.seed < 2**63:
        raise _fail(w + "seed", f"must be between 0 and 2^63-1, got {str(cfg.seed)[:40]}")
    if not cfg.output_dir:
        raise _fail(w + "output_dir", "is required (the folder for checkpoints, metrics and samples)")

    m = cfg.model
    if cfg.mode == "showo2":
        if bool(m.init) == bool(m.init_spec):
            raise _fail(w + "model", "set exactly one of model.init (a checkpoint) and model.init_spec "
                        "(a spec name, to train from scratch)")
        if m.weights and not m.init_spec:
            raise _fail(w + "model.weights", "partial weights only apply with model.init_spec")
        if m.tokenizer and not m.init_spec:
            raise _fail(w + "model.tokenizer", "model.init brings its own tokenizer; model.tokenizer is for init_spec")
        for i, wc in enumerate(m.weights):
            if not wc.path:
                raise _fail(f"{w}model.weights[{i}].path", "is required")
            for old, new in wc.rename.items():
                if not isinstance(new, str):
                    raise _fail(f"{w}model.weights[{i}].rename.{old}", f"must be a string, got {new!r}")
        from ..specs import ModelSpec, get_spec

        known = {f.name for f in dataclasses.fields(ModelSpec)}
        for k in m.spec:
            if k not in known:
                raise _fail(w + f"model.spec.{k}", "unknown ModelSpec field")
        if m.init_spec:
            try:
                base = get_spec(m.init_spec)
            except UsageError as e:
                raise _fail(w + "model.init_spec", str(e)) from None
            try:
                base.replace(**m.spec).validate()
            except (UsageError, TypeError) as e:
                raise _fail(w + "model.spec", str(e)) from None
    else:
        if m.init or m.init_spec or m.spec or m.weights or m.tokenizer:
            raise _fail(w + "model", "mode = \"vae\" trains only the VAE: use model.vae (to fine-tune) or "
                        "model.vae_base_dim (from scratch), not init/init_spec/spec/weights/tokenizer")
    if not 1 <= m.vae_base_dim <= 512:
        raise _fail(w + "model.vae_base_dim", f"must be between 1 and 512, got {m.vae_base_dim}")

    if not cfg.data:
        raise _fail(w + "data", "needs at least one source ([[data]] with kind and role)")
    for i, s in enumerate(cfg.data):
        _validate_source(s, f"{w}data[{i}]", cfg.mode)

    b = cfg.batch
    for role in ROLES:
        _positive(b.of(role), f"{w}batch.{role}", zero_ok=True)
        if (b.of(role) or 0) > MAX_BATCH:
            raise _fail(f"{w}batch.{role}", f"is {b.of(role)}: at most {MAX_BATCH} samples per step and process "
                        "(use optim.grad_accumulation or more processes for larger batches)")
    if cfg.mode == "vae":
        for role in ROLES:
            if role != "vae" and b.of(role):
                raise _fail(f"{w}batch.{role}", "mode = \"vae\" uses only batch.vae")
        if not b.vae:
            raise _fail(f"{w}batch.vae", "must be positive in mode = \"vae\"")
    else:
        if b.vae:
            raise _fail(f"{w}batch.vae", "is for mode = \"vae\"; set it to 0 or remove it")
        if not any(b.of(r) for r in GEN_ROLES + UND_ROLES):
            raise _fail(f"{w}batch", "every batch size is 0: set batch.t2i, batch.mmu, batch.t2v or batch.mmu_vid")
    for role in ROLES:
        if b.of(role) and not cfg.sources(role):
            raise _fail(f"{w}batch.{role}", f"is {b.of(role)} but no [[data]] source has role = \"{role}\"")
    for i, s in enumerate(cfg.data):
        if not b.of(s.role):
            raise _fail(f"{w}data[{i}].role", f"'{s.role}' has batch size 0: set batch.{s.role}")

    o = cfg.optim
    _positive(o.lr, w + "optim.lr", zero_ok=True)
    _strings(o.frozen, w + "optim.frozen")
    _one_of(o.ungrouped, UNGROUPED, w + "optim.ungrouped")
    names = set()
    for i, g in enumerate(o.groups):
        gw = f"{w}optim.groups[{i}]"
        if not g.name:
            raise _fail(gw + ".name", "is required")
        if g.name in names:
            raise _fail(gw + ".name", f"'{g.name}' is used twice")
        names.add(g.name)
        if not g.patterns:
            raise _fail(gw + ".patterns", "needs at least one parameter-name substring")
        _strings(g.patterns, gw + ".patterns")
        _positive(g.lr, gw + ".lr", zero_ok=True)
        _positive(g.weight_decay, gw + ".weight_decay", zero_ok=True)
    _positive(o.weight_decay, w + "optim.weight_decay", zero_ok=True)
    if len(o.betas) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1
                                    for x in o.betas):
        raise _fail(w + "optim.betas", f"must be two numbers in [0, 1), got {o.betas!r}")
    o.betas = [float(x) for x in o.betas]
    _positive(o.eps, w + "optim.eps")
    _one_of(o.schedule, SCHEDULES, w + "optim.schedule")
    _positive(o.warmup_steps, w + "optim.warmup_steps", zero_ok=True)
    if o.warmup_ratio is not None and not 0 <= o.warmup_ratio < 1:
        raise _fail(w + "optim.warmup_ratio", f"must be in [0, 1), got {o.warmup_ratio}")
    if o.warmup_ratio is not None and o.warmup_steps:
        raise _fail(w + "optim.warmup_ratio", "set warmup_steps or warmup_ratio, not both")
    if not 0 <= o.min_lr_ratio <= 1:
        raise _fail(w + "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
    if (o.max_steps is None) == (o.epochs is None):
        raise _fail(w + "optim.max_steps", "set exactly one of optim.max_steps and optim.epochs")
    _positive(o.max_steps, w + "optim.max_steps")
    _positive(o.epochs, w + "optim.epochs")
    if o.epochs is not None:
        _one_of(o.epoch_role, ROLES, w + "optim.epoch_role")
        if not b.of(o.epoch_role):
            raise _fail(w + "optim.epoch_role", f"'{o.epoch_role}' has batch size 0")
        for i, s in cfg.sources(o.epoch_role):
            if s.kind == "shapes" and s.size is None:
                raise _fail(f"{w}data[{i}].size", "optim.epochs needs a finite dataset: set size for shapes sources")
    _positive(o.grad_clip, w + "optim.grad_clip", zero_ok=True)
    if not 1 <= o.grad_accumulation <= 4096:
        raise _fail(w + "optim.grad_accumulation", f"must be between 1 and 4096, got {o.grad_accumulation}")

    lo = cfg.loss
    _positive(lo.ntp, w + "loss.ntp", zero_ok=True)
    _positive(lo.flow, w + "loss.flow", zero_ok=True)
    if not 0 <= lo.cond_dropout <= 1:
        raise _fail(w + "loss.cond_dropout", f"must be a probability in [0, 1], got {lo.cond_dropout}")
    _one_of(lo.t_sampling, T_SAMPLING, w + "loss.t_sampling")
    _positive(lo.t_std, w + "loss.t_std")
    if cfg.mode == "showo2" and lo.ntp == 0 and lo.flow == 0:
        raise _fail(w + "loss", "ntp and flow are both 0: nothing to train")

    v = cfg.vae_loss
    for name in ("l1", "l2", "kl"):
        _positive(getattr(v, name), f"{w}vae_loss.{name}", zero_ok=True)
    if cfg.mode == "vae" and v.l1 == 0 and v.l2 == 0:
        raise _fail(w + "vae_loss", "l1 and l2 are both 0: no reconstruction loss")
    _one_of(v.fit_latent_stats, FIT_STATS, w + "vae_loss.fit_latent_stats")
    _positive(v.stats_samples, w + "vae_loss.stats_samples")
    e = cfg.ema
    if not 0.0 <= e.decay < 1.0:
        raise _fail(w + "ema.decay", f"must be in [0, 1) (0 = off), got {e.decay}")
    _positive(e.start_step, w + "ema.start_step", zero_ok=True)
    _one_of(cfg.batch.split, SPLITS, w + "batch.split")

    r = cfg.run
    _positive(r.save_every, w + "run.save_every", zero_ok=True)
    _positive(r.keep_last, w + "run.keep_last", zero_ok=True)
    _positive(r.log_every, w + "run.log_every")
    _positive(r.eval_every, w + "run.eval_every", zero_ok=True)
    _positive(r.sample_every, w + "run.sample_every", zero_ok=True)
    _strings(r.sample_prompts, w + "run.sample_prompts")
    if cfg.mode == "showo2" and r.sample_every and not r.sample_prompts and \
            not any(s.kind == "shapes" and s.role == "t2i" for s in cfg.data):
        raise _fail(w + "run.sample_prompts", "give the prompts for the previews (run.sample_every is set)")
    if r.sample_steps is not None and r.sample_steps < 2:
        raise _fail(w + "run.sample_steps", f"must be at least 2, got {r.sample_steps}")
    _one_of(r.mixed_precision, MIXED_PRECISION, w + "run.mixed_precision")
    _one_of(r.device, DEVICES, w + "run.device")
    _positive(r.num_workers, w + "run.num_workers", zero_ok=True)
    _strings(r.log_with, w + "run.log_with")
    for i, name in enumerate(r.log_with):
        _one_of(name, TRACKERS, f"{w}run.log_with[{i}]")
    if len(set(r.log_with)) != len(r.log_with):
        raise _fail(w + "run.log_with", f"names a tracker twice: {r.log_with}")
    if r.gradient_checkpointing and cfg.mode != "showo2":
        raise _fail(w + "run.gradient_checkpointing", "is for mode = \"showo2\" (the VAE's causal cache is not recomputable)")

    lo = cfg.lora
    if lo.rank:
        if cfg.mode != "showo2":
            raise _fail(w + "lora.rank", "LoRA adapters are for mode = \"showo2\"")
        if not 1 <= lo.rank <= 4096:
            raise _fail(w + "lora.rank", f"must be between 1 and 4096 (0 = off), got {lo.rank}")
        _positive(lo.alpha, w + "lora.alpha")
        if not 0 <= lo.dropout < 1:
            raise _fail(w + "lora.dropout", f"must be in [0, 1), got {lo.dropout}")
        if not lo.target_modules:
            raise _fail(w + "lora.target_modules", "needs at least one module name (e.g. q_proj)")
        _strings(lo.target_modules, w + "lora.target_modules")
        _strings(lo.within, w + "lora.within")
        for name in ("groups", "frozen"):
            if getattr(o, name):
                raise _fail(f"{w}optim.{name}", "with [lora] only the adapter trains (at optim.lr); remove optim."
                            f"{name} or set lora.rank = 0")
    elif lo.rank < 0:
        raise _fail(w + "lora.rank", f"must be between 1 and 4096 (0 = off), got {lo.rank}")


def _validate_source(s: DataSource, w: str, mode: str) -> None:
    _one_of(s.kind, KINDS, w + ".kind")
    _one_of(s.role, ROLES, w + ".role")
    if mode == "vae" and s.role != "vae":
        raise _fail(w + ".role", f"mode = \"vae\" trains on role = \"vae\" sources, got '{s.role}'")
    if mode == "showo2" and s.role == "vae":
        raise _fail(w + ".role", "role = \"vae\" is for mode = \"vae\"")
    if s.kind in ("pairs", "llava"):
        if not s.path:
            raise _fail(w + ".path", f"is required for kind = \"{s.kind}\"")
        p = Path(s.path)
        if not p.exists():
            raise _fail(w + ".path", f"'{s.path}' does not exist")
        if s.kind == "llava" and (p.is_dir() or p.suffix.lower() not in (".json", ".jsonl")):
            raise _fail(w + ".path", f"llava sources are a .json or .jsonl file, got '{s.path}'")
        if s.kind == "pairs" and p.is_file() and p.suffix.lower() != ".jsonl":
            raise _fail(w + ".path", f"pairs sources are a folder or a .jsonl file, got '{s.path}'")
    elif s.path:
        raise _fail(w + ".path", "shapes sources are generated: remove path")
    if s.kind == "llava" and s.role not in UND_ROLES:
        raise _fail(w + ".role", f"llava sources feed understanding (mmu, mmu_vid), got '{s.role}'")
    if s.root and not Path(s.root).is_dir():
        raise _fail(w + ".root", f"'{s.root}' is not a folder")
    if s.resolution is not None and (s.resolution <= 0 or s.resolution % 16):
        raise _fail(w + ".resolution", f"must be a positive multiple of 16, got {s.resolution}")
    if s.frames is not None:
        if s.frames < 1:
            raise _fail(w + ".frames", f"must be at least 1, got {s.frames}")
        if s.role in ("t2v", "vae") and (s.frames - 1) % 4:
            lower = 1 + (s.frames - 1) // 4 * 4
            raise _fail(w + ".frames", f"the VAE needs 1 + 4k frames (e.g. {lower} or {lower + 4}), got {s.frames}")
        if s.role in ("t2i", "mmu") and s.frames != 1:
            raise _fail(w + ".frames", f"role '{s.role}' is for images; frames must be 1 or unset")
        if s.role == "t2v" and s.frames < 5:
            raise _fail(w + ".frames", "a t2v video needs at least 5 frames")
    if s.format is not None:
        _one_of(s.format, FORMATS, w + ".format")
        if s.role not in UND_ROLES:
            raise _fail(w + ".format", f"only understanding roles (mmu, mmu_vid) have a format, not '{s.role}'")
    if s.preprocess is not None:
        _one_of(s.preprocess, PREPROCESS, w + ".preprocess")
    if s.size is not None:
        if s.kind != "shapes":
            raise _fail(w + ".size", "only shapes sources have a size (a folder/file has its own)")
        _positive(s.size, w + ".size")
    _positive(s.weight, w + ".weight")
    if s.max_seq_len is not None and s.max_seq_len < 8:
        raise _fail(w + ".max_seq_len", f"must be at least 8, got {s.max_seq_len}")
    _positive(s.min_res, w + ".min_res", zero_ok=True)
    if s.crop is not None:
        if s.role != "vae":
            raise _fail(w + ".crop", "random crops are for role = \"vae\"")
        if s.crop <= 0 or s.crop % 8:
            raise _fail(w + ".crop", f"must be a positive multiple of 8, got {s.crop}")
        if s.resolution is not None and s.crop > s.resolution:
            raise _fail(w + ".crop", f"{s.crop} is larger than resolution {s.resolution}")
    if s.pool is not None:
        if s.role != "mmu_vid":
            raise _fail(w + ".pool", "token pooling is for role = \"mmu_vid\"")
        _positive(s.pool, w + ".pool")
    if s.cache is not None and s.role == "vae":
        raise _fail(w + ".cache", "a latent cache makes no sense while the VAE itself trains")
