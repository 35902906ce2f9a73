"""Today's features used together (probe AV): the Python API's ``lora=None`` and a dtype move after
the load against a load in that dtype."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import Showo2Pipeline, api


def _tables(network) -> dict[str, torch.Tensor]:
    return {n: b for n, b in network.named_buffers() if n.endswith("inv_freq")}


def test_lora_none_is_no_adapter():
    """``lora=None`` (an optional argument passed on) raised "TypeError: 'NoneType' object is not
    iterable" from ``api.load`` and ``Showo2Pipeline.from_pretrained``."""
    model = api.load("demo", lora=None)
    assert model.adapters == []
    pipe = Showo2Pipeline.from_pretrained("demo", lora=None)
    assert pipe.model.adapters == []
    with pytest.raises(TypeError, match="lora must be a path or a list of paths, got int"):
        api.load("demo", lora=5)


def test_to_dtype_keeps_the_rope_tables_of_a_load_in_that_dtype():
    """``pipe.to(torch.bfloat16)`` rounded the RoPE tables (``inv_freq``) to bf16, which a bf16 load
    keeps in float32: the same weights sampled other latents (0.18 apart on the demo)."""
    kw = dict(height=32, width=32, num_inference_steps=3, guidance_scale=3.0, seed=3, output_type="latent")
    moved = Showo2Pipeline.from_pretrained("demo")
    moved.to(torch.bfloat16)
    loaded = Showo2Pipeline.from_pretrained("demo", torch_dtype=torch.bfloat16)
    a, b = _tables(moved.model.network), _tables(loaded.model.network)
    assert len(a) == len(b) >= 2
    for name, table in b.items():
        assert table.dtype == torch.float32 and a[name].dtype == torch.float32, name
        assert torch.equal(a[name], table), name
    assert moved.dtype == torch.bfloat16
    x = torch.as_tensor(np.asarray(moved("a red circle", **kw).images[0]))
    y = torch.as_tensor(np.asarray(loaded("a red circle", **kw).images[0]))
    assert torch.equal(x, y)
    moved.to(torch.float32)  # and back: the tables are the float32 load's again
    fresh = Showo2Pipeline.from_pretrained("demo")
    for name, table in _tables(fresh.model.network).items():
        assert torch.equal(_tables(moved.model.network)[name], table), name
