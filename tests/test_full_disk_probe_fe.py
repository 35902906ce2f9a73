"""Probe FE: a full disk (ENOSPC), interrupts and odd output paths at every writer.

The real behaviour was checked on a 2 MiB / 200 MiB tmpfs filled to leave less room than each
output needs; these tests need no root: /dev/full (every write fails with ENOSPC) and, for a write
cut part-way, the lowest layer (``os.write``) made to fail after a few bytes as a full disk does."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from showo2_cli.errors import OutputError
from showo2_cli.media import outputs
from showo2_cli.training.trainer import Run

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def _append(path: Path, line: dict) -> None:
    """``Run._append`` (the metrics.jsonl writer) of a main process."""
    Run._append(SimpleNamespace(acc=SimpleNamespace(is_main_process=True)), path, line)


def test_metrics_line_on_a_full_disk_is_one_error_naming_the_file():
    # was: the bare OSError, reported as "cannot write the output (No space left on device)"
    with pytest.raises(OutputError) as e:
        _append(Path("/dev/full"), {"step": 1, "loss": 2.5})
    assert str(e.value) == "cannot write '/dev/full': no space left on the device"
    assert e.value.exit_code == 5


def test_metrics_line_cut_by_a_full_disk_leaves_no_half_line(tmp_path, monkeypatch):
    metrics = tmp_path / "metrics.jsonl"
    old = json.dumps({"step": 1, "loss": 3.0}) + "\n"
    metrics.write_text(old)
    real_write = os.write
    written = []

    def full_after_40_bytes(fd, data):  # what a disk with 40 bytes left does: a short write, then ENOSPC
        room = 40 - sum(written)
        if room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data[:room]))
        written.append(n)
        return n

    monkeypatch.setattr(outputs.os, "write", full_after_40_bytes)
    with pytest.raises(OutputError, match="metrics.jsonl': no space left on the device"):
        _append(metrics, {"step": 2, "loss": 2.9, "lr": 1e-3, "data": "x" * 64})
    assert written == [40]  # the line was cut part-way...
    assert metrics.read_text() == old  # ...and cut back: the old lines whole, no partial one
    monkeypatch.setattr(outputs.os, "write", real_write)
    _append(metrics, {"step": 2, "loss": 2.9})  # and the next line follows on a line of its own
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [1, 2]


def _real_enospc() -> OSError:
    """The OSError a write to a full disk raises (from /dev/full, not made up)."""
    try:
        with open("/dev/full", "wb", buffering=0) as f:
            f.write(b"x")
    except OSError as e:
        return e
    raise AssertionError("/dev/full took a byte")


def test_server_with_a_full_temporary_disk_says_so_without_its_paths(caplog):
    # checked live: `TMPDIR=<full tmpfs> showo2 serve`, the disk filled after startup: a chat request
    # with an image answered 500 "internal error (OSError)" (a traceback in the log), an image
    # request 500 "cannot write image '/tmp/.../showo2-serve-3k5v2de1/image-0.png': [Errno 28] ..."
    from showo2_cli.media.files import quote_path
    from showo2_cli.serve.errors import api_error_of

    upload = _real_enospc()  # Path.write_bytes of an uploaded image
    assert upload.errno == errno.ENOSPC
    generated = OutputError(f"cannot write image {quote_path('/tmp/showo2-serve-x/image-0.png')}: {upload}")
    generated.__cause__ = upload  # as media.write_image raises it
    for exc in (upload, generated):
        err = api_error_of(exc)
        assert (err.status, err.code, err.type) == (507, "insufficient_storage", "server_error")
        assert err.message == "the server's disk is full: no space left for its temporary files"
    assert "showo2-serve-x" in caplog.text  # the path: in the server's log only
    other = OutputError("cannot write image '/tmp/showo2-serve-x/image-0.png': Input/output error")
    err = api_error_of(other)
    assert (err.status, err.message) == (500, "the server cannot write its temporary files")
    assert api_error_of(OSError(errno.EIO, "Input/output error")).code == "internal_error"  # (unchanged)


def test_a_small_download_onto_a_nearly_full_cache_says_how_much(tmp_path, monkeypatch):
    # checked live: `showo2 pull` of a 3 MB repo into a cache on a full 2 MiB tmpfs said "needs 0.0 GB
    # but the Hugging Face cache at ... has 0.0 GB free"
    import shutil

    from showo2_cli import hub_download
    from showo2_cli.errors import ModelError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hub_download, "hub_cache", lambda: tmp_path / "hf")
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(hub_download.shutil, "disk_usage", lambda p: real._replace(free=2_093_056))
    remote = {"config.json": hub_download.RemoteFile(2), "model.safetensors": hub_download.RemoteFile(3 << 20)}
    with pytest.raises(ModelError) as e:
        hub_download.check_sizes("acme/big", "model", list(remote), remote)
    assert "model 'acme/big' needs 3.1 MB but the Hugging Face cache at" in str(e.value)
    assert "has 2.1 MB free; free some space" in str(e.value)
    remote["model.safetensors"] = hub_download.RemoteFile(15 * 10**9)
    with pytest.raises(ModelError, match="needs 15.0 GB but .* has 2.1 MB free"):
        hub_download.check_sizes("acme/big", "model", list(remote), remote)
    assert hub_download.check_sizes("acme/big", "model", ["config.json"], remote) == 2  # fits: no refusal


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_full_disk_under_the_image_and_video_encoders_is_said_as_every_writer_says_it(kind, tmp_path, monkeypatch):
    # checked live on a full tmpfs: t2v -o v.mp4 said "cannot write video '.../v.mp4': [Errno 28] No space
    # left on device: '.../.v.mp4.e6581a9f.tmp.mp4'" (a hidden file that no longer exists), t2i "[Errno 28] ..."
    import numpy as np
    from PIL import Image

    from showo2_cli.media import video_write, write_image, write_video

    def full(path, *args, **kwargs):  # what PyAV and PIL raise: the OSError naming the file they write
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    out = tmp_path / ("a.png" if kind == "image" else "a.mp4")
    out.write_bytes(b"old")
    if kind == "image":
        monkeypatch.setattr(Image.Image, "save", lambda self, fp, *a, **k: full(fp))
        write = lambda: write_image(out, np.zeros((16, 16, 3), np.uint8), overwrite=True)  # noqa: E731
    else:
        monkeypatch.setattr(video_write, "write_av", full)
        write = lambda: write_video(out, np.zeros((5, 16, 16, 3), np.uint8), fps=8, overwrite=True)  # noqa: E731
    with pytest.raises(OutputError) as e:
        write()
    assert str(e.value) == f"cannot write {kind} '{out}': no space left on the device"
    assert out.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_sizes_are_said_in_the_unit_that_shows_them():
    from showo2_cli.errors import gb_text

    assert [gb_text(v) for v in (15.0, 0.99996, 0.0031, 0.0009996, 3e-6)] == [
        "15.0 GB", "1.0 GB", "3.1 MB", "1.0 MB", "3.0 KB"]  # (0.99996 GB was "1000.0 MB")
