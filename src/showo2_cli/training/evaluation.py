"""eval_loss (``run.eval_every``): what a run reports as its evaluation loss.

With held-out sources (``[[data]]`` with ``split = "eval"``, never trained on) it is the mean loss
over every one of their items, as Hugging Face's ``Trainer`` reports ``eval_loss`` over its
``eval_dataset``; without one, the loss of one fixed batch of training items (the first step's of
one process: a steady probe of the fit, not a held-out loss; the run says so once). Either way it
is deterministic (each batch's noise, flow times and caption dropout come from (seed, batch), the
model in eval mode) and the same number for any number of processes, which share the batches out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ..errors import InputError, ResourceError
from .data import TrainingData, mix, step_keys
from .records import RecordsChanged
from .schema import MAX_EVAL_ITEMS

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Run


def eval_batches(run: Run) -> list[list]:
    """What eval_loss covers, as batches of loaders (each gives a sample, or None when the item
    cannot be used): every item of the held-out sources, in order, in batches of their role's
    batch size; without one, the fixed batch of training items."""
    held_out = [s for s in run.sources if s.spec.split == "eval"]
    if not held_out:
        keys = step_keys(run.batch_roles, 0, 0, 1)
        return [[lambda k=k: run.dataset[k] for k in keys]]
    items = sum(src.size() for src in held_out)
    if items > MAX_EVAL_ITEMS:  # (a records file: a shapes source's size is checked with the config)
        raise InputError(f"{run.cfg.source}: eval_loss would cover {items:,} held-out items at each evaluation, more "
                         f"than {MAX_EVAL_ITEMS:,}: hold out a sample of them")
    data = TrainingData(run.cfg, held_out, run.caches)
    batches = []
    for src in held_out:
        loads = [lambda src=src, i=i: data.load(src, i) for i in range(src.size())]
        b = run.cfg.batch.of(src.spec.role)
        batches += [loads[i:i + b] for i in range(0, len(loads), b)]
    return batches


@torch.no_grad()
def eval_totals(run: Run, rank: int, world: int) -> torch.Tensor:
    """Process ``rank`` of ``world``'s share of :func:`eval_batches` (batches ``rank``, ``rank +
    world``, ...): float64 (sum of loss x items, items, items passed over)."""
    if run.eval_set is None:
        run.eval_set = eval_batches(run)
    batches = run.eval_set
    total = torch.zeros(3, dtype=torch.float64)
    rounds = math.ceil(len(batches) / world)  # every process runs as many forwards (DDP stays in step)
    run.module.eval()
    try:
        for r in range(rounds):
            i = r * world + rank
            samples, skipped = [], 0
            for get in batches[i % len(batches)]:
                try:
                    sample = get()
                except RecordsChanged:  # a held-out file edited since it was indexed: stop, as training does
                    raise
                except (InputError, ResourceError):
                    sample = None
                samples += [sample] if sample is not None else []
                skipped += sample is None
            if not samples:  # a batch none of whose items could be read: still counted as passed over
                if i < len(batches):
                    total[2] += skipped
                continue
            # batch 0 draws what the fixed batch always drew on process 0
            with run.seeded_global_rng("eval", rank=i):
                out = run.objective.forward(samples, torch.Generator().manual_seed(mix(run.cfg.seed, "eval", i)), False)
            if i < len(batches):  # (a round past the end repeats a batch only to keep DDP in step)
                total += torch.tensor([float(out["loss"]) * len(samples), len(samples), skipped], dtype=torch.float64)
    finally:
        run.module.train()
    return total


def eval_loss(run: Run) -> float:
    """The mean loss over :func:`eval_batches` (each batch's loss weighted by its items)."""
    total = eval_totals(run, run.rank, run.world)
    if run.world > 1:
        total = run.acc.reduce(total.to(run.device), reduction="sum").cpu()
    loss, n, skipped = total.tolist()
    # (without a held-out source: the fixed batch's training items, which were called held-out)
    items = "held-out item(s)" if any(s.spec.split == "eval" for s in run.sources) else "item(s) of its fixed batch"
    if not n:
        raise InputError(f"{run.cfg.source}: eval_loss: none of the {int(skipped)} {items} could be read")
    if skipped and not run.eval_skips_said:
        run.eval_skips_said = True
        run.notice(f"eval_loss passes over {int(skipped)} {items} that could not be read")
    return loss / n
