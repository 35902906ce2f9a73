"""The processes of a launched run (``accelerate launch``, torchrun): which one this is, how
many there are, whether they meet at a rendezvous, and which share of a run's outputs each makes.

Read from the launcher's variables (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and
checked as options are: a value set by hand that is no launcher's is one line naming it. Torch-free
(the command line asks before torch loads); :func:`showo2_cli.process_group.launch_group` joins them.
"""

from __future__ import annotations

import os

from .errors import UsageError, short

#: How long a launch's processes wait to join each other at MASTER_ADDR:MASTER_PORT (seconds; the
#: rendezvous alone: their collectives wait runtime.LAUNCH_WAIT); torchrun's join timeout, 600 s
RENDEZVOUS_ENV = "SHOWO2_RENDEZVOUS_SECONDS"
RENDEZVOUS_WAIT = 600.0


def launch_env(name: str, low: int, high: int | None = None) -> int | None:
    """The launch variable ``name`` (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_PORT) as a whole number
    in ``low``..``high``, None when unset or empty; anything else is a UsageError naming it (a
    value set by hand, not by a launcher, ran the wrong share of a run or failed deep inside)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw) if raw.lstrip("+-").isdigit() else None
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise UsageError(f"{name} must be a whole number {bound}, got '{short(raw)}'")
    return value


def process_rank() -> tuple[int, int]:
    """(rank, world size) under `accelerate launch` / torchrun (WORLD_SIZE and RANK, both set as
    launchers set them), else (0, 1). WORLD_SIZE of 2 or more with RANK unset or not below it is a
    UsageError naming the variable (each process would run the wrong share of the run)."""
    world = launch_env("WORLD_SIZE", 1) or 1
    if world == 1:
        return 0, 1
    rank = launch_env("RANK", 0, world - 1)
    if rank is None:
        raise UsageError(f"WORLD_SIZE={world} is set but RANK is not: a launch sets both "
                         "(accelerate launch, torchrun), else unset WORLD_SIZE")
    return rank, world


def launch_rendezvous() -> bool:
    """Whether this process is one of a launch's several with the launcher's rendezvous to join
    (MASTER_ADDR and MASTER_PORT, as ``accelerate launch`` and torchrun set them; a MASTER_PORT
    that is no port is a UsageError naming it)."""
    if process_rank()[1] == 1 or not os.environ.get("MASTER_ADDR", "").strip():
        return False
    return launch_env("MASTER_PORT", 1, 65535) is not None


def process_share(total: int, batch_size: int, rank: int, world: int) -> range:
    """The outputs of a run (positions in the one-process order: prompt by prompt, ``-n`` each)
    that process ``rank`` of ``world`` makes: one contiguous share, none larger than
    ceil(total / world) (as accelerate's ``split_between_processes``). The shares are cut at the
    one-process run's batch boundaries (every ``batch_size`` outputs) where such a cut keeps them
    that even: each output is then computed in the same batch as one process computes it, bit for
    bit. Else they are cut evenly by output (the first ``total % world`` take one more) and a batch
    split between two processes computes its outputs in smaller batches (float rounding only)."""
    largest = -(-total // world)
    whole = largest // batch_size * batch_size  # whole batches within the even share
    if whole and total - whole * (world - 1) <= largest:
        start = min(rank * whole, total)
        return range(start, total if rank == world - 1 else min(start + whole, total))
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))
