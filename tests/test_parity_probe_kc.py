"""Parity probe KC (round eighteen): a norm epsilon of 0, as the official code takes it.

The official code builds its LLM from the Qwen2 config as transformers does, so ``rms_norm_eps: 0``
(and a SigLIP ``layer_norm_eps: 0``) is a model it runs: ``x * rsqrt(mean(x^2))``. showo2 refused
such a checkpoint in one line ("rms_norm_eps must be a positive number, got 0.0"), and its reading
``float(value or default)`` would have taken a stated 0 for an absent field (1e-6 instead). On a set
made with the official code whose token table has std 0.002 (hidden states of mean square about
4e-6, where an epsilon of 1e-6 is not small: ``benchmarks/parity_specs/probe-kc-eps0.json``) every
case through the model failed to load; with 1e-6 in place of 0 the understanding logits would be off
by far more than the tolerance.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError
from showo2_cli.loading import load
from showo2_cli.model_config import spec_from_files
from showo2_cli.model_files import find_files
from showo2_cli.weights import read_state_dict

VARIANT_B = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-b"
VAE = VARIANT_B / "vae" / "wan21_vae.safetensors"


def with_eps(tmp_path: Path, rms, layer_norm) -> Path:
    folder = tmp_path / "official"
    shutil.copytree(VARIANT_B / "model", folder)
    for sub, key, value, nested in (("llm", "rms_norm_eps", rms, False), ("siglip", "layer_norm_eps", layer_norm, True)):
        path = folder / sub / "config.json"
        config = json.loads(path.read_text())
        (config["vision_config"] if nested else config)[key] = value
        path.write_text(json.dumps(config))
    return folder


def spec_of(folder: Path):
    files = find_files(folder, vae=VAE, local_files_only=True)
    return spec_from_files(files, read_state_dict(files.weights))


@pytest.mark.parametrize("rms,layer_norm", [(0.0, 0.0), (0, 1e-6), (1e-5, 0)])
def test_a_norm_epsilon_of_0_is_the_official_models(tmp_path, rms, layer_norm):
    folder = with_eps(tmp_path, rms, layer_norm)
    spec = spec_of(folder)
    assert (spec.rms_norm_eps, spec.semantic_eps) == (rms, layer_norm)  # a stated 0 is no fallback's cue
    net = load(folder, vae=VAE, dtype=torch.float32, need=()).network
    rms_eps = {m.variance_epsilon for m in net.modules() if hasattr(m, "variance_epsilon")
               and type(m).__name__.startswith("Qwen2")}
    ln_eps = {m.eps for n, m in net.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert rms_eps == {rms} and ln_eps == {layer_norm}


@torch.no_grad()
def test_an_llm_of_epsilon_0_normalises_without_one(tmp_path):
    """The LLM's final norm at epsilon 0 is ``w * x / rms(x)`` exactly where 1e-6 would be far off
    (hidden states of mean square 1e-8, as a small token table gives)."""
    net = load(with_eps(tmp_path, 0.0, 0.0), vae=VAE, dtype=torch.float32, need=()).network
    norm = next(m for m in net.modules() if type(m).__name__ == "Qwen2RMSNorm")
    x = torch.randn(3, 5, norm.weight.shape[0], generator=torch.Generator().manual_seed(0)) * 1e-4
    want = norm.weight * (x / x.pow(2).mean(-1, keepdim=True).sqrt())
    assert torch.allclose(norm(x), want, rtol=1e-5, atol=0)
    assert not torch.allclose(norm(x) * math.sqrt(1 + 1e-6 / 1e-8), want, rtol=1e-2, atol=0)


@pytest.mark.parametrize("value", [-1e-6, float("nan"), "0"])
def test_a_negative_or_non_numeric_epsilon_is_still_refused(tmp_path, value):
    folder = with_eps(tmp_path, value, 1e-6)
    with pytest.raises(ModelError, match="rms_norm_eps must be a number from 0"):
        spec_of(folder)
