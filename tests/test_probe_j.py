"""Probe J: hostile inputs and environments against the newest code (signals during the error
report, ...)."""

from __future__ import annotations

import errno
import io
import os
import signal
import sys

import pytest

import showo2_cli.cli as cli
from showo2_cli.cli import main


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_while_a_failure_is_reported_is_the_interruptions_exit(sig, code, tmp_path, capsys, monkeypatch):
    """A SIGTERM, SIGHUP or Ctrl-C arriving while the error line (or the outputs written before the
    failure) was being written escaped main(): a traceback and exit 1 from ``showo2``. The report
    now stops there and the exit code is the interruption's."""
    written = cli.write
    sent = []

    def write(stream, text):
        if stream is sys.stderr and "error" in text and not sent:
            sent.append(sig)
            os.kill(os.getpid(), sig)
        return written(stream, text)

    monkeypatch.setattr(cli, "write", write)
    # as a terminal starts it: under nohup or as a background job the process starts with SIGHUP or
    # SIGINT ignored, which main() deliberately keeps ignored
    started = {signal.SIGHUP: signal.getsignal(signal.SIGHUP), signal.SIGINT: signal.getsignal(signal.SIGINT)}
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        assert main(["t2i", "a cat", "--size", "7x7", "-o", str(tmp_path / "x.png")]) == code
        assert sent == [sig] and not list(tmp_path.iterdir())
        assert {s: signal.getsignal(s) for s in before} == before  # the handlers it had are put back
    finally:
        for s, handler in started.items():
            signal.signal(s, handler)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
def test_a_callers_sighup_handler_is_put_back(tmp_path, monkeypatch):
    """main() in a program with its own SIGHUP handler (a reload): after an interruption, the
    handler was left replaced by the no-op that holds signals while the interruption is reported."""
    def reload(signum, frame):
        pass

    previous = signal.signal(signal.SIGHUP, reload)
    try:
        written = cli.write

        def write(stream, text):
            if stream is sys.stderr and "error" in text:
                os.kill(os.getpid(), signal.SIGTERM)
            return written(stream, text)

        monkeypatch.setattr(cli, "write", write)
        assert main(["t2i", "a cat", "--size", "7x7", "-o", str(tmp_path / "x.png")]) == 143
        assert signal.getsignal(signal.SIGHUP) is reload
    finally:
        signal.signal(signal.SIGHUP, previous)


class _FullDisk(io.StringIO):
    def write(self, text=""):
        raise OSError(errno.ENOSPC, "No space left on device")

    flush = write


@pytest.mark.parametrize("args", [["--help"], ["t2i", "--help"], ["help", "chat"]])
def test_help_on_a_full_disk_is_an_output_error(args, monkeypatch, capsys):
    """``showo2 --help > /dev/full`` (click writes the help itself, not common.write) was
    "internal error: OSError: [Errno 28] ...", exit 1, as ``--version`` was before probe C."""
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(args) == 5
    assert capsys.readouterr().err == "showo2: error: cannot write the output (No space left on device)\n"
