"""Validation of a training configuration: every field and the combinations of fields, each
problem one :class:`~.schema.ConfigError` line naming the file and the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UsageError
from ..options import MAX_SIDE, MAX_VIDEO_FRAMES, STEPS_RANGE
from ..specs import WAN21
from .schema import (
    CAPTION_RULES,
    DATA_SPLITS,
    DEVICES,
    FIT_STATS,
    FORMATS,
    GEN_ROLES,
    KINDS,
    MAX_BATCH,
    MAX_EVAL_ITEMS,
    MAX_STEPS,
    MIXED_PRECISION,
    MODES,
    PREPROCESS,
    ROLES,
    SCHEDULES,
    SPLITS,
    T_SAMPLING,
    TRACKERS,
    UND_ROLES,
    UNGROUPED,
    DataSource,
    TrainConfig,
    field_error,
)


def _one_of(value, options, where):
    if value not in options:
        raise field_error(where, f"must be one of {', '.join(options)} (got {value!r})")


def _positive(value, where, zero_ok=False):
    if value is None:
        return
    if value < 0 or (value == 0 and not zero_ok):
        raise field_error(where, f"must be {'zero or more' if zero_ok else 'positive'}, got {value!r}")


MIN_WEIGHT, MAX_WEIGHT = 1e-6, 1e6  # a data source's share: relative weights beyond these mix nothing sensible
MAX_LR = 10.0  # far above any AdamW rate (1e-5 .. 1e-3); 1e30 saved 1e30 weights, 1e39 overflowed


MAX_LOSS_WEIGHT = 1e6  # a loss term's weight: 1e300 made the first step's loss inf, after the model had loaded
MAX_EPS = 1.0  # AdamW's eps is about 1e-8; above 1 it swamps every update (1e30: weights that never move)
MAX_WEIGHT_DECAY = 10.0  # usual values 0 to 0.1; 1e10 made the weights non-finite at the first save
MAX_LORA_ALPHA = 65536.0  # adapters use alpha about rank to 2 x rank; 1e300 made the first loss NaN
MAX_EPOCHS = 10**6


def _steps(value, where, zero_ok=False):
    """A count of steps (a total, an interval): positive (or 0 = off) and at most :data:`MAX_STEPS`."""
    _positive(value, where, zero_ok)
    if value is not None and value > MAX_STEPS:
        raise field_error(where, f"must be at most {MAX_STEPS} steps, got {value!r}")


def _at_most(value, high, where, why):
    if value is not None and value > high:
        raise field_error(where, f"must be at most {high:g} ({why}), got {value!r}")


def _learning_rate(value, where):
    _positive(value, where, zero_ok=True)
    if value is not None and value > MAX_LR:
        raise field_error(where, f"must be at most {MAX_LR:g} (AdamW rates are about 1e-5 to 1e-3), got {value!r}")


def _strings(values, where):
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise field_error(f"{where}[{i}]", f"must be a non-empty string, got {v!r}")


def validate(cfg: TrainConfig, prefix: str = "<config>") -> None:
    """Check every field and the combinations; the first problem raises a one-line ConfigError."""
    w = f"{prefix}: "
    check_paths(cfg, prefix)
    _one_of(cfg.mode, MODES, w + "mode")
    if not 0 <= cfg.seed < 2**63:
        raise field_error(w + "seed", f"must be between 0 and 2^63-1, got {str(cfg.seed)[:40]}")
    if not cfg.output_dir:
        raise field_error(w + "output_dir", "is required (the folder for checkpoints, metrics and samples)")

    m = cfg.model
    if cfg.mode == "showo2":
        if bool(m.init) == bool(m.init_spec):
            raise field_error(w + "model", "set exactly one of model.init (a checkpoint) and model.init_spec "
                        "(a spec name, to train from scratch)")
        if m.weights and not m.init_spec:
            raise field_error(w + "model.weights", "partial weights only apply with model.init_spec")
        if m.tokenizer and not m.init_spec:
            raise field_error(w + "model.tokenizer", "model.init brings its own tokenizer; model.tokenizer is for init_spec")
        for i, wc in enumerate(m.weights):
            if not wc.path:
                raise field_error(f"{w}model.weights[{i}].path", "is required")
            for old, new in wc.rename.items():
                if not isinstance(new, str):
                    raise field_error(f"{w}model.weights[{i}].rename.{old}", f"must be a string, got {new!r}")
        from ..specs import ModelSpec, get_spec

        known = {f.name for f in dataclasses.fields(ModelSpec)}
        for k in m.spec:
            if k not in known:
                raise field_error(w + f"model.spec.{k}", "unknown ModelSpec field")
        from ..errors import ModelError
        from ..model_config import check_spec_fields

        try:  # the checks a model folder's spec gets: types and sane sizes, before anything is built
            check_spec_fields(m.spec, "model.spec")
        except ModelError as e:
            raise field_error(w + "model.spec", str(e).removeprefix("'model.spec': ")) from None
        if m.init_spec:
            try:
                base = get_spec(m.init_spec)
            except UsageError as e:
                raise field_error(w + "model.init_spec", str(e)) from None
            try:
                base.replace(**m.spec).validate()
            except (UsageError, TypeError, ValueError, AttributeError, KeyError) as e:
                raise field_error(w + "model.spec", str(e)) from None
    else:
        if m.init or m.init_spec or m.spec or m.weights or m.tokenizer:
            raise field_error(w + "model", "mode = \"vae\" trains only the VAE: use model.vae (to fine-tune) or "
                        "model.vae_base_dim (from scratch), not init/init_spec/spec/weights/tokenizer")
    if not -30 <= m.vae_init_logvar <= 10:
        raise field_error(w + "model.vae_init_logvar", f"must be between -30 and 10, got {m.vae_init_logvar}")
    if not 1 <= m.vae_base_dim <= 512:
        raise field_error(w + "model.vae_base_dim", f"must be between 1 and 512, got {m.vae_base_dim}")

    if not cfg.data:
        raise field_error(w + "data", "needs at least one source ([[data]] with kind and role)")
    for i, s in enumerate(cfg.data):
        _validate_source(s, f"{w}data[{i}]", cfg.mode)

    b = cfg.batch
    for role in ROLES:
        _positive(b.of(role), f"{w}batch.{role}", zero_ok=True)
        if (b.of(role) or 0) > MAX_BATCH:
            raise field_error(f"{w}batch.{role}", f"is {b.of(role)}: at most {MAX_BATCH} samples per step and process "
                        "(use optim.grad_accumulation or more processes for larger batches)")
    if cfg.mode == "vae":
        for role in ROLES:
            if role != "vae" and b.of(role):
                raise field_error(f"{w}batch.{role}", "mode = \"vae\" uses only batch.vae")
        if not b.vae:
            raise field_error(f"{w}batch.vae", "must be positive in mode = \"vae\"")
    else:
        if b.vae:
            raise field_error(f"{w}batch.vae", "is for mode = \"vae\"; set it to 0 or remove it")
        if not any(b.of(r) for r in GEN_ROLES + UND_ROLES):
            raise field_error(f"{w}batch", "every batch size is 0: set batch.t2i, batch.mmu, batch.t2v or batch.mmu_vid")
    for role in ROLES:
        if b.of(role) and not cfg.sources(role):
            held_out = " to train on (the split = \"eval\" ones are held out)" * any(s.role == role for s in cfg.data)
            raise field_error(f"{w}batch.{role}", f"is {b.of(role)} but no [[data]] source has role = \"{role}\"{held_out}")
    for i, s in enumerate(cfg.data):
        if s.split == "eval" and not cfg.sources(s.role):  # ("set batch.X" was said, then refused so)
            raise field_error(f"{w}data[{i}].role", f"'{s.role}' is held out but no [[data]] source trains it: "
                              "a held-out source is evaluated with a role the run trains")
        if not b.of(s.role):
            raise field_error(f"{w}data[{i}].role", f"'{s.role}' has batch size 0: set batch.{s.role}"
                              + " (a held-out source is evaluated in batches of that size)" * (s.split == "eval"))

    o = cfg.optim
    _learning_rate(o.lr, w + "optim.lr")
    _strings(o.frozen, w + "optim.frozen")
    _one_of(o.ungrouped, UNGROUPED, w + "optim.ungrouped")
    names = set()
    for i, g in enumerate(o.groups):
        gw = f"{w}optim.groups[{i}]"
        if not g.name:
            raise field_error(gw + ".name", "is required")
        if g.name in names:
            raise field_error(gw + ".name", f"'{g.name}' is used twice")
        names.add(g.name)
        if not g.patterns:
            raise field_error(gw + ".patterns", "needs at least one parameter-name substring")
        _strings(g.patterns, gw + ".patterns")
        _learning_rate(g.lr, gw + ".lr")
        _positive(g.weight_decay, gw + ".weight_decay", zero_ok=True)
        _at_most(g.weight_decay, MAX_WEIGHT_DECAY, gw + ".weight_decay", "usual values are 0 to 0.1")
    _positive(o.weight_decay, w + "optim.weight_decay", zero_ok=True)
    _at_most(o.weight_decay, MAX_WEIGHT_DECAY, w + "optim.weight_decay", "usual values are 0 to 0.1")
    if len(o.betas) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1
                                    for x in o.betas):
        raise field_error(w + "optim.betas", f"must be two numbers in [0, 1), got {o.betas!r}")
    o.betas = [float(x) for x in o.betas]
    _positive(o.eps, w + "optim.eps")
    _at_most(o.eps, MAX_EPS, w + "optim.eps", "AdamW's eps is about 1e-8; a larger one swamps every update")
    _one_of(o.schedule, SCHEDULES, w + "optim.schedule")
    _steps(o.warmup_steps, w + "optim.warmup_steps", zero_ok=True)
    if o.warmup_ratio is not None and not 0 <= o.warmup_ratio < 1:
        raise field_error(w + "optim.warmup_ratio", f"must be in [0, 1), got {o.warmup_ratio}")
    if o.warmup_ratio is not None and o.warmup_steps:
        raise field_error(w + "optim.warmup_ratio", "set warmup_steps or warmup_ratio, not both")
    if not 0 <= o.min_lr_ratio <= 1:
        raise field_error(w + "optim.min_lr_ratio", f"must be in [0, 1], got {o.min_lr_ratio}")
    if (o.max_steps is None) == (o.epochs is None):
        raise field_error(w + "optim.max_steps", "set exactly one of optim.max_steps and optim.epochs")
    _steps(o.max_steps, w + "optim.max_steps")
    _positive(o.epochs, w + "optim.epochs")
    _at_most(o.epochs, MAX_EPOCHS, w + "optim.epochs", "passes over the data")
    if o.epochs is not None:
        _one_of(o.epoch_role, ROLES, w + "optim.epoch_role")
        if not b.of(o.epoch_role):
            have = [r for r in ROLES if b.of(r)]
            raise field_error(w + "optim.epoch_role", f"'{o.epoch_role}' has batch size 0: optim.epochs counts "
                              f"passes over the sources of this role (one of {', '.join(have)})")
        for i, s in cfg.sources(o.epoch_role):
            if s.kind == "shapes" and s.size is None:
                raise field_error(f"{w}data[{i}].size", "optim.epochs needs a finite dataset: set size for shapes sources")
    _positive(o.grad_clip, w + "optim.grad_clip", zero_ok=True)
    if not 1 <= o.grad_accumulation <= 4096:
        raise field_error(w + "optim.grad_accumulation", f"must be between 1 and 4096, got {o.grad_accumulation}")

    lo = cfg.loss
    for name in ("ntp", "flow"):
        _positive(getattr(lo, name), f"{w}loss.{name}", zero_ok=True)
        _at_most(getattr(lo, name), MAX_LOSS_WEIGHT, f"{w}loss.{name}", "a loss term's weight")
    if not 0 <= lo.cond_dropout <= 1:
        raise field_error(w + "loss.cond_dropout", f"must be a probability in [0, 1], got {lo.cond_dropout}")
    _one_of(lo.t_sampling, T_SAMPLING, w + "loss.t_sampling")
    _positive(lo.t_std, w + "loss.t_std")
    if cfg.mode == "showo2" and lo.ntp == 0 and lo.flow == 0:
        raise field_error(w + "loss", "ntp and flow are both 0: nothing to train")

    v = cfg.vae_loss
    for name in ("l1", "l2", "kl"):
        _positive(getattr(v, name), f"{w}vae_loss.{name}", zero_ok=True)
        _at_most(getattr(v, name), MAX_LOSS_WEIGHT, f"{w}vae_loss.{name}", "a loss term's weight")
    if cfg.mode == "vae" and v.l1 == 0 and v.l2 == 0:
        raise field_error(w + "vae_loss", "l1 and l2 are both 0: no reconstruction loss")
    _one_of(v.fit_latent_stats, FIT_STATS, w + "vae_loss.fit_latent_stats")
    _positive(v.stats_samples, w + "vae_loss.stats_samples")
    e = cfg.ema
    if not 0.0 <= e.decay < 1.0:
        raise field_error(w + "ema.decay", f"must be in [0, 1) (0 = off), got {e.decay}")
    _steps(e.start_step, w + "ema.start_step", zero_ok=True)
    _one_of(cfg.batch.split, SPLITS, w + "batch.split")

    r = cfg.run
    _steps(r.save_every, w + "run.save_every", zero_ok=True)
    _positive(r.keep_last, w + "run.keep_last", zero_ok=True)
    _steps(r.log_every, w + "run.log_every")
    _steps(r.eval_every, w + "run.eval_every", zero_ok=True)
    _steps(r.sample_every, w + "run.sample_every", zero_ok=True)
    _strings(r.sample_prompts, w + "run.sample_prompts")
    if cfg.mode == "showo2" and r.sample_every and not r.sample_prompts and \
            not any(s.kind == "shapes" and s.role == "t2i" for s in cfg.data):
        raise field_error(w + "run.sample_prompts", "give the prompts for the previews (run.sample_every is set)")
    low, high = STEPS_RANGE  # what t2i's --steps takes
    if r.sample_steps is not None and not low <= r.sample_steps <= high:
        raise field_error(w + "run.sample_steps", f"must be between {low} and {high}, got {r.sample_steps}")
    _one_of(r.mixed_precision, MIXED_PRECISION, w + "run.mixed_precision")
    _one_of(r.device, DEVICES, w + "run.device")
    _positive(r.num_workers, w + "run.num_workers", zero_ok=True)
    if r.num_workers > MAX_WORKERS:
        raise field_error(w + "run.num_workers", f"must be at most {MAX_WORKERS} (processes per training "
                          f"process), got {r.num_workers}")
    _strings(r.log_with, w + "run.log_with")
    for i, name in enumerate(r.log_with):
        _one_of(name, TRACKERS, f"{w}run.log_with[{i}]")
    if len(set(r.log_with)) != len(r.log_with):
        raise field_error(w + "run.log_with", f"names a tracker twice: {r.log_with}")
    if r.gradient_checkpointing and cfg.mode != "showo2":
        raise field_error(w + "run.gradient_checkpointing", "is for mode = \"showo2\" (the VAE's causal cache is not recomputable)")

    lo = cfg.lora
    if lo.rank:
        if cfg.mode != "showo2":
            raise field_error(w + "lora.rank", "LoRA adapters are for mode = \"showo2\"")
        if not 1 <= lo.rank <= 4096:
            raise field_error(w + "lora.rank", f"must be between 1 and 4096 (0 = off), got {lo.rank}")
        _positive(lo.alpha, w + "lora.alpha")
        _at_most(lo.alpha, MAX_LORA_ALPHA, w + "lora.alpha", "adapters use about rank to 2 x rank")
        if not 0 <= lo.dropout < 1:
            raise field_error(w + "lora.dropout", f"must be in [0, 1), got {lo.dropout}")
        if not lo.target_modules:
            raise field_error(w + "lora.target_modules", "needs at least one module name (e.g. q_proj)")
        _strings(lo.target_modules, w + "lora.target_modules")
        _strings(lo.within, w + "lora.within")
        for name in ("groups", "frozen"):
            if getattr(o, name):
                raise field_error(f"{w}optim.{name}", "with [lora] only the adapter trains (at optim.lr); remove optim."
                            f"{name} or set lora.rank = 0")
    elif lo.rank < 0:
        raise field_error(w + "lora.rank", f"must be between 1 and 4096 (0 = off), got {lo.rank}")


#: Data-loading worker processes per training process ([run] num_workers)
MAX_WORKERS = 64


def check_paths(cfg: TrainConfig, prefix: str = "<config>") -> None:
    """No path of the config holds a NUL byte (no file system takes one): checked before any
    path is resolved."""
    w = f"{prefix}: "
    paths = {"output_dir": cfg.output_dir, "model.init": cfg.model.init, "model.vae": cfg.model.vae,
             "model.tokenizer": cfg.model.tokenizer}
    for i, s in enumerate(cfg.data):
        paths.update({f"data[{i}].path": s.path, f"data[{i}].root": s.root, f"data[{i}].cache": s.cache})
    for i, wc in enumerate(cfg.model.weights):
        paths[f"model.weights[{i}].path"] = wc.path
    for name, value in paths.items():
        if isinstance(value, str) and "\x00" in value:
            raise field_error(w + name, "a path cannot hold a NUL byte")


def _validate_source(s: DataSource, w: str, mode: str) -> None:
    _one_of(s.kind, KINDS, w + ".kind")
    _one_of(s.split, DATA_SPLITS, w + ".split")
    if s.split == "eval" and s.kind == "shapes" and s.size is None:
        raise field_error(w + ".size", "a held-out (split = \"eval\") shapes source needs a size: eval_loss covers all of it")
    _one_of(s.role, ROLES, w + ".role")
    if mode == "vae" and s.role != "vae":
        raise field_error(w + ".role", f"mode = \"vae\" trains on role = \"vae\" sources, got '{s.role}'")
    if mode == "showo2" and s.role == "vae":
        raise field_error(w + ".role", "role = \"vae\" is for mode = \"vae\"")
    if s.kind in ("pairs", "llava"):
        if not s.path:
            raise field_error(w + ".path", f"is required for kind = \"{s.kind}\"")
        p = Path(s.path)
        if not p.exists():
            raise field_error(w + ".path", f"'{s.path}' does not exist")
        if not (p.is_dir() or p.is_file()):
            raise field_error(w + ".path", f"'{s.path}' is not a regular file or a folder (a device, a FIFO?)")
        if s.kind == "llava" and (p.is_dir() or p.suffix.lower() not in (".json", ".jsonl")):
            raise field_error(w + ".path", f"llava sources are a .json or .jsonl file, got '{s.path}'")
        if s.kind == "pairs" and p.is_file() and p.suffix.lower() != ".jsonl":
            raise field_error(w + ".path", f"pairs sources are a folder or a .jsonl file, got '{s.path}'")
    elif s.path:
        raise field_error(w + ".path", "shapes sources are generated: remove path")
    if s.kind == "llava" and s.role not in UND_ROLES:
        raise field_error(w + ".role", f"llava sources feed understanding (mmu, mmu_vid), got '{s.role}'")
    if s.root and not Path(s.root).is_dir():
        raise field_error(w + ".root", f"'{s.root}' is not a folder")
    if s.resolution is not None and (s.resolution <= 0 or s.resolution % 16 or s.resolution > MAX_SIDE):
        raise field_error(w + ".resolution", f"must be a positive multiple of 16 up to {MAX_SIDE}, got {s.resolution}")
    if s.frames is not None:
        if not 1 <= s.frames <= MAX_VIDEO_FRAMES:
            raise field_error(w + ".frames", f"must be 1 to {MAX_VIDEO_FRAMES}, got {s.frames}")
        if s.role in ("t2v", "vae") and not WAN21.is_valid_frames(s.frames):
            lower, upper = WAN21.round_frames(s.frames, "down"), WAN21.round_frames(s.frames, "up")
            raise field_error(w + ".frames", f"the VAE needs 1 + 4k frames (e.g. {lower} or {upper}), got {s.frames}")
        if s.role in ("t2i", "mmu") and s.frames != 1:
            raise field_error(w + ".frames", f"role '{s.role}' is for images; frames must be 1 or unset")
        if s.role == "t2v" and s.frames < 5:
            raise field_error(w + ".frames", "a t2v video needs at least 5 frames")
    if s.format is not None:
        _one_of(s.format, FORMATS, w + ".format")
        if s.role not in UND_ROLES:
            raise field_error(w + ".format", f"only understanding roles (mmu, mmu_vid) have a format, not '{s.role}'")
    if s.preprocess is not None:
        _one_of(s.preprocess, PREPROCESS, w + ".preprocess")
    if s.captions is not None:
        _one_of(s.captions, CAPTION_RULES, w + ".captions")
        if s.kind != "pairs" or s.role == "vae":
            raise field_error(w + ".captions", "only pairs sources of a t2i, t2v, mmu or mmu_vid role have captions "
                                               "to clean")
    if s.size is not None:
        if s.kind != "shapes":
            raise field_error(w + ".size", "only shapes sources have a size (a folder/file has its own)")
        _positive(s.size, w + ".size")
        if s.split == "eval":
            _at_most(s.size, MAX_EVAL_ITEMS, w + ".size", "eval_loss covers every held-out item at each evaluation")
    _positive(s.weight, w + ".weight")
    if s.weight is not None and not MIN_WEIGHT <= s.weight <= MAX_WEIGHT:  # 1e308 overflowed the mixing sum
        raise field_error(w + ".weight", f"must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}, got {s.weight!r}")
    if s.max_seq_len is not None and s.max_seq_len < 8:
        raise field_error(w + ".max_seq_len", f"must be at least 8, got {s.max_seq_len}")
    _positive(s.min_res, w + ".min_res", zero_ok=True)
    if s.crop is not None:
        if s.role != "vae":
            raise field_error(w + ".crop", "random crops are for role = \"vae\"")
        if s.crop <= 0 or s.crop % 8:
            raise field_error(w + ".crop", f"must be a positive multiple of 8, got {s.crop}")
        if s.resolution is not None and s.crop > s.resolution:
            raise field_error(w + ".crop", f"{s.crop} is larger than resolution {s.resolution}")
    if s.pool is not None:
        if s.role != "mmu_vid":
            raise field_error(w + ".pool", "token pooling is for role = \"mmu_vid\"")
        _positive(s.pool, w + ".pool")
    if s.cache is not None and Path(s.cache).exists() and not Path(s.cache).is_dir():
        raise field_error(w + ".cache", f"'{s.cache}' exists and is not a folder")
    if s.cache is not None and s.role == "vae":
        raise field_error(w + ".cache", "a latent cache makes no sense while the VAE itself trains")
