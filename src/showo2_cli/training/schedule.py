"""The learning-rate schedule of a training run: diffusers' schedules (linear warmup from 0, then
constant or half-cosine), and what a resumed run with another step total is told about it."""

from __future__ import annotations

import math


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


def warmup_steps(optim, total: int) -> int:
    """Warmup steps of a run of ``total`` steps: ``optim.warmup_ratio`` of it, else ``optim.warmup_steps``."""
    return int(optim.warmup_ratio * total) if optim.warmup_ratio is not None else optim.warmup_steps


def schedule_change(optim, step: int, saved_total, total: int, base_lr: float) -> str | None:
    """The notice for a run resumed at ``step`` whose step total is not the checkpoint's
    (``saved_total``): the schedule (cosine, warmup_ratio) is recomputed for the new total, so the
    rate jumps; or the run is already at or past its total. None when nothing changes."""
    if step >= total:
        return (f"the checkpoint is at step {step} and optim.max_steps is {total}: nothing left to train "
                "(raise optim.max_steps or --max-steps to continue)")
    if isinstance(saved_total, bool) or not isinstance(saved_total, int) or saved_total <= 0 or saved_total == total:
        return None

    def rate(steps: int) -> float:
        return base_lr * lr_factor(step, steps, warmup_steps(optim, steps), optim.schedule, optim.min_lr_ratio)

    before, now = rate(saved_total), rate(total)
    if before == now:
        return None
    return (f"the checkpoint's run had {saved_total} steps and this one has {total}: the learning-rate schedule "
            f"is recomputed for {total} (at step {step}: {now:.3g} instead of {before:.3g}), unlike an "
            "uninterrupted run")
