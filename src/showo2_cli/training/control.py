"""What runs around the training loop: stop requests (signals), peak memory, trackers, step chunks."""

from __future__ import annotations

import json
import resource
import signal
import sys
import threading

from ..errors import UsageError
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


def ignore_sigint(_worker_id: int) -> None:  # data workers: Ctrl-C is the main process's business
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / (1024.0 * 1024.0)


def check_trackers(cfg: TrainConfig) -> list[str]:
    """run.log_with, each tracker's package checked (accelerate would drop a missing one with a warning)."""
    import accelerate.utils as au

    for i, name in enumerate(cfg.run.log_with):
        if not getattr(au, f"is_{name}_available", lambda: False)():
            package = {"comet_ml": "comet-ml"}.get(name, name)
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


def chunks(items, n: int):
    """Consecutive lists of ``n`` items (a shorter last one is dropped: not a whole step)."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
