"""eval_loss (``run.eval_every``): what a run reports as its evaluation loss, beside each loss term's.

With held-out sources (``[[data]]`` with ``split = "eval"``, never trained on) it covers every one
of their items; without one, one fixed batch of training items (the first step's of one process: a
steady probe of the fit, not a held-out loss; the run says so once). Each loss term of the training
line (``ntp``, ``flow``; a VAE run's ``l1``, ``l2``, ``kl``) has its mean over that data, ``eval_<term>``:
over every supervised token (``ntp``) and every flow element (``flow``) as a step's own terms are,
over the items for a VAE's. ``eval_loss`` combines them with the config's loss weights as each
step's ``loss`` does (``loss.ntp x eval_ntp + loss.flow x eval_flow``), so it sits on the training
loss's scale: held-out batches have one role each, and averaging their own losses had mixed flow
batches' and NTP batches' numbers into a figure no training line was comparable with. A term none
of the data has (no ``mmu`` item held out: no supervised token) is left out of the line and adds
nothing to eval_loss, as in a training step without it. Either way it is deterministic (each
batch's noise, flow times and caption dropout come from (seed, batch), the model in eval mode) and
the same number for any number of processes, which share the batches out.
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
    world``, ...): float64 (items, items passed over, then for each of the objective's ``log_keys``:
    the term's sum (its batch mean x its count) and its count: the batch's ``log_counts`` entry, else
    its items)."""
    if run.eval_set is None:
        run.eval_set = eval_batches(run)
    batches = run.eval_set
    keys = run.objective.log_keys
    counts = getattr(run.objective, "log_counts", {})
    total = torch.zeros(2 + 2 * len(keys), dtype=torch.float64)
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
                    total[1] += skipped
                continue
            # batch 0 draws what the fixed batch always drew on process 0
            with run.seeded_global_rng("eval", rank=i):
                out = run.objective.forward(samples, torch.Generator().manual_seed(mix(run.cfg.seed, "eval", i)), False)
            if i < len(batches):  # (a round past the end repeats a batch only to keep DDP in step)
                row = [len(samples), skipped]
                for k in keys:
                    n = float(out[counts[k]]) if k in counts else len(samples)
                    row += [float(out[k]) * n, n]
                total += torch.tensor(row, dtype=torch.float64)
    finally:
        run.module.train()
    return total


def eval_metrics(run: Run) -> dict[str, float]:
    """``eval_loss`` and ``eval_<term>`` for each loss term the data has (see the module's doc)."""
    total = eval_totals(run, run.rank, run.world)
    if run.world > 1:
        total = run.acc.reduce(total.to(run.device), reduction="sum").cpu()
    n, skipped, *parts = total.tolist()
    # (without a held-out source: the fixed batch's training items, which were called held-out)
    items = "held-out item(s)" if any(s.spec.split == "eval" for s in run.sources) else "item(s) of its fixed batch"
    if not n:
        raise InputError(f"{run.cfg.source}: eval_loss: none of the {int(skipped)} {items} could be read")
    if skipped and not run.eval_skips_said:
        run.eval_skips_said = True
        run.notice(f"eval_loss passes over {int(skipped)} {items} that could not be read")
    weights = run.objective.loss_weights()
    means = {k: parts[2 * j] / parts[2 * j + 1] for j, k in enumerate(run.objective.log_keys) if parts[2 * j + 1]}
    return {"eval_loss": sum(weights[k] * v for k, v in means.items()), **{f"eval_{k}": v for k, v in means.items()}}
