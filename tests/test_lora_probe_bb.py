"""Probe BB: LoRA adapters as diffusers and peft users handle them. ``pipe.load_lora_weights`` after
``from_pretrained`` equals ``from_pretrained(lora=)`` bit for bit (heads loaded already or on first
use), ``unload_lora_weights`` restores the base bit for bit; ``--lora`` and ``lora=`` take a Hugging
Face repo id (a local Hub on 127.0.0.1); adapters are read and checked before the model's weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import write_adapter
from showo2_cli import Showo2Pipeline
from showo2_cli.errors import ModelError, UsageError
from showo2_cli.loading import load
from showo2_cli.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PEFT_PREFIX
from showo2_cli.modeling.parts import NotLoaded
from showo2_cli.specs import get_spec
from test_hub_pipeline import hub, offline  # noqa: F401  (the local Hub fixture)


@pytest.fixture(scope="module")
def untied(tmp_path_factory):
    """A tiny model whose ``lm_head`` is its own tensor: both heads load on first use."""
    from showo2_cli.loading import init_model

    spec = get_spec("tiny").replace(name="untied", tie_word_embeddings=False)
    return init_model(spec, tmp_path_factory.mktemp("bb") / "untied", seed=3, vae_base_dim=4)



@pytest.fixture(scope="module")
def adapters(untied, tmp_path_factory):
    """Over the LLM, the flow head and the untied lm_head (alpha_pattern, rsLoRA), then over the
    flow head's attention alone."""
    tmp = tmp_path_factory.mktemp("adapters")
    return [write_adapter(untied, tmp / "a", ["q_proj", "fc1", "linear", "lm_head"], 1, use_rslora=True,
                     alpha_pattern={"diffusion_head_b.linear": 9.0, "lm_head": 3.0}),
            write_adapter(untied, tmp / "b", ["diffusion_head_a.0.self_attn.q_proj", "o_proj"], 2)]


def _whole(pipe) -> dict:
    pipe.network.load_heads()
    return {k: v.clone() for k, v in pipe.network.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def states(untied, adapters):
    """The whole network's weights as ``from_pretrained(lora=)`` gives them: no adapter, the first,
    the second, both in order, both the other way round."""
    a, b = adapters
    return {key: _whole(Showo2Pipeline.from_pretrained(untied, lora=lora))
            for key, lora in {"base": (), "a": [a], "b": [b], "ab": [a, b], "ba": [b, a]}.items()}


@pytest.mark.parametrize("heads_first", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["heads-later", "heads-loaded"])  # (heads loaded first: the plainer path, slow suite)
def test_load_lora_weights_is_from_pretrained_lora_bit_for_bit_and_unload_restores_the_base(untied, adapters,
                                                                                             states, heads_first):
    """`Showo2Pipeline` had no load_lora_weights (AttributeError): adapters merged at load only."""
    pipe = Showo2Pipeline.from_pretrained(untied)
    if heads_first:
        pipe.network.load_heads()
    else:
        assert isinstance(pipe.network.diffusion_head_a, NotLoaded)
    assert [pipe.load_lora_weights(a) for a in adapters] == ["default_0", "default_1"]
    assert pipe.get_list_adapters() == ["default_0", "default_1"]
    assert pipe.model.adapters == [str(a) for a in adapters]
    got = _whole(pipe)
    assert _same(got, states["ab"])
    changed = [k for k in got if not torch.equal(states["base"][k], got[k])]
    assert any(k.startswith("diffusion_head_a.0.self_attn.q_proj") for k in changed)
    assert "showo.lm_head.weight" in changed and len(changed) >= 10
    pipe.unload_lora_weights()
    assert pipe.model.adapters == [] and pipe.get_list_adapters() == []
    assert _same(_whole(pipe), states["base"])
    pipe.load_lora_weights(adapters[0], adapter_name="style")  # again, as a fresh load of it would
    assert _same(_whole(pipe), states["a"])


def test_adapters_given_on_load_stay_and_a_weight_scales_the_update(untied, adapters, states):
    pipe = Showo2Pipeline.from_pretrained(untied, lora=adapters[1])
    pipe.load_lora_weights(adapters[0], weight=0.5)
    assert pipe.model.adapters == [str(adapters[1]), {"path": str(adapters[0]), "weight": 0.5}]
    half, base, full = _whole(pipe), states["b"], states["ba"]
    for k in ("showo.model.layers.0.self_attn.q_proj.weight", "diffusion_head_b.linear.weight", "showo.lm_head.weight"):
        assert not torch.equal(half[k], base[k])
        torch.testing.assert_close(half[k] - base[k], 0.5 * (full[k] - base[k]), atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="already in use"):
        pipe.load_lora_weights(adapters[1], adapter_name="default_0")
    pipe.unload_lora_weights()
    assert pipe.model.adapters == [str(adapters[1])]  # (from_pretrained's adapter is part of the model)
    assert _same(_whole(pipe), base)


def test_an_adapter_that_does_not_fit_changes_nothing_and_exact_merges_are_refused_where_they_cannot_be(
        untied, adapters, tmp_path):
    from safetensors.torch import load_file, save_file

    pipe = Showo2Pipeline.from_pretrained(untied)
    pipe.network.load_heads()
    before = _whole(pipe)
    other = tmp_path / "other"
    shutil.copytree(adapters[0], other)
    state = load_file(str(other / ADAPTER_WEIGHTS))
    key = next(k for k in state if "diffusion_head_a.0" in k and "lora_A" in k)
    state[key] = torch.zeros(2, state[key].shape[1] + 1)  # a flow-head layer of another width
    save_file(state, str(other / ADAPTER_WEIGHTS))
    with pytest.raises(ModelError, match="does not fit this model"):
        pipe.load_lora_weights(other)
    with pytest.raises(TypeError, match="weight must be a finite number"):
        pipe.load_lora_weights(adapters[0], weight=float("nan"))
    with pytest.raises(TypeError, match="state dict is not taken"):
        pipe.load_lora_weights({"x": torch.zeros(1)})
    assert _same(_whole(pipe), before) and pipe.model.adapters == [] and pipe.get_list_adapters() == []

    pipe.network = torch.compile(pipe.network)  # (lazy: nothing compiles until it runs)
    with pytest.raises(UsageError, match="compiled network"):
        pipe.load_lora_weights(adapters[0])
    pytest.importorskip("torchao")
    from showo2_cli.options import RuntimeOptions

    quantized = Showo2Pipeline.from_pretrained(untied, runtime=RuntimeOptions(quantize="int8wo"))
    with pytest.raises(UsageError, match="int8wo-quantized"):
        quantized.load_lora_weights(adapters[0])


def test_lora_takes_a_hub_repo_id_through_the_one_download_path(hub, untied, adapters, states, monkeypatch):  # noqa: F811
    """`--lora owner/name` said "does not exist (adapters on the Hub: hf download ...)"."""
    files = {n: adapters[0] / n for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)}
    first = hub.add("acme/style", {**files, "README.md": b"# a style\n"})
    hub.add("acme/style", {ADAPTER_CONFIG: adapters[1] / ADAPTER_CONFIG, ADAPTER_WEIGHTS: adapters[1] / ADAPTER_WEIGHTS})
    hub.add("acme/model", {"config.json": b"{}", "model.safetensors": b"\0" * 8})
    newest = Showo2Pipeline.from_pretrained(untied, lora="acme/style")
    assert _same(_whole(newest), states["b"]) and newest.model.adapters == ["acme/style"]  # main; as given
    assert sorted(hub.downloads()) == ["acme/style:adapter_config.json", "acme/style:adapter_model.safetensors"]
    pipe = Showo2Pipeline.from_pretrained(untied)
    pipe.load_lora_weights("acme/style", revision=first.sha)
    pipe.load_lora_weights(f"acme/style@{hub.repos['acme/style'].sha}")
    assert _same(_whole(pipe), states["ab"])
    assert pipe.model.adapters == [f"acme/style@{first.sha}", f"acme/style@{hub.repos['acme/style'].sha}"]
    with pytest.raises(ModelError, match=r"'acme/model' on the Hub is not a LoRA adapter.*\(it is a model: give it as --model\)"):
        load(untied, lora="acme/model")
    with pytest.raises(ModelError, match=r"--lora: 'runs/my-lora' is not a local folder, and LoRA adapter 'runs/my-lora' "
                                         r"is not on the Hub"):
        load(untied, lora="runs/my-lora")  # (a mistyped relative path is shaped like a repo id)
    offline(monkeypatch)
    asked = len(hub.requests)
    assert _same(load(untied, lora=f"acme/style@{first.sha}").network.state_dict(), states["a"])  # from the cache
    assert len(hub.requests) == asked
    with pytest.raises(ModelError, match="'acme/other' is not a local folder, and no LoRA adapter of that repo id is in "
                                         "the Hugging Face cache \\(HF_HUB_OFFLINE is set\\)"):
        load(untied, lora="acme/other")


def test_adapters_are_checked_before_the_weights_are_read(untied, adapters, tmp_path, monkeypatch, capsys):
    """A mistyped --lora failed after the imports and the model's lookup; an adapter that did not fit,
    or whose flow-head tensors held NaN, only after the weights were read (or at the head's first use)."""
    from safetensors.torch import load_file, save_file

    import showo2_cli.loading as loading
    from showo2_cli.cli import main

    calls = []
    monkeypatch.setattr(loading, "load", lambda *a, **k: calls.append(a))
    code = main(["t2i", "a red circle", "-o", str(tmp_path / "x.png"), "--lora", str(tmp_path / "typo"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == UsageError.exit_code and calls == [] and not (tmp_path / "x.png").exists()
    assert "--lora" in err and "does not exist" in err and "\n" not in err
    monkeypatch.undo()

    reads = []
    real = loading.read_state_dict
    monkeypatch.setattr(loading, "read_state_dict", lambda *a, **k: reads.append(a) or real(*a, **k))
    wide, nan = tmp_path / "wide", tmp_path / "nan"
    for folder in (wide, nan):
        shutil.copytree(adapters[0], folder)
        state = load_file(str(folder / ADAPTER_WEIGHTS))
        key = next(k for k in state if k.removeprefix(PEFT_PREFIX).startswith("diffusion_head_b.linear.lora_B"))
        state[key] = (torch.zeros(state[key].shape[0] + 1, state[key].shape[1]) if folder is wide
                      else torch.full_like(state[key], float("nan")))
        save_file(state, str(folder / ADAPTER_WEIGHTS))
    with pytest.raises(ModelError, match="does not fit this model"):
        load(untied, lora=[adapters[1], wide], heads=())
    with pytest.raises(ModelError, match="diffusion_head_b.linear.lora_B.* holds NaN or infinite values"):
        load(untied, lora=[nan], heads=())  # (a head left out: its merge, which refused NaN, came at first use)
    assert reads == []

    # an official config's sizes come from the weights: checked once they are read, before the network is built
    from conftest import PARITY_DIR

    if not PARITY_DIR.is_dir():
        pytest.skip("no parity fixtures")
    builds = []
    build = loading.build_network
    monkeypatch.setattr(loading, "build_network", lambda *a, **k: builds.append(a) or build(*a, **k))
    # only the widened flow-head output pair, which every Show-o2 has (a set of another depth lacks
    # the tiny model's other adapted layers, which is another refusal)
    official_wide = tmp_path / "official-wide"
    shutil.copytree(wide, official_wide)
    state = load_file(str(official_wide / ADAPTER_WEIGHTS))
    save_file({k: v for k, v in state.items() if k.removeprefix(PEFT_PREFIX).startswith("diffusion_head_b.linear.")},
              str(official_wide / ADAPTER_WEIGHTS))
    config = json.loads((official_wide / ADAPTER_CONFIG).read_text())
    config["target_modules"] = [t for t in config["target_modules"] if t.startswith("diffusion_head_b.linear")]
    config["alpha_pattern"] = {k: v for k, v in config["alpha_pattern"].items() if k.startswith("diffusion_head_b")}
    (official_wide / ADAPTER_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not fit this model"):  # (its flow-head tensor one row too many)
        load(PARITY_DIR / "model", vae=sorted((PARITY_DIR / "vae").glob("*.pth"))[0], lora=[official_wide])
    assert builds == []
