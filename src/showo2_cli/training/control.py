"""What runs around the training loop: stop requests (signals), peak memory, trackers, step chunks,
the window of steps a metrics line averages."""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import threading
import time

from ..errors import Showo2Error, UsageError
from ..launch import INTERRUPTS
from .schema import TrainConfig


class StopRequest:
    """SIGINT/SIGTERM/SIGHUP set a flag the loop polls (a checkpoint is saved); a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self.signal = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in INTERRUPTS:
                if sig == signal.SIGHUP and signal.getsignal(sig) in (None, signal.SIG_IGN):  # nohup: stays ignored
                    continue
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def worker_init(_worker_id: int) -> None:
    """Set up a data worker. It leaves stop signals to the training process, which saves and then
    shuts it down: a Ctrl-C, or a SIGTERM sent to the whole process group (GNU ``timeout``, Slurm's
    ``scancel``, ``kill -- -PGID``), reaches it too, and a worker killed by it stopped the run with
    "DataLoader worker ... is killed by signal" instead of a checkpoint. A SIGTERM still ends a
    worker whose training process is gone (killed: torch's workers can wait for ever to flush what
    they read), and it holds no copy of the run folder's lock (:func:`~.checkpoint.drop_inherited_holds`)."""
    from .checkpoint import drop_inherited_holds

    drop_inherited_holds()
    parent = os.getppid()

    def on_term(signum, frame):
        if os.getppid() != parent:  # orphaned: nobody will shut it down
            os._exit(128 + signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_term)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def check_trackers(cfg: TrainConfig) -> list[str]:
    """run.log_with, each tracker's package checked (accelerate would drop a missing one with a warning)."""
    import accelerate.utils as au

    for i, name in enumerate(cfg.run.log_with):
        if not getattr(au, f"is_{name}_available", lambda: False)():
            package = {"comet_ml": "comet-ml", "wandb": "'showo2[wandb]'"}.get(name, name)  # an extra where there is one
            raise UsageError(f"{cfg.source}: run.log_with[{i}]: '{name}' is not installed (pip install {package})")
    return list(cfg.run.log_with)


def flat_config(cfg: TrainConfig) -> dict:
    """The config as flat ``section.field`` scalars (what trackers store as hyper-parameters)."""
    out = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            for k, v in values.items():
                out[f"{section}.{k}"] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)
        elif isinstance(values, (int, float, str, bool)):
            out[section] = values
    return out


def worker_errors(items):
    """``items`` (a DataLoader's batches) with a library error raised in a loader worker given back with
    its own one-line message: torch re-raises it in the training process as its type with the text
    "Caught InputError in DataLoader worker process 0. Original Traceback (...)", the whole traceback
    (what the command line then printed as the error line), the message its last line."""
    try:
        yield from items
    except Showo2Error as e:
        text, name = str(e), type(e).__name__
        last = text.rstrip().splitlines()[-1] if text.startswith(f"Caught {name} in DataLoader worker") else ""
        if f"{name}: " not in last:
            raise
        raise type(e)(last.split(f"{name}: ", 1)[1]) from None


def chunks(items, n: int):
    """Consecutive lists of ``n`` items (a shorter last one is dropped: not a whole step); a loader
    worker's library error as :func:`worker_errors` gives it."""
    chunk = []
    for item in worker_errors(items):
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []


class LogWindow:
    """The steps since the last metrics line: their loss terms' sums, skipped items and count.

    Kept in every checkpoint's training state (:meth:`state`), so the first line after a resume
    covers the same steps as an uninterrupted run's (the steps between the last line and a
    checkpoint were dropped from every average after a crash)."""

    def __init__(self, keys):
        self.keys = ("loss", *keys)
        self.reset()

    def reset(self) -> None:
        self.sums = dict.fromkeys(self.keys, 0.0)
        self.n = self.timed = self.skipped = 0  # timed: the steps run by this process since t
        self.t = time.perf_counter()

    def add(self, out: dict, skipped: int) -> None:
        for k in self.keys:
            self.sums[k] += float(out[k].detach())
        self.n, self.timed, self.skipped = self.n + 1, self.timed + 1, self.skipped + skipped

    def totals(self, acc, world: int) -> tuple[dict, int]:
        """The sums averaged over the processes (each task's too), the skips summed (a collective:
        every process calls it)."""
        sums, skipped = dict(self.sums), self.skipped
        if world > 1:
            import torch

            t = torch.tensor([*sums.values(), float(skipped)], dtype=torch.float64, device=acc.device)
            *values, skipped = acc.reduce(t, reduction="sum").tolist()
            sums, skipped = {k: v / world for k, v in zip(self.keys, values, strict=True)}, int(skipped)
        return sums, skipped

    def state(self, acc, world: int) -> dict:
        sums, skipped = self.totals(acc, world)
        return {"n": self.n, "sums": sums, "skipped": skipped}

    def restore(self, saved, rank: int) -> None:
        """What :meth:`state` saved (ignored when absent or damaged: the window starts empty);
        the skips are counted once, by process 0."""
        if not isinstance(saved, dict) or not isinstance(saved.get("sums"), dict):
            return
        n, sums, skipped = saved.get("n"), saved["sums"], saved.get("skipped", 0)
        numbers = [sums.get(k) for k in self.keys]
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 10**9 or isinstance(skipped, bool) \
                or not isinstance(skipped, int) or not 0 <= skipped < 10**12 \
                or not all(isinstance(v, float) and math.isfinite(v) for v in numbers):
            return
        self.sums = dict(zip(self.keys, numbers, strict=True))
        self.n, self.skipped = n, skipped if rank == 0 else 0

    @staticmethod
    def logged_at(metrics, step: int) -> bool:
        """Whether ``metrics`` (a run's metrics.jsonl) holds a training line at ``step``: the window a
        checkpoint of that step saved was logged after it (a stop observed right after a periodic save
        writes its line then), so a resume starts an empty one. Restored, those steps were averaged
        into a second line (a stop at step 8, saved at 8: the resumed line at 10 covered steps 1-10,
        the stop's line at 8 steps 1-8). A damaged line counts as none."""
        if not os.path.isfile(metrics):  # (absent: nothing was logged; a FIFO is refused later)
            return False
        try:
            with open(metrics, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(row, dict) and row.get("step") == step and "loss" in row:
                        return True
        except OSError:
            return False
        return False
