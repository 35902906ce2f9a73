"""Parity probe BF (round eight): checkpoints as released. The official constructor builds every
depth from a config (the LLM config's ``num_hidden_layers``, the SigLIP vision config's
``num_hidden_layers`` less the deleted last layer, config.json's ``num_diffusion_layers``); its
loader (diffusers 0.31 ``from_pretrained``) then ignores stored blocks beyond that depth and fails on
fewer. An official-format checkpoint whose weights hold another number of blocks than its config
states was run at the weights' depth: another network than the official one, without a word.
These tests build such checkpoints at test time from the bundled ``variant-b`` set (3 LLM layers,
3 semantic layers, 3 flow-head blocks, made with the official code)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from showo2_cli.errors import ModelError
from showo2_cli.loading import load

VARIANT_B = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-b"
#: (block key prefix with {i} for the index, the spec field check_depths names, blocks in variant-b)
BLOCKS = [("showo.model.layers.{i}.", "num_layers", 3), ("und_trans.layers.{i}.", "semantic_layers", 3),
          ("diffusion_head_a.{i}.", "head_layers", 3)]


def _with_blocks(tmp_path: Path, prefix: str, n: int, change: int) -> Path:
    """variant-b's model folder (safetensors only) with one block more (``change`` 1: a copy of the
    last, halved) or fewer (-1: the last dropped) under ``prefix``; its configs untouched."""
    folder = tmp_path / "model"
    shutil.copytree(VARIANT_B / "model", folder, ignore=shutil.ignore_patterns("*.bin"))
    state = load_file(str(folder / "pytorch_model.safetensors"))
    last = prefix.format(i=n - 1)
    if change > 0:
        state.update({prefix.format(i=n) + k[len(last):]: v * 0.5 for k, v in state.items() if k.startswith(last)})
    else:
        state = {k: v for k, v in state.items() if not k.startswith(last)}
    save_file(state, str(folder / "pytorch_model.safetensors"))
    return folder


@pytest.mark.parametrize("prefix, field, n", BLOCKS, ids=[b[1] for b in BLOCKS])
@pytest.mark.parametrize("change", [1, -1], ids=["one-more", "one-fewer"])
def test_weights_of_another_depth_than_the_config_states_are_refused(tmp_path, prefix, field, n, change):
    """The old code counted the blocks in the weights: one more LLM layer, semantic layer or
    flow-head block than the configs state was run as a deeper network (the official model ignores
    it), one fewer as a shallower one (the official loader fails). Both are refused, naming the
    depth the config states and the blocks the weights hold, before anything is built."""
    folder = _with_blocks(tmp_path, prefix, n, change)
    with pytest.raises(ModelError) as info:
        load(folder, need=())
    message = str(info.value)
    assert re.search(rf"the config says {field} = {n} \(of an official checkpoint: [^)]*\) but the weights hold {n + change} ", message), message
    assert info.value.exit_code == 4 and "\n" not in message


def test_the_stated_depths_are_the_official_ones():
    """variant-b as made: the depths come from its configs (LLM 3, SigLIP 4 less 1, flow head 3)
    and the official prompt logits hold through them."""
    model = load(VARIANT_B / "model", need=())
    spec = model.spec
    assert (spec.num_layers, spec.semantic_layers, spec.head_layers) == (3, 3, 3)
    case = load_file(str(VARIANT_B / "cases" / "mmu.safetensors"))
    with torch.no_grad():
        hidden, _ = model.network.llm(case["input_embeds"], case["attention_mask_bool"])
        logits = model.network.logits(hidden)
    torch.testing.assert_close(logits, case["prompt_logits"], atol=1e-4, rtol=1e-4)


def test_a_config_that_states_no_depth_takes_the_weights_count(tmp_path):
    """An LLM config without ``num_hidden_layers`` (and a SigLIP config without it) keeps the
    earlier reading: the blocks the weights hold."""
    import json

    folder = tmp_path / "model"
    shutil.copytree(VARIANT_B / "model", folder, ignore=shutil.ignore_patterns("*.bin"))
    for path, inner in ((folder / "llm" / "config.json", None), (folder / "siglip" / "config.json", "vision_config")):
        cfg = json.loads(path.read_text())
        (cfg[inner] if inner else cfg).pop("num_hidden_layers")
        path.write_text(json.dumps(cfg))
    spec = load(folder, need=()).spec
    assert (spec.num_layers, spec.semantic_layers) == (3, 3)
