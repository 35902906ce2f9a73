"""Probe FC: diffusers' component sharing (`Showo2Pipeline(**pipe.components)`, `from_pipe`) on the
tiny model, in process."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

from showo2_cli.errors import UsageError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def demo_pipe():
    """The bundled demo (the tiny model's zero-initialised flow head makes every output its noise)."""
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained("demo")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_pipeline_made_from_anothers_components(demo_pipe):
    """`Showo2Pipeline(**pipe.components)` (diffusers' weight sharing, `Img2Img(**pipe.components)`)
    was a TypeError ('unexpected keyword argument network'). It is a second pipeline over the same
    weights, giving the same outputs; a part replaced or a scheduler set on it stays its own."""
    from diffusers import FlowMatchHeunDiscreteScheduler

    from showo2_cli import Showo2Pipeline

    pipe = demo_pipe
    call = dict(num_inference_steps=3, height=64, width=64, output_type="latent")
    first = pipe("a red circle", generator=gen(3), **call).images
    assert not torch.equal(pipe("a blue square", generator=gen(3), **call).images, first)
    other = Showo2Pipeline(**pipe.components)
    assert sorted(pipe.components) == ["model", "network", "scheduler", "tokenizer", "transformer", "vae"]
    assert other.network is pipe.network and other.vae is pipe.vae and other.tokenizer is pipe.tokenizer
    again = other("a red circle", generator=gen(3), **call)
    assert torch.equal(again.images, first)  # the same weights, the same numbers
    assert again.results[0].params["model"] == pipe("a", generator=gen(3), **call).results[0].params["model"]
    assert "vae" not in again.results[0].params and "network" not in again.results[0].params

    vae = copy.deepcopy(pipe.vae)  # one part replaced, diffusers' way: the first pipeline keeps its own
    third = Showo2Pipeline(**{**pipe.components, "vae": vae})
    assert third.vae is vae and pipe.vae is not vae and other.vae is pipe.vae
    assert third("a", generator=gen(1), **call).results[0].params["vae"].startswith("assigned in Python")
    assert "vae" not in pipe("a", generator=gen(1), **call).results[0].params

    heun = Showo2Pipeline.from_pipe(pipe, scheduler=FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config))
    assert (heun.sampler, pipe.sampler) == ("heun", "euler") and heun.network is pipe.network
    assert Showo2Pipeline.from_pipe(heun).sampler == "heun"  # its scheduler is one of its components
    assert Showo2Pipeline.from_pipe(pipe, transformer=pipe.network).network is pipe.network

    with pytest.raises(TypeError, match=r"needs the loaded model: .*\*\*pipe.components.*got no model"):
        Showo2Pipeline(vae=pipe.vae)
    with pytest.raises(TypeError, match="got model=str"):
        Showo2Pipeline("demo")
    with pytest.raises(ValueError, match="network and transformer name the same part"):
        Showo2Pipeline(**{**pipe.components, "transformer": torch.nn.Linear(1, 1)})
    with pytest.raises(ValueError, match="tokenizer must be the model's own"):
        Showo2Pipeline(**{**pipe.components, "tokenizer": copy.copy(pipe.tokenizer)})
    with pytest.raises(TypeError, match="unexpected keyword argument 'text_encoder'"):
        Showo2Pipeline.from_pipe(pipe, text_encoder=None)


def test_pipelines_sharing_weights_share_what_is_done_to_them(tiny_model_dir, tmp_path):
    """Two pipelines over the same weights: a LoRA adapter loaded through one is in the other's
    weights, so both record it, and either unloads it (the weights compared: the tiny model's
    zero-initialised flow head makes its outputs their noise); CPU offload enabled through one hooks the
    other's weights too, which then refuses `.to()` as a pipeline offloaded itself does."""
    from conftest import random_lora
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    other = Showo2Pipeline(**pipe.components)
    other.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=3, height=64, width=64, output_type="latent")
    base = pipe("a red circle", generator=gen(2), **call).images
    weights = {k: v.clone() for k, v in pipe.network.state_dict().items()}
    adapter = random_lora(tiny_model_dir, tmp_path / "lora")
    other.load_lora_weights(str(adapter), adapter_name="style")
    merged = pipe("a red circle", generator=gen(2), **call)
    changed = sum(not torch.equal(pipe.network.state_dict()[k], v) for k, v in weights.items())
    assert changed == 2 * pipe.spec.num_layers  # q and v of each layer, in the weights both run
    assert merged.results[0].params["lora"] == other("a", generator=gen(2), **call).results[0].params["lora"]
    assert pipe.get_list_adapters() == ["style"]
    pipe.unload_lora_weights()  # through the other pipeline: the weights as loaded, bit for bit
    assert other.get_list_adapters() == [] and "lora" not in other("a", generator=gen(2), **call).results[0].params
    assert all(torch.equal(other.network.state_dict()[k], v) for k, v in weights.items())
    assert torch.equal(other("a red circle", generator=gen(2), **call).images, base)

    other.enable_model_cpu_offload(device="cpu")
    assert pipe.offload == "model"
    with pytest.raises(UsageError, match="model CPU offload"):
        pipe.to("cpu")
    with pytest.raises(UsageError, match="model CPU offload"):
        pipe.load_lora_weights(str(adapter))


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_remove_all_hooks_undoes_cpu_offload(tiny_model_dir, mode):
    """diffusers' `pipe.remove_all_hooks()` (offload off again, then `.to()`) was an AttributeError,
    and `.to()` after offload said to load the model again. The hooks come off, sequential
    offload's weights come back from the meta device, and the pipeline moves and offloads again."""
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    weights = {k: v.clone() for k, v in pipe.network.state_dict().items()}
    getattr(pipe, f"enable_{mode}_cpu_offload")(device="cpu")
    with pytest.raises(UsageError, match=r"remove_all_hooks\(\) first"):
        pipe.to(torch.float64)
    decoded = pipe("a", generator=gen(4), num_inference_steps=2, height=64, width=64, output_type="np").images
    pipe.remove_all_hooks()
    assert pipe.offload == "none" and pipe.device == torch.device("cpu")
    assert not any(hasattr(m, "_hf_hook") for m in (*pipe.network.modules(), *pipe.vae.modules()))
    state = pipe.network.state_dict()
    assert all(not state[k].is_meta and torch.equal(state[k], v) for k, v in weights.items())
    again = pipe("a", generator=gen(4), num_inference_steps=2, height=64, width=64, output_type="np").images
    assert (again == decoded).all()  # (the same pixels, the VAE run without its hooks)
    assert pickle.loads(pickle.dumps(pipe)).offload == "none"  # (with the hooks it does not pickle)
    assert pipe.to(torch.float64).dtype == torch.float64
    pipe.to(torch.float32).enable_model_cpu_offload(device="cpu")
    assert pipe.offload == "model"
