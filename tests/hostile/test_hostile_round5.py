"""Hostile model folders, round five: found by probing the loader with broken caches, configs,
tokenizers, VAEs, shards and adapters. Each was a hang, a memory blow-up, an internal error or a
silently wrong load before its fix; each test fails on the code before it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import PARITY_DIR
from showo2_cli.errors import ModelError
from showo2_cli.loading import load

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture()
def official(tmp_path):
    if not (PARITY_DIR / "model" / "config.json").is_file():
        pytest.skip(f"no parity fixtures at {PARITY_DIR}")
    folder = _copy(PARITY_DIR / "model", tmp_path / "official")
    for f in (PARITY_DIR / "vae").iterdir():
        if f.suffix == ".safetensors":
            shutil.copy(f, folder / f.name)
    (folder / "pytorch_model.bin").unlink(missing_ok=True)
    return folder


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_the_hub_cache_refs_does_not_hang_the_default_model_lookup(tmp_path):
    refs = tmp_path / "hub" / "models--showlab--show-o2-1.5B" / "refs"
    refs.mkdir(parents=True)
    (refs.parent / "snapshots").mkdir()
    os.mkfifo(refs / "main")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": SRC,
           "SHOWO2_MODEL": ""}
    for args in (["models", "--json"], ["info", "1.5B"]):
        r = subprocess.run([sys.executable, "-m", "showo2_cli.cli", *args], env=env, capture_output=True,
                           text=True, timeout=120)  # it blocked forever reading the FIFO
        assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 4 and "not in the Hugging Face cache" in r.stderr


def test_tokenizer_files_are_sized_and_their_special_tokens_checked(tmp_path, tiny_model_dir):
    big = _copy(tiny_model_dir, tmp_path / "big")
    with open(big / "tokenizer.json", "r+b") as fh:
        fh.truncate(200 * 2**20)  # sparse: read whole, it took 40 s and GBs before failing
    with pytest.raises(ModelError, match=r"tokenizer.json is 200 MiB"):
        load(big)
    swapped = _copy(tiny_model_dir, tmp_path / "swapped")

    def swap(data):
        tokens = {t["content"]: t for t in data["added_tokens"]}
        start, end = tokens["<|im_start|>"], tokens["<|im_end|>"]
        start["content"], end["content"] = "<|im_end|>", "<|im_start|>"

    _edit_json(swapped / "tokenizer.json", swap)  # every id Show-o2 uses moved, and it loaded
    with pytest.raises(ModelError, match="consecutive"):
        load(swapped)


@pytest.mark.parametrize("where, change, needle", [
    ("llm/config.json", {"tie_word_embeddings": "false"}, "tie_word_embeddings must be true or false"),
    ("llm/config.json", {"rope_theta": [1]}, "rope_theta must be a positive number"),
    ("llm/config.json", {"rms_norm_eps": [1e-6]}, "rms_norm_eps must be a positive number"),
    ("llm/config.json", {"max_position_embeddings": [4096]}, "max_position_embeddings must be a positive integer"),
    ("llm/config.json", {"rope_theta": None, "rope_parameters": [1]}, "rope_parameters must be an object"),
    ("siglip/config.json", {"vision_config": [1]}, "vision_config must be an object"),
    ("config.json", {"max_seq_len": 2**40}, "max_seq_len must be 1 to"),
])
def test_official_configs_with_wrongly_typed_values_are_model_errors(official, where, change, needle):
    """Each was an internal error (TypeError, AttributeError) or, for the string "false", a model
    whose own lm_head was silently replaced by the embedding."""
    _edit_json(official / where, lambda d: d.update(change))
    with pytest.raises(ModelError, match=needle.replace("(", r"\(")):
        load(official, need=())


@pytest.mark.parametrize("change, needle", [
    ({"latents_mean": [float("nan")] + [0.0] * 15}, "latents_mean contains non-finite"),  # all-black images
    ({"scale_factor_spatial": 0}, "scale_factor_spatial = 0 but a Wan2.1 VAE has 8"),  # ZeroDivisionError
    ({"patch_size": 2}, "patch_size = 2"),
    ({"dropout": float("nan")}, "dropout must be a number"),
])
def test_vae_configs_outside_wan21_are_refused(tmp_path, tiny_model_dir, change, needle):
    from showo2_cli.modeling.vae_files import load_vae

    model = _copy(tiny_model_dir, tmp_path / "m")
    config = model / "vae" / "config.json"
    data = json.loads(config.read_text())
    if "latents_mean" in change and len(data.get("latents_mean", [])) != 16:
        change = {"latents_mean": [float("nan")] + [0.0] * (len(data["latents_mean"]) - 1)}
    data.update(change)
    config.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=needle):
        load_vae(model / "vae")


def test_vae_weights_that_do_not_decode_rgb_are_refused(tmp_path, tiny_model_dir):
    from showo2_cli.modeling.vae_files import load_vae

    model = _copy(tiny_model_dir, tmp_path / "m")
    weights = next((model / "vae").glob("*.safetensors"))
    state = load_file(weights)
    state["decoder.conv_out.weight"] = state["decoder.conv_out.weight"][:1].clone()
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"][:1].clone()
    save_file(state, weights)
    with pytest.raises(ModelError, match="out_channels = 1 but a Wan2.1 VAE has 3"):
        load_vae(model / "vae")


def test_shards_that_disagree_sparse_and_disguised_weights(tmp_path, tiny_model_dir):
    model = _copy(tiny_model_dir, tmp_path / "sharded")
    state = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    keys = sorted(state)
    half = len(keys) // 2
    one = {k: state[k] for k in keys[:half]}
    two = {k: state[k] for k in keys[half:]}
    save_file(one, model / "model-00001-of-00002.safetensors")
    save_file(two, model / "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {**{k: "model-00001-of-00002.safetensors" for k in one},
                                            **{k: "model-00002-of-00002.safetensors" for k in two}}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    assert torch.equal(load(model).network.state_dict()[keys[0]], state[keys[0]])  # a good sharded folder
    save_file({**two, keys[0]: state[keys[0]] + 1}, model / "model-00002-of-00002.safetensors")
    with pytest.raises(ModelError, match="an earlier shard holds too"):  # shard 2's copy won silently
        load(model)

    from showo2_cli.weights import read_state_dict

    torch.save({"w": torch.eye(3).to_sparse()}, tmp_path / "sparse.bin")
    with pytest.raises(ModelError, match="sparse_coo layout"):  # accepted, then internal errors later
        read_state_dict(tmp_path / "sparse.bin")
    save_file({"w": torch.ones(2)}, tmp_path / "named.bin")  # safetensors in a .bin: "could run code" before
    assert torch.equal(read_state_dict(tmp_path / "named.bin")["w"], torch.ones(2))
    (tmp_path / "noise.bin").write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match="not a safetensors or PyTorch checkpoint"):
        read_state_dict(tmp_path / "noise.bin")


@pytest.mark.parametrize("name, needle", [
    ("", "the model name is empty"),  # loaded the current folder
    ("a" * 5000, "no model 'aaa"),  # OSError: file name too long
    ("~nosuchuser_showo2/x", "no model '~nosuchuser_showo2/x'"),  # RuntimeError from expanduser
    ("tiny", "showo2 init --spec tiny"),  # "not a known variant (..., tiny)"
])
def test_odd_model_names_are_one_clear_error(name, needle):
    with pytest.raises(ModelError) as e:
        load(name)
    assert needle in str(e.value) and len(str(e.value)) < 300


def _adapter(tmp_path, tiny_model_dir, targets):
    from showo2_cli.lora import add_lora, save_adapter

    network = load(tiny_model_dir).network
    config = add_lora(network, 2, 4.0, 0.0, ("q_proj", "v_proj"), ("showo.model.layers",))
    with torch.no_grad():
        for name, p in network.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    folder = save_adapter(tmp_path / "adapter", network, config)
    _edit_json(folder / "adapter_config.json", lambda d: d.update(target_modules=targets))
    return folder


def test_adapters_with_regex_targets_merge_and_integer_adapters_are_refused(tmp_path, tiny_model_dir):
    from showo2_cli.lora import ADAPTER_WEIGHTS

    listed = _adapter(tmp_path / "a", tiny_model_dir, None)
    cfg = json.loads((listed / "adapter_config.json").read_text())
    assert cfg["target_modules"] is None
    names = sorted(n for n, m in load(tiny_model_dir).network.named_modules()
                   if n.startswith("showo.model.layers") and n.endswith(("q_proj", "v_proj")))
    _edit_json(listed / "adapter_config.json", lambda d: d.update(target_modules=names))
    regex = _adapter(tmp_path / "b", tiny_model_dir, r"showo\.model\.layers\.\d+\.self_attn\.(q_proj|v_proj)")
    shutil.copy(listed / ADAPTER_WEIGHTS, regex / ADAPTER_WEIGHTS)
    by_list = load(tiny_model_dir, lora=[listed]).network.state_dict()
    by_regex = load(tiny_model_dir, lora=[regex]).network.state_dict()  # "targets layers ... (e.g. ()"
    base = load(tiny_model_dir).network.state_dict()
    w = names[0] + ".weight"
    assert not torch.equal(by_list[w], base[w]) and all(torch.equal(by_list[k], by_regex[k]) for k in base)
    nothing = _adapter(tmp_path / "c", tiny_model_dir, r"nothing\.here")
    with pytest.raises(ModelError, match="matches no linear layer"):
        load(tiny_model_dir, lora=[nothing])
    ints = {k: (v * 100).to(torch.int32) for k, v in load_file(listed / ADAPTER_WEIGHTS).items()}
    save_file(ints, listed / ADAPTER_WEIGHTS)
    with pytest.raises(ModelError, match="int32, not a floating-point tensor"):  # truncated and merged before
        load(tiny_model_dir, lora=[listed])
