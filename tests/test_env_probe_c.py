"""Probe C: the environment a user's machine really has (closed or full standard streams, a low
``ulimit -v``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import showo2_cli
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
    assert main(["i2v", "/nonexistent/x.png", "a cat"]) == 3  # (a caption's stdout is its answer: refused first, 5)


def test_a_weight_file_that_cannot_be_mapped_is_out_of_memory_not_corrupt(monkeypatch):
    # under `ulimit -v` safetensors' mmap fails with ENOMEM: that read "not a safetensors or PyTorch
    # checkpoint (truncated or corrupt ...)", exit 4, for the intact bundled demo
    from showo2_cli import weights
    from showo2_cli.errors import is_out_of_memory

    def no_room(path):
        raise RuntimeError(f"unable to mmap 14430436 bytes from file <{path}>: Cannot allocate memory (12)")

    monkeypatch.setattr(weights, "_load_safetensors", no_room)
    demo = Path(showo2_cli.__file__).parent / "assets" / "demo" / "vae" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(RuntimeError) as caught:  # not ModelError: the CLI's out-of-memory report takes it (exit 6)
        weights.read_state_dict(demo)
    assert is_out_of_memory(caught.value)
    # what else an address-space limit raises: a library that cannot be mapped, wrapped by its importer
    try:
        try:
            raise ImportError("libtorch_cpu.so: failed to map segment from shared object")
        except ImportError as inner:
            raise RuntimeError("Failed to import diffusers.models because of the following error") from inner
    except RuntimeError as e:
        assert is_out_of_memory(e)
    assert is_out_of_memory(OSError(12, "Cannot allocate memory"))
    assert not is_out_of_memory(RuntimeError("Failed to import diffusers.models"))
    assert not is_out_of_memory(FileNotFoundError(2, "No such file", "out of memory.png"))


def test_the_error_report_needs_no_allocation_heavy_regex(monkeypatch, capsys):
    # under a low `ulimit -v` the report's first-use regex compile raised MemoryError: a traceback
    from types import SimpleNamespace

    from showo2_cli import cli

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(cli, "re", SimpleNamespace(sub=no_memory, compile=no_memory))
    assert cli._fail("out of memory\nsecond line", 6, "resource") == 6
    assert capsys.readouterr().err == "showo2: error: out of memory second line\n"


class _FullDisk:
    """A stdout on a full disk (`> /dev/full`): every write or flush fails with ENOSPC."""

    encoding, errors = "utf-8", "strict"

    def write(self, text=""):
        raise OSError(28, "No space left on device")

    flush = write

    def isatty(self):
        return False


def test_a_stdout_that_refuses_output_is_an_output_error(monkeypatch, capsys):
    # `showo2 --version > /dev/full` (or a caption's answer on a full disk) was "internal error:
    # OSError: [Errno 28] ...", exit 1
    from showo2_cli.cli import common

    err = capsys.readouterr  # capsys holds stderr; stdout is the full disk
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    assert main(["--version"]) == 5
    assert err().err == "showo2: error: cannot write to standard output (No space left on device)\n"
    with pytest.raises(OSError) as caught:  # the library's OutputError, an OSError too
        common.emit({"a": 1}, "a")
    assert getattr(caught.value, "exit_code", None) == 5

    class Gone(_FullDisk):
        def write(self, text=""):
            raise BrokenPipeError(32, "Broken pipe")

        flush = write

    monkeypatch.setattr(sys, "stdout", Gone())  # a reader gone away (`| head -c1`) stays the quiet 141
    assert main(["--version"]) == 141


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGHUP"), reason="no SIGHUP here")
def test_a_hangup_cleans_up_as_ctrl_c_does_and_nohup_is_respected(monkeypatch, capsys):
    # a closed terminal (SIGHUP) killed a command by signal: no `finally`, a half-written temporary
    # output left behind, a training run without its checkpoint
    import os
    import signal
    import time

    from showo2_cli import cli

    cleaned = []

    def command(*args, **kwargs):
        assert callable(signal.getsignal(signal.SIGHUP))  # checked before the signal: never kills pytest
        try:
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(5)
        finally:
            cleaned.append(True)
        return 0

    old = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        monkeypatch.setattr(cli, "app", command)
        assert cli.main(["info", "demo"]) == 129
        assert cleaned == [True] and capsys.readouterr().err == "showo2: error: hung up\n"
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL  # restored

        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # under nohup a hangup stays ignored
        monkeypatch.setattr(cli, "app", lambda *a, **k: 0 if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else 1)
        assert cli.main(["info", "demo"]) == 0
    finally:
        signal.signal(signal.SIGHUP, old)


def test_a_download_that_fails_on_a_local_file_names_it():
    # HF_HOME pointing at a file: "downloading model 'acme/tiny' failed: Not a directory" said
    # neither which file nor that the cache (not the Hub) was the trouble
    from showo2_cli.hub_download import as_model_error

    e = as_model_error("acme/tiny", "model", NotADirectoryError(20, "Not a directory", "/home/u/hf/token"))
    assert str(e) == "downloading model 'acme/tiny' failed: '/home/u/hf/token': Not a directory"
    assert getattr(e, "exit_code", None) == 4


def test_a_deleted_current_folder_is_one_line_before_torch_loads(monkeypatch, capsys):
    # `mkdir d; cd d; rmdir ../d; showo2 caption /abs/x.png`: oneMKL "FATAL ERROR: Cannot load
    # libtorch_cpu.so" and exit 2, a usage error's code
    import os

    def gone():
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(os, "getcwd", gone)
    assert main(["info", "demo"]) == 5
    assert capsys.readouterr().err.startswith("showo2: error: the current folder no longer exists")
    assert main(["--version"]) == 0  # what needs no folder and no torch still works


def test_out_of_file_descriptors_the_server_says_so_in_one_line_not_a_flood():
    # `ulimit -n 64` and 100 clients: asyncio logged each failed accept() with a traceback,
    # 288 000 lines of stderr in 40 s
    import errno
    import logging

    from showo2_cli.serve.connections import FileLimitNotice

    def accept_failed():
        try:
            raise OSError(errno.EMFILE, "Too many open files")
        except OSError:
            return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource",
                                     (), sys.exc_info())

    notice = FileLimitNotice(every=10.0)
    first, second = accept_failed(), accept_failed()
    assert notice.filter(first) and not notice.filter(second)
    assert first.exc_info is None and first.levelname == "WARNING"
    assert first.getMessage().startswith("cannot accept a connection: Too many open files")
    other = logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "something else", (), None)
    assert notice.filter(other) and other.getMessage() == "something else"
