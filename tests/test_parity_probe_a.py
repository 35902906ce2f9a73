"""Parity probe A (round two): Qwen2 / SigLIP config fields the official code hands to transformers
as they are, which the loader used to drop (a silently different model): the LLM's ``hidden_act``
and ``rope_scaling`` and the SigLIP vision config's ``hidden_act``. The bundled
``tests/data/parity_sets/variant-m`` (made with the official code) checks the numbers; these check
the fields are read, change the output, and that a bad value is a one-line model error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError
from showo2_cli.loading import load

VARIANT_M = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-m"
SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture()
def official(tmp_path):
    folder = tmp_path / "official"
    shutil.copytree(VARIANT_M / "model", folder)
    shutil.copy(VARIANT_M / "vae" / "wan21_vae.safetensors", folder / "wan21_vae.safetensors")
    return folder


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _logits(folder: Path) -> torch.Tensor:
    model = load(folder, need=(), dtype=torch.float32)
    ids = torch.arange(5, 45)[None]
    with torch.no_grad():
        return model.network.showo(input_ids=ids).logits


def test_the_llm_and_siglip_config_fields_are_read(official):
    spec = load(official, need=()).spec
    assert spec.hidden_act == "gelu"
    assert spec.rope_scaling == {"rope_type": "linear", "factor": 2.5}
    assert spec.rms_norm_eps == pytest.approx(1e-3)
    assert spec.semantic_act == "quick_gelu"
    assert spec.semantic_eps == pytest.approx(1e-2)


@pytest.mark.parametrize("change", [
    lambda d: d.update(hidden_act="silu"),
    lambda d: d.update(rope_scaling=None),
    lambda d: d.update(rope_scaling={"rope_type": "linear", "factor": 1.0}),
])
def test_each_llm_field_changes_the_logits(official, change):
    before = _logits(official)
    _edit(official / "llm" / "config.json", change)
    after = _logits(official)
    assert (before - after).abs().max().item() > 1e-3


def test_a_newer_configs_rope_parameters_are_read_like_rope_scaling(official):
    def to_new(d):
        scaling = d.pop("rope_scaling")
        d["rope_parameters"] = {"rope_type": scaling["type"], "factor": scaling["factor"], "rope_theta": d.pop("rope_theta")}

    _edit(official / "llm" / "config.json", to_new)
    spec = load(official, need=()).spec
    assert spec.rope_scaling == {"rope_type": "linear", "factor": 2.5} and spec.rope_theta == 1000.0


def test_a_default_rope_type_is_plain_rope(official):
    _edit(official / "llm" / "config.json", lambda d: d.update(rope_scaling={"rope_type": "default"}))
    assert load(official, need=()).spec.rope_scaling is None


@pytest.mark.parametrize("where, change, needle", [
    ("llm/config.json", {"hidden_act": "bogus"}, "hidden_act must be one of"),
    ("llm/config.json", {"hidden_act": 3}, "hidden_act must be text"),
    ("llm/config.json", {"rope_scaling": {"type": "linear"}}, "rope_scaling .*factor"),
    ("llm/config.json", {"rope_scaling": {"type": "nope", "factor": 2.0}}, "rope_scaling must be an object with a rope_type"),
    ("llm/config.json", {"rope_scaling": [2]}, "rope_scaling must be an object"),
    ("siglip/config.json", {"vision_config": {"hidden_act": "nope", "hidden_size": 16}}, "semantic_act must be one of"),
])
def test_bad_fields_are_model_errors(official, where, change, needle):
    def apply(d):
        if "vision_config" in change:
            d["vision_config"].update(change["vision_config"])
        else:
            d.update(change)

    _edit(official / where, apply)
    with pytest.raises(ModelError, match=needle):
        load(official, need=())


def test_a_bad_activation_is_a_one_line_error_from_the_cli(official):
    _edit(official / "llm" / "config.json", lambda d: d.update(hidden_act="bogus"))
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "showo2_cli.cli", "info", str(official)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert "hidden_act must be one of" in r.stderr


@pytest.mark.parametrize("change, needle", [
    ({"hidden_act": "bogus"}, "hidden_act must be one of"),
    ({"semantic_act": 5}, "'semantic_act' must be text"),
    ({"rope_scaling": 5}, "'rope_scaling' must be an object"),
    ({"rope_scaling": {"rope_type": "linear"}}, "for 'rope_type'='linear': {'factor'}"),
])
def test_a_saved_spec_with_a_bad_field_is_refused_by_info(tiny_model_dir, tmp_path, capsys, change, needle):
    from showo2_cli.cli import main

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    _edit(folder / "config.json", lambda d: d["showo2"]["spec"].update(change))
    assert main(["info", str(folder)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_a_converted_checkpoint_keeps_the_fields(official, tmp_path):
    from showo2_cli.cli import main

    assert main(["convert", str(official), "-o", str(tmp_path / "saved")]) == 0
    spec = load(tmp_path / "saved", need=()).spec
    assert (spec.hidden_act, spec.rope_scaling, spec.semantic_act) == ("gelu", {"rope_type": "linear", "factor": 2.5},
                                                                        "quick_gelu")
