"""Parity probe DB (round ten): an official config with ``num_diffusion_layers: 0``.

The official constructor builds ``diffusion_head_a`` as a ``ModuleList`` of that many blocks, so 0
builds a flow head of no block: ``diff_proj`` (when the LLM is wider) straight into the final
layer, and the official forward and sampler run it (a set made so with the official code,
``benchmarks/parity_specs/probe-db-nohead.json``, passes every case of ``tests/test_parity.py``).
showo2 refused such a checkpoint ("'num_diffusion_layers' must be a positive whole number, got 0")
and, past that check, read the head widths from ``diffusion_head_a.0``, which it does not have.

These tests build such a checkpoint at test time from the bundled ``variant-b`` set (3 flow-head
blocks, made with the official code): its blocks dropped and ``num_diffusion_layers`` 0. A block
whose output projections (attention ``o_proj``, MLP ``down_proj``) are zero adds nothing to its
input, so variant-b with those zeroed is the same network with 3 blocks: the velocities must be
equal, and must differ from variant-b's own (the blocks did something).

Also: ``benchmarks/bf16_tolerance.py``'s understanding path on a non-square grid (bundled
variant-t), which its float32 reference run got wrong.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REPO
from showo2_cli.errors import ModelError
from showo2_cli.loading import load
from showo2_cli.modeling.attention import omni_attention_mask
from showo2_cli.sequences import generation_layout

VARIANT_B = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-b"


def _variant_b(tmp_path: Path, name: str, change) -> Path:
    folder = tmp_path / name
    shutil.copytree(VARIANT_B / "model", folder, ignore=shutil.ignore_patterns("*.bin"))
    state = load_file(str(folder / "pytorch_model.safetensors"))
    cfg = json.loads((folder / "config.json").read_text())
    change(state, cfg)
    save_file(state, str(folder / "pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _no_blocks(state: dict, cfg: dict) -> None:
    for key in [k for k in state if k.startswith("diffusion_head_a.")]:
        del state[key]
    cfg["num_diffusion_layers"] = 0


def _blocks_adding_nothing(state: dict, cfg: dict) -> None:
    for key in state:
        if key.startswith("diffusion_head_a.") and key.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            state[key] = torch.zeros_like(state[key])


@torch.no_grad()
def _velocity(model) -> torch.Tensor:
    """The t2i case's one forward at its fixed t (the case's token rows and latents)."""
    info = json.loads((VARIANT_B / "meta.json").read_text())["cases"]["t2i"]
    data = load_file(str(VARIANT_B / "cases" / "t2i.safetensors"))
    layout = generation_layout(info["prompt_ids"], int(info["num_image_tokens_incl_time"]), model.tokens,
                               int(info["max_seq_len"]), video=False)
    mask = omni_attention_mask(layout.blocks, layout.seq_len)
    x = data["fixed_t_x_per_prompt"]
    x2 = torch.cat([x] * (layout.input_ids.shape[0] // x.shape[0]))
    return model.network.velocity(layout.input_ids, x2, data["fixed_t_t"], layout.blocks, mask)


def test_a_flow_head_of_no_block_loads_and_runs_as_the_official_one(tmp_path):
    none = _variant_b(tmp_path, "none", _no_blocks)
    model = load(none, need=())  # the old code: ModelError "'num_diffusion_layers' must be a positive ..."
    assert model.spec.head_layers == 0 and len(model.network.diffusion_head_a) == 0
    assert model.spec.head_hidden == 40  # variant-b's flow head width, read from the final layer
    v_none = _velocity(model)
    v_zeroed = _velocity(load(_variant_b(tmp_path, "zeroed", _blocks_adding_nothing), need=()))
    v_b = _velocity(load(VARIANT_B / "model", need=()))
    torch.testing.assert_close(v_none, v_zeroed, atol=1e-5, rtol=1e-5)
    assert (v_none - v_b).abs().max() > 0.1  # the real blocks change it: the comparison means something


def test_a_negative_flow_head_depth_is_still_refused(tmp_path):
    def negative(state, cfg):
        cfg["num_diffusion_layers"] = -1

    with pytest.raises(ModelError) as info:
        load(_variant_b(tmp_path, "negative", negative), need=())
    assert "'num_diffusion_layers' must be a whole number from 0, got -1" in str(info.value)
    assert info.value.exit_code == 4 and "\n" not in str(info.value)


def test_the_bf16_benchmark_reproduces_the_official_understanding_in_float32():
    """``benchmarks/bf16_tolerance.py`` compares bf16 with the official float32 outputs, its own
    float32 run being the reference (about 0 apart). On a non-square grid (variant-t's 2x8; also
    probe-db-tall's 3x2 over a 3x3 table) it built the understanding mask's block from the grid's
    HEIGHT squared (5 positions, not 17) and added generation's interpolated position table, not
    understanding's first rows: its float32 column was 0.65 of the peak off the official mmu prompt
    logits (4.2 here, 0.65 on probe-db-tall), where the parity tests find 0."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bf16_tolerance import understanding_path

    root = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-t"
    model = load(root / "model", need=())
    case = load_file(str(root / "cases" / "mmu.safetensors"))
    info = json.loads((root / "meta.json").read_text())["cases"]["mmu"]
    with torch.no_grad():
        out = understanding_path("mmu", model, case, info, video=False)
    assert out["mmu:prompt_logits"]["max_abs"] < 1e-4, out
    assert out["mmu:greedy_ids"]["identical"], out
