"""``showo2 train CONFIG``: the command-line face of :func:`showo2_cli.training.trainer.train`.

Register with ``app.command("train")(train)``; ``python -m showo2_cli.training CONFIG`` runs the
same command (that form is what ``accelerate launch -m`` and ``torchrun -m`` start).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from ..errors import Showo2Error, UsageError
from .schema import MAX_STEPS


class TrainingInterrupted(Showo2Error):
    """Ctrl-C (or SIGTERM): a checkpoint was saved where possible; exit code 130."""

    exit_code = 130
    kind = "interrupted"


def _parse_set(items: list[str] | None) -> dict:
    """``--set a.b=VALUE`` pairs; VALUE in TOML syntax (``1e-4``, ``true``, ``"text"``, ``[1, 2]``),
    anything unparsable is taken as a plain string."""
    from .config import toml_module

    tomllib = toml_module()

    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set expects FIELD=VALUE (e.g. optim.lr=1e-4), got '{item}'")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set: bad field name '{key}'")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out


def loss_text(value: float) -> str:
    """A loss as the log lines show it: four decimals, or four significant digits where those
    would print 0.0000 (a converged run's 1.2e-05; NaN and inf as Python writes them)."""
    return f"{value:.4f}" if value == 0 or not abs(value) < 5e-5 else f"{value:.3e}"


class _Renderer:
    """Training events on stderr: a rich progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, quiet: bool, json_mode: bool):
        # the CLI's one answer to "does stderr show a live display" (this module is train's CLI face)
        from ..cli.common import live_stderr, stderr_console

        self.quiet = quiet or json_mode
        self.progress = None
        self.task = None
        self.console = stderr_console()
        # a bar on a terminal that redraws lines; a pipe, a file or a dumb terminal (TERM=dumb) gets log lines
        self.tty = live_stderr()

    def line(self, text: str) -> None:
        if self.quiet:
            return
        if self.progress is not None:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            self.console.print(text, markup=False, highlight=False)

    def __call__(self, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "notice":
            self.line(f"note: {ev['message']}")
        elif kind == "start":
            groups = ", ".join(f"{k} {v['params'] / 1e6:.2f}M" for k, v in ev["groups"].items())
            where = f"resuming {ev['resumed_from']}" if ev.get("resumed_from") else "starting"
            self.line(f"{where} at step {ev['step']}/{ev['max_steps']} on {ev['world_size']} process(es), "
                      f"{ev['device']}, mixed precision {ev['mixed_precision']}; parameters: {groups}")
            if self.tty and not self.quiet:
                self._start_bar(ev["step"], ev["max_steps"])
        elif kind == "step":
            if self.progress is not None:
                loss = ev["loss"]
                self.progress.update(self.task, completed=ev["step"],
                                     stats=f"loss {loss_text(loss)}  lr {ev['lr']:.2e}  {ev['steps_per_s'] or 0:.2f} step/s")
        elif kind == "log":
            if not self.tty:
                parts = [f"step {ev['step']}", f"loss {loss_text(ev['loss'])}"]
                for k in ("ntp", "flow", "l1", "l2", "kl"):
                    if k in ev:
                        parts.append(f"{k} {loss_text(ev[k])}")
                parts += [f"lr {ev['lr']:.2e}", f"{ev['steps_per_s']:.2f} step/s"]
                if ev.get("skipped"):
                    parts.append(f"{ev['skipped']} item(s) skipped")
                self.line("  ".join(parts))
        elif kind == "eval":
            terms = [f"{k} {loss_text(v)}" for k, v in ev.items() if k.startswith("eval_")]
            self.line(f"step {ev['step']}: " + "  ".join(terms))
        elif kind == "checkpoint":
            self.line(f"saved {ev['path']}")
        elif kind == "samples":
            self.line(f"step {ev['step']}: wrote {len(ev['paths'])} preview image(s) to {Path(ev['paths'][0]).parent}")
        elif kind == "encode":
            if ev["done"] == ev["total"] or ev["encoded"] % 512 < 32:
                self.line(f"pre-encode: {ev['done']}/{ev['total']} items ({ev['encoded']} encoded, "
                          f"{ev['cached']} already cached, {ev['skipped']} unreadable)")
        elif kind == "done":
            self.close()

    def _start_bar(self, step: int, total: int) -> None:
        from ..cli.common import progress_bar

        self.progress = progress_bar(transient=False, stats=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=step, stats="")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def train(
    config: Annotated[Path, typer.Argument(help="Training config: .toml, .yaml or .json (see examples/).")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder (overrides output_dir).")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Total optimizer steps (overrides optim.max_steps/epochs).")] = None,
    stop_after: Annotated[int | None, typer.Option("--stop-after", help="Run at most N steps now, save a checkpoint and stop; the next call resumes.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the run folder's latest checkpoint (default); --no-resume refuses a folder that has one.")] = True,
    set_: Annotated[list[str] | None, typer.Option("--set", metavar="<key=value>", help="Override a config field, TOML value syntax: --set optim.lr=1e-4 (repeatable).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only validate the config and print it resolved.")] = False,
    pre_encode: Annotated[bool, typer.Option("--pre-encode", help="Only fill the latent caches (every [[data]] source with `cache` and a `size`) with the run's VAE, then stop; training then reads latents instead of running the VAE.")] = False,
    shard: Annotated[str | None, typer.Option("--shard", help="With --pre-encode: K/N encodes items K, K+N, ... (run N processes, K = 0..N-1, e.g. one per core); default: the accelerate rank/world.")] = None,
    json_mode: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout and nothing else.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No notices or progress on stderr.")] = False,
):
    """Train Show-o2 (stage 1, stage 2, from scratch), a LoRA adapter or a Wan VAE, as a config file describes.

    Runs unchanged under `accelerate launch` (one process per device; see the README).
    Ctrl-C saves a checkpoint and exits with code 130; running the command again resumes it.
    """
    from ..cli.common import emit, setup  # the CLI's one result writer (this module is train's CLI face)
    from .config import load_config

    setup(json_mode, quiet)
    overrides = _parse_set(set_)
    if output is not None:
        overrides["output_dir"] = str(output.resolve())
    if max_steps is not None:
        if not 1 <= max_steps <= MAX_STEPS:
            raise UsageError(f"--max-steps must be between 1 and {MAX_STEPS}, got {max_steps}")
        overrides["optim.max_steps"] = max_steps
        overrides["optim.epochs"] = None
    if stop_after is not None and not 1 <= stop_after <= MAX_STEPS:
        raise UsageError(f"--stop-after must be between 1 and {MAX_STEPS}, got {stop_after}")
    cfg = load_config(config, overrides=overrides)
    if check:
        emit({"config": str(config), "valid": True, "resolved": cfg.to_dict()},
             f"{config}: valid ({cfg.mode} mode, {len(cfg.data)} source(s), output {cfg.output_dir})")
        return

    from ..hub_vae import needs_vae_download

    if needs_vae_download(cfg.model.vae):  # a Hub repo id not cached: its VAE's files fetched now, announced
        from ..cli.common import fetch_vae_if_needed

        cfg.model.vae = str(fetch_vae_if_needed(cfg.model.vae))
    shard_kn = _parse_shard(shard) if shard is not None else None
    if shard_kn is not None and not pre_encode:
        raise UsageError("--shard is for --pre-encode")
    renderer = _Renderer(quiet, json_mode)
    if pre_encode:
        from .trainer import Run

        try:
            summary = Run(cfg, resume=True, progress=renderer).pre_encode(shard_kn)
        except KeyboardInterrupt:
            raise TrainingInterrupted("pre-encoding interrupted; the entries written so far are kept") from None
        finally:
            renderer.close()
        emit(summary, f"pre-encoded {summary['encoded']} item(s) in {summary['seconds']:.1f} s "
                      f"({summary['cached']} already cached, {summary['skipped']} unreadable; "
                      f"shard {summary['shard'][0]}/{summary['shard'][1]})")
        return

    from .control import StopRequest
    from .trainer import train as run_training

    start = time.perf_counter()
    runs = []
    try:
        result = run_training(cfg, resume=resume, progress=renderer, stop_after=stop_after, on_run=runs.append)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started, or after the run ended
        if not runs or runs[0].result is None:
            raise TrainingInterrupted("interrupted before a checkpoint could be saved") from None
        result = runs[0].result  # the run had ended and its checkpoint was written: the signal changes nothing
        if not result.interrupted:
            renderer.line(f"note: a stop signal came after the last step: the run is complete ({result.checkpoint})")
    finally:
        renderer.close()
    if result.interrupted:
        raise TrainingInterrupted(f"interrupted at step {result.step}/{result.max_steps}; saved "
                                  f"{result.checkpoint}; run the same command again to resume")
    if not _is_main():
        return
    with StopRequest():  # a complete run's result goes out whole; a signal now only sets a flag
        data = result.to_dict()
        data["wall_seconds"] = round(time.perf_counter() - start, 2)
        if not json_mode:
            loss = f", loss {loss_text(result.loss)}" if result.loss is not None else ""
            renderer.line(f"done at step {result.step}/{result.max_steps}{loss}, {result.steps_per_s:.2f} step/s, "
                          f"peak RSS {result.peak_rss_mb:.0f} MiB")
        # the path alone, as every command's output ($(showo2 train ...)); once out, a late signal keeps exit 0
        emit(data, f"{result.checkpoint}")


def _parse_shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        k_i, n_i = int(k), int(n)
    except ValueError:
        k_i, n_i = -1, 0
    if not sep or n_i < 1 or not 0 <= k_i < n_i or n_i > 4096:
        raise UsageError(f"--shard expects K/N with 0 <= K < N (e.g. 0/2), got '{text}'")
    return k_i, n_i


def _is_main() -> bool:
    try:
        from accelerate import PartialState

        return PartialState().is_main_process
    except Exception:
        return True
