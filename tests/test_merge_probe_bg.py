"""Probe BG: the evening's five merged probes (BA runtime options, BB LoRA, BD quantization, BE
in-process tests, BF official depths) read together."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import Showo2Pipeline
from showo2_cli.errors import ModelError, UsageError


def test_python_lora_errors_name_the_callers_argument_not_the_cli_option(tiny_pipe, tiny_model_dir, tmp_path):
    """BB's load_lora_weights (and from_pretrained(lora=), which BB gave repo ids) said "--lora: ..."
    to a Python caller, an option it cannot pass."""
    missing, not_adapter = tmp_path / "missing", tmp_path / "plain"
    not_adapter.mkdir()
    with pytest.raises(UsageError) as e:
        tiny_pipe.load_lora_weights(missing)
    assert str(e.value).startswith(f"load_lora_weights: '{missing}' does not exist (give an adapter folder")
    with pytest.raises(ModelError) as e:
        tiny_pipe.load_lora_weights(not_adapter)
    assert str(e.value).startswith(f"load_lora_weights: '{not_adapter}' is not a LoRA adapter")
    with pytest.raises(ModelError) as e:
        tiny_pipe.load_lora_weights("acme/absent", local_files_only=True)
    assert str(e.value).startswith("load_lora_weights: 'acme/absent' is not a local folder, and no LoRA adapter")
    assert tiny_pipe.get_list_adapters() == [] and tiny_pipe.model.adapters == []
    with pytest.raises(UsageError) as e:
        Showo2Pipeline.from_pretrained(tiny_model_dir, lora=missing)
    assert str(e.value).startswith(f"lora: '{missing}' does not exist (give an adapter folder")
    assert "--lora" not in str(e.value) and "\n" not in str(e.value)


def test_convert_checks_an_adapters_shapes_before_reading_the_weights(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """BB checked --lora's tensors against the layers' shapes before the weights in load() only;
    `convert --lora` read the whole weights file and built the network first (minutes on a 7B)."""
    from safetensors.torch import load_file, save_file

    from conftest import random_lora
    from showo2_cli import weights
    from showo2_cli.cli import main
    from showo2_cli.lora import ADAPTER_WEIGHTS

    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    state = load_file(str(adapter / ADAPTER_WEIGHTS))
    key = next(k for k in state if "lora_B" in k)
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])  # one row more than the layer has
    save_file(state, str(adapter / ADAPTER_WEIGHTS))
    reads = []
    real = weights.read_state_dict
    monkeypatch.setattr(weights, "read_state_dict", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    out = tmp_path / "out"
    code = main(["convert", str(tiny_model_dir), "--lora", str(adapter), "-o", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == ModelError.exit_code and not out.exists(), err
    assert err.startswith(f"showo2: error: LoRA adapter '{adapter}' does not fit this model") and "\n" not in err
    assert not [p for p in reads if str(tiny_model_dir) in str(p)]  # the model's weights never read
