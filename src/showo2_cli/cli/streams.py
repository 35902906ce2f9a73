"""A command's standard streams while it runs: a stdout or stderr the process was started
without is the null device (:func:`closed_streams`), a character a stream cannot encode is written
escaped (:func:`escaping_output`), and after a broken pipe stdout is the null device
(:func:`quiet_stdout`), so that nothing fails after a command's work is done. Held in place by
:func:`showo2_cli.cli.main`.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from .common import STATE


@contextmanager
def closed_streams():
    """While a command runs, a stdout or stderr the process was started without (``showo2 ... >&-``;
    Python then has ``None`` for it) is the null device, as :func:`common.write` treats it, so a
    command or library that writes or flushes it does not fail with an internal error (or a
    traceback from the error report itself) after its work is done. A command whose stdout is its
    result refuses a closed one first (:func:`.common.setup`)."""
    replaced = []
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            try:
                setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
                replaced.append(name)
            except OSError:
                pass
    STATE["stdout_closed"] = "stdout" in replaced  # (a command whose stdout is its result refuses it)
    try:
        yield
    finally:
        STATE["stdout_closed"] = False
        for name in replaced:
            stream, _ = getattr(sys, name), setattr(sys, name, None)
            try:
                stream.close()
            except (OSError, ValueError, AttributeError):
                pass


@contextmanager
def escaping_output():
    """While a command runs, a character stdout or stderr cannot encode (``PYTHONIOENCODING=ascii``,
    a C locale without UTF-8) is written escaped (``\\xe9``), as Python writes stderr anyway,
    instead of failing the command with an internal error after its work is done."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        try:
            errors = stream.errors
            if errors == "strict":
                stream.reconfigure(errors="backslashreplace")
                changed.append((stream, errors))
        except (AttributeError, ValueError, OSError):  # not a text stream that can change, or closed
            pass
    try:
        yield
    finally:
        for stream, errors in changed:
            try:
                stream.reconfigure(errors=errors)
            except (AttributeError, ValueError, OSError):
                pass


def quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
