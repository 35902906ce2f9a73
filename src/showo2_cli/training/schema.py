"""The training configuration's schema: its sections as dataclasses (one per TOML table), the
values each field may take, and the error a bad field raises. :mod:`.config` reads a file into
these (its docstring describes the file); :mod:`.checks` validates them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import UsageError

MODES = ("showo2", "vae")
KINDS = ("shapes", "pairs", "llava")
ROLES = ("t2i", "mmu", "t2v", "mmu_vid", "vae")
GEN_ROLES = ("t2i", "t2v")
UND_ROLES = ("mmu", "mmu_vid")
FORMATS = ("captioning", "pretraining", "tuning")
PREPROCESS = ("crop", "pad")
CAPTION_RULES = ("official", "openings", "verbatim")  # pairs sources' caption cleanup (training/captions.py)
SCHEDULES = ("constant", "cosine")
UNGROUPED = ("train", "frozen")
T_SAMPLING = ("logit_normal", "uniform")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
FIT_STATS = ("auto", "yes", "no")
SPLITS = ("role", "none")
DATA_SPLITS = ("train", "eval")  # a [[data]] source's split
TRACKERS = ("tensorboard", "wandb", "mlflow", "aim", "comet_ml", "clearml", "dvclive")  # accelerate's names
#: Samples per step and process for one role ([batch]): beyond it a step could not fit anywhere
MAX_BATCH = 4096
MAX_STEPS = 10**9  # optimizer steps (and step intervals): a billion is years of any run, far past any real one
#: Items of the held-out sources eval_loss covers, all of them at each evaluation (a list of them is made):
#: a shapes source of size 10^30 filled the memory at the first one
MAX_EVAL_ITEMS = 10**6


class ConfigError(UsageError):
    """A config problem: one line naming the file and the field."""


def field_error(where: str, message: str) -> ConfigError:
    """The error for one field: ``where`` names the file and the field."""
    return ConfigError(f"{where}: {message}")


# ---- the sections ----------------------------------------------------------------------------

@dataclass
class ModelConfig:
    init: str | None = None  # a Show-o2 checkpoint to start from: folder, variant name or cached repo id
    init_spec: str | None = None  # or: a registry spec ("tiny", "1.5B", ...) built from scratch
    spec: dict = field(default_factory=dict)  # ModelSpec field overrides: of init_spec (e.g. num_layers = 4), or of
    #                                            init's spec where every weight still fits (e.g. velocity_layout)
    # VAE file/folder, a `showo2 train` VAE run folder (its latest checkpoint), or a Hub repo id as --vae takes
    vae: str | None = None
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
    # pairs: official (default: the official dataset's cleanup) | openings (its phrases at the start only) | verbatim
    captions: str | None = None
    size: int | None = None  # shapes: number of distinct scenes (default: a new scene every sample)
    weight: float = 1.0  # share of its role's samples when a role has several sources
    max_seq_len: int | None = None  # token budget of a row (default: the model's max_seq_len)
    min_res: int = 0  # skip images whose shorter side is below this (spec §10)
    cache: str | None = None  # folder for pre-encoded VAE latents (mean and log-variance)
    crop: int | None = None  # vae role: random square crops of this side (default: no crop)
    pool: int | None = None  # mmu_vid: per-frame token grid after pooling (default: the model's)
    # "train", or "eval": held out, never trained on; eval_loss (run.eval_every) covers its whole set
    split: str = "train"


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
    eval_every: int = 0  # steps between eval_loss lines (0: off): over the split = "eval" sources, else one fixed batch
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
        """The training sources of ``role`` (not the held-out ``split = "eval"`` ones), with their index."""
        return [(i, s) for i, s in enumerate(self.data) if s.role == role and s.split != "eval"]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("source", None)
        return d

    def data_signature(self) -> dict:
        """What fixes the sample order: resuming with a different signature changes the data."""
        # the training sources as written before the split and captions fields existed (the signature of
        # earlier runs; neither moves the order)
        data = [{k: v for k, v in dataclasses.asdict(s).items() if k not in ("split", "captions")}
                for s in self.data if s.split != "eval"]
        sig = {"seed": self.seed, "data": data,
               "batch": {r: self.batch.of(r) for r in ROLES}, "mode": self.mode}
        if self.optim.grad_accumulation != 1:  # (absent at 1: the signature of earlier runs)
            sig["grad_accumulation"] = self.optim.grad_accumulation
        return sig


SECTIONS = {"model": ModelConfig, "batch": BatchConfig, "optim": OptimConfig, "loss": LossConfig,
            "vae_loss": VaeLossConfig, "ema": EmaConfig, "lora": LoraConfig, "run": RunConfig}
