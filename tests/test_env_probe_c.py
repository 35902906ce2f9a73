"""Probe C: the environment a user's machine really has (closed or full standard streams, a low
``ulimit -v``)."""

from __future__ import annotations

import sys

from showo2_cli.cli import main


def test_closed_stdout_is_not_an_internal_error(monkeypatch, capsys):
    # `showo2 --version >&-`: Python's sys.stdout is None; writing it raised AttributeError, and the
    # error report itself (which flushes stdout) failed with a traceback
    monkeypatch.setattr(sys, "stdout", None)
    assert main(["--version"]) == 0
    assert sys.stdout is None  # restored after the command
    assert capsys.readouterr().err == ""


def test_closed_stdout_and_stderr_still_give_the_exit_code(monkeypatch):
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    assert main(["caption", "/nonexistent/x.png"]) == 3
