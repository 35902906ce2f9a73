"""Probe BN: LoRA adapters as users bring them. peft's older ``adapter_model.bin`` loads (a folder, the
file itself, a Hub repo without safetensors) as its safetensors twin does, with the same checks, and a
hostile ``.bin`` is one line; an adapter's strength is ``--lora-weight`` on every model command (and
``lora=[(path, weight)]`` in Python), the same merge as ``load_lora_weights(weight=)``, recorded in outputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

import showo2_cli
from conftest import write_adapter
from showo2_cli import Showo2Pipeline
from showo2_cli.errors import ModelError, UsageError
from showo2_cli.loading import load
from showo2_cli.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from test_hub_pipeline import hub, offline  # noqa: F401  (the local Hub fixture)

DEMO = Path(showo2_cli.__file__).parent / "assets" / "demo"
PICKLE = "adapter_model.bin"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """An adapter of the demo over its LLM and flow head (safetensors) and its ``.bin`` twin (peft's
    older save: ``torch.save`` of the same tensors)."""
    from safetensors.torch import load_file

    tmp = tmp_path_factory.mktemp("bn")
    st = write_adapter(DEMO, tmp / "st", ["q_proj", "fc1", "linear"], 1)
    old = tmp / "old"
    old.mkdir()
    shutil.copy(st / ADAPTER_CONFIG, old)
    torch.save(load_file(str(st / ADAPTER_WEIGHTS)), old / PICKLE)
    return {"st": st, "old": old}


def _whole(network) -> dict:
    network.load_heads()
    return {k: v.clone() for k, v in network.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def states(adapters):
    return {"base": _whole(load(DEMO).network), "st": _whole(load(DEMO, lora=adapters["st"]).network)}


def _copy_with(folder: Path, where: Path, state: dict | None = None, data: bytes | None = None) -> Path:
    where.mkdir()
    shutil.copy(folder / ADAPTER_CONFIG, where)
    if state is not None:
        torch.save(state, where / PICKLE)
    else:
        (where / PICKLE).write_bytes(data)
    return where


def test_a_bin_adapter_merges_as_its_safetensors_twin(adapters, states, tmp_path):
    """`--lora` of a folder holding peft's older adapter_model.bin was refused by name."""
    old = adapters["old"]
    assert _same(_whole(load(DEMO, lora=old).network), states["st"])
    later = tmp_path / "later"
    shutil.copytree(old, later)
    bundle = load(DEMO, lora=[later / PICKLE], heads=())  # the file itself; the heads merged on first use
    assert bundle.adapters == [str(later)]
    was = os.stat(later / PICKLE)
    os.utime(later / PICKLE, ns=(1, 1))  # a head left out loads from files checked unchanged: the .bin too
    with pytest.raises(ModelError, match=r"adapter_model.bin: the LoRA adapter file changed"):
        bundle.network.load_heads()
    os.utime(later / PICKLE, ns=(was.st_atime_ns, was.st_mtime_ns))
    assert _same(_whole(bundle.network), states["st"])
    pipe = Showo2Pipeline.from_pretrained(DEMO)
    pipe.load_lora_weights(old)
    assert _same(_whole(pipe.network), states["st"])

    from showo2_cli.lora import adapter_files, read_adapter

    both = tmp_path / "both"  # peft's order: the safetensors file where both are (this .bin would be refused)
    shutil.copytree(adapters["st"], both)
    torch.save({"x.lora_A.weight": torch.full((2, 2), float("nan"))}, both / PICKLE)
    assert adapter_files(both)[0].name == ADAPTER_WEIGHTS and read_adapter(both)[2] == both
    with pytest.raises(UsageError, match="holds adapter_model.safetensors too"):
        load(DEMO, lora=both / PICKLE)


def test_a_bin_adapter_is_checked_as_a_safetensors_one_and_a_hostile_one_is_one_line(adapters, tmp_path, capsys,
                                                                                       monkeypatch):
    from safetensors.torch import load_file

    import showo2_cli.loading as loading
    from showo2_cli.cli import main

    state = load_file(str(adapters["st"] / ADAPTER_WEIGHTS))
    key = next(k for k in state if "diffusion_head_b.linear.lora_B" in k)
    marker = tmp_path / "ran"

    class Code:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = (adapters["old"] / PICKLE).read_bytes()
    deflated = tmp_path / "deflated.zip"
    with zipfile.ZipFile(adapters["old"] / PICKLE) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    cases = {
        "nan": ({**state, key: torch.full_like(state[key], float("nan"))}, None, "holds NaN or infinite values"),
        "int": ({**state, key: state[key].to(torch.int32)}, None, "is int32, not a floating-point tensor"),
        "wide": ({**state, key: torch.zeros(state[key].shape[0] + 1, 2)}, None, "does not fit this model"),
        "code": ({**state, "x.lora_A.weight": Code()}, None, "for safety.*it references posix.system"),
        "truncated": (None, data[: len(data) - 40], "truncated or corrupt"),
        "rezipped": (None, deflated.read_bytes(), "zip entries are compressed"),  # (was read as garbage values)
    }
    calls = []
    real = loading.read_state_dict
    monkeypatch.setattr(loading, "read_state_dict", lambda *a, **k: calls.append(a) or real(*a, **k))
    for name, (tensors, raw, message) in cases.items():
        folder = _copy_with(adapters["st"], tmp_path / name, tensors, raw)
        out = tmp_path / f"{name}.png"
        code = main(["t2i", "a red circle", "-o", str(out), "--lora", str(folder), "--steps", "2", "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == ModelError.exit_code and not out.exists(), (name, err)
        assert err.count("\n") == 0 and str(folder) in err and re.search(message, err), (name, err)
    assert calls == [] and not marker.exists()  # refused before the model's weights were read; nothing ran


def test_model_weights_in_a_rezipped_torch_archive_are_refused_not_read_as_garbage(tmp_path):
    """torch.load(mmap=True) took a compressed entry's bytes as the tensor's values, silently."""
    from showo2_cli.weights import read_state_dict

    tensors = {"w": torch.arange(64, dtype=torch.float32)}
    torch.save(tensors, tmp_path / "plain.bin")
    with zipfile.ZipFile(tmp_path / "plain.bin") as src, \
            zipfile.ZipFile(tmp_path / "packed.bin", "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    assert torch.equal(read_state_dict(tmp_path / "plain.bin")["w"], tensors["w"])
    assert torch.equal(torch.load(tmp_path / "packed.bin", weights_only=True)["w"], tensors["w"])  # (torch, unmapped)
    with pytest.raises(ModelError, match=r"packed.bin': its zip entries are compressed \(e.g. .*\), which torch.save"):
        read_state_dict(tmp_path / "packed.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "plain.bin").read_bytes()[:-30])
    with pytest.raises(ModelError, match=r"cut.bin': truncated or corrupt"):  # (was "(Invalid argument)")
        read_state_dict(tmp_path / "cut.bin")


def test_a_hub_repo_with_only_a_bin_adapter_downloads_it(hub, adapters, states, monkeypatch):  # noqa: F811
    """A repo id whose adapter is adapter_model.bin said "is not a LoRA adapter ... only safetensors"."""
    old, st = adapters["old"], adapters["st"]
    hub.add("acme/old-style", {ADAPTER_CONFIG: (old / ADAPTER_CONFIG).read_bytes(), PICKLE: (old / PICKLE).read_bytes(),
                               "README.md": b"# old\n"})
    hub.add("acme/both", {ADAPTER_CONFIG: (st / ADAPTER_CONFIG).read_bytes(), PICKLE: (old / PICKLE).read_bytes(),
                          ADAPTER_WEIGHTS: (st / ADAPTER_WEIGHTS).read_bytes()})
    bundle = load(DEMO, lora="acme/old-style")
    assert bundle.adapters == ["acme/old-style"] and _same(_whole(bundle.network), states["st"])
    assert sorted(hub.downloads()) == ["acme/old-style:adapter_config.json", "acme/old-style:adapter_model.bin"]
    asked, hub.fail["api"] = len(hub.requests), 503  # cached: loaded again without the Hub, as safetensors are
    assert load(DEMO, lora="acme/old-style", heads=()).adapters == ["acme/old-style"] and len(hub.requests) == asked
    del hub.fail["api"]
    assert _same(_whole(load(DEMO, lora="acme/both").network), states["st"])
    assert sorted(d for d in hub.downloads() if d.startswith("acme/both")) == [
        "acme/both:adapter_config.json", "acme/both:adapter_model.safetensors"]  # (safetensors first)
    offline(monkeypatch)
    asked = len(hub.requests)
    assert _same(_whole(load(DEMO, lora="acme/old-style").network), states["st"])  # from the cache
    assert len(hub.requests) == asked


def test_lora_weight_on_the_command_line_is_load_lora_weights_weight_and_is_recorded(adapters, states, tmp_path,
                                                                                     capsys):
    """`--lora` had no strength (Python's load_lora_weights(weight=) only)."""
    import numpy as np
    from PIL import Image

    from showo2_cli import api
    from showo2_cli.cli import main
    from showo2_cli.options import GenerateOptions

    st, old = adapters["st"], adapters["old"]
    pipe = Showo2Pipeline.from_pretrained(DEMO)
    pipe.load_lora_weights(st, weight=0.5)
    pipe.load_lora_weights(old, weight=-1.25)
    given = load(DEMO, lora=[(st, 0.5), {"path": str(old), "weight": -1.25}])
    assert _same(_whole(given.network), _whole(pipe.network))
    assert given.adapters == pipe.model.adapters == [{"path": str(st), "weight": 0.5},
                                                    {"path": str(old), "weight": -1.25}]
    half, full, base = _whole(given.network), states["st"], states["base"]
    k = "diffusion_head_b.linear.weight"  # (the .bin at -1.25 adapts the same layers: 0.5 - 1.25 = -0.75)
    torch.testing.assert_close(half[k] - base[k], -0.75 * (full[k] - base[k]), atol=1e-6, rtol=1e-4)

    out = tmp_path / "scaled.png"
    code = main(["t2i", "a red circle", "-o", str(out), "--seed", "5", "--steps", "3", "--lora", str(st), "--lora",
                 str(old), "--lora-weight", "0.5", "--lora-weight", "-1.25", "--json"])
    record = json.loads(capsys.readouterr().out)["outputs"][0]
    assert code == 0 and record["lora"] == [{"path": str(st), "weight": 0.5}, {"path": str(old), "weight": -1.25}]
    assert json.loads(Image.open(out).text["showo2"])["lora"] == record["lora"]
    mine = api.text_to_image(given, ["a red circle"], GenerateOptions(steps=3, seed=5))[0]
    assert mine.params["lora"] == record["lora"]
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), mine.frames[0])


@pytest.mark.parametrize("args, message", [
    (["--lora-weight", "nan"], "--lora-weight must be a finite number from -100 to 100"),
    (["--lora-weight", "inf"], "--lora-weight must be a finite number"),
    (["--lora-weight", "1e999"], "--lora-weight must be a finite number"),
    (["--lora-weight", "-101"], "--lora-weight must be a finite number from -100 to 100"),
    (["--lora-weight", "half"], "Invalid value for '--lora-weight'"),
    (["--lora-weight", "1", "--lora-weight", "1"], "2 --lora-weight for 1 --lora: give one weight per adapter"),
])
def test_bad_lora_weights_are_one_line_before_anything_loads(adapters, tmp_path, capsys, monkeypatch, args, message):
    import showo2_cli.loading as loading
    from showo2_cli.cli import main

    monkeypatch.setattr(loading, "load", lambda *a, **k: pytest.fail("loaded"))
    for command in (["t2i", "x", "-o", str(tmp_path / "x.png")], ["caption", str(tmp_path / "none.png"), "-q", "x"],
                    ["chat"], ["serve", "--port", "0"], ["convert", "demo", "-o", str(tmp_path / "conv")]):
        code = main([*command, "--lora", str(adapters["st"]), *args, "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == UsageError.exit_code and message in err and "\n" not in err, (command, err)
    assert list(tmp_path.iterdir()) == []


def test_python_lora_weights_are_checked_alike(adapters):
    pipe = Showo2Pipeline.from_pretrained(DEMO)
    for weight in (float("nan"), 1e300, "0.5", True):
        with pytest.raises(UsageError, match=r"lora: the weight of '.*st' must be a"):
            load(DEMO, lora=[(adapters["st"], weight)])
    with pytest.raises(TypeError, match=r"a weighted adapter is a pair inside the list: lora=\[\(path, weight\)\]"):
        load(DEMO, lora=(adapters["st"], 0.5))
    with pytest.raises(UsageError, match="weight must be a finite number from -100 to 100"):
        pipe.load_lora_weights(adapters["st"], weight=1000)  # (1e300 made every merged weight infinite)
    assert pipe.model.adapters == []


def test_convert_merges_at_the_weight_and_records_it(adapters, tmp_path, capsys):
    from showo2_cli.cli import main

    out = tmp_path / "merged"
    assert main(["convert", "demo", "-o", str(out), "--lora", str(adapters["old"]), "--lora-weight", "0.5",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lora"] == [{"path": str(adapters["old"]), "weight": 0.5}]
    assert json.loads((out / "config.json").read_text())["showo2"]["lora_merged"] == [{"path": str(adapters["old"]),
                                                                             "weight": 0.5}]
    assert _same(_whole(load(out).network), _whole(load(DEMO, lora=[(adapters["st"], 0.5)]).network))
    assert main(["info", str(out), "--json"]) == 0  # (it said nothing of the adapters in the weights)
    assert json.loads(capsys.readouterr().out)["lora_merged"] == [{"path": str(adapters["old"]), "weight": 0.5}]
    assert main(["info", str(out)]) == 0
    assert f"LoRA       merged into the weights: {adapters['old']} at weight 0.5" in capsys.readouterr().out


def test_a_chat_transcript_records_the_adapters_and_their_weights(adapters, tmp_path, capsys, monkeypatch):
    """`chat --lora A` then /save wrote a transcript naming the model alone, as if the base had answered."""
    import io
    import sys

    from showo2_cli.cli import main

    out = tmp_path / "chat.json"
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"What is this?\n/save {out}\n"))
    assert main(["chat", "--lora", str(adapters["old"]), "--lora-weight", "0.25", "--seed", "1",
                 "--max-new-tokens", "4", "--quiet"]) == 0
    transcript = json.loads(out.read_text())
    assert transcript["model"] == "demo" and transcript["lora"] == [{"path": str(adapters["old"]), "weight": 0.25}]
