"""Understanding what is too big for the limits (probe EH): ``--vae-tiling auto`` tiles a caption's
encode that fits only in tiles, as ``encode``, ``decode`` and generation do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from showo2_cli.errors import ResourceError


@pytest.fixture(scope="module")
def demo():
    from showo2_cli import api

    return api.load("demo")


def test_caption_vae_tiling_auto_tiles_what_fits_only_in_tiles(demo):
    """A 432 px encode on the demo needs about 0.175 GB whole, 0.074 GB in 256 px tiles: under
    ``--max-memory 0.1`` the default ``auto`` refused it ("needs about 175.1 MB ... more than the
    100.0 MB") instead of tiling it; it now runs in tiles, records them, and answers as
    ``--vae-tiling on`` does. ``off`` still refuses, naming ``--vae-tiling auto``."""
    from showo2_cli import api
    from showo2_cli.options import CaptionOptions

    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (432, 432, 3), dtype=np.uint8))
    tight = CaptionOptions(size=432, max_new_tokens=4, max_memory_gb=0.1)
    assert demo.vae.tiling == "auto"
    auto = api.caption(demo, photo, tight)
    assert auto.vae_tiles == [256, 256, 192, 192]
    roomy = api.caption(demo, photo, CaptionOptions(size=432, max_new_tokens=4))  # fits whole: not tiled
    assert roomy.vae_tiles is None
    try:
        demo.vae.tiling = "on"
        on = api.caption(demo, photo, CaptionOptions(size=432, max_new_tokens=4))
        assert on.vae_tiles == [256, 256, 192, 192] and on.answers == auto.answers
        demo.vae.tiling = "off"
        with pytest.raises(ResourceError, match=r"tile the VAE with --vae-tiling auto"):
            api.caption(demo, photo, tight)
    finally:
        demo.vae.tiling = "auto"


def test_caption_check_before_loading_counts_auto_tiling(demo):
    """The command line's check before the load gives the loaded check's verdict: ``auto`` passes a
    job that fits in tiles (it refused it before the load, at ``--vae-tiling auto``)."""
    from showo2_cli.pipelines.understand import check_understanding_memory, understanding_weights

    args = (demo.spec, demo.dtype, 1, 432, False, 0.1, torch.device("cpu"), demo.vae.base_dim,
            understanding_weights(demo), demo.vae.dtype)
    need, tiled = check_understanding_memory(*args, tiling="auto")
    assert tiled and need == pytest.approx(0.064, abs=0.002)
    with pytest.raises(ResourceError, match=r"needs about 175\.\d MB"):
        check_understanding_memory(*args, tiling="off")

