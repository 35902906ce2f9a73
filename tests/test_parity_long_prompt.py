"""Parity with the official code for a prompt longer than 64 tokens on a checkpoint of unknown width.

The case and its tiny official-format checkpoint (LLM width 40, in no registry entry) live in
``tests/data/parity_long_prompt/``, made by ``benchmarks/make_long_prompt_case.py`` with the
official code; it does not depend on the fixture set named by ``SHOWO2_PARITY_DIR``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from showo2_cli.loading import load
from showo2_cli.modeling.attention import omni_attention_mask
from showo2_cli.sampling import generate_latents, guided, guided_velocity_fn
from showo2_cli.sequences import SpecialTokens, generation_layout
from showo2_cli.specs import REGISTRY

CASE = Path(__file__).resolve().parent / "data" / "parity_long_prompt"
SINGLE = dict(atol=1e-4, rtol=1e-4)
SAMPLER = dict(atol=5e-3, rtol=0)


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((CASE / "meta.json").read_text())


@pytest.fixture(scope="module")
def data() -> dict:
    return load_file(str(CASE / "case.safetensors"))


@pytest.fixture(scope="module")
def model():
    return load(CASE / "model", need=(), dtype=torch.float32)


def close(name, got, want, atol, rtol):
    got, want = got.detach().float(), want.float()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = float((got - want).abs().max())
    assert torch.allclose(got, want, atol=atol, rtol=rtol), f"{name}: max abs diff {diff:.3g}"


def test_the_checkpoint_width_is_unknown_and_the_budget_is_the_official_one(model, meta, data):
    assert all(s.hidden_size != model.spec.hidden_size for s in REGISTRY.values())
    assert len(meta["prompt_ids"]) > 64
    assert model.spec.max_seq_len == meta["max_seq_len"] == data["text_tokens"].shape[1]


@torch.no_grad()
def test_long_prompt_t2i_matches_the_official_code(model, meta, data):
    net, tok = model.network, SpecialTokens(**meta["special_ids"])
    layout = generation_layout([meta["prompt_ids"]], meta["num_image_tokens_incl_time"], tok, model.spec.max_seq_len)
    assert torch.equal(layout.input_ids, data["text_tokens"]), "the prompt was cut or laid out differently"
    assert torch.equal(layout.blocks, data["modality_positions"])
    x, t, g = data["fixed_t_x_per_prompt"], float(meta["fixed_t"]), float(meta["guidance_scale"])
    mask = omni_attention_mask(layout.blocks, layout.seq_len)
    v = net.velocity(layout.input_ids, torch.cat([x, x]), torch.full((2,), t), layout.blocks, mask)
    close("fixed_t_velocity", v, data["fixed_t_velocity"], **SINGLE)
    close("fixed_t_velocity_guided", guided(v[:1], v[1:], g), data["fixed_t_velocity_guided"], **SINGLE)
    for cached in (False, True):  # the pipeline's way: trimmed rows, cached prefix
        got = guided_velocity_fn(net, layout, g, cache_prefix=cached)(x, t)
        close(f"fixed_t_velocity_guided(cache_prefix={cached})", got, data["fixed_t_velocity_guided"], **SINGLE)
    final = generate_latents(net, layout, data["z_init_per_prompt"], g, int(meta["num_steps"]),
                             float(meta["time_shifting_factor"]), cache_prefix=True)
    assert (final - data["z_init_per_prompt"]).abs().max() > 0.1  # the sampler moved
    close("final_latents", final, data["final_latents"], **SAMPLER)
