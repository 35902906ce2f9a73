"""Probe BT: understanding's records and checks match generation's. ``caption --json`` records the
load that made its answers (model, adapters with their weights, quantization, dtype) through the
one record generated files carry, and ``caption`` under a memory limit too small is refused before
the model loads, with the figures the loaded check gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import showo2_cli
from conftest import write_adapter, write_h264
from showo2_cli import api
from showo2_cli.cli import main
from showo2_cli.errors import ResourceError
from showo2_cli.loading import load
from showo2_cli.options import RuntimeOptions

DEMO = Path(showo2_cli.__file__).parent / "assets" / "demo"
LOAD_FIELDS = ("model", "model_revision", "lora", "vae", "quantize", "dtype")


def _json(capsys, args) -> dict:
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_caption_json_records_the_load_as_t2i_does(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    adapter = write_adapter(DEMO, tmp_path / "a", ["q_proj", "fc1", "linear"], 1)
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    load_options = ["--lora", str(adapter), "--lora-weight", "0.5", "--dtype", "bf16"]
    made = _json(capsys, ["t2i", "a red circle", "-o", str(tmp_path / "x.png"), "--steps", "2", "--seed", "1",
                          *load_options])["outputs"][0]
    said = _json(capsys, ["caption", str(image), "--max-new-tokens", "2", *load_options])
    shared = {k: made[k] for k in LOAD_FIELDS if k in made}
    assert shared["model"] == "demo" and shared["dtype"] == "bf16"
    assert len(shared["lora"]) == 1 and "0.5" in str(shared["lora"][0])  # the adapter with its weight
    assert {k: said[k] for k in LOAD_FIELDS if k in said} == shared  # (old: neither lora nor dtype nor model)
    assert said["answers"] and said["kind"] == "image"


def _refusal(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 6
    return capsys.readouterr().err.strip().splitlines()[-1].removeprefix("showo2: error: ")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_caption_too_big_is_refused_before_the_load_with_the_loaded_figures(dtype, tmp_path, capsys, monkeypatch):
    from showo2_cli.cli import understand

    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB", raising=False)
    image = np.full((32, 32, 3), 90, np.uint8)
    path = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    loaded = load("demo", runtime=RuntimeOptions(dtype=dtype))
    with pytest.raises(ResourceError) as e:  # the check after the load (the Python API's)
        api.caption(loaded, image, api.CaptionOptions(max_new_tokens=2, max_memory_gb=0.005))
    after = str(e.value)
    assert after.startswith("encoding an image at 64x64 needs about ")
    reads = []

    def spy(*args, **kwargs):  # the command's load: never reached
        reads.append(args)
        raise AssertionError("the weights were read")

    monkeypatch.setattr(understand, "load_model", spy)
    got = _refusal(capsys, ["caption", str(path), "--max-new-tokens", "2", "--dtype", dtype, "--max-memory", "0.005"])
    assert got == after and not reads  # (old: the load ran first)
    # a video: its frames' verdict, before the load, as the loaded check's
    video = write_h264(tmp_path / "v.mp4", np.stack([np.full((32, 32, 3), 40 * i, np.uint8) for i in range(6)]))
    with pytest.raises(ResourceError) as e:
        api.caption(loaded, video, api.CaptionOptions(max_new_tokens=2, frames=4, max_memory_gb=0.005))
    got = _refusal(capsys, ["caption", str(video), "--frames", "4", "--dtype", dtype, "--max-memory", "0.005"])
    assert got == str(e.value) and got.startswith("understanding 4 frame(s) at 64x64") and not reads
