"""The memory guard counts what the CPU's heap keeps beside a video job's tensors (probe DN)."""

from __future__ import annotations

import ctypes
import gc
from pathlib import Path

import pytest
import torch

from showo2_cli import api
from showo2_cli.errors import ResourceError
from showo2_cli.footprint import generation_parts, in_gb, vae_bytes, weights_gb
from showo2_cli.pipelines import latents as L
from showo2_cli.runtime import HEAP_BLOCK_BYTES, HEAP_BLOCKS, check_memory, heap_allowance_gb

PROC = Path("/proc/self/clear_refs").exists()


def _status(key: str) -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return api.load("demo")


def _video(frames: int, **kw) -> api.GenerateOptions:
    return api.GenerateOptions(size=(64, 64), steps=2, seed=0, frames=frames, **kw)


@pytest.mark.skipif(not PROC, reason="needs /proc/self/clear_refs (Linux)")
def test_a_video_whose_process_does_not_fit_is_refused(demo):
    """A 17-frame video at 64 px on the CPU peaks at 150-250 MB over the RSS before it (the heap's
    freed blocks; its tensors alone are 44 MB), which the old estimate (35 MB) did not count: under
    a limit of its weights and 95% of its measured peak, the guard admitted it. Now refused (the
    estimate counts 671 MB of heap)."""
    api.text_to_video(demo, "a red circle", _video(5))  # (first-call set-ups not counted)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    api.text_to_video(demo, "a red circle", _video(17))
    peak = (_status("VmHWM") - before) / 1e9
    weights = weights_gb(demo, *generation_parts(False, 17))[0]
    with pytest.raises(ResourceError, match="generating 1 video"):
        api.text_to_video(demo, "a red circle", _video(17, max_memory_gb=weights + 0.95 * peak))
    assert peak < heap_allowance_gb("cpu") + 0.0352, peak  # the estimate now: allowance + 35.2 MB of tensors


def test_the_allowance_is_counted_on_the_cpu_for_videos_only(demo):
    """20 blocks of 32 MiB (671 MB) on a CPU video job; none for an image or on another device."""
    assert heap_allowance_gb("cpu", True) == pytest.approx(20 * 32 * 2**20 / 1e9)
    assert HEAP_BLOCKS * HEAP_BLOCK_BYTES == 20 * 32 * 2**20
    assert heap_allowance_gb("cpu", False) == 0.0
    assert heap_allowance_gb("cuda", True) == 0.0 and heap_allowance_gb("meta", True) == 0.0
    vae = demo.require_vae()
    weights = in_gb(vae_bytes(vae, ("decoder",)))[0]
    for t, refused in ((1, False), (2, True)):  # an image's latent frame, a video's two (5 frames)
        z = torch.zeros(vae.z_dim, t, 8, 8)
        limit = weights + vae.decode_memory_gb(t, 8, 8) + 0.05  # the tensors and 50 MB
        if refused:
            with pytest.raises(ResourceError, match=r"decoding \(16, 2, 8, 8\) latents to 5 frame"):
                L.decode(z, vae, max_memory_gb=limit)
        else:
            assert L.decode(z, vae, max_memory_gb=limit).shape == (1, 64, 64, 3)
    check_memory(0.1, "a video", 0.1 + heap_allowance_gb("meta"), device="meta", video=True)  # no allowance there
    with pytest.raises(ResourceError, match="a video needs about 771.1 MB"):
        check_memory(0.1, "a video", 0.5, device="cpu", video=True)
