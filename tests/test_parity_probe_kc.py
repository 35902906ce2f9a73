"""Parity probe KC (round eighteen): a norm epsilon of 0, and an LLM config's LongRoPE, as the
official code takes them.

The official code builds its LLM from the Qwen2 config as transformers does, so ``rms_norm_eps: 0``
(and a SigLIP ``layer_norm_eps: 0``) is a model it runs: ``x * rsqrt(mean(x^2))``. showo2 refused
such a checkpoint in one line ("rms_norm_eps must be a positive number, got 0.0"), and its reading
``float(value or default)`` would have taken a stated 0 for an absent field (1e-6 instead). On a set
made with the official code whose token table has std 0.002 (hidden states of mean square about
4e-6, where an epsilon of 1e-6 is not small: ``benchmarks/parity_specs/probe-kc-eps0.json``) every
case through the model failed to load; with 1e-6 in place of 0 the understanding logits would be off
by far more than the tolerance.

The official code's transformers (4.47) builds a LongRoPE table once, for every length; transformers
5, which showo2 builds the LLM with, switches to the short factors for rows shorter than the
scaling's original length, and reads that length (and the attention factor's) from the scaling
where 4.47 reads the config's own ``original_max_position_embeddings`` or ``max_position_embeddings``.
On sets made with the official code (``probe-kc-longrope2.json``, ``-longrope3.json``: an original
length of 2048 under rows of 40-64) the understanding logits were 1.97 and the velocities 4.3 from
the official ones.
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


# ---- LongRoPE in the LLM config, as transformers 4.47 builds it ----------------------------------

VARIANT_G = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"
SHORT = [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8]
LONG = [1.0, 1.5, 2.2, 3.0, 4.5, 6.0, 8.0, 12.0]
#: transformers 4.47's (the official code's) tables for variant-g's LLM (16-wide heads, rope_theta
#: 1000) under max_position_embeddings 4096: the long factors' inverse frequencies, the short ones'
OFFICIAL_LONG = [1.0, 0.281130999, 0.0808308870, 0.0249964725, 0.00702728378, 0.00222253567, 0.000702926656,
                 0.000197614485]
OFFICIAL_SHORT = [1.0, 0.383360475, 0.136790738, 0.0468683876, 0.0158113893, 0.00533408625, 0.00181400438,
                  0.000624045730]


@pytest.mark.parametrize("top,scaling,inv_freq,attention", [
    # Phi-3's layout, original length 2048 under rows of 40: 4.47 takes the long factors at every
    # length (max_position_embeddings 4096 passes 2048), transformers 5 the short ones below 2048
    (2048, {"original_max_position_embeddings": 2048}, OFFICIAL_LONG, 1.044465935734187),
    # no original length of the config's own: 4.47's original length is max_position_embeddings
    # (4096, not the scaling's 2048: attention factor sqrt(1 + ln 2 / ln 4096)), the long factors
    (None, {"factor": 2.0, "original_max_position_embeddings": 2048}, OFFICIAL_LONG, 1.0408329997330663),
    # rows past the original length: the two agreed already (probe-kc-longrope.json)
    (16, {"original_max_position_embeddings": 16}, OFFICIAL_LONG, 1.7320508075688772),
    # a factor of 1 (the older key name `type`): the short factors at every length, no attention
    # factor (transformers 5 took the long ones past the scaling's original length, 16)
    (None, {"type": "longrope", "factor": 1.0, "original_max_position_embeddings": 16}, OFFICIAL_SHORT, 1.0),
])
@torch.no_grad()
def test_an_llm_configs_longrope_gives_the_official_rope_tables(tmp_path, top, scaling, inv_freq, attention):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    from showo2_cli.modeling.showo2 import qwen2_config

    folder = tmp_path / "official-longrope"
    shutil.copytree(VARIANT_G / "model", folder)
    llm = json.loads((folder / "llm" / "config.json").read_text())
    kind = {} if "type" in scaling else {"rope_type": "longrope"}
    llm.update(max_position_embeddings=4096, rope_scaling=dict(kind, short_factor=SHORT, long_factor=LONG, **scaling))
    if top is not None:
        llm["original_max_position_embeddings"] = top
    (folder / "llm" / "config.json").write_text(json.dumps(llm))
    files = find_files(folder, vae=VARIANT_G / "vae" / "wan21_vae.safetensors", local_files_only=True)
    rotary = Qwen2RotaryEmbedding(qwen2_config(spec_from_files(files, read_state_dict(files.weights))))
    positions = torch.arange(40)[None]
    cos, sin = rotary(torch.zeros(1, 1, 16), positions)  # (transformers 5 picks its factors by the rows' length here)
    angles = positions[0, :, None].double() * torch.tensor(inv_freq, dtype=torch.float64)
    want = torch.cat([angles, angles], dim=-1)
    assert torch.allclose(cos[0].double(), want.cos() * attention, atol=2e-6, rtol=0)
    assert torch.allclose(sin[0].double(), want.sin() * attention, atol=2e-6, rtol=0)
