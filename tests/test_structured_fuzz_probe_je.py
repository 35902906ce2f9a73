"""Probe JE: the defects structure-aware fuzzing (``benchmarks/fuzz_structured.py``) found, each
with the smallest input that shows it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from showo2_cli import media as M


def _frames(n: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((16, 24, 3), 40 * i + 20, np.uint8)) for i in range(n)]


def test_apng_default_image_is_not_a_frame(tmp_path):
    """An APNG whose default image is not part of the animation (its IDAT before the first fcTL, as
    the APNG spec allows and Pillow's ``default_image=True`` writes) was refused as "truncated or
    corrupt (the file lists 5 frames and holds 4)": Pillow counts the default image as frame 0. Its
    animation is its 4 frames, as browsers play it."""
    default, *anim = _frames(5)
    p = tmp_path / "a.png"
    default.save(p, save_all=True, append_images=anim, duration=125, default_image=True)
    assert M.probe_kind(p) == "video"
    M.check_video(p)
    media = M.read_media(p)
    assert media.kind == "video" and media.frames.shape[0] == 4
    assert [int(f[0, 0, 0]) for f in media.frames] == [60, 100, 140, 180]  # not the default image's 20
    assert media.fps == pytest.approx(8.0)  # 125 ms a frame
