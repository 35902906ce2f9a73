"""What a training run writes, used downstream (probe AR): a LoRA checkpoint loaded by peft itself,
the run folder of another run, a resumed run with another learning rate, model folders of a newer
format."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from showo2_cli.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import train
from test_lora import lora_config


def test_a_lora_checkpoint_loads_with_peft_itself_as_it_merges_with_lora(tmp_path, tiny_model_dir):
    """peft's PeftModel.from_pretrained looks the adapter's tensors up under its own key names
    (``base_model.model.<module>.lora_A.weight``): the bare names showo2 wrote matched nothing and
    peft kept a zero adapter, with a warning only (the model answered as the base)."""
    from peft import PeftModel

    from showo2_cli.loading import load

    ck = train(parse_config(lora_config(tmp_path, tiny_model_dir, **{"optim.max_steps": 2}), source="a")).checkpoint
    saved = load_file(str(ck / ADAPTER_WEIGHTS))
    assert saved and all(k.startswith("base_model.model.showo.model.layers.") for k in saved)
    config = json.loads((ck / ADAPTER_CONFIG).read_text())
    # as peft saves it, and the same bytes in every process (peft keeps the targets in a set)
    assert config["inference_mode"] is True and config["target_modules"] == sorted(config["target_modules"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft's "Found missing adapter keys" is a warning
        peft_model = PeftModel.from_pretrained(load(tiny_model_dir).network, str(ck))
    adapted = {k: v for k, v in peft_model.state_dict().items() if ".lora_B." in k}
    assert len(adapted) == len([k for k in saved if ".lora_B." in k])
    assert all(float(v.abs().max()) > 0 for v in adapted.values())  # the trained B, not peft's zeros
    by_peft = peft_model.merge_and_unload().state_dict()
    by_showo2 = load(tiny_model_dir, lora=ck).network.state_dict()
    base = load(tiny_model_dir).network.state_dict()
    assert by_peft.keys() == by_showo2.keys()
    assert all(torch.equal(by_peft[k], by_showo2[k]) for k in base)
    assert any(not torch.equal(by_showo2[k], base[k]) for k in base)
