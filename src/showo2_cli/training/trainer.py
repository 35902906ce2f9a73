"""The training loop: one function, :func:`train`, for both stages, from-scratch runs and the VAE.

It runs the same on one CPU, one GPU or many processes under ``accelerate launch`` (DDP): each
process draws its own disjoint share of the sample stream, gradients are averaged by DDP, and
process 0 writes checkpoints, metrics and previews. Everything random in a step comes from a
generator seeded with (seed, step, process), so a run resumed from a checkpoint continues
bit-identically (same step, same samples, same noise, same weights).

Progress reaches the caller through ``progress(event: dict)``; nothing here prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ModelError, OutputError, UsageError
from . import checkpoint as ckpt
from .config import GEN_ROLES, UND_ROLES, TrainConfig
from .data import INDEX_DIR, LatentCache, StepSampler, TrainingData, loader, make_sources, mix, step_keys

Progress = Callable[[dict], None]
STATE_FORMAT = 1
EMA_DIR = "ema"  # inside a checkpoint: the EMA weights as a loadable model folder


@dataclass
class TrainResult:
    output_dir: Path
    checkpoint: Path | None
    step: int
    max_steps: int
    interrupted: bool
    seconds: float
    steps_per_s: float
    loss: float | None
    peak_rss_mb: float
    resumed_from: Path | None = None
    world_size: int = 1
    samples: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


class _Stop:
    """SIGINT/SIGTERM set a flag the loop polls; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self.signal = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _ignore_sigint(_worker_id: int) -> None:  # data workers: Ctrl-C is the main process's business
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier at 0-based optimizer step ``step`` (diffusers' schedules:
    linear warmup from 0, then constant or half-cosine down to ``min_ratio``)."""
    if warmup > 0 and step < warmup:
        return step / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    cosine = max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))
    return min_ratio + (1.0 - min_ratio) * cosine


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (sorted keys, raw bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


# ---- parameters and optimizer -----------------------------------------------------------------

def parameter_groups(module: torch.nn.Module, cfg: TrainConfig) -> tuple[list[dict], dict]:
    """Freeze and group parameters by name substring (spec §12.1). Returns the AdamW groups and a
    report ``{group: {"params": n, "tensors": k}, "frozen": {...}}``."""
    o = cfg.optim
    frozen_hits = dict.fromkeys(o.frozen, 0)
    group_hits = {g.name: dict.fromkeys(g.patterns, 0) for g in o.groups}
    buckets: dict[tuple[str, bool], list] = {}
    report: dict[str, dict] = {}
    seen = set()
    for name, p in module.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        frozen = [pat for pat in o.frozen if pat in name]
        for pat in frozen:
            frozen_hits[pat] += 1
        group = None
        if not frozen:
            for g in o.groups:
                hit = [pat for pat in g.patterns if pat in name]
                if hit:
                    for pat in hit:
                        group_hits[g.name][pat] += 1
                    group = g
                    break
        if frozen or (group is None and o.ungrouped == "frozen"):
            p.requires_grad_(False)
            entry = report.setdefault("frozen", {"params": 0, "tensors": 0})
        else:
            p.requires_grad_(True)
            gname = group.name if group else "default"
            decay = p.dim() >= 2
            buckets.setdefault((gname, decay), []).append(p)
            entry = report.setdefault(gname, {"params": 0, "tensors": 0})
        entry["params"] += p.numel()
        entry["tensors"] += 1
    for pat, n in frozen_hits.items():
        if n == 0:
            raise UsageError(f"{cfg.source}: optim.frozen: '{pat}' matches no parameter name")
    for i, g in enumerate(o.groups):
        for pat, n in group_hits[g.name].items():
            if n == 0:
                raise UsageError(f"{cfg.source}: optim.groups[{i}].patterns: '{pat}' matches no trainable "
                                 "parameter name (or every match is frozen)")
    lrs = {g.name: (g.lr, o.weight_decay if g.weight_decay is None else g.weight_decay) for g in o.groups}
    lrs["default"] = (o.lr, o.weight_decay)
    groups = []
    order = [g.name for g in o.groups] + ["default"]
    for gname in order:
        for decay in (True, False):
            params = buckets.get((gname, decay))
            if params:
                lr, wd = lrs[gname]
                groups.append({"params": params, "lr": lr, "base_lr": lr, "weight_decay": wd if decay else 0.0,
                               "name": gname})
    if not groups:
        raise UsageError(f"{cfg.source}: optim: every parameter is frozen; nothing to train")
    return groups, report


# ---- building what a run needs -----------------------------------------------------------------

def _pick_device(cfg: TrainConfig) -> bool:
    """True to run on CPU."""
    if cfg.run.device == "cpu":
        return True
    if cfg.run.device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{cfg.source}: run.device: 'cuda' but no CUDA device is available")
        return False
    return not torch.cuda.is_available()


def _mixed_precision(cfg: TrainConfig, cpu: bool) -> str:
    mp = cfg.run.mixed_precision
    if mp != "auto":
        return mp
    env = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if env in ("no", "bf16", "fp16"):
        return env
    if not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _load_vae(path: str | None, base_dim: int, seed: int, init_logvar: float | None = None):
    """A VAE from a file/folder/run folder, or a random Wan-architecture one."""
    from ..modeling.vae import WanVAE, load_vae

    if path:
        return load_vae(ckpt.resolve_run_path(path))
    vae = WanVAE.random(base_dim=base_dim, seed=seed)
    if init_logvar is not None:  # the log-variance half of the posterior projection's bias
        with torch.no_grad():
            vae.model.quant_conv.bias[vae.z_dim:] = init_logvar
    return vae


def build_showo2(cfg: TrainConfig, resume_from: Path | None):
    """(spec, network fp32, tokenizer, tokens, vae) from a checkpoint, an init model or a spec."""
    from ..loading import build_network, load
    from ..specs import get_spec
    from ..tokenizer import add_showo2_tokens, byte_level_tokenizer, load_tokenizer

    if resume_from is not None or cfg.model.init:
        where = resume_from if resume_from is not None else ckpt.resolve_run_path(cfg.model.init)
        vae_path = None
        if resume_from is None and cfg.model.vae:
            vae_path = ckpt.resolve_run_path(cfg.model.vae)
        bundle = load(where, vae=vae_path, dtype=torch.float32, need=("tokenizer",))
        vae = bundle.vae
        if vae is None:
            if resume_from is not None:
                raise ModelError(f"checkpoint '{resume_from}' has no vae/ folder")
            vae = _load_vae(cfg.model.vae, cfg.model.vae_base_dim, cfg.seed, cfg.model.vae_init_logvar)
        return bundle.spec, bundle.network.float().train(), bundle.tokenizer, bundle.tokens, vae
    spec = get_spec(cfg.model.init_spec).replace(**cfg.model.spec)
    tokenizer = load_tokenizer(_local_folder(cfg.model.tokenizer, f"{cfg.source}: model.tokenizer")) \
        if cfg.model.tokenizer else byte_level_tokenizer()
    tokens = add_showo2_tokens(tokenizer)
    if len(tokenizer) != spec.vocab_size:
        spec = spec.replace(vocab_size=len(tokenizer))
    spec.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        network = build_network(spec, None, torch.float32)
    network.init_weights(seed=cfg.seed)
    for i, wc in enumerate(cfg.model.weights):
        load_partial(network, wc, f"{cfg.source}: model.weights[{i}]")
    vae = _load_vae(cfg.model.vae, cfg.model.vae_base_dim, cfg.seed, cfg.model.vae_init_logvar)
    return spec, network.train(), tokenizer, tokens, vae


def _local_folder(ref: str, where: str) -> Path:
    """A folder path, or the cached snapshot of a Hugging Face repo id (never downloaded)."""
    from ..hub import cached_snapshot as hf_cached_snapshot

    p = Path(ref).expanduser()
    if p.exists():
        return p
    snap = hf_cached_snapshot(ref) if "/" in ref else None
    if snap is None:
        raise UsageError(f"{where}: '{ref}' is neither a local path nor a repo in the Hugging "
                         f"Face cache (get it with: hf download {ref})")
    return snap


def load_partial(network: torch.nn.Module, wc, where: str) -> int:
    """Copy pretrained tensors into part of ``network`` (``wc`` is a WeightsConfig). Embedding
    tables with more rows than the network keep their first rows (the official vocabulary
    shrink to 151669, spec §2). Returns the number of tensors loaded."""
    from ..hub import find_weights
    from ..weights import read_state_dict

    ref = Path(wc.path).expanduser()
    if not ref.exists():
        ref = _local_folder(wc.path, f"{where}.path")
    files = [ref] if ref.is_file() else find_weights(ref)
    if not files:
        raise UsageError(f"{where}.path: no weight files in '{ref}'")
    state = read_state_dict(files)
    own = network.state_dict()
    loaded, unknown = 0, []
    with torch.no_grad():
        for key, value in state.items():
            name = key
            for old, new in wc.rename.items():
                if name.startswith(old):
                    name = new + name[len(old):]
                    break
            name = wc.prefix + name
            if name not in own:
                unknown.append(key)
                continue
            target = own[name]
            if value.shape != target.shape and value.dim() == 2 and value.shape[1:] == target.shape[1:] \
                    and value.shape[0] > target.shape[0] and name.endswith(("embed_tokens.weight", "lm_head.weight")):
                value = value[:target.shape[0]]
            if value.shape != target.shape:
                raise UsageError(f"{where}: '{key}' has shape {tuple(value.shape)} but '{name}' is {tuple(target.shape)}")
            target.copy_(value.to(target.dtype))
            loaded += 1
    if unknown and wc.strict:
        raise UsageError(f"{where}: {len(unknown)} key(s) of '{ref}' have no place in the network "
                         f"(e.g. {', '.join(unknown[:3])}); fix prefix/rename or set strict = false")
    if loaded == 0:
        raise UsageError(f"{where}: no tensor of '{ref}' matched the network (check prefix/rename)")
    return loaded


# ---- the run ------------------------------------------------------------------------------------

class Run:
    """One invocation of a training run (build, resume, loop, save)."""

    def __init__(self, cfg: TrainConfig, resume: bool = True, progress: Progress | None = None,
                 stop_after: int | None = None):
        self.cfg, self.resume, self.stop_after = cfg, resume, stop_after
        self._progress = progress
        self.output_dir = Path(cfg.output_dir)

    # -- events --
    def emit(self, event: str, **data) -> None:
        if self._progress is not None and self.acc.is_main_process:
            self._progress({"event": event, **data})

    def notice(self, message: str) -> None:
        self.emit("notice", message=message)

    # -- setup --
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        cfg = self.cfg
        cpu = _pick_device(cfg)
        roles = cfg.roles()
        find_unused = cfg.mode == "showo2" and (not any(r in roles for r in GEN_ROLES) or not any(r in roles for r in UND_ROLES))
        mixed = _mixed_precision(cfg, cpu)
        if cpu and mixed == "fp16":
            raise UsageError(f"{cfg.source}: run.mixed_precision: fp16 needs a CUDA device; use bf16 or no on a CPU")
        self.acc = Accelerator(cpu=cpu, mixed_precision=mixed,
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = cfg.run.tf32
            torch.backends.cudnn.allow_tf32 = cfg.run.tf32
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device

        # the output folder, and where to resume from
        if self.acc.is_main_process:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise OutputError(f"cannot create output_dir '{self.output_dir}': {e.strerror or e}") from e
            if not os.access(self.output_dir, os.W_OK):
                raise OutputError(f"output_dir '{self.output_dir}' is read-only")
            for p in ckpt.clean_partials(self.output_dir):
                self.notice(f"removed the incomplete checkpoint '{p.name}' left by an earlier crash")
        self.acc.wait_for_everyone()
        latest = ckpt.latest_checkpoint(self.output_dir)
        if latest is not None and not self.resume:
            raise OutputError(f"'{self.output_dir}' already holds checkpoints (latest: {latest.name}); "
                              "resume (the default) or choose another output_dir")
        self.resumed_from = latest if self.resume else None
        state = None
        if self.resumed_from is not None:
            state = torch.load(self.resumed_from / ckpt.STATE_FILE, map_location="cpu", weights_only=True)
            if state.get("format") != STATE_FORMAT or state.get("mode") != cfg.mode:
                raise ModelError(f"'{self.resumed_from}' is not a '{cfg.mode}' training checkpoint of this version")
        self.start_step = int(state["step"]) if state else 0
        self.elapsed_before = float(state.get("elapsed", 0.0)) if state else 0.0

        # the model
        if cfg.mode == "showo2":
            self.spec, self.network, self.tokenizer, self.tokens, self.vae = build_showo2(cfg, self.resumed_from)
            from .recipe import Showo2Objective

            groups, self.report = parameter_groups(self.network, cfg)
            objective = Showo2Objective(self.network, cfg.loss.ntp, cfg.loss.flow)
            self.vae.to(self.device).eval().requires_grad_(False)
        else:
            self.spec, self.tokenizer, self.tokens, self.network = None, None, None, None
            src = self.resumed_from if self.resumed_from is not None else cfg.model.vae
            self.vae = _load_vae(str(src) if src else None, cfg.model.vae_base_dim, cfg.seed, cfg.model.vae_init_logvar)
            self.vae.float().train()
            from .vae_recipe import VaeObjective

            groups, self.report = parameter_groups(self.vae.model, cfg)
            objective = VaeObjective(self.vae, cfg.vae_loss.l1, cfg.vae_loss.l2, cfg.vae_loss.kl)
        optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                      weight_decay=cfg.optim.weight_decay)
        self.module, self.optimizer = self.acc.prepare(objective, optimizer)
        self.ema = None
        if cfg.ema.decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self._ema_target().parameters(), decay=cfg.ema.decay,
                                update_after_step=cfg.ema.start_step)
            if state is not None and state.get("ema"):
                self.ema.load_state_dict(state["ema"])
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            rng = state.get("rng") or {}
            if "torch" in rng:
                torch.set_rng_state(rng["torch"])
            if torch.cuda.is_available() and rng.get("cuda"):
                try:
                    torch.cuda.set_rng_state_all(list(rng["cuda"]))
                except (RuntimeError, ValueError):
                    pass

        # the data
        index_dir = self.output_dir / INDEX_DIR
        if self.acc.is_main_process:
            make_sources(cfg, self.spec, index_dir)  # builds the file indexes once
        self.acc.wait_for_everyone()
        self.sources = make_sources(cfg, self.spec, index_dir)
        self.batch_roles = {r: cfg.batch.of(r) for r in roles}
        self.max_steps = self._total_steps()
        self.warmup = cfg.optim.warmup_steps
        if cfg.optim.warmup_ratio is not None:
            self.warmup = int(cfg.optim.warmup_ratio * self.max_steps)
        self._setup_recipe(state)
        self.dataset = TrainingData(cfg, self.sources, self.caches)

        if state is not None and self.acc.is_main_process:
            saved = state.get("data_signature")
            now = json.dumps(cfg.data_signature(), sort_keys=True)
            if saved and saved != now:
                self.notice("the config's data, batch or seed changed since the checkpoint: the sample order "
                            "differs from an uninterrupted run")
            if state.get("world_size") not in (None, self.world):
                self.notice(f"resuming with {self.world} process(es) instead of {state['world_size']}: the "
                            "sample order differs from an uninterrupted run")
        if self.acc.is_main_process:
            self._write_run_files()

    def _total_steps(self) -> int:
        o = self.cfg.optim
        if o.max_steps is not None:
            return int(o.max_steps)
        dataset = TrainingData(self.cfg, self.sources)
        length = dataset.role_length(o.epoch_role)
        if length is None:
            raise UsageError(f"{self.cfg.source}: optim.epochs: role '{o.epoch_role}' has an endless source")
        return max(1, math.ceil(length * o.epochs / (self.cfg.batch.of(o.epoch_role) * self.world)))

    def _setup_recipe(self, state) -> None:
        cfg = self.cfg
        self.caches: dict[int, LatentCache] = {}
        if cfg.mode != "showo2":
            return
        from .recipe import RecipeContext, TextBuilder, check_budget, seq_budget, visual_positions_for

        max_seq, pools = {}, {}
        vae_key = weights_digest(self.vae)[:16] if any(s.cache for s in cfg.data) else ""
        for src in self.sources:
            s = src.spec
            pool = 0
            if s.role == "mmu_vid":
                grid = src.resolution // self.spec.latent_multiple
                pool = s.pool or min(self.spec.und_video_pool, grid)
                pools[src.index] = pool
            nv = visual_positions_for(s.role, src.resolution, src.frames, self.spec, pool)
            budget = seq_budget(s.max_seq_len, self.spec, nv, s.role in UND_ROLES)
            check_budget(src.index, budget, nv, s.role)
            max_seq[src.index] = budget
            if src.resolution % self.spec.latent_multiple:
                raise UsageError(f"{cfg.source}: data[{src.index}].resolution: {src.resolution} is not a multiple "
                                 f"of {self.spec.latent_multiple}")
            if s.cache:
                sig = json.dumps({**src.signature(), "vae": vae_key, "latent_format": 2}, sort_keys=True)
                self.caches[src.index] = LatentCache(s.cache, hashlib.sha1(sig.encode()).hexdigest()[:16])
        t_dtype = torch.bfloat16 if self.acc.mixed_precision == "bf16" else torch.float32
        self.ctx = RecipeContext(self.spec, TextBuilder(self.tokenizer, self.tokens), self.vae, cfg.loss, max_seq,
                                 pools, t_dtype=t_dtype, vae_device=self.device,
                                 vae_autocast=self.acc.autocast if self.acc.mixed_precision != "no" else contextlib.nullcontext)

    def _write_run_files(self) -> None:
        info = {"config": self.cfg.to_dict(), "source": self.cfg.source, "world_size": self.world,
                "max_steps": self.max_steps}
        tmp = self.output_dir / ".config.json.tmp"
        tmp.write_text(json.dumps(info, indent=1, default=str) + "\n")
        os.replace(tmp, self.output_dir / "train_config.json")
        metrics = self.output_dir / "metrics.jsonl"
        if metrics.exists():  # drop lines written after the checkpoint we resume from
            keep = []
            for line in metrics.read_text(encoding="utf-8").splitlines():
                try:
                    if int(json.loads(line).get("step", 0)) <= self.start_step:
                        keep.append(line)
                except (ValueError, AttributeError):
                    continue
            tmp = self.output_dir / ".metrics.jsonl.tmp"
            tmp.write_text("".join(k + "\n" for k in keep))
            os.replace(tmp, metrics)

    # -- one step --
    def _generator(self, *tag) -> torch.Generator:
        return torch.Generator().manual_seed(mix(self.cfg.seed, *tag, self.rank))

    def _set_lr(self, step: int) -> float:
        f = lr_factor(step, self.max_steps, self.warmup, self.cfg.optim.schedule, self.cfg.optim.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.optimizer.param_groups[0]["lr"]

    def _forward(self, samples, generator, backward: bool = False) -> dict:
        """The step's loss terms (detached); with ``backward`` the gradients are accumulated too.

        In showo2 mode with ``batch.split = "role"`` every role's rows run as their own batch
        (trimmed to their own longest row), each divided by the whole step's token/element counts,
        so the summed losses and gradients equal those of one padded batch."""
        if self.cfg.mode != "showo2":
            pixels, eps = self._vae_inputs(samples, generator)
            out = self.module(pixels, eps)
            if backward:
                self.acc.backward(out["loss"])
            return {k: v.detach() for k, v in out.items()}
        from .recipe import batch_counts, prepare_batches

        batches = prepare_batches(samples, self.ctx, generator, self.cfg.batch.split)
        counts = [batch_counts(b) for b in batches]
        totals = (sum(c[0] for c in counts), sum(c[1] for c in counts)) if len(batches) > 1 else None
        out: dict = {}
        for i, batch in enumerate(batches):
            defer_sync = backward and self.world > 1 and i < len(batches) - 1
            with self.acc.no_sync(self.module) if defer_sync else contextlib.nullcontext():
                part = self.module(batch.to(self.device), totals)
                if backward:
                    self.acc.backward(part["loss"])
            for k, v in part.items():
                out[k] = v.detach() if k not in out else out[k] + v.detach()
        return out

    def _ema_target(self) -> torch.nn.Module:
        module = self.acc.unwrap_model(self.module)
        return module.network if self.cfg.mode == "showo2" else module.vae.model

    @contextlib.contextmanager
    def _ema_weights(self):
        """The EMA weights in place of the trained ones for the duration (a no-op without EMA)."""
        if self.ema is None:
            yield
            return
        params = list(self._ema_target().parameters())
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    # -- filling the latent cache before training --
    def pre_encode(self, shard: tuple[int, int] | None = None, batch_size: int = 32) -> dict:
        """Encode every item of every cached, finite source that is not cached yet (this process's
        share: items ``k, k+n, ...`` of shard ``(k, n)``, by default the process rank of the world),
        so that training reads latents instead of running the VAE."""
        from ..errors import InputError, ResourceError
        from .recipe import encode_missing

        self.setup()
        if self.cfg.mode != "showo2":
            raise UsageError(f"{self.cfg.source}: --pre-encode fills the latent caches of mode = \"showo2\" runs")
        k, n = shard if shard is not None else (self.rank, self.world)
        t0 = time.perf_counter()
        counts = {"encoded": 0, "cached": 0, "skipped": 0}
        total = sum(len(range(k, src.size(), n)) for src in self.sources
                    if src.index in self.caches and src.size() is not None)
        if not self.caches:
            self.notice("no [[data]] source has a cache folder: nothing to pre-encode")
        autocast = self.ctx.vae_autocast
        done = 0
        for src in self.sources:
            cache, size = self.caches.get(src.index), src.size()
            if cache is None or size is None:
                continue
            pending = []
            for item in range(k, size, n):
                done += 1
                if cache.path(item).exists():
                    counts["cached"] += 1
                    continue
                try:
                    sample = self.dataset.load(src, item)
                except (InputError, ResourceError):
                    sample = None
                if sample is None or sample.latent is not None or not sample.has_visual:
                    counts["skipped" if sample is None else "cached"] += 1
                    continue
                pending.append(sample)
                if len(pending) >= batch_size:
                    encode_missing(pending, self.vae, self.device, autocast)
                    counts["encoded"] += len(pending)
                    pending = []
                    self.emit("encode", done=done, total=total, **counts)
            if pending:
                encode_missing(pending, self.vae, self.device, autocast)
                counts["encoded"] += len(pending)
            self.emit("encode", done=done, total=total, **counts)
        seconds = time.perf_counter() - t0
        return {"shard": [k, n], "items": total, **counts, "seconds": round(seconds, 2),
                "items_per_s": round(counts["encoded"] / seconds, 2) if seconds > 0 else None}

    def _vae_inputs(self, samples, generator):
        from ..media import frames_to_tensor
        from .vae_recipe import latent_shape

        shapes = {s.pixels.shape for s in samples}
        if len(shapes) > 1:
            raise UsageError(f"{self.cfg.source}: role 'vae' sources give different sizes {sorted(shapes)}: "
                             "give them the same resolution/crop and frames")
        pixels = torch.stack([frames_to_tensor(s.pixels) for s in samples])
        eps = torch.randn(latent_shape(self.vae, pixels), generator=generator)
        return pixels.to(self.device), eps

    def _digest(self, samples) -> str:
        h = hashlib.sha1()
        for s in samples:
            h.update(f"{s.role}:{s.source}:{s.item};".encode())
        return h.hexdigest()[:16]

    # -- saving --
    def save(self, step: int) -> Path | None:
        self.acc.wait_for_everyone()
        path = None
        if self.cfg.mode == "vae" and self._fit_stats():
            self._refit_latent_stats()  # every process (same data, same weights)
        if self.acc.is_main_process:
            path = ckpt.write_checkpoint(self.output_dir, step, lambda dst: self._write(dst, step),
                                         keep_last=self.cfg.run.keep_last)
            self.emit("checkpoint", step=step, path=str(path))
        self.acc.wait_for_everyone()
        return path if path is not None else self.output_dir / ckpt.checkpoint_name(step)

    def _write(self, dst: Path, step: int) -> None:
        from ..loading import write_folder

        if self.cfg.mode == "showo2":
            net = self.acc.unwrap_model(self.module).network
            info = {"training": {"step": step, "config": self.cfg.source}}
            write_folder(dst, self.spec, net.state_dict(), tokenizer=self.tokenizer, vae=self.vae, extra=info)
            if self.ema is not None:  # the averaged weights as a model folder of their own
                (dst / EMA_DIR).mkdir()
                with self._ema_weights():
                    write_folder(dst / EMA_DIR, self.spec, net.state_dict(), tokenizer=self.tokenizer, vae=self.vae,
                                 extra={"training": {**info["training"], "ema_decay": self.cfg.ema.decay}})
        else:
            self.acc.unwrap_model(self.module).vae.save_pretrained(dst / "vae")
            if self.ema is not None:
                with self._ema_weights():
                    self.acc.unwrap_model(self.module).vae.save_pretrained(dst / EMA_DIR / "vae")
            (dst / "vae_info.json").write_text(json.dumps({"step": step, "config": self.cfg.source}) + "\n")
        state = {
            "format": STATE_FORMAT, "mode": self.cfg.mode, "step": step,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "data_signature": json.dumps(self.cfg.data_signature(), sort_keys=True),
            "world_size": self.world, "max_steps": self.max_steps,
            "elapsed": self.elapsed_before + (time.perf_counter() - self.t_start),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }
        torch.save(state, dst / ckpt.STATE_FILE)

    def _fit_stats(self) -> bool:
        mode = self.cfg.vae_loss.fit_latent_stats
        return mode == "yes" or (mode == "auto" and not self.cfg.model.vae)

    @torch.no_grad()
    def _refit_latent_stats(self) -> None:
        from ..media import frames_to_tensor

        vae = self.acc.unwrap_model(self.module).vae
        n = self.cfg.vae_loss.stats_samples
        b = self.cfg.batch.vae
        batches = []
        for start in range(0, n, b):
            keys = [("vae", (1 << 40) + i) for i in range(start, min(n, start + b))]
            samples = [self.dataset[k] for k in keys]
            batches.append(torch.stack([frames_to_tensor(s.pixels) for s in samples]).to(self.device))
        mean, std = fit_latent_stats_call(vae, batches)
        vae.latents_mean.copy_(torch.tensor(mean))
        vae.latents_std.copy_(torch.tensor(std))

    # -- previews --
    def sample_images(self, step: int) -> list[str]:
        from .. import media as M

        out_dir = self.output_dir / "samples"
        out_dir.mkdir(exist_ok=True)
        paths = []
        if self.cfg.mode == "vae":
            vae = self.acc.unwrap_model(self.module).vae
            samples = [self.dataset[("vae", (1 << 41) + i)] for i in range(min(4, self.cfg.batch.vae))]
            with torch.no_grad():
                pix = torch.stack([M.frames_to_tensor(s.pixels) for s in samples]).to(self.device)
                recon = vae.decode(vae.encode(pix[:, :, 0] if pix.shape[2] == 1 else pix))
            for i, (a, r) in enumerate(zip(pix, recon, strict=True)):
                r = r if r.dim() == 4 else r[:, None]
                pair = torch.cat([a[:, :1], r[:, :1]], dim=-1)
                p = out_dir / f"step-{step:06d}-{i:02d}.png"
                M.write_image(p, M.tensor_to_frames(pair)[0], {"step": step, "kind": "reconstruction"}, overwrite=True)
                paths.append(str(p))
            return paths
        from ..loading import Showo2
        from ..options import GenerateOptions
        from ..pipelines import text_to_image

        net = self.acc.unwrap_model(self.module).network
        prompts = self._sample_prompts()
        res = next((s.resolution for s in self.sources if s.spec.role == "t2i"), self.spec.resolution)
        steps = self.cfg.run.sample_steps or self.spec.steps
        guidance = self.cfg.run.sample_guidance if self.cfg.run.sample_guidance is not None else self.spec.guidance
        # the generation pipeline itself, over the network being trained (with its EMA weights)
        bundle = Showo2(self.spec, net, self.tokenizer, self.tokens, self.vae)
        opts = GenerateOptions(size=(res, res), steps=steps, guidance=guidance, seed=self.cfg.seed,
                               batch_size=len(prompts), max_memory_gb=0)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), self.acc.autocast(), self._ema_weights():
                images = text_to_image(bundle, prompts, opts)
        finally:
            net.train(was_training)
        for i, (prompt, img) in enumerate(zip(prompts, images, strict=True)):
            p = out_dir / f"step-{step:06d}-{i:02d}.png"
            M.write_image(p, img.frames[0], {"prompt": prompt, "step": step, "steps": steps,
                                             "guidance": guidance}, overwrite=True)
            paths.append(str(p))
        return paths

    def _sample_prompts(self) -> list[str]:
        if self.cfg.run.sample_prompts:
            return list(self.cfg.run.sample_prompts)
        import numpy as np

        from . import shapes

        res = next(s.resolution for s in self.sources if s.spec.kind == "shapes" and s.spec.role == "t2i")
        rng = np.random.default_rng([self.cfg.seed, 424242])
        return [shapes.caption(shapes.random_scene(rng, canvas=max(res, 16))) for _ in range(4)]

    # -- eval on a fixed batch --
    @torch.no_grad()
    def eval_loss(self) -> float:
        keys = step_keys(self.batch_roles, 0, self.rank, self.world)
        samples = [self.dataset[k] for k in keys]
        out = self._forward(samples, self._generator("eval"))
        loss = self.acc.reduce(out["loss"].detach().float().reshape(1), reduction="mean")
        return float(loss)

    # -- the loop --
    def run(self) -> TrainResult:
        self.setup()
        cfg = self.cfg
        self.t_start = time.perf_counter()
        step = self.start_step
        stop_at = self.max_steps if self.stop_after is None else min(self.max_steps, step + self.stop_after)
        trainable = sum(v["params"] for k, v in self.report.items() if k != "frozen")
        self.emit("start", step=step, max_steps=self.max_steps, output_dir=str(self.output_dir),
                  resumed_from=str(self.resumed_from) if self.resumed_from else None, world_size=self.world,
                  device=str(self.device), mixed_precision=self.acc.mixed_precision, groups=self.report,
                  trainable=trainable)
        metrics_path = self.output_dir / "metrics.jsonl"
        sampler = StepSampler(self.batch_roles, step, stop_at, self.rank, self.world)
        data = loader(self.dataset, sampler, cfg.run.num_workers, worker_init_fn=_ignore_sigint)
        interrupted = False
        last_loss = None
        window = {"n": 0, "loss": 0.0, "ntp": 0.0, "flow": 0.0, "l1": 0.0, "l2": 0.0, "kl": 0.0, "skipped": 0,
                  "t": time.perf_counter()}
        rate = None
        samples_written: list[str] = []
        if step == 0 and cfg.run.eval_every:
            ev = self.eval_loss()
            self._append(metrics_path, {"step": 0, "eval_loss": ev})
            self.emit("eval", step=0, eval_loss=ev)
        with _Stop() as stop:
            t_prev = time.perf_counter()
            for samples in data:
                if self._should_stop(stop):
                    interrupted = True
                    break
                lr = self._set_lr(step)
                generator = self._generator("step", step)
                out = self._forward(samples, generator, backward=True)
                grad_norm = None
                if cfg.optim.grad_clip > 0 and self.acc.sync_gradients:
                    grad_norm = self.acc.clip_grad_norm_(self.module.parameters(), cfg.optim.grad_clip)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.step(self._ema_target().parameters())
                step += 1
                now = time.perf_counter()
                dt, t_prev = now - t_prev, now
                rate = 1.0 / dt if rate is None else 0.9 * rate + 0.1 / max(dt, 1e-9)
                loss = float(out["loss"].detach())
                if not math.isfinite(loss):
                    raise UsageError(f"the loss became {loss} at step {step}: lower the learning rate "
                                     "(optim.lr / optim.groups) or check the data")
                last_loss = loss
                window["n"] += 1
                window["skipped"] += sum(s.skipped for s in samples)
                for k in ("loss", "ntp", "flow", "l1", "l2", "kl"):
                    if k in out:
                        window[k] += float(out[k].detach())
                digest = self._digest(samples)
                self.emit("step", step=step, max_steps=self.max_steps, loss=loss, lr=lr, steps_per_s=rate,
                          eta_s=(stop_at - step) / rate if rate else None)
                if step % cfg.run.log_every == 0 or step == stop_at:
                    self._log(metrics_path, step, window, lr, grad_norm, digest)
                if cfg.run.eval_every and step % cfg.run.eval_every == 0:
                    ev = self.eval_loss()
                    self._append(metrics_path, {"step": step, "eval_loss": ev})
                    self.emit("eval", step=step, eval_loss=ev)
                if cfg.run.sample_every and step % cfg.run.sample_every == 0 and self.acc.is_main_process:
                    paths = self.sample_images(step)
                    samples_written += paths
                    self.emit("samples", step=step, paths=paths)
                if cfg.run.save_every and step % cfg.run.save_every == 0 and step < stop_at:
                    self.save(step)
                if self._should_stop(stop):
                    interrupted = True
                    break
        if not interrupted and step < stop_at:
            interrupted = True  # the data ended early: cannot happen with endless streams
        if step == self.start_step and self.resumed_from is not None:
            final = self.resumed_from  # nothing new to save
        else:
            final = self.save(step)
        seconds = time.perf_counter() - self.t_start
        done = step - self.start_step
        if self.world > 1:
            self._write_rank_digest(step)
        result = TrainResult(self.output_dir, final, step, self.max_steps, interrupted,
                             seconds, done / seconds if seconds > 0 else 0.0, last_loss, peak_rss_mb(),
                             self.resumed_from, self.world, samples_written)
        self.emit("done", **result.to_dict())
        self.acc.end_training()
        return result

    def _should_stop(self, stop: _Stop) -> bool:
        flag = bool(stop.requested)
        if self.world > 1:  # every process must stop at the same step
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            flag = bool(self.acc.gather(t).max() > 0)
        if flag:
            stop.requested = True
        return flag

    def _log(self, path: Path, step: int, window: dict, lr: float, grad_norm, digest: str) -> None:
        n = max(window["n"], 1)
        now = time.perf_counter()
        line = {"step": step, "loss": window["loss"] / n}
        for k in ("ntp", "flow") if self.cfg.mode == "showo2" else ("l1", "l2", "kl"):
            line[k] = window[k] / n
        line["lr"] = lr
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        if len(lrs) > 1:
            line["lrs"] = lrs
        if window["skipped"]:
            line["skipped"] = window["skipped"]  # unreadable or too small items passed over
        if grad_norm is not None:
            line["grad_norm"] = float(grad_norm)
        line["steps_per_s"] = n / max(now - window["t"], 1e-9)
        line["seconds"] = self.elapsed_before + (now - self.t_start)
        line["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if torch.cuda.is_available() and self.device.type == "cuda":
            line["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        line["data"] = digest
        # the loss averaged over processes (the others see the same lines)
        if self.world > 1:
            t = torch.tensor([line["loss"]], device=self.device)
            line["loss"] = float(self.acc.reduce(t, reduction="mean"))
        self._append(path, line)
        self.emit("log", **line)
        window.update({k: 0.0 for k in ("loss", "ntp", "flow", "l1", "l2", "kl")}, n=0, skipped=0, t=now)

    def _append(self, path: Path, line: dict) -> None:
        if self.acc.is_main_process:
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")

    def _write_rank_digest(self, step: int) -> None:
        module = self.acc.unwrap_model(self.module)
        target = module.network if self.cfg.mode == "showo2" else module.vae
        folder = self.output_dir / "rank-digests"
        folder.mkdir(exist_ok=True)
        (folder / f"rank-{self.rank}.json").write_text(json.dumps({"rank": self.rank, "step": step,
                                                                   "sha256": weights_digest(target)}) + "\n")


def fit_latent_stats_call(vae, batches):
    from .vae_recipe import fit_latent_stats

    return fit_latent_stats(vae, batches)


def train(cfg: TrainConfig, resume: bool = True, progress: Progress | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Run (or resume) the training run described by ``cfg``; see :mod:`showo2_cli.training`."""
    return Run(cfg, resume=resume, progress=progress, stop_after=stop_after).run()
