"""The one signal policy of every command (:func:`signal_policy`): SIGTERM and SIGHUP raise
:class:`Terminated` where the program is, as Ctrl-C raises KeyboardInterrupt, so clean-ups run
alike; :data:`TERMINATED` keeps the signal caught, for the exit code (128 + it); and
:func:`hold_signals` makes them do nothing while an interruption is reported. Held in place by
:func:`showo2_cli.cli.main`.
"""

from __future__ import annotations

from contextlib import contextmanager

from ..launch import HANGUP, INTERRUPTS

TERMINATED = [0]  # the signal the SIGTERM/SIGHUP handler caught: an interruption then exits 128 + it, not 130


def hold_signals() -> None:
    """From now until main() returns, Ctrl-C, SIGTERM and SIGHUP do nothing (:func:`signal_policy` restores them)."""
    import signal

    for sig in INTERRUPTS:
        try:
            if signal.getsignal(sig) not in (None, signal.SIG_IGN):
                signal.signal(sig, lambda signum, frame: None)
        except (ValueError, OSError):  # not the main thread
            pass


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is (so ``finally`` blocks and temporary-file
    clean-ups run exactly as for Ctrl-C); exits 143 (129 for SIGHUP)."""


@contextmanager
def signal_policy():
    """One signal policy for every command: SIGTERM and SIGHUP behave like Ctrl-C (clean up, then
    exit 143 or 129; Ctrl-C exits 130); a SIGHUP ignored by the parent (``nohup``) stays ignored.
    Training installs its own handler that first saves a checkpoint."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        TERMINATED[0] = signum
        raise Terminated()

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):
        yield
        return
    # every handler hold_signals may change is put back: a caller's own SIGHUP handler too
    old_hup = {sig: signal.getsignal(sig) for sig in HANGUP}
    for sig, handler in old_hup.items():
        if handler == signal.SIG_DFL:
            signal.signal(sig, on_term)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        for sig, handler in old_hup.items():
            if handler is not None:
                signal.signal(sig, handler)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
