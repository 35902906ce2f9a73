"""The accelerate set-up of a training run: which device, which mixed precision, and the
:class:`accelerate.Accelerator` built from them (with the checks a run makes before it builds
anything: a CUDA device asked for and missing, fp16 on a CPU, a sharded distributed type)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import UsageError
from .control import check_trackers
from .schema import TrainConfig

SHARDED = ("FSDP", "DEEPSPEED", "MEGATRON_LM")  # accelerate distributed types that shard weights/optimizer state


def pick_device(cfg: TrainConfig) -> bool:
    """True to run on CPU."""
    if cfg.run.device == "cpu":
        return True
    if cfg.run.device == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{cfg.source}: run.device: 'cuda' but no CUDA device is available")
        return False
    return not torch.cuda.is_available()


def mixed_precision(cfg: TrainConfig, cpu: bool) -> str:
    """``run.mixed_precision``, ``auto`` resolved (accelerate's environment, else bf16 on a CUDA
    device that has it, else none)."""
    mp = cfg.run.mixed_precision
    if mp != "auto":
        return mp
    env = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if env in ("no", "bf16", "fp16"):
        return env
    if not cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: TrainConfig, find_unused: bool, tracker_dir: Path):
    """The run's Accelerator (``find_unused``: DDP's ``find_unused_parameters``; the trackers of
    ``run.log_with`` write under ``tracker_dir``); TF32 set as ``run.tf32`` asks on a CUDA host."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cpu = pick_device(cfg)
    mixed = mixed_precision(cfg, cpu)
    if cpu and mixed == "fp16":
        raise UsageError(f"{cfg.source}: run.mixed_precision: fp16 needs a CUDA device; use bf16 or no on a CPU")
    trackers = check_trackers(cfg)
    acc = Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=cfg.optim.grad_accumulation,
                      log_with=trackers or None, project_dir=str(tracker_dir) if trackers else None,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused)])
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = cfg.run.tf32
        torch.backends.cudnn.allow_tf32 = cfg.run.tf32
    if acc.distributed_type.value in SHARDED:
        raise UsageError(f"accelerate's {acc.distributed_type.value} (sharded weights) is not supported by showo2 "
                         "train: its checkpoints are full weights and optimizer state written by process 0; use "
                         "DDP (examples/accelerate/), with [lora] and run.gradient_checkpointing to fit a GPU")
    return acc
