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


def repeated_items_notes(batch_roles: dict[str, int], role_length, world: int, grad_accumulation: int) -> list[str]:
    """What a run whose step takes more items of a role than its data holds (``role_length(role)``, None
    when endless) is told at its start: each step repeats items, as the sampler fills every batch to its
    size (Hugging Face's Trainer would give one short batch instead: the step's size, and so its loss's
    scale and its gradient noise, would then depend on how much data there is)."""
    notes = []
    for role, batch in batch_roles.items():
        per_step, length = batch * grad_accumulation * world, role_length(role) if batch else None
        if length and per_step > length:
            processes = f" x {world} processes" if world > 1 else ""
            notes.append(f"a step takes {per_step} {role} items (batch.{role} = {batch} x optim.grad_accumulation = "
                         f"{grad_accumulation}{processes}), more than the {length} of the data: each step repeats "
                         f"them, each about {per_step / length:.3g} times (batches are filled to their size)")
    return notes
