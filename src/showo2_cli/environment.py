"""Settings read from environment variables (torch-free): the memory limit of a job
(``$SHOWO2_MAX_MEMORY_GB``) and waits in seconds (a download's stall, a launch's rendezvous)."""

from __future__ import annotations

import math
import os

from .errors import UsageError, short

#: the memory limit for a job when ``--max-memory`` is not given (GB; 0: no limit)
MAX_MEMORY_ENV = "SHOWO2_MAX_MEMORY_GB"


def env_memory_limit() -> float | None:
    """``$SHOWO2_MAX_MEMORY_GB`` as GB (0: no limit), None when unset; anything else is a UsageError."""
    raw = os.environ.get(MAX_MEMORY_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{MAX_MEMORY_ENV} must be a number of GB, got {short(raw)}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{MAX_MEMORY_ENV} must be a number of GB >= 0 (0: no limit), got {short(raw)}")
    return value


def env_seconds(name: str, default: float) -> float:
    """``$name`` as a number of seconds > 0, ``default`` when unset or empty; anything else is a
    UsageError naming it (0, negative and NaN are no wait; ``inf`` is no limit)."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = math.nan
    if not value > 0:
        raise UsageError(f"{name} must be a number of seconds > 0, got {raw[:40]!r}")
    return value
