"""The Python API as diffusers and transformers users write it, round five (probe KE):
``pipe.transformer = torch.compile(pipe.transformer)`` and ``pipe.transformer.compile()`` compile
the parts Show-o2 runs (the network has no ``forward`` of its own: its wrapper's compile never ran)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from showo2_cli import Showo2Pipeline


def _run(pipe) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    return np.asarray(pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(5),
                           output_type="np").images)


@pytest.fixture(scope="module")
def plain() -> np.ndarray:
    return _run(Showo2Pipeline.from_pretrained("demo"))


def _compiled(module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


@pytest.mark.parametrize("how", ["wrapper", "in_place"])
def test_torch_compile_of_the_network_reaches_its_parts(how):
    pipe = Showo2Pipeline.from_pretrained("demo")  # (heads=(): the flow head loads with the first generation)
    net = pipe.transformer
    if how == "wrapper":
        pipe.transformer = torch.compile(pipe.transformer, backend="eager")
    else:
        pipe.transformer.compile(backend="eager")
    assert _compiled(net.showo.model)  # was: only the wrapper's (or the network's own) forward, never called
    net.load_heads("flow_head")
    assert all(_compiled(b) for b in net.diffusion_head_a) and _compiled(net.diffusion_head_b)
    assert not _compiled(net)  # (the network has no forward to compile)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["wrapper", "in_place"])
def test_torch_compile_of_the_network_compiles_what_sampling_runs(plain, how):
    import torch._dynamo

    pipe = Showo2Pipeline.from_pretrained("demo")  # (heads=(): the flow head loads with the first generation)
    net = pipe.transformer
    if how == "wrapper":  # diffusers' line; backend "eager": dynamo traces, nothing is built (fast)
        pipe.transformer = torch.compile(pipe.transformer, backend="eager")
    else:  # nn.Module.compile
        pipe.transformer.compile(backend="eager")
    assert _compiled(net.showo.model)  # the LLM's forward (was: only the wrapper's forward, never called)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    assert np.array_equal(_run(pipe), plain)  # the same numbers: eager is the compiled graph run as is
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # was 0: nothing was compiled
    assert all(_compiled(b) for b in net.diffusion_head_a) and _compiled(net.diffusion_head_b)  # loaded later
    torch._dynamo.reset()


def test_assigning_the_plain_network_back_undoes_the_wrapper(plain):
    pipe = Showo2Pipeline.from_pretrained("demo")
    net = pipe.transformer
    pipe.transformer = torch.compile(net, backend="eager")
    pipe.transformer = net  # diffusers: the module as it was, uncompiled
    assert not any(_compiled(m) for m in net.modules())
    assert np.array_equal(_run(pipe), plain)
    assert not any(_compiled(m) for m in net.modules())  # the flow head loaded later is not compiled either



@pytest.mark.parametrize(("first", "then"), [("model", "sequential"), ("sequential", "model")])
def test_enabling_the_other_offload_replaces_the_hooks(plain, first, then):
    """diffusers' enable_*_cpu_offload takes the hooks there are off first (remove_all_hooks), so the
    other one may be enabled directly (was a UsageError: 'remove_all_hooks() first')."""
    pipe = Showo2Pipeline.from_pretrained("demo")
    enable = {"model": pipe.enable_model_cpu_offload, "sequential": pipe.enable_sequential_cpu_offload}
    enable[first]()
    enable[then]()
    assert pipe.offload == pipe.model.offload == then
    sequential_weights = next(pipe.network.showo.model.layers[0].parameters()).device.type == "meta"
    assert sequential_weights == (then == "sequential")  # accelerate's hooks of that mode hold the weights
    assert np.array_equal(_run(pipe), plain)


@pytest.mark.parametrize(("name", "says"), [("strength", "image-to-image is not offered"),
                                            ("mask_image", "inpainting is not offered")])
def test_image_to_image_arguments_say_what_image_means_here(name, says):
    """diffusers' img2img and inpaint arguments: image= is a video's first frame here (was the name alone)."""
    pipe = Showo2Pipeline.from_pretrained("demo")
    with pytest.raises(TypeError, match=f"'{name}'.*{says}.*first frame"):
        pipe("a red circle", num_inference_steps=3, **{name: 0.5})


@pytest.mark.parametrize("how", ["wrapper", "in_place"])
def test_a_copy_of_a_compiled_pipeline_is_compiled(how):
    import copy
    import pickle

    pipe = Showo2Pipeline.from_pretrained("demo")
    if how == "wrapper":
        pipe.transformer = torch.compile(pipe.transformer, backend="eager")
    else:
        pipe.transformer.compile(backend="eager")
    for twin in (copy.deepcopy(pipe), pickle.loads(pickle.dumps(pipe))):
        net = getattr(twin.network, "_orig_mod", twin.network)
        assert net is not getattr(pipe.network, "_orig_mod", pipe.network)
        assert _compiled(net.showo.model)  # (nn.Module leaves the compiled call out of a copy's state)
