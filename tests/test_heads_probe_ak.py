"""Probe AK: a one-shot command loads only the network head it runs (``caption`` no flow head;
``t2i``/``t2v``/``i2v`` no untied ``lm_head``); the weights are still checked whole and the outputs
are those of a full load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import PARITY_DIR
from showo2_cli import api
from showo2_cli.cli import main
from showo2_cli.errors import ModelError
from showo2_cli.loading import ALL_HEADS, load
from showo2_cli.modeling.parts import NotLoaded
from showo2_cli.modeling.showo2 import HEADS
from showo2_cli.options import CaptionOptions
from showo2_cli.specs import get_spec

FLOW = ("diff_proj.", "diffusion_head_a.", "diffusion_head_b.")


def _spy_loads(monkeypatch, heads=None) -> list:
    """Record the bundles the CLI loads (``heads`` given: load those in place of the command's)."""
    import showo2_cli.loading as loading

    bundles = []

    def spy(*args, **kwargs):
        if heads is not None:
            kwargs["heads"] = heads
        bundles.append(load(*args, **kwargs))  # the real one
        return bundles[-1]

    monkeypatch.setattr(loading, "load", spy)
    return bundles


def _same_kept_weights(part, full) -> None:
    sp, sf = part.network.state_dict(), full.network.state_dict()
    assert set(sp) <= set(sf)
    for k, v in sp.items():
        assert v.dtype == sf[k].dtype and torch.equal(v, sf[k]), k


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("in") / "in.png"
    Image.new("RGB", (40, 24), (200, 30, 30)).save(path)
    return path


def test_the_heads_table_is_the_loaders():
    assert ALL_HEADS == tuple(HEADS)


def test_caption_command_holds_no_flow_head_and_captions_as_a_full_load(monkeypatch, image, capsys):
    args = ["caption", str(image), "--max-new-tokens", "12", "--temperature", "0.9", "--seed", "3", "--json"]
    answers = []
    for heads in (ALL_HEADS, None):  # a full load (the old behaviour), then the command's own
        bundles = _spy_loads(monkeypatch, heads)
        assert main(args) == 0
        answers.append(json.loads(capsys.readouterr().out)["answers"])
    net = bundles[0].network
    for name in HEADS["flow_head"]:
        assert isinstance(net.get_submodule(name), NotLoaded)
    assert not any(k.startswith(FLOW) for k in net.state_dict())
    assert not any(k.startswith(FLOW) for k, _ in net.named_parameters())
    assert answers[1] == answers[0] and answers[0][0]["tokens"] > 0
    full = load("demo", heads=ALL_HEADS)
    assert bundles[0].parameter_counts() == full.parameter_counts()  # a head left out still counts
    kept = sum(p.numel() for p in net.parameters())
    flow = sum(p.numel() for k, p in full.network.named_parameters() if k.startswith(FLOW))
    assert flow == full.parameter_counts()["flow_head"] > 0
    assert kept == sum(p.numel() for p in full.network.parameters()) - flow
    _same_kept_weights(bundles[0], full)
    # (probe AS: the flow head left out loads on first use, see test_heads_probe_as.py)
    api.text_to_image(bundles[0], ["a red circle"], api.GenerateOptions(steps=2, seed=1))
    assert net.loaded_heads() == ALL_HEADS


@pytest.mark.skipif(not (PARITY_DIR / "model" / "config.json").is_file(), reason="no parity fixtures")
def test_official_format_weights_caption_alike_without_the_flow_head(media_dir):
    vae = PARITY_DIR / "vae" / "Wan2.1_VAE_tiny.pth"
    full = load(PARITY_DIR / "model", vae=vae, dtype=torch.bfloat16, heads=ALL_HEADS)
    part = load(PARITY_DIR / "model", vae=vae, dtype=torch.bfloat16, heads=("lm_head",))
    assert isinstance(part.network.diffusion_head_a, NotLoaded) and part.dtype == torch.bfloat16
    _same_kept_weights(part, full)
    photo = next(p for p in sorted(media_dir.iterdir()) if p.suffix == ".jpg")
    for seed in (1, 2):
        opts = CaptionOptions(max_new_tokens=10, temperature=1.0, seed=seed)
        assert api.caption(part, photo, opts).answers == api.caption(full, photo, opts).answers


def test_generation_commands_leave_an_untied_lm_head_out_and_write_the_same_bytes(monkeypatch, tmp_path, capsys):
    from showo2_cli.loading import init_model

    folder = init_model(get_spec("tiny").replace(name="untied", tie_word_embeddings=False), tmp_path / "untied",
                        seed=2, vae_base_dim=4)
    files = {}
    for label, heads in (("full", ALL_HEADS), ("part", None)):
        bundles = _spy_loads(monkeypatch, heads)
        for kind, given in (("t2i", []), ("t2v", [])):  # (i2v loads as they do: the same call)
            out = tmp_path / f"{label}-{kind}.{'png' if kind == 't2i' else 'mp4'}"
            frames = [] if kind == "t2i" else ["--frames", "5"]
            assert main([kind, *given, "a red circle", "--model", str(folder), "--steps", "3", "--seed", "4",
                         "-o", str(out), "--quiet", "--save-latents", *frames]) == 0
            # a t2v's MP4 already varied from run to run with its latents the same (see the CHANGELOG)
            files[label, kind] = (out if kind == "t2i" else out.with_suffix(".latents.safetensors")).read_bytes()
    for bundle in bundles:
        assert isinstance(bundle.network.showo.lm_head, NotLoaded)
        assert "showo.lm_head.weight" not in bundle.network.state_dict()
        assert bundle.parameter_counts() == load(folder).parameter_counts()
    for kind in ("t2i", "t2v"):
        assert files["part", kind] == files["full", kind], kind
    # a tied lm_head is the token embedding: never left out; one head may be named alone
    assert not isinstance(load("demo", heads="flow_head").network.showo.lm_head, NotLoaded)
    with pytest.raises(ValueError, match="unknown head 'flow'"):
        load("demo", heads=("flow",))


@pytest.mark.parametrize("change", ["shape", "dtype"])
def test_a_bad_flow_head_tensor_still_fails_a_captions_load(tmp_path, tiny_model_dir, image, capsys, change):
    folder = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    key = "diffusion_head_b.linear.weight"
    state[key] = state[key][:, :-1].contiguous() if change == "shape" else state[key].to(torch.int32)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    assert main(["caption", str(image), "--model", str(folder), "--max-new-tokens", "2", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "do not fit the model" in err and key in err and "Traceback" not in err
    with pytest.raises(ModelError, match=key):
        load(folder, heads=("lm_head",))


def test_lora_merges_quantization_and_compile_are_those_of_a_full_load(tmp_path, tiny_model_dir, image):
    from showo2_cli.lora import add_lora, save_adapter
    from showo2_cli.options import RuntimeOptions

    net = load(tiny_model_dir, heads=ALL_HEADS).network
    config = add_lora(net, 2, 4.0, 0.0, ["q_proj", "fc1", "gate_proj", "linear"], ())
    assert any(n.startswith(FLOW) for n in config.target_modules)  # the adapter names flow-head layers too
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    adapter = save_adapter(tmp_path / "adapter", net, config)
    opts = CaptionOptions(max_new_tokens=8, temperature=1.0, seed=5)
    base = load(tiny_model_dir).network.state_dict()
    full = load(tiny_model_dir, lora=[adapter])
    part = load(tiny_model_dir, lora=[adapter], heads=("lm_head",))
    assert isinstance(part.network.diffusion_head_a, NotLoaded)
    _same_kept_weights(part, full)
    w = "showo.model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(part.network.state_dict()[w], base[w])  # merged into what is kept
    assert api.caption(part, image, opts).answers == api.caption(full, image, opts).answers

    pytest.importorskip("torchao")
    runtime = RuntimeOptions("cpu", "float32", quantize="int8wo", compile=True)
    full = load(tiny_model_dir, runtime=runtime)
    part = load(tiny_model_dir, runtime=runtime, heads=("lm_head",))
    assert part.quantize == full.quantize == "int8wo"
    assert type(part.network.showo.model.layers[0].mlp.up_proj.weight) is type(
        full.network.showo.model.layers[0].mlp.up_proj.weight)
    assert part.network.showo.model._compiled_call_impl is not None
    assert isinstance(part.network.diffusion_head_a, NotLoaded)
