"""Parity probe EB (round twelve): an LLM config's YaRN RoPE scaling, as the official code's transformers reads it.

The official code runs on transformers 4.47, whose YaRN takes its correction range from the LLM
config's ``max_position_embeddings`` and its attention factor from ``factor`` alone (0.1 ln(factor)
+ 1, or ``attention_factor``); transformers 5, which showo2 builds the LLM with, reads the
scaling's ``original_max_position_embeddings`` (and ``mscale``, ``mscale_all_dim``, ``truncate``)
instead. On a set made with the official code whose Qwen2 config has ``rope_scaling: {"rope_type":
"yarn", "factor": 4, "original_max_position_embeddings": 16}`` under ``max_position_embeddings``
4096, the image-understanding prompt logits were 1.18 from the official ones (every tensor before
the LLM equal).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from showo2_cli.model_config import spec_from_files
from showo2_cli.model_files import find_files
from showo2_cli.modeling.showo2 import qwen2_config
from showo2_cli.weights import read_state_dict

VARIANT_G = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"
VAE = VARIANT_G / "vae" / "wan21_vae.safetensors"

#: transformers 4.47's YaRN tables for variant-g's LLM (16-wide heads, rope_theta 1000,
#: max_position_embeddings 4096, factor 4), computed with the official code's transformers
OFFICIAL_INV_FREQ = [1.0, 0.421696514, 0.177827939, 0.0749894157, 0.0268793609, 0.00933465082, 0.0030928771,
                     0.000948549481]
OFFICIAL_ATTENTION_SCALING = 1.138629436111989  # 0.1 * ln(4) + 1


def with_rope_scaling(tmp_path: Path, scaling: dict) -> Path:
    folder = tmp_path / "official-yarn"
    shutil.copytree(VARIANT_G / "model", folder)
    llm = json.loads((folder / "llm" / "config.json").read_text())
    llm.update(rope_scaling=scaling, max_position_embeddings=4096)
    (folder / "llm" / "config.json").write_text(json.dumps(llm))
    return folder


@pytest.mark.parametrize("scaling", [
    # the correction range read from the scaling's original_max_position_embeddings (16, not 4096)
    # and the attention factor from mscale / mscale_all_dim gave other tables than the official ones
    {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 2.0, "mscale_all_dim": 1.0,
     "truncate": False},
    # Qwen2.5's documented long-context setting (the original length is the config's): unchanged
    {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
])
def test_an_llm_configs_yarn_scaling_gives_the_official_rope_tables(tmp_path, scaling):
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    # the spec the load reads from the folder, and the LLM's RoPE built from it as the load builds it
    files = find_files(with_rope_scaling(tmp_path, scaling), vae=VAE, local_files_only=True)
    spec = spec_from_files(files, read_state_dict(files.weights))
    rotary = Qwen2RotaryEmbedding(qwen2_config(spec))
    assert torch.allclose(rotary.inv_freq.float(), torch.tensor(OFFICIAL_INV_FREQ), rtol=1e-6, atol=0)
    assert rotary.attention_scaling == pytest.approx(OFFICIAL_ATTENTION_SCALING, rel=1e-12)
    assert spec.rope_scaling["original_max_position_embeddings"] == 4096
