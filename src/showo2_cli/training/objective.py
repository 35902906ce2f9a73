"""What a training mode does, behind one interface: the :class:`Objective`.

The loop in :mod:`.trainer` knows nothing about Show-o2 or the VAE: it builds the accelerator,
the optimizer and the data stream, and asks the run's objective (picked once from
:data:`OBJECTIVES` by ``mode``) to build the model, run a step's forward, write a checkpoint's
model files and draw previews.

* ``"showo2"``: :class:`.showo2_objective.Showo2Objective` (the two-stage recipe of
  :mod:`.recipe`; full fine-tuning or a LoRA adapter)
* ``"vae"``: :class:`.vae_recipe.VaeObjective` (reconstruction + KL of :mod:`.vae_recipe`)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .schema import TrainConfig
    from .trainer import Run

# mode -> "module:class" (imported when chosen, so reading a config never imports torch)
OBJECTIVES = {
    "showo2": "showo2_cli.training.showo2_objective:Showo2Objective",
    "vae": "showo2_cli.training.vae_recipe:VaeObjective",
}


class Objective(Protocol):
    """One training mode. ``run`` (the :class:`~.trainer.Run`) gives the config, the accelerator,
    the device, the data and the prepared module; the objective keeps what it builds."""

    log_keys: tuple[str, ...]  # the loss terms its forward returns besides "loss" (metrics lines)
    # term -> the count its forward returns that the term is a mean over (eval_<term> weights its
    # batches by it); a term not named is a mean over the batch's items
    log_counts: dict[str, str]
    spec: object  # the network's ModelSpec once built (None for a VAE alone): the data sources read it

    def __init__(self, run: Run) -> None: ...

    def loss_weights(self) -> dict[str, float]:
        """Each of ``log_keys``' weight in ``loss`` (the config's): eval_loss combines the held-out
        terms' means so."""

    def find_unused_parameters(self) -> bool:
        """Whether DDP must look for parameters without gradients (asked before anything is built)."""

    def build(self, state: dict | None) -> tuple[torch.nn.Module, list[dict], dict]:
        """The model, fresh or from ``run.resumed_from`` (whose trainer state is ``state``):
        returns the loss module to prepare, its AdamW parameter groups and the group report."""

    def prepare_data(self) -> dict:
        """After ``run.sources`` exist: the per-source latent caches ``{source index: LatentCache}``."""

    def forward(self, samples: list, generator: torch.Generator, backward: bool) -> dict:
        """One step's loss terms (detached); with ``backward`` the gradients are accumulated too."""

    def ema_parameters(self) -> list:
        """The parameters an EMA follows."""

    def read_ema(self, folder: Path) -> list:
        """The EMA weights a checkpoint's ``ema/`` folder (``folder``) holds, as tensors in the order
        of :meth:`ema_parameters` (a resume reads them there, not from a second copy in the state)."""

    def digest_target(self) -> torch.nn.Module:
        """The module whose weights every process must agree on (the rank digests)."""

    def before_save(self) -> None:
        """Runs on every process before a checkpoint is written (e.g. refitting statistics)."""

    def write(self, dst: Path, step: int) -> None:
        """Write the model files of a checkpoint into the new folder ``dst`` (process 0 only)."""

    def preview(self, step: int, out_dir: Path) -> list[str]:
        """Write preview images for ``step`` into ``out_dir``; returns their paths."""

    def pre_encode(self, shard: tuple[int, int], batch_size: int) -> dict:
        """Fill the latent caches (``--pre-encode``), or raise a UsageError where there are none."""


def objective_for(cfg: TrainConfig, run: Run) -> Objective:
    """The objective of ``cfg.mode`` for ``run``."""
    module, _, name = OBJECTIVES[cfg.mode].partition(":")
    return getattr(importlib.import_module(module), name)(run)
