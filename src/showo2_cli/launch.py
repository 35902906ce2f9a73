"""The ``showo2`` program: the command line run with Ctrl-C and SIGTERM handled from its first
moment to its last.

:func:`showo2_cli.cli.main` handles an interruption while a command runs. Around it are two
windows it cannot see: the command line's own imports (about a second) and the interpreter's
shutdown after it returned (libraries' exit handlers and teardown, about a second more). A signal
in the first used to print an import traceback and kill the process by signal; in the second (a
second Ctrl-C while the first one's clean-up finishes) an "Exception ignored in atexit callback"
traceback or a death by SIGINT. Here the first is one line and exit 130 (143 for SIGTERM, 129 for SIGHUP), and an
interrupted command ends at once with its code (:func:`exit_with`).
"""

from __future__ import annotations

import atexit
import os
import signal
import sys


class _Terminated(KeyboardInterrupt):
    pass


def _terminated(signum, frame):
    raise _Terminated(signum)


#: SIGHUP where the system has it (the terminal closed, an ssh session dropped)
HANGUP = (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()
#: what ends the program as Ctrl-C does, besides Ctrl-C: SIGTERM, and SIGHUP
_STOPS = (signal.SIGTERM, *HANGUP)
#: every signal that stops a command (the CLI, training, the protected file renames handle these)
INTERRUPTS = (signal.SIGINT, *_STOPS)


def main(argv: list[str] | None = None) -> None:
    """The one entry of the program: the ``showo2`` script, ``python -m showo2_cli``,
    ``python -m showo2_cli.cli`` and ``python -m showo2_cli.training`` (``argv``: the arguments,
    ``sys.argv[1:]`` when None) all run this, so signals, exit codes and error lines are the same."""
    atexit.register(_ignore_signals)  # registered first, so it runs last of the exit handlers
    previous = {sig: _install(sig, _terminated) for sig in _STOPS  # a SIGHUP ignored (nohup) stays so
                if sig == signal.SIGTERM or signal.getsignal(sig) == signal.SIG_DFL}
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt as e:
        code = 128 + e.args[0] if isinstance(e, _Terminated) else 130
        said = "interrupted" if code == 130 else "hung up" if code - 128 in HANGUP else "terminated"
        _say(f"showo2: error: {said}\n")  # (as the command line says each, once it runs)
        exit_with(code)
    for sig, handler in previous.items():
        if handler is not None:
            _install(sig, handler)
    code = cli_main(argv)
    exit_with(code)


def _downloads_abandoned() -> bool:
    """Whether a Hub download was given up (stalled, interrupted) with huggingface_hub's worker
    threads maybe still running: the interpreter's shutdown would wait for them."""
    module = sys.modules.get("showo2_cli.hub_download")
    return bool(module is not None and module.ABANDONED.is_set())


def _ignore_signals() -> None:
    """The end of the shutdown, after every exit handler: the interpreter then resets signals
    that have Python handlers to their default action, so a Ctrl-C in the last moments (library
    teardown, a second or two after a command that succeeded) killed the process by SIGINT, its
    output complete. Ignored signals stay ignored: the exit code stays the command's."""
    for sig in INTERRUPTS:
        if signal.getsignal(sig) is not None:
            _install(sig, signal.SIG_IGN)


def exit_with(code: int) -> None:
    """Exit with ``code``. After an interruption (130, 143) everything was already cleaned up: the
    exit handlers run with further signals ignored, then the process ends at once, without the
    second of library teardown that a second Ctrl-C used to cut with a traceback or a death by
    signal. Otherwise a signal during the shutdown ends it at once with the same code, and after
    the exit handlers it is ignored (:func:`_ignore_signals`). After a Hub download was given up,
    the exit is the interruption's: its worker threads are not waited for."""
    if code in (129, 130, 143) or _downloads_abandoned():
        for sig in INTERRUPTS:
            _install(sig, signal.SIG_IGN)
        run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
        if run_exit_handlers is not None:
            try:
                run_exit_handlers()
            except BaseException:  # a library's exit handler: nothing of ours is left to lose
                pass
        _flush()
        os._exit(code)

    def now(signum, frame):
        _flush()
        os._exit(code)

    for sig in INTERRUPTS:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored Ctrl-C (a background job) stays so
            _install(sig, now)
    sys.exit(code)


def _install(sig, handler):
    try:
        return signal.signal(sig, handler)
    except (ValueError, OSError, TypeError):
        return None


def _say(text: str) -> None:
    try:
        sys.stderr.write(text)
    except (OSError, ValueError):
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


if __name__ == "__main__":
    main()
