"""Probe AU: where the day's merged probes meet (a fresh-eyes review of the merge)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import showo2_cli
from showo2_cli.modeling.vae_files import load_vae
from showo2_cli.pipelines import latents as L

VAE_DIR = Path(showo2_cli.__file__).parent / "assets" / "demo" / "vae"


def test_decode_tiled_keeps_its_no_grad_and_cpu_default(monkeypatch):
    """``recorded_decoding`` (probe AP) was inserted between ``decode_tiled``'s decorators and took
    them: ``showo2 decode`` (which calls ``decode_tiled``) ran with autograd on, and a caller's
    default device reached it."""
    vae = load_vae(VAE_DIR)
    z = torch.randn(16, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    want = L.decode(z, vae)
    grad_on = []
    inner = vae.decode
    monkeypatch.setattr(vae, "decode", lambda *a, **k: (grad_on.append(torch.is_grad_enabled()), inner(*a, **k))[1])
    frames, tiles = L.decode_tiled(z, vae)
    assert grad_on == [False] and tiles is None and np.array_equal(frames, want)
    with torch.device("meta"):  # a caller's default device: the decode still draws on the CPU
        frames, _ = L.decode_tiled(z, vae)
    assert np.array_equal(frames, want)
    assert L.recorded_decoding({"kind": "t2i", "vae_tiles": [64, 64, 48, 48], "dtype": "bf16"}) == ((64, 64, 48, 48), "bf16")


def test_a_refused_save_of_a_quantized_pipeline_loads_no_head(tmp_path):
    """``from_pretrained`` leaves the heads to their first use (probe AS) and ``save_pretrained``
    loads them before writing; a quantized pipeline (probe AP), which cannot be saved, loaded and
    quantized its flow head (the 1.5B's 876 M parameters) only to refuse."""
    import pytest

    pytest.importorskip("torchao", reason="--quantize int8wo needs torchao")
    from showo2_cli.errors import UsageError
    from showo2_cli.options import RuntimeOptions
    from showo2_cli.pipeline import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained("demo", runtime=RuntimeOptions(quantize="int8wo"))
    before = pipe.network.loaded_heads()
    assert "flow_head" not in before
    with pytest.raises(UsageError, match=r"quantized \(int8wo\)"):
        pipe.save_pretrained(tmp_path / "saved")
    assert pipe.network.loaded_heads() == before and not (tmp_path / "saved").exists()
