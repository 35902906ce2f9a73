"""The training loop: one function, :func:`train`, for both stages, from-scratch runs and the VAE.

It runs the same on one CPU, one GPU or many processes under ``accelerate launch`` (DDP): each
process draws its own disjoint share of the sample stream, gradients are averaged by DDP, and
process 0 writes checkpoints, metrics and previews. Everything random in a step comes from a
generator seeded with (seed, step, process), so a run resumed from a checkpoint continues
bit-identically (same step, same samples, same noise, same weights).

What a mode builds, computes, saves and previews is its :class:`~.objective.Objective`, chosen
once from the table keyed by ``mode``; the loop below only calls it.

Progress reaches the caller through ``progress(event: dict)``; nothing here prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import OutputError, UsageError, short
from ..media import append_text, atomic_output
from . import checkpoint as ckpt
from .accelerator import make_accelerator
from .checkpoint import LOCK_FILE as LOCK_FILE  # (the folder's lock lives with its checkpoints)
from .control import LogWindow, StopRequest, chunks, flat_config, peak_rss_mb, worker_init
from .data import INDEX_DIR, StepSampler, TrainingData, loader, make_sources, mix
from .objective import objective_for
from .params import weights_digest
from .schedule import lr_factor, repeated_items_notes, schedule_change, warmup_steps
from .schema import MAX_STEPS, TrainConfig

Progress = Callable[[dict], None]
STATE_FORMAT = 1
TRACKER_DIR, TRACKER_RUN = "logs", "train"  # accelerate trackers write under <output_dir>/logs/train


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
        cfg = self.cfg
        roles = cfg.roles()
        self.objective = objective_for(cfg, self)
        self.acc = make_accelerator(cfg, self.objective.find_unused_parameters(), self.output_dir / TRACKER_DIR)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.device = self.acc.device
        # torch's global generators, from (seed, process) for the run and the caller's put back after
        # (_release): torch seeds its own from the OS in each process, so two identical runs saved two
        # random states, the process's start one; a resume restores the saved one below
        self._rng_scope = contextlib.ExitStack()
        self._rng_scope.enter_context(self.seeded_global_rng("run"))

        # the output folder, and where to resume from
        if self.acc.is_main_process:
            try:  # (exists() itself fails on a name longer than the file system takes)
                self._created_output = not self.output_dir.exists()
                self.output_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # (mkdir's "File exists" for a file there read as the run folder existing)
                why = "it exists and is not a folder" if isinstance(e, FileExistsError) else e.strerror or e
                raise OutputError(f"cannot create output_dir '{self.output_dir}': {why}") from e
            if not os.access(self.output_dir, os.W_OK):
                raise OutputError(f"output_dir '{self.output_dir}' is read-only")
            self._lock = ckpt.hold_folder(self.output_dir)  # before cleaning: another run's staging is not ours
            for p in ckpt.clean_partials(self.output_dir):
                self.notice(f"removed the incomplete checkpoint '{p.name}' left by an earlier crash")
        self.acc.wait_for_everyone()
        self.resumed_from = ckpt.resume_point(self.output_dir, self.resume, self.notice)
        state = None
        if self.resumed_from is not None:  # (another run's would be trained on, its checkpoints pruned: refused)
            ckpt.check_same_run(self.output_dir, cfg.model)
            state = ckpt.read_state(self.resumed_from, cfg.mode, STATE_FORMAT)
        self.start_step = int(state["step"]) if state else 0
        self.elapsed_before = float(state.get("elapsed", 0.0)) if state else 0.0
        self._saved_window = state.get("log_window") if state else None
        if self._saved_window and LogWindow.logged_at(self.output_dir / "metrics.jsonl", self.start_step):
            self._saved_window = None  # its steps are in the line a stop wrote after the save

        # the model
        module, groups, self.report = self.objective.build(state)
        optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                                      weight_decay=cfg.optim.weight_decay)
        self.module, self.optimizer = self.acc.prepare(module, optimizer)
        self.ema = None
        if cfg.ema.decay > 0:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.objective.ema_parameters(), decay=cfg.ema.decay,
                                update_after_step=cfg.ema.start_step)
            if state is not None and state.get("ema"):
                ckpt.restore_ema(self.ema, state["ema"], self.resumed_from, self.objective)
        if state is not None:
            wanted = ckpt.optimizer_settings(self.optimizer.param_groups)
            ckpt.restore_optimizer(self.optimizer, state["optimizer"], self.resumed_from / ckpt.STATE_FILE)
            if settings := ckpt.restore_settings(self.optimizer.param_groups, wanted):
                self.notice(settings)
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
            make_sources(cfg, self.objective.spec, index_dir)  # builds the file indexes once
        self.acc.wait_for_everyone()
        self.sources = make_sources(cfg, self.objective.spec, index_dir)  # (the held-out ones too: caches)
        self.train_sources = [s for s in self.sources if s.spec.split != "eval"]
        self.batch_roles = {r: cfg.batch.of(r) for r in roles}
        self.max_steps = self._total_steps()
        self.warmup = warmup_steps(cfg.optim, self.max_steps)
        self.caches = self.objective.prepare_data()
        self.dataset = TrainingData(cfg, self.train_sources, self.caches)
        for message in repeated_items_notes(self.batch_roles, self.dataset.role_length, self.world, cfg.optim.grad_accumulation):
            self.notice(message)
        if cfg.run.eval_every and len(self.train_sources) == len(self.sources):
            self.notice("run.eval_every without a held-out source: eval_loss is the loss of one fixed batch of "
                        "training items (add a [[data]] source with split = \"eval\" for a held-out loss)")

        if state is not None and self.acc.is_main_process:
            changed = schedule_change(cfg.optim, self.start_step, state.get("max_steps"), self.max_steps,
                                      self.optimizer.param_groups[0]["base_lr"])  # (the metrics' lr)
            for message in ckpt.order_changes(state, json.dumps(cfg.data_signature(), sort_keys=True),
                                              [s.size() for s in self.train_sources], self.world) + [changed]:
                if message:
                    self.notice(message)
        if self.acc.is_main_process:
            self._write_run_files()
        if cfg.run.log_with:  # accelerate's trackers (process 0 only), beside metrics.jsonl
            # TensorBoard appends to the same folder: what a crashed run logged after the checkpoint we
            # resume from is purged, as metrics.jsonl's lines are (it showed those steps twice)
            # (a run starting afresh purges it all: the step-0 eval of a run killed before its first save)
            purge = {"tensorboard": {"purge_step": self.start_step + 1 if self.resumed_from else 0}}
            self.acc.init_trackers(TRACKER_RUN, config=flat_config(cfg), init_kwargs=purge)

    def _total_steps(self) -> int:
        o = self.cfg.optim
        if o.max_steps is not None:
            return int(o.max_steps)
        dataset = TrainingData(self.cfg, self.train_sources)
        length = dataset.role_length(o.epoch_role)
        if length is None:
            raise UsageError(f"{self.cfg.source}: optim.epochs: role '{o.epoch_role}' has an endless source")
        per_step = self.cfg.batch.of(o.epoch_role) * self.world * o.grad_accumulation
        steps = max(1, math.ceil(length * o.epochs / per_step))
        if steps > MAX_STEPS:
            raise UsageError(f"{self.cfg.source}: optim.epochs: {o.epochs:g} passes over {length} items make {steps} "
                             f"steps, more than {MAX_STEPS}")
        return steps

    def _write_run_files(self) -> None:
        info = {"config": self.cfg.to_dict(), "source": self.cfg.source, "world_size": self.world,
                "max_steps": self.max_steps}
        ckpt.write_run_config(self.output_dir, info, self.start_step, self.resumed_from is not None)
        metrics = self.output_dir / "metrics.jsonl"
        if metrics.exists() or metrics.is_symlink():  # drop lines written after the checkpoint we resume from
            if not metrics.is_file():
                raise OutputError(f"'{metrics}' is not a regular file")
            keep = []  # (none without one: a run killed before its first save had written its step-0 eval)
            lines = metrics.read_text(encoding="utf-8", errors="replace").splitlines() if self.resumed_from else []
            for line in lines:
                try:  # a damaged line (not JSON, no step, a step of null or 1e400) is dropped
                    if int(json.loads(line).get("step", 0)) <= self.start_step:
                        keep.append(line)
                except (ValueError, AttributeError, TypeError, OverflowError, RecursionError):
                    continue
            with atomic_output(metrics, overwrite=True) as tmp:
                tmp.write_text("".join(k + "\n" for k in keep))

    # -- one step --
    def _generator(self, *tag) -> torch.Generator:
        return torch.Generator().manual_seed(mix(self.cfg.seed, *tag, self.rank))

    @contextlib.contextmanager
    def seeded_global_rng(self, *tag, rank: int | None = None):
        """torch's global generators seeded from (seed, tag, process) for the duration, the caller's
        state put back after: what draws from them in a forward (dropout: ``[lora] dropout``) is
        then fixed by the step like the rest of it, so a resumed run (whose data loader and model
        set-up draw from the global generator) and a run after another in one process repeat it."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(mix(self.cfg.seed, "global", *tag, self.rank if rank is None else rank))
            yield

    def _set_lr(self, step: int) -> float:
        f = lr_factor(step, self.max_steps, self.warmup, self.cfg.optim.schedule, self.cfg.optim.min_lr_ratio)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * f
        return self.optimizer.param_groups[0]["lr"]

    def _forward(self, samples, generator, backward: bool = False) -> dict:
        """The step's loss terms (detached); with ``backward`` the gradients are accumulated too."""
        return self.objective.forward(samples, generator, backward)

    @contextlib.contextmanager
    def ema_weights(self):
        """The EMA weights in place of the trained ones for the duration (a no-op without EMA)."""
        if self.ema is None:
            yield
            return
        params = self.objective.ema_parameters()
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
        so that training reads latents instead of running the VAE. The output folder is held
        while it runs, and released however it ends (as :meth:`run`)."""
        try:
            self.setup()
            return self.objective.pre_encode(shard if shard is not None else (self.rank, self.world), batch_size)
        finally:
            self._release()

    def _digest(self, samples) -> str:
        h = hashlib.sha1()
        for s in samples:
            h.update(f"{s.role}:{s.source}:{s.item};".encode())
        return h.hexdigest()[:16]

    # -- saving --
    def save(self, step: int) -> Path | None:
        self.acc.wait_for_everyone()
        self._check_finite(step)
        self._window_state = self.window.state(self.acc, self.world) if getattr(self, "window", None) else None
        path = None
        self.objective.before_save()
        if self.acc.is_main_process:
            path = ckpt.write_checkpoint(self.output_dir, step, lambda dst: self._write(dst, step),
                                         keep_last=self.cfg.run.keep_last)
            self.emit("checkpoint", step=step, path=str(path))
        self.acc.wait_for_everyone()
        return path if path is not None else self.output_dir / ckpt.checkpoint_name(step)

    def _check_finite(self, step: int) -> None:
        """The weights to save are finite: the loss is checked before each update, so the last
        update of a run (a learning rate that overflows, a corrupt optimizer state) is seen only here."""
        for name, p in self.module.named_parameters():
            if p.requires_grad and not bool(torch.isfinite(p.detach()).all()):
                raise UsageError(f"the weights became non-finite at step {step} ({short(name, 60)}): no checkpoint "
                                 "was written; lower the learning rate (optim.lr / optim.groups) or resume from an "
                                 "earlier checkpoint")

    def _write(self, dst: Path, step: int) -> None:
        self.objective.write(dst, step)
        state = {
            "format": STATE_FORMAT, "mode": self.cfg.mode, "step": step,
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "data_signature": json.dumps(self.cfg.data_signature(), sort_keys=True),
            "data_sizes": [s.size() for s in self.train_sources],  # items per source (None: endless)
            "world_size": self.world, "max_steps": self.max_steps,
            "elapsed": self.elapsed_before + (time.perf_counter() - self.t_start),
            "ema": ckpt.ema_state(self.ema) if self.ema is not None else None,  # (its weights: in ema/)
            "log_window": self._window_state,  # the steps since the last metrics line (LogWindow)
        }
        torch.save(state, dst / ckpt.STATE_FILE)

    # -- previews --
    def sample_images(self, step: int) -> list[str]:
        out_dir = self.output_dir / "samples"
        out_dir.mkdir(exist_ok=True)
        return self.objective.preview(step, out_dir)

    # -- eval_loss --
    eval_set: list | None = None  # what eval_loss covers (built at its first use)
    eval_skips_said = False

    def eval_metrics(self) -> dict[str, float]:
        """eval_loss and each loss term's eval_<term>, over the held-out sources, else one fixed
        batch (:mod:`.evaluation`)."""
        from .evaluation import eval_metrics

        return eval_metrics(self)

    def _evaluate(self, path: Path, step: int) -> None:
        ev = self.eval_metrics()
        self._append(path, {"step": step, **ev})
        self._track(ev, step)
        self.emit("eval", step=step, **ev)

    # -- the loop --
    _created_output = False

    def _remove_new_output(self) -> None:
        """A run that fails before its first step leaves no folder it created (a data index, a config)."""
        if self._created_output and self.output_dir.is_dir() and not ckpt.list_checkpoints(self.output_dir):
            shutil.rmtree(self.output_dir, ignore_errors=True)

    def run(self) -> TrainResult:
        try:
            try:
                self.setup()
            except BaseException:
                self._remove_new_output()
                raise
            try:
                return self._train()
            except Exception:  # unusable data, a loss that became inf: a folder this run made and left
                self._remove_new_output()  # without a checkpoint goes (an interruption saves one)
                raise
        finally:
            self._release()

    _lock = None  # the key of the output_dir's lock, held while the run lasts
    _rng_scope: contextlib.ExitStack | None = None  # the run's own global random state (setup to _release)
    result: TrainResult | None = None  # set once the run has ended and its last checkpoint is written

    def _release(self) -> None:
        """Free the output folder for the next run (in this process too): its lock file closed, the
        caller's random state back."""
        ckpt.release_folder(self._lock)
        self._lock = None
        if self._rng_scope is not None:
            self._rng_scope.close()
            self._rng_scope = None

    def _train(self) -> TrainResult:
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
        n_micro = cfg.optim.grad_accumulation
        sampler = StepSampler(self.batch_roles, step * n_micro, stop_at * n_micro, self.rank, self.world)
        data = loader(self.dataset, sampler, cfg.run.num_workers, worker_init_fn=worker_init,
                      seed=mix(cfg.seed, "workers", self.rank))
        interrupted = False
        last_loss = None
        saved = None  # the step of the last checkpoint written by this loop
        window = self.window = LogWindow(self.objective.log_keys)
        window.restore(self._saved_window, self.rank)
        last = None  # (lr, grad_norm, data digest) of the last step run here
        rate = None
        samples_written: list[str] = []
        if step == 0 and cfg.run.eval_every:
            self._evaluate(metrics_path, 0)
        with StopRequest() as stop:
            t_prev = time.perf_counter()
            for chunk in chunks(data, n_micro):
                if self._should_stop(stop):
                    interrupted = True
                    break
                lr = self._set_lr(step)
                out, grad_norm = self._step(step, chunk)
                samples = [s for micro in chunk for s in micro]
                step += 1
                now = time.perf_counter()
                dt, t_prev = now - t_prev, now
                rate = 1.0 / dt if rate is None else 0.9 * rate + 0.1 / max(dt, 1e-9)
                loss = float(out["loss"].detach())
                if not math.isfinite(loss):
                    raise UsageError(f"the loss became {loss} at step {step}: lower the learning rate "
                                     "(optim.lr / optim.groups) or check the data")
                last_loss = loss
                window.add(out, sum(s.skipped for s in samples))
                self._report_skips(samples)
                last = (lr, grad_norm, self._digest(samples))
                self.emit("step", step=step, max_steps=self.max_steps, loss=loss, lr=lr, steps_per_s=rate,
                          eta_s=(stop_at - step) / rate if rate else None)
                if step % cfg.run.log_every == 0 or step == stop_at:
                    self._log(metrics_path, step, window, *last)
                if cfg.run.eval_every and step % cfg.run.eval_every == 0:
                    self._evaluate(metrics_path, step)
                if cfg.run.sample_every and step % cfg.run.sample_every == 0 and self.acc.is_main_process:
                    paths = self.sample_images(step)
                    samples_written += paths
                    self.emit("samples", step=step, paths=paths)
                if cfg.run.save_every and step % cfg.run.save_every == 0 and step < stop_at:
                    final, saved = self.save(step), step
                if step < stop_at and self._should_stop(stop):  # (after the last step: the run is complete)
                    interrupted = True
                    break
            # still under the stop handler: a signal from here on waits for the final checkpoint and
            # the result (it used to interrupt the save, or report a complete run as interrupted)
            if not interrupted and step < stop_at:
                interrupted = True  # the data ended early: cannot happen with endless streams
            if interrupted and window.n and last is not None:  # the steps since the last line are not lost
                self._log(metrics_path, step, window, *last)
            if step == self.start_step and self.resumed_from is not None:
                final = self.resumed_from  # nothing new to save
            elif step != saved:  # a stop right after a periodic save: that checkpoint is the final one
                final = self.save(step)
            seconds = time.perf_counter() - self.t_start
            done = step - self.start_step
            if self.world > 1:
                self._write_rank_digest(step)
            result = TrainResult(self.output_dir, final, step, self.max_steps, interrupted,
                                 seconds, done / seconds if seconds > 0 else 0.0, last_loss, peak_rss_mb(),
                                 self.resumed_from, self.world, samples_written)
            self.acc.end_training()
            if stop.requested and not interrupted:
                self.notice(f"a stop signal came after the last step: the run is complete ({final})")
            self.result = result  # complete: a signal after this changes nothing (the command's caller reads it)
            self.emit("done", **result.to_dict())
        return result

    def _step(self, step: int, chunk: list) -> tuple[dict, object]:
        """One optimizer step over ``chunk`` (optim.grad_accumulation micro-batches, accelerate's
        accumulation: the gradients of each loss / n add up, DDP syncs on the last only). Returns
        the loss terms averaged over the micro-batches, and the gradient norm before clipping."""
        outs, grad_norm = [], None
        for j, samples in enumerate(chunk):
            generator = self._generator("step", step) if len(chunk) == 1 else self._generator("step", step, j)
            with self.acc.accumulate(self.module), self.seeded_global_rng("step", step, j):
                outs.append(self._forward(samples, generator, backward=True))
                if self.cfg.optim.grad_clip > 0 and self.acc.sync_gradients:
                    grad_norm = self.acc.clip_grad_norm_(self.module.parameters(), self.cfg.optim.grad_clip)
                self.optimizer.step()  # (accelerate's optimizer steps only on the syncing micro-batch)
                self.optimizer.zero_grad(set_to_none=True)
        if not self.acc.sync_gradients:
            raise RuntimeError(f"gradient accumulation out of step at step {step}: {len(chunk)} micro-batch(es)")
        if self.ema is not None:
            self.ema.step(self.objective.ema_parameters())
        if len(outs) == 1:
            return outs[0], grad_norm
        return {k: sum(o[k] for o in outs) / len(outs) for k in outs[0]}, grad_norm

    MAX_SKIP_NOTICES = 5

    def _report_skips(self, samples) -> None:
        """Why items were passed over (unreadable media, a bad record): the first few reasons."""
        said = self.__dict__.setdefault("_skips_said", set())
        for s in samples:
            if s.skipped and s.skip_reason not in said and len(said) < self.MAX_SKIP_NOTICES:
                said.add(s.skip_reason)
                more = " (further ones: the 'skipped' counts in metrics.jsonl)" * (len(said) == self.MAX_SKIP_NOTICES)
                self.notice(f"an item was passed over for another: {s.skip_reason}{more}")

    def _should_stop(self, stop: StopRequest) -> bool:
        flag = bool(stop.requested)
        if self.world > 1:  # every process must stop at the same step
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            flag = bool(self.acc.gather(t).max() > 0)
        if flag:
            stop.requested = True
        return flag

    def _log(self, path: Path, step: int, window: LogWindow, lr: float, grad_norm, digest: str) -> None:
        n = max(window.n, 1)
        now = time.perf_counter()
        sums, skipped = window.totals(self.acc, self.world)  # every process's (each task's too), skips summed
        line = {"step": step, **{k: v / n for k, v in sums.items()}}
        line["lr"] = lr
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}
        if len(lrs) > 1:
            line["lrs"] = lrs
        if skipped:
            line["skipped"] = skipped  # unreadable or too small items passed over (by every process)
        if grad_norm is not None:
            line["grad_norm"] = float(grad_norm)
        line["steps_per_s"] = window.timed / max(now - window.t, 1e-9)
        line["seconds"] = self.elapsed_before + (now - self.t_start)
        line["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if torch.cuda.is_available() and self.device.type == "cuda":
            line["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
        line["data"] = digest
        self._append(path, line)
        self.emit("log", **line)
        self._track({k: v for k, v in line.items() if isinstance(v, (int, float)) and k != "step"}, step)
        window.reset()

    def _track(self, values: dict, step: int) -> None:
        if self.cfg.run.log_with:
            self.acc.log(values, step=step)

    def _append(self, path: Path, line: dict) -> None:
        if self.acc.is_main_process:  # a full disk: no half line, an error naming the file
            append_text(path, json.dumps(line) + "\n")

    def _write_rank_digest(self, step: int) -> None:
        folder = self.output_dir / "rank-digests"
        folder.mkdir(exist_ok=True)
        record = {"rank": self.rank, "step": step, "sha256": weights_digest(self.objective.digest_target())}
        with atomic_output(folder / f"rank-{self.rank}.json", overwrite=True) as tmp:
            tmp.write_text(json.dumps(record) + "\n")


def train(cfg: TrainConfig, resume: bool = True, progress: Progress | None = None,
          stop_after: int | None = None, on_run: Callable[[Run], None] | None = None) -> TrainResult:
    """Run (or resume) the training run described by ``cfg``; see :mod:`showo2_cli.training`.
    ``on_run`` is given the :class:`Run` before it starts (its ``result`` is set once the run has
    ended and its last checkpoint is written, even if a signal then cuts the return short)."""
    run = Run(cfg, resume=resume, progress=progress, stop_after=stop_after)
    if on_run is not None:
        on_run(run)
    return run.run()
