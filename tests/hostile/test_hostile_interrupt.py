"""Ctrl-C: SIGINT to a running ``t2v`` and ``train`` gives exit code 130, one line on stderr, and
never a partial file under a final name (nor a leftover temporary file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, sigint_reaches_child
from showo2_cli.training.trainer import LOCK_FILE


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOWO2_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp / "hf"), PYTHONUNBUFFERED="1")
    return env


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> list[str]:
    """Read stderr lines until ``ready(line)``, then send SIGINT; return every stderr line."""
    lines: list[str] = []
    hit = threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if not hit.is_set() and ready(line):
                hit.set()
        hit.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    assert hit.wait(timeout), f"never got ready: {lines[-5:]}"
    assert proc.poll() is None, f"ended before the interrupt: {lines[-5:]}"
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    proc.wait(timeout=60)
    reader.join(timeout=10)
    return lines + [f"(exited {time.monotonic() - sent:.1f} s after SIGINT)"]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.startswith(".") or ".tmp" in p.name)


def test_sigint_during_t2v_exits_130_and_leaves_no_file(tiny_model_dir, tmp_path):
    out = tmp_path / "clip.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.cli", "t2v", "a square", "-m", str(tiny_model_dir),
                             "-o", str(out), "--frames", "5", "--steps", "10000", "--seed", "3", "--save-latents"],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_reaches_child)
    lines = _interrupt_when(proc, lambda line: line.startswith("seed "))
    out = proc.stdout.read()
    assert proc.returncode == 130, (lines, out)
    assert lines[-2] == "showo2: error: interrupted" and not any("Traceback" in x for x in lines), lines
    assert out == ""
    assert not list(tmp_path.glob("clip*")) and not _leftovers(tmp_path)


def test_sigint_during_train_exits_130_with_a_complete_checkpoint(tmp_path):
    from showo2_cli.loading import load

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.cli", "train", str(REPO / "examples" / "train_tiny.toml"),
                             "-o", str(run), "--max-steps", "100000", "--set", "run.log_every=1",
                             "--set", "run.eval_every=0"],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=sigint_reaches_child)
    lines = _interrupt_when(proc, lambda line: line.startswith("step ") and " loss " in line)
    assert proc.returncode == 130, lines
    assert lines[-2].startswith("showo2: error: interrupted") and not any("Traceback" in x for x in lines), lines
    latest = (run / "latest").read_text().strip()
    checkpoint = run / latest
    assert checkpoint.is_dir() and (checkpoint / "model.safetensors").is_file()
    assert load(checkpoint).spec.name == "tiny"
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name not in (".data-index", LOCK_FILE)]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_a_write_that_fails_midway_leaves_no_file(tmp_path, exc, monkeypatch):
    """The atomic write under every output: a crash while encoding leaves nothing under the
    final name and no temporary file (here the encoder dies after writing some bytes)."""
    import numpy as np

    from showo2_cli import media as M
    from showo2_cli.media import video_write as video

    real = video.write_av

    def dying(tmp, arr, fps, ext, metadata):
        real(tmp, arr[:1], fps, ext, metadata)
        assert Path(tmp).stat().st_size > 0
        raise exc("killed mid-write")

    monkeypatch.setattr(video, "write_av", dying)  # where write_video looks it up
    target = tmp_path / "v.mp4"
    with pytest.raises((KeyboardInterrupt, M.OutputError)):
        M.write_video(target, np.zeros((5, 16, 16, 3), np.uint8), 8)
    assert list(tmp_path.iterdir()) == []
