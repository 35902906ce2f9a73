"""The progress callback the pipelines report through: ``progress(phase, done, total)``."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]


def noop(phase: str, done: int, total: int) -> None:
    """The default callback: nothing is reported (the library never prints)."""
