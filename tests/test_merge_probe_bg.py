"""Probe BG: the evening's five merged probes (BA runtime options, BB LoRA, BD quantization, BE
in-process tests, BF official depths) read together."""

from __future__ import annotations

import pytest

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
