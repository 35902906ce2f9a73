"""Hostile inputs, round eighteen (probe EA): the model configs users write and the files of a model
folder (showo2 specs with whole numbers where floats are declared, an official LLM config of more
heads than the weights are wide, a config.json that is a broken link). Each test fails on the code
before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import PARITY_DIR as PARITY
from test_hub_pipeline import hub  # noqa: F401  (the local Hub on 127.0.0.1)

DEMO = Path(__file__).resolve().parents[2] / "src" / "showo2_cli" / "assets" / "demo"


def _demo_with(tmp_path: Path, **spec) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(DEMO, folder)
    config = json.loads((folder / "config.json").read_text())
    config["showo2"]["spec"].update(spec)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("field,value", [("rms_norm_eps", 1), ("semantic_eps", 1), ("rope_theta", 10**30),
                                         ("head_rope_theta", 10**30)])
def test_a_whole_number_for_a_float_spec_field_is_that_float(tmp_path, field, value):
    """A showo2 config's `"rms_norm_eps": 1` (a JSON whole number where the spec declares a float)
    passed the checks and failed building the network: "internal error:
    StrictDataclassFieldValidationError" (transformers' Qwen2/SigLIP configs refuse an int eps);
    `"rope_theta": 10**30` was "internal error: OverflowError: int too big to convert". The number is
    that float, as a TOML override's `rope_theta = 10000` in a training config."""
    import torch

    from showo2_cli import api
    from showo2_cli.specs import get_spec

    torch.set_num_threads(1)
    bundle = api.load(_demo_with(tmp_path, **{field: value}))
    held = getattr(bundle.spec, field)
    assert type(held) is float and held == float(value)
    replaced = get_spec("tiny").replace(**{field: value})
    assert type(getattr(replaced, field)) is float and getattr(replaced, field) == float(value)


@pytest.mark.parametrize("field", ["rope_theta", "rms_norm_eps", "guidance"])
def test_a_whole_number_too_large_for_a_float_is_a_config_error_before_the_load(tmp_path, capsys, field):
    """A spec float field of 10**400 (a 401-digit JSON number) was "internal error: OverflowError:
    int too large to convert to float", exit 1, from the check before the load (`math.isfinite`
    converts it). It is the config's one line, exit 4, and nothing is written."""
    from showo2_cli.cli import main
    from showo2_cli.errors import UsageError
    from showo2_cli.specs import get_spec

    model = _demo_with(tmp_path, **{field: 10**400})
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "--model", str(model), "-o", str(out), "--steps", "2", "--size", "64"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"showo2: error: '{model / 'config.json'}': spec field '{field}' must be a finite "
                              "number, got 1000000"), err
    assert "internal error" not in "".join(err) and not out.exists()
    if field != "guidance":
        wanted = "a number from 0" if field.endswith("_eps") else "a positive number"  # (an epsilon may be 0)
        with pytest.raises(UsageError, match=f"{field} must be {wanted}"):
            get_spec("tiny").replace(**{field: 10**400}).validate()


@pytest.mark.skipif(not (PARITY / "model").is_dir(), reason="needs the official parity fixtures")
def test_an_official_llm_config_of_more_heads_than_the_weights_are_wide_says_so(tmp_path):
    """An official checkpoint whose llm/config.json says num_attention_heads 1000 over weights 64
    wide was "'config.json': integer division or modulo by zero" (naming the wrong file, saying
    nothing of the heads). It names the LLM config, the heads and the width."""
    from showo2_cli import api
    from showo2_cli.errors import ModelError

    folder = tmp_path / "official"
    shutil.copytree(PARITY / "model", folder)
    llm = json.loads((folder / "llm" / "config.json").read_text())
    llm["num_attention_heads"] = 1000
    (folder / "llm" / "config.json").write_text(json.dumps(llm))
    with pytest.raises(ModelError) as e:
        api.load(folder, vae=PARITY / "vae" / "Wan2.1_VAE_tiny.pth")
    assert str(e.value) == (f"'{folder / 'llm' / 'config.json'}': num_attention_heads is 1000, more than the "
                            "weights' hidden size 64: not the LLM these weights were trained with")


@pytest.mark.parametrize("link", ["loop", "dangling", None])
def test_a_model_folder_whose_config_is_a_broken_link_says_so_and_never_points_at_its_vae(tmp_path, link):
    """A model folder whose config.json is a broken link (a Hugging Face snapshot whose blob was
    removed, a symlink loop) was "'m' is not a Show-o2 model folder: it has no config.json (its
    subfolder 'vae' has one: give that folder)": the model's own VAE offered as the model. The link
    is named broken, and a folder with no config.json never offers its vae/."""
    from showo2_cli.errors import ModelError
    from showo2_cli.model_files import find_files

    folder = tmp_path / "m"
    shutil.copytree(DEMO, folder)
    (folder / "config.json").unlink()
    if link == "loop":
        (folder / "config.json").symlink_to("config.json")
    elif link == "dangling":
        (folder / "config.json").symlink_to(tmp_path / "blobs" / "removed")
    with pytest.raises(ModelError) as e:
        find_files(folder)
    if link:  # (a loop says so since probe GC)
        loop = " (a loop: each link leads to another)" if link == "loop" else ""
        assert str(e.value) == f"cannot read config '{folder / 'config.json'}': broken symbolic link{loop}"
    else:
        assert str(e.value) == f"'{folder}' is not a Show-o2 model folder: it has no config.json"


def test_a_vae_repo_whose_vae_is_sharded_is_refused_before_any_download(hub, tmp_path, capsys):  # noqa: F811
    """`--vae owner/name` whose vae/ holds its weights in shards (an index and two files, as
    diffusers' save_pretrained writes a large model) downloaded every shard, then failed: "several
    candidate VAE files (...-00001-of-00002..., ...); pass the file itself" (no one file is the VAE).
    The load reads a VAE of one weight file: such a repo is refused before a download, saying why;
    and of a repo's Wan2.1_VAE files the .pth is taken first, as a model folder's own VAE is
    ("Wan2.1_VAE-x.safetensors" sorts before "Wan2.1_VAE.pth": it was taken)."""
    import io

    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from showo2_cli.cli import main

    vae = DEMO / "vae"
    state = load_file(vae / "diffusion_pytorch_model.safetensors")
    names = sorted(state)
    shards = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), 1):
        save_file({k: state[k] for k in part}, tmp_path / f"s{i}")
        shards[f"vae/diffusion_pytorch_model-0000{i}-of-00002.safetensors"] = tmp_path / f"s{i}"
    index = {"metadata": {}, "weight_map": {k: next(s.split("/")[1] for s, f in shards.items()
                                                    if k in load_file(f)) for k in names}}
    hub.add("acme/sharded", {"vae/config.json": vae / "config.json", **shards,
                             "vae/diffusion_pytorch_model.safetensors.index.json": json.dumps(index).encode()})
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(image)
    out = tmp_path / "lat.safetensors"
    assert main(["encode", str(image), "--vae", "acme/sharded", "-o", str(out), "--size", "32"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("showo2: error: 'acme/sharded' on the Hub has no Wan2.1 VAE: no vae/config.json with weights "
                       "in one file (its vae/ is sharded: showo2 reads a VAE of one weight file), no Wan2.1_VAE.pth, "
                       "no config.json with diffusion_pytorch_model weights at its root"), err
    assert hub.downloads() == [] and not out.exists()
    # the .pth first: here the only one that is a VAE
    pickled = io.BytesIO()
    torch.save(state, pickled)
    hub.add("acme/two", {"Wan2.1_VAE.pth": pickled.getvalue(), "Wan2.1_VAE-fp8.safetensors": b"\0" * 64})
    assert main(["encode", str(image), "--vae", "acme/two", "-o", str(out), "--size", "32"]) == 0, capsys.readouterr().err
    assert hub.downloads() == ["acme/two:Wan2.1_VAE.pth"] and out.is_file()



def test_a_local_vae_folder_in_shards_says_it_is_sharded(tmp_path):
    """A VAE folder of shards and their index (`--vae folder`, a model's own vae/) was "several
    candidate VAE files (...-00001-of-00002..., ...); pass the file itself", though no one shard is
    the VAE (passing one fails the fit check). It says the VAE is sharded."""
    from showo2_cli.errors import ModelError
    from showo2_cli.modeling.vae_files import vae_source

    folder = tmp_path / "vae"
    folder.mkdir()
    shutil.copy(DEMO / "vae" / "config.json", folder)
    for i in (1, 2):
        shutil.copy(DEMO / "vae" / "diffusion_pytorch_model.safetensors",
                    folder / f"diffusion_pytorch_model-0000{i}-of-00002.safetensors")
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text('{"weight_map": {}}')
    with pytest.raises(ModelError) as e:
        vae_source(folder)
    assert str(e.value) == (f"{folder}: the VAE is sharded (diffusion_pytorch_model.safetensors.index.json): showo2 "
                            "reads a VAE of one weight file")


def test_numbers_too_large_for_a_float_in_the_files_users_give_are_one_line(tmp_path, tiny_model_dir):
    """A 401-digit whole number where a float is read (JSON has no limit) made `math.isfinite` raise
    OverflowError: "internal error" (exit 1) for a latents file's metadata `fps` or `latents_mean`
    (`decode`), a VAE config.json's `latents_mean`, an adapter_config.json's `lora_alpha`,
    `lora_dropout` or `alpha_pattern`. Each is its file's one-line error
    (`options.is_finite_number`, the one predicate)."""
    import torch
    from safetensors.torch import save_file

    from conftest import random_lora
    from showo2_cli.errors import InputError, ModelError
    from showo2_cli.loading import load
    from showo2_cli.modeling.vae_files import load_vae
    from showo2_cli.pipelines.latents import load_latents

    huge = 10**400
    latents = tmp_path / "lat.safetensors"
    for key, value, want in (("fps", huge, "a number of frames per second"),
                             ("latents_mean", [huge] * 16, "a list of finite numbers")):
        save_file({"latents": torch.zeros(16, 1, 4, 4)}, latents, metadata={"showo2": json.dumps({key: value})})
        with pytest.raises(InputError, match=f"metadata field '{key}' must be {want}"):
            load_latents(latents)
    vae = tmp_path / "vae"
    shutil.copytree(DEMO / "vae", vae)
    config = json.loads((vae / "config.json").read_text())
    (vae / "config.json").write_text(json.dumps({**config, "latents_mean": [huge] * 16}))
    with pytest.raises(ModelError, match="latents_mean contains non-finite values"):
        load_vae(vae)
    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    plain = json.loads((adapter / "adapter_config.json").read_text())
    for change, want in (({"lora_alpha": huge}, "lora_alpha must be a positive number"),
                         ({"lora_dropout": huge}, "lora_dropout must be a number from 0"),
                         ({"alpha_pattern": {"x": huge}}, "alpha_pattern must map module names")):
        (adapter / "adapter_config.json").write_text(json.dumps({**plain, **change}))
        with pytest.raises(ModelError, match=want):
            load(tiny_model_dir, lora=[adapter])


@pytest.mark.skipif(not (PARITY / "model").is_dir(), reason="needs the official parity fixtures")
@pytest.mark.parametrize("file,key", [("llm", "rope_theta"), ("llm", "rms_norm_eps"), ("siglip", "layer_norm_eps")])
def test_an_official_config_number_too_large_for_a_float_is_one_line(tmp_path, file, key):
    """An official checkpoint's LLM or SigLIP config with a 401-digit `rope_theta`, `rms_norm_eps` or
    `layer_norm_eps` passed the type check (`0 < v < inf` holds for any int) and the load was
    "internal error: OverflowError: int too large to convert to float"."""
    from showo2_cli import api
    from showo2_cli.errors import ModelError

    folder = tmp_path / "official"
    shutil.copytree(PARITY / "model", folder)
    config = json.loads((folder / file / "config.json").read_text())
    (config["vision_config"] if file == "siglip" else config)[key] = 10**400
    (folder / file / "config.json").write_text(json.dumps(config))
    wanted = "a number from 0" if key.endswith("_eps") else "a positive number"  # (an epsilon may be 0)
    with pytest.raises(ModelError, match=f"config.json': {key} must be {wanted}"):
        api.load(folder, vae=PARITY / "vae" / "Wan2.1_VAE_tiny.pth")
