"""Probe G: follow-ups left by earlier probes (the steps range, recorded parameters that pass back
as options, written formats, VAE tiling, interrupted runs)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("steps", [0, 1, 10001])
def test_num_inference_steps_names_the_one_range(tiny_pipe, steps):
    # 0 said "must be at least 1", yet 1 was refused too ("between 2 and 10000")
    with pytest.raises(ValueError, match=rf"^num_inference_steps must be between 2 and 10000, got {steps}$"):
        tiny_pipe("a", num_inference_steps=steps, seed=1)
