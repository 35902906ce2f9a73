"""Same frames, same file (probe AJ): every format the toolkit writes gives the same bytes for the
same frames, fps and metadata, whatever memory the encoders find (libx264's AVX-512 macroblock
tree read heap memory it never wrote; Matroska/WebM drew a random segment UID each time)."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import sys
from contextlib import contextmanager

import numpy as np
import pytest

M_MMAP_THRESHOLD, M_PERTURB = -3, -6  # glibc's mallopt parameters


def _frames(size: int = 160, count: int = 5) -> np.ndarray:
    """Smooth gradients moving from frame to frame, with noise: what x264's lookahead works on."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size]
    frames = np.stack([np.stack([(xx * 2 + i * 9) % 256, (yy * 3) % 256, (xx + yy + i) % 256], -1)
                       for i in range(count)])
    return np.clip(frames + rng.integers(-30, 30, frames.shape), 0, 255).astype(np.uint8)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 (glibc, not musl)
        return libc
    except (OSError, AttributeError):
        return None


@contextmanager
def heap_filled_with(libc, byte: int):
    """Fresh heap memory (malloc, not calloc) filled with ``byte ^ 0xff`` as MALLOC_PERTURB_ does,
    and large blocks taken from the heap too: what a process that ran a model leaves there."""
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_PERTURB, byte)
    try:
        yield
    finally:
        libc.mallopt(M_PERTURB, 0)
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def _write_all(tmp_path, tag: str, frames: np.ndarray) -> dict[str, str]:
    from showo2_cli.media import write_image, write_video

    meta = {"prompt": "a red circle moving right", "seed": 9}
    digests = {}
    for ext in (".mp4", ".mov", ".mkv", ".webm", ".gif"):
        path = write_video(tmp_path / f"{tag}{ext}", frames, 8.0, metadata=meta)
        digests[ext] = hashlib.sha256(path.read_bytes()).hexdigest()
    for ext in (".png", ".jpg", ".webp"):
        path = write_image(tmp_path / f"{tag}{ext}", frames[0], metadata=meta)
        digests[ext] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def test_the_same_frames_give_the_same_bytes_in_every_format(tmp_path):
    """Written twice in one process: a .webm or .mkv differed every time (a random Matroska
    segment UID); now every format's two files are equal byte for byte."""
    frames = _frames()
    first, second = _write_all(tmp_path, "a", frames), _write_all(tmp_path, "b", frames)
    assert sorted(first) == [".gif", ".jpg", ".mkv", ".mov", ".mp4", ".png", ".webm", ".webp"]
    assert {ext for ext in first if first[ext] != second[ext]} == set()


def test_the_bytes_do_not_depend_on_what_the_heap_held(tmp_path):
    """libx264 (mp4, mov, mkv) read memory it never wrote: with the heap's fresh memory filled
    with other bytes, the same frames gave other files (decoded frames up to 20 levels apart in
    the demo's t2v). With mbtree off nothing depends on it."""
    libc = _glibc()
    if libc is None:
        pytest.skip("needs glibc's mallopt")
    import av

    try:
        av.codec.Codec("libx264", "w")
    except Exception:
        pytest.skip("this PyAV has no libx264")
    frames = _frames()
    runs = []
    for i, byte in enumerate((0x11, 0xAA, 0x55)):
        with heap_filled_with(libc, byte):
            runs.append(_write_all(tmp_path, f"h{i}", frames))
    for ext in runs[0]:
        assert len({run[ext] for run in runs}) == 1, ext
