"""Probe CG: this morning's four merges (CA, CB, CE, CF) read and used together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import pipelines as P


def test_one_frame_i2v_working_memory_is_the_vae_decode_alone():
    """CF made ``i2v --frames 1`` run neither the network nor a head (its one latent frame is the
    image's) and CA/BM count only the parts a job runs, but the working memory still counted a
    guided forward of 2 x batch rows: the 7B at 432x432, four outputs together, 2.26 GB where
    only the VAE's decode of one frame runs (0.90 GB, whatever the batch)."""
    from showo2_cli.specs import get_spec

    spec = get_spec("7B")
    size = spec.default_size(True)
    sampled = P.generation_memory_gb(spec, torch.bfloat16, size, 1, True, 4, 96)  # t2v of one frame: sampled
    still = P.generation_memory_gb(spec, torch.bfloat16, size, 1, True, 4, 96, from_image=True)
    decode = P.estimate_memory_gb(spec, 0, 1, (size[0] // 8) * (size[1] // 8), dtype=torch.bfloat16)
    assert sampled == pytest.approx(2.2565, abs=1e-3)
    assert still == decode == pytest.approx(0.9003, abs=1e-3)
    assert P.generation_memory_gb(spec, torch.bfloat16, size, 5, True, 4, 96, from_image=True) > 2.2  # sampled
    assert P.generation_memory_gb(spec, torch.bfloat16, size, 5, True, 4, 96, from_image=True) == \
        P.generation_memory_gb(spec, torch.bfloat16, size, 5, True, 4, 96)


def test_one_frame_i2v_of_many_outputs_is_not_refused_for_a_forward_it_does_not_run():
    """The demo, 16 one-frame videos from an image in one batch under a 30 MB limit: the check
    counted 18.6 MB of weights and 17.0 MB of a forward of 32 rows (refused, before the load too);
    they need the weights and one frame's decode, 6.7 MB. The pre-load check and the loaded one agree."""
    from showo2_cli.cli.generate import check_memory_before_loading
    from showo2_cli.errors import ResourceError
    from showo2_cli.loading import load
    from showo2_cli.options import RuntimeOptions

    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    opts = P.GenerateOptions(seed=1, steps=2, frames=1, num_per_prompt=16, batch_size=16, max_memory_gb=0.03)
    check_memory_before_loading("demo", "i2v", opts, 16, RuntimeOptions())  # (raised ResourceError)
    model = load("demo", heads=())
    out = P.image_to_video(model, image, ["a cat"], opts)
    assert len(out) == 16 and all(torch.equal(o.latents, out[0].latents) for o in out)
    with pytest.raises(ResourceError, match="5 frames"):  # five frames sample: the forward is counted
        check_memory_before_loading("demo", "i2v", P.GenerateOptions(frames=5, batch_size=16, max_memory_gb=0.03),
                                    16, RuntimeOptions())
