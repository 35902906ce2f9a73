"""The Show-o2 training objective (``mode = "showo2"``): the network built from a checkpoint, an
init model or a registry spec, the recipe's batches (:mod:`.recipe`) and its joint NTP + flow loss,
checkpoints as loadable model folders, and text-to-image previews through the generation pipeline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from ..errors import ModelError, UsageError, one_line
from . import checkpoint as ckpt
from .checkpoint import EMA_DIR
from .latent_cache import LatentCache, entry_shape, logvar_range
from .schema import GEN_ROLES, UND_ROLES, TrainConfig
from .vae_recipe import build_vae


def build_showo2(cfg: TrainConfig, resume_from: Path | None):
    """(spec, network fp32, tokenizer, tokens, vae) from a checkpoint, an init model or a spec."""
    from ..hub_vae import explicit_vae
    from ..loading import build_network, load
    from ..specs import get_spec
    from ..tokenizer import add_showo2_tokens, byte_level_tokenizer, load_tokenizer

    if resume_from is not None or cfg.model.init:
        where = resume_from if resume_from is not None else ckpt.resolve_run_path(cfg.model.init)
        vae_path = None
        if resume_from is None and cfg.model.vae:
            vae_path = explicit_vae(cfg.model.vae)
        bundle = load(where, vae=vae_path, dtype=torch.float32, need=("tokenizer",), heads=("lm_head", "flow_head"))
        vae = bundle.vae
        if vae is None:
            if resume_from is not None:
                raise ModelError(f"checkpoint '{resume_from}' has no vae/ folder")
            vae = build_vae(cfg.model.vae, cfg.model.vae_base_dim, cfg.seed, cfg.model.vae_init_logvar)
        spec, network = bundle.spec, bundle.network.float()
        if resume_from is None and cfg.model.spec:  # overrides of the init model's spec: same weights
            spec = spec.replace(**cfg.model.spec)
            try:
                spec.validate()
                check_training_memory(spec, cfg)
                network = build_network(spec, network.state_dict(), torch.float32, where=str(where))
            except (UsageError, ModelError, TypeError) as e:
                raise UsageError(f"{cfg.source}: model.spec: the overrides do not fit model.init's "
                                 f"weights: {one_line(e)}") from None
        return spec, network.train(), bundle.tokenizer, bundle.tokens, vae
    spec = get_spec(cfg.model.init_spec).replace(**cfg.model.spec)
    tokenizer = load_tokenizer(local_folder(cfg.model.tokenizer, f"{cfg.source}: model.tokenizer")) \
        if cfg.model.tokenizer else byte_level_tokenizer()
    tokens = add_showo2_tokens(tokenizer)
    if len(tokenizer) != spec.vocab_size:
        spec = spec.replace(vocab_size=len(tokenizer))
    spec.validate()
    check_training_memory(spec, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        network = build_network(spec, None, torch.float32)
    network.init_weights(seed=cfg.seed)
    for i, wc in enumerate(cfg.model.weights):
        load_partial(network, wc, f"{cfg.source}: model.weights[{i}]")
    vae = build_vae(cfg.model.vae, cfg.model.vae_base_dim, cfg.seed, cfg.model.vae_init_logvar)
    return spec, network.train(), tokenizer, tokens, vae


def local_folder(ref: str, where: str) -> Path:
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
        ref = local_folder(wc.path, f"{where}.path")
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


def _checkpoint_of(folder: str, run_folder: str) -> bool:
    """Whether ``folder`` is a checkpoint (still there) of the training run folder ``run_folder``."""
    from ..run_folders import CHECKPOINT_NAME

    p = Path(folder)
    try:
        return bool(CHECKPOINT_NAME.match(p.name)) and (p / ckpt.STATE_FILE).is_file() \
            and p.parent.samefile(run_folder)
    except OSError:
        return False


class Showo2Objective:
    """The Show-o2 mode of a :class:`~.trainer.Run` (see :class:`~.objective.Objective`)."""

    log_keys = ("ntp", "flow")
    log_counts = {"ntp": "tokens", "flow": "flow_elements"}  # each a mean over the step's tokens / elements

    def loss_weights(self) -> dict[str, float]:
        return {"ntp": self.cfg.loss.ntp, "flow": self.cfg.loss.flow}

    def __init__(self, run):
        self.run, self.cfg = run, run.cfg
        self.spec = self.network = self.tokenizer = self.tokens = self.vae = self.ctx = self.lora = None

    def find_unused_parameters(self) -> bool:
        roles = self.cfg.roles()
        return not any(r in roles for r in GEN_ROLES) or not any(r in roles for r in UND_ROLES)

    # -- building --
    def build(self, state):
        from .params import adapter_groups, parameter_groups
        from .recipe import Showo2Loss

        cfg, run = self.cfg, self.run
        self.lora = None
        if cfg.lora.rank:  # the base every time (a LoRA checkpoint holds only the adapter)
            from ..lora import ADAPTER_WEIGHTS, add_lora, load_adapter_state, read_adapter

            lo = cfg.lora
            alpha, dropout, tensors = lo.alpha, lo.dropout, None
            # a run folder as model.init stands for its latest checkpoint: the adapter names that one
            base = str(ckpt.resolve_run_path(cfg.model.init)) if cfg.model.init else None
            if run.resumed_from is not None:
                if not (run.resumed_from / ADAPTER_WEIGHTS).exists():
                    raise UsageError(f"{cfg.source}: lora.rank: '{run.resumed_from}' is a full checkpoint, not a "
                                     "LoRA one; resume it without [lora] (or start a new output_dir)")
                saved, tensors, folder = read_adapter(run.resumed_from)
                if saved.r != lo.rank:  # (was: "does not fit this model", a size mismatch of peft's)
                    raise UsageError(f"{cfg.source}: lora.rank: {lo.rank}, the checkpoint '{run.resumed_from}' "
                                     f"holds a rank-{saved.r} adapter; resume it with rank = {saved.r} (or start "
                                     "a new output_dir)")
                if (saved.lora_alpha, saved.lora_dropout) != (alpha, dropout):  # alpha scales the trained update
                    run.notice(f"lora.alpha/dropout ({alpha:g}, {dropout:g}) differ from the checkpoint's "
                               f"({saved.lora_alpha:g}, {saved.lora_dropout:g}): resuming keeps the checkpoint's "
                               "(start a new output_dir to change them)")
                    alpha, dropout = saved.lora_alpha, saved.lora_dropout
                was = saved.base_model_name_or_path
                if base and was and was != base and _checkpoint_of(was, cfg.model.init):
                    run.notice(f"model.init '{cfg.model.init}' now stands for {Path(base).name}: the adapter "
                               f"resumes on the checkpoint it was trained on, {Path(was).name}")
                    base = was  # (the run went on: the adapter on its newer weights was not a resume)
            if base and base != cfg.model.init:
                cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init=base))
            self.spec, self.network, self.tokenizer, self.tokens, self.vae = build_showo2(cfg, None)
            with torch.random.fork_rng(devices=[]):  # peft draws lora_A from the global generator
                torch.manual_seed(cfg.seed)
                self.lora = add_lora(self.network, lo.rank, alpha, dropout, lo.target_modules, lo.within,
                                     base=base or cfg.model.init_spec)
            if tensors is not None:
                try:
                    load_adapter_state(self.network, tensors, str(folder))
                except ModelError as e:  # the layers adapted: another target_modules or within
                    raise UsageError(f"{cfg.source}: lora.target_modules: the checkpoint's adapter does not fit "
                                     f"the [lora] section ({one_line(e, 200)}); resume it with its target_modules "
                                     "and within (or start a new output_dir)") from None
            groups, report = adapter_groups(self.network, cfg)
        else:
            from ..lora import ADAPTER_WEIGHTS

            if run.resumed_from is not None and (run.resumed_from / ADAPTER_WEIGHTS).exists():
                raise UsageError(f"{cfg.source}: lora.rank: '{run.resumed_from}' is a LoRA checkpoint; resume it "
                                 "with its [lora] section (or start a new output_dir)")
            self.spec, self.network, self.tokenizer, self.tokens, self.vae = build_showo2(cfg, run.resumed_from)
            if run.resumed_from is not None and cfg.model.spec:
                try:
                    changed = self.spec.replace(**cfg.model.spec) != self.spec
                except (TypeError, ValueError):
                    changed = True
                if changed:
                    run.notice("model.spec differs from the checkpoint's: resuming keeps the checkpoint's spec "
                               "(start a new output_dir to change it)")
            groups, report = parameter_groups(self.network, cfg)
        if cfg.run.gradient_checkpointing:
            self.network.set_gradient_checkpointing(True)
        self.vae.to(run.device).eval().requires_grad_(False)
        return Showo2Loss(self.network, cfg.loss.ntp, cfg.loss.flow), groups, report

    def prepare_data(self) -> dict:
        from .params import weights_digest
        from .recipe import RecipeContext, TextBuilder, check_budget, seq_budget, visual_positions_for

        cfg, run, spec = self.cfg, self.run, self.spec
        caches: dict[int, LatentCache] = {}
        max_seq, pools = {}, {}
        vae_key = weights_digest(self.vae)[:16] if any(s.cache for s in cfg.data) else ""
        for src in run.sources:
            s = src.spec
            pool = 0
            if s.role == "mmu_vid":
                grid = src.resolution // spec.latent_multiple
                pool = s.pool or min(spec.und_video_pool, grid)
                pools[src.index] = pool
            nv = visual_positions_for(s.role, src.resolution, src.frames, spec, pool)
            budget = seq_budget(s.max_seq_len, spec, nv, s.role in UND_ROLES)
            check_budget(src.index, budget, nv, s.role)
            max_seq[src.index] = budget
            if src.resolution % spec.latent_multiple:
                raise UsageError(f"{cfg.source}: data[{src.index}].resolution: {src.resolution} is not a multiple "
                                 f"of {spec.latent_multiple}")
            if s.cache:  # (its entries are what encode_missing writes from the source's pixels)
                sig = json.dumps({**src.signature(), "vae": vae_key, "latent_format": 2}, sort_keys=True)
                shape = entry_shape(s.role, src.frames if src.video else 1, src.resolution, src.resolution, self.vae)
                caches[src.index] = LatentCache(s.cache, hashlib.sha1(sig.encode()).hexdigest()[:16], shape,
                                                logvar_range(self.vae))
        acc = run.acc
        t_dtype = torch.bfloat16 if acc.mixed_precision == "bf16" else torch.float32
        self.ctx = RecipeContext(spec, TextBuilder(self.tokenizer, self.tokens), self.vae, cfg.loss, max_seq,
                                 pools, t_dtype=t_dtype, vae_device=run.device,
                                 vae_autocast=acc.autocast if acc.mixed_precision != "no" else contextlib.nullcontext)
        return caches

    # -- one step --
    def forward(self, samples, generator, backward: bool = False) -> dict:
        """With ``batch.split = "role"`` every role's rows run as their own batch (trimmed to their
        own longest row), each divided by the whole step's token/element counts, so the summed
        losses and gradients equal those of one padded batch."""
        from .recipe import batch_counts, prepare_batches

        run = self.run
        self.report_cache_notes(samples)
        batches = prepare_batches(samples, self.ctx, generator, self.cfg.batch.split)
        counts = [batch_counts(b) for b in batches]
        totals = (sum(c[0] for c in counts), sum(c[1] for c in counts)) if len(batches) > 1 else None
        out: dict = {}
        for i, batch in enumerate(batches):
            defer_sync = backward and run.world > 1 and i < len(batches) - 1
            with run.acc.no_sync(run.module) if defer_sync else contextlib.nullcontext():
                part = run.module(batch.to(run.device), totals)
                if backward:
                    run.acc.backward(part["loss"])
            for k, v in part.items():
                out[k] = v.detach() if k not in out else out[k] + v.detach()
        return out

    def report_cache_notes(self, samples) -> None:
        """Once a run for each latent cache: that it held entries this run does not write."""
        said = self.__dict__.setdefault("_cache_notes_said", set())
        for s in samples:
            folder = Path(s.cache_path).parents[1] if s.cache_note else None
            if folder is not None and folder not in said:
                said.add(folder)
                self.run.notice(s.cache_note)

    def unwrapped(self) -> torch.nn.Module:
        return self.run.acc.unwrap_model(self.run.module).network

    def ema_parameters(self) -> list:
        params = self.unwrapped().parameters()
        return [p for p in params if p.requires_grad] if self.lora is not None else list(params)

    def read_ema(self, folder: Path) -> list:
        net = self.unwrapped()
        params = self.ema_parameters()
        if self.lora is not None:  # the adapter loaded into the live layers, read out, the trained one put back
            from ..lora import load_adapter_state, read_adapter

            trained = [p.detach().clone() for p in params]
            try:
                load_adapter_state(net, read_adapter(folder)[1], str(folder))
                return [p.detach().clone() for p in params]
            finally:
                with torch.no_grad():
                    for p, t in zip(params, trained, strict=True):
                        p.copy_(t)
        from ..weights import read_state_dict

        saved = read_state_dict(folder / "model.safetensors")
        names = {}  # every name of each parameter (a tied embedding is stored under one of them)
        for name, p in net.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
        out = []
        for p in params:
            found = next((saved[n] for n in names.get(id(p), []) if n in saved), None)
            if found is None or found.shape != p.shape:
                raise ModelError(f"'{folder}': the EMA weights do not fit this model ({names.get(id(p), ['?'])[0]})")
            out.append(found.float())
        return out

    def digest_target(self) -> torch.nn.Module:
        return self.unwrapped()

    # -- saving --
    def before_save(self) -> None:
        pass

    def write(self, dst: Path, step: int) -> None:
        net = self.unwrapped()
        info = {"training": {"step": step, "config": self.cfg.source}}
        if self.lora is not None:  # the adapter alone (peft's layout), the EMA one in ema/
            from ..lora import save_adapter

            save_adapter(dst, net, self.lora, {"step": step, "spec": self.spec.name})
            if self.run.ema is not None:
                with self.run.ema_weights():
                    save_adapter(dst / EMA_DIR, net, self.lora, {"step": step, "spec": self.spec.name,
                                                                 "ema_decay": self.cfg.ema.decay})
            return
        from ..loading import write_folder

        write_folder(dst, self.spec, net.state_dict(), tokenizer=self.tokenizer, vae=self.vae, extra=info)
        if self.run.ema is not None:  # the averaged weights as a model folder of their own
            (dst / EMA_DIR).mkdir()
            with self.run.ema_weights():
                write_folder(dst / EMA_DIR, self.spec, net.state_dict(), tokenizer=self.tokenizer,
                             extra={"training": {**info["training"], "ema_decay": self.cfg.ema.decay}})
            ckpt.share_folder(dst / "vae", dst / EMA_DIR / "vae")  # the same frozen VAE, not a second copy

    # -- previews --
    def preview(self, step: int, out_dir: Path) -> list[str]:
        from .. import media as M
        from ..loading import Showo2
        from ..options import GenerateOptions
        from ..pipelines import text_to_image

        run, cfg = self.run, self.cfg
        net = self.unwrapped()
        prompts = self.sample_prompts()
        res = next((s.resolution for s in run.sources if s.spec.role == "t2i"), self.spec.resolution)
        steps = cfg.run.sample_steps or self.spec.steps
        guidance = cfg.run.sample_guidance if cfg.run.sample_guidance is not None else self.spec.guidance
        # the generation pipeline itself, over the network being trained (with its EMA weights)
        bundle = Showo2(self.spec, net, self.tokenizer, self.tokens, self.vae)
        opts = GenerateOptions(size=(res, res), steps=steps, guidance=guidance, seed=cfg.seed,
                               batch_size=len(prompts), max_memory_gb=0)
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad(), run.acc.autocast(), run.ema_weights():
                images = text_to_image(bundle, prompts, opts)
        finally:
            net.train(was_training)
        paths = []
        for i, (prompt, img) in enumerate(zip(prompts, images, strict=True)):
            p = out_dir / f"step-{step:06d}-{i:02d}.png"
            M.write_image(p, img.frames[0], {"prompt": prompt, "step": step, "steps": steps,
                                             "guidance": guidance}, overwrite=True)
            paths.append(str(p))
        return paths

    def sample_prompts(self) -> list[str]:
        if self.cfg.run.sample_prompts:
            return list(self.cfg.run.sample_prompts)
        import numpy as np

        from . import shapes

        res = next(s.resolution for s in self.run.sources if s.spec.kind == "shapes" and s.spec.role == "t2i")
        rng = np.random.default_rng([self.cfg.seed, 424242])
        return [shapes.caption(shapes.random_scene(rng, canvas=max(res, 16))) for _ in range(4)]

    # -- filling the latent cache before training --
    def pre_encode(self, shard: tuple[int, int], batch_size: int = 32) -> dict:
        """Encode every item of every cached, finite source that is not cached yet (this process's
        share: items ``k, k+n, ...`` of shard ``(k, n)``)."""
        from ..errors import InputError, ResourceError
        from .recipe import encode_missing

        run = self.run
        k, n = shard
        t0 = time.perf_counter()
        counts = {"encoded": 0, "cached": 0, "skipped": 0}
        total = sum(len(range(k, src.size(), n)) for src in run.sources
                    if src.index in run.caches and src.size() is not None)
        if not run.caches:
            run.notice("no [[data]] source has a cache folder: nothing to pre-encode")
        autocast = self.ctx.vae_autocast
        done = 0
        for src in run.sources:
            cache, size = run.caches.get(src.index), src.size()
            if cache is None or size is None:
                continue
            pending = []
            for item in range(k, size, n):
                done += 1
                try:
                    fresh = cache.get(item, src.media(item) or "") is not None  # (of the same file)
                except (InputError, ResourceError):
                    fresh = False
                if fresh:
                    counts["cached"] += 1
                    continue
                try:
                    sample = run.dataset.load(src, item)
                except (InputError, ResourceError):
                    sample = None
                if sample is None or sample.latent is not None or not sample.has_visual:
                    counts["skipped" if sample is None else "cached"] += 1
                    continue
                self.report_cache_notes([sample])
                pending.append(sample)
                if len(pending) >= batch_size:
                    encode_missing(pending, self.vae, run.device, autocast)
                    counts["encoded"] += len(pending)
                    pending = []
                    run.emit("encode", done=done, total=total, **counts)
            if pending:
                encode_missing(pending, self.vae, run.device, autocast)
                counts["encoded"] += len(pending)
            run.emit("encode", done=done, total=total, **counts)
        seconds = time.perf_counter() - t0
        return {"shard": [k, n], "items": total, **counts, "seconds": round(seconds, 2),
                "items_per_s": round(counts["encoded"] / seconds, 2) if seconds > 0 else None}


def check_training_memory(spec, cfg: TrainConfig) -> None:
    """Refuse a spec whose float32 weights, gradients and two AdamW moments (16 bytes a
    parameter) exceed the memory limit, before any of it is allocated."""
    from ..runtime import check_memory

    params = spec.parameter_estimate()
    check_memory(params * 16 / 1e9, f"training a network of about {params / 1e9:.2f}B parameters "
                 f"({cfg.source}: model.spec / model.init_spec)", device="cpu",
                 advice="choose a smaller spec")
