"""The gloo process group of a launched run (``accelerate launch``, torchrun): the processes of
:mod:`~showo2_cli.processes` joined over torch.distributed for what they must agree on (a drawn
seed, the whole run's outputs checked before any is written, what each wrote): :func:`launch_group`
and its :class:`LaunchGroup`, the rendezvous (:func:`join_launch`, with its own wait and one-line
errors) and the collectives' long wait (:data:`LAUNCH_WAIT`). torch.distributed is imported where
it is used; :mod:`showo2_cli.runtime` re-exports these names.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress

from .environment import env_seconds
from .errors import UsageError
from .processes import RENDEZVOUS_ENV, RENDEZVOUS_WAIT, launch_env, launch_rendezvous, process_rank

#: Seconds a launch's processes wait for each other (gloo's timeout, 30 minutes by default, would
#: end a run whose shares take longer); a week. Joining (the rendezvous) has its own, shorter wait.
LAUNCH_WAIT = 7 * 24 * 3600


@contextmanager
def launch_group():
    """The processes of a launch (``accelerate launch`` / torchrun: WORLD_SIZE, RANK, MASTER_ADDR,
    MASTER_PORT), joined over gloo for what they must agree on (a drawn seed, the whole run's
    outputs checked before any is written, what each wrote): yields a :class:`LaunchGroup`, or None
    for one process (or no launcher's rendezvous). accelerate's ``PartialState`` does not join CPU
    processes started with ``--multi_gpu``, so torch.distributed is used directly, and left as it
    was found. Its collectives may wait for another process's whole share of a run (hours of
    video): their timeout is :data:`LAUNCH_WAIT`, and the launcher ends the processes when one fails.
    Joining waits at most ``$SHOWO2_RENDEZVOUS_SECONDS`` (:func:`join_launch`)."""
    rank, world = process_rank()
    if not launch_rendezvous():
        yield None
        return
    import torch.distributed as dist

    joined = not dist.is_initialized()
    if joined:
        join_launch(rank, world)
    try:
        yield LaunchGroup(rank)
    finally:
        if joined:
            dist.destroy_process_group()


def join_launch(rank: int, world: int) -> None:
    """Join the launch's gloo group at MASTER_ADDR:MASTER_PORT, as ``init_process_group`` does
    (torch's ``env://`` rendezvous: process 0 serves the store, the others connect, torchrun's agent
    store used where it runs one), but with two timeouts, as torchrun keeps its join timeout apart
    from the collectives': the rendezvous waits ``$SHOWO2_RENDEZVOUS_SECONDS`` (default
    :data:`~showo2_cli.processes.RENDEZVOUS_WAIT`) for every process to arrive, the collectives
    after it :data:`LAUNCH_WAIT`. A rendezvous that fails (nothing listening at a hand-set or
    unreachable MASTER_ADDR, processes that never came, a port in use) is a UsageError naming the
    address, not a week's wait.
    """
    import datetime

    import torch.distributed as dist

    wait = min(env_seconds(RENDEZVOUS_ENV, RENDEZVOUS_WAIT), LAUNCH_WAIT)
    address = f"{os.environ.get('MASTER_ADDR', '').strip()}:{launch_env('MASTER_PORT', 1, 65535)}"
    try:
        with _native_stderr_held():  # torch's C++ retry lines, each with a stack trace: said in one line
            store, _rank, _world = next(dist.rendezvous("env://", rank, world,
                                                        timeout=datetime.timedelta(seconds=wait)))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=LAUNCH_WAIT))
    except (RuntimeError, ValueError, OSError) as e:  # torch's DistStoreError, DistNetworkError
        if dist.is_initialized():
            dist.destroy_process_group()
        text = str(e).lower()
        if "address already in use" in text or "eaddrinuse" in text:
            why = f"cannot listen at {address} for the launch: the port is in use"
        elif rank == 0:
            why = (f"the launch's other {world - 1} process(es) did not join at {address} within {wait:g} s "
                   f"({RENDEZVOUS_ENV} sets the wait)")
        else:
            why = (f"no launch answered at {address} (MASTER_ADDR:MASTER_PORT) within {wait:g} s "
                   f"({RENDEZVOUS_ENV} sets the wait)")
        raise UsageError(f"process {rank} of {world}: {why}: start every process of the launch, or unset "
                         "WORLD_SIZE and RANK to run alone") from e
    store.set_timeout(datetime.timedelta(seconds=LAUNCH_WAIT))  # joined: from now on the long wait


@contextmanager
def _native_stderr_held(most: int = 1 << 20):
    """Hold back what native code writes to file descriptor 2 while the block runs (torch's c10d
    logs each failed connection try with a C++ stack trace): written out after a block that
    succeeded (the last ``most`` bytes), dropped after one that raised (its error says it)."""
    import sys
    import tempfile

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (a closed stderr): nothing to hold
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        raised = True
        try:
            yield
            raised = False
        finally:
            with suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not raised:
                with suppress(OSError):
                    size = held.seek(0, 2)
                    held.seek(max(0, size - most))
                    os.write(2, held.read())


class LaunchGroup:
    def __init__(self, rank: int):
        self.rank = rank

    def shared(self, value):
        """Process 0's ``value``, in every process."""
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait until every process is here (each has checked; none writes before)."""
        import torch.distributed as dist

        dist.barrier()

    def gathered(self, value) -> list | None:
        """Every process's ``value`` (a small picklable one), in process 0 as a list in rank order
        (None in the others), once every process has come here. The wait for the others (their
        shares of the run) polls, so Ctrl-C or the launcher's SIGTERM ends it at once (gloo's
        blocking wait would hold the signal until the last process came)."""
        import time

        import torch.distributed as dist

        arrived = dist.barrier(async_op=True)
        while not arrived.is_completed():
            time.sleep(0.05)
        arrived.wait()
        everyone = [None] * dist.get_world_size() if self.rank == 0 else None
        dist.gather_object(value, everyone, dst=0)
        return everyone
