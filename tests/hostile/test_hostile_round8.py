"""Hostile inputs, round eight: LoRA adapter configs from other peft tools, whose fields peft
accepts but which are not the plain ``W += alpha/r * B A`` loading merges (a bias mode that
trains the base biases, LoRA variants such as aLoRA, KaSA, Arrow, MonteCLoRA). Each was an
internal error (NotImplementedError, AttributeError, RecursionError) or, for KaSA, a silently
different merge before its fix; each test fails on the code before it."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import random_lora
from showo2_cli.errors import ModelError
from showo2_cli.loading import load


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model_dir):
    return random_lora(tiny_model_dir, tmp_path_factory.mktemp("adapter") / "adapter")


@pytest.mark.parametrize("change,needle", [
    ({"bias": "all"}, "bias 'all'"),                      # the base biases trained: not in W += B A
    ({"bias": "lora_only"}, "bias 'lora_only'"),
    ({"bias": "weird"}, "bias 'weird'"),                  # NotImplementedError inside peft
    ({"arrow_config": {"top_k": 1}}, "arrow_config"),     # AttributeError inside peft
    ({"monteclora_config": {"x": 1}}, "monteclora_config"),  # RecursionError inside peft
    ({"alora_invocation_tokens": [1, 2]}, "alora_invocation_tokens"),  # NotImplementedError on merge
    ({"kasa_config": {"x": 1}}, "kasa_config"),           # merged, but another merge than plain LoRA
    ({"use_bdlora": {"x": 1}}, "use_bdlora"),
])
def test_adapter_configs_of_other_lora_kinds_are_one_clear_error(tmp_path, tiny_model_dir, adapter, change, needle):
    import shutil

    folder = tmp_path / "adapter"
    shutil.copytree(adapter, folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(ModelError) as e:
        load(tiny_model_dir, lora=[folder])
    message = str(e.value)
    assert needle in message and "adapter_config.json" in message and "\n" not in message and len(message) < 300


def test_a_plain_adapter_still_merges(tiny_model_dir, adapter):
    base = load(tiny_model_dir).network.state_dict()
    merged = load(tiny_model_dir, lora=[adapter]).network.state_dict()
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all("self_attn.q_proj" in k or "self_attn.v_proj" in k for k in changed)
