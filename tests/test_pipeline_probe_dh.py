"""Probe DH: the diffusers-shaped pipeline as diffusers users call it (tiny model, in process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_a_list_of_generators_is_one_batched_run(pipe):
    """diffusers' per-image generators (`generator=[... for i in range(n)]`) made one output at a
    time: batch_size ignored, the denoising bar and progress restarting per output, a step
    callback seeing one output's latents. Now one run in batches, each output its generator's."""
    from showo2_cli import api

    call = dict(num_inference_steps=4, guidance_scale=3.0, output_type="latent")
    seen, shapes = [], []

    def step(p, i, t, kwargs):
        shapes.append(tuple(kwargs["latents"].shape))
        return kwargs

    out = pipe("a red circle", num_images_per_prompt=3, generator=gens(5, 9, 2), batch_size=3,
               progress=lambda phase, done, total: seen.append((phase, done, total)),
               callback_on_step_end=step, **call)
    assert [r.seed for r in out.results] == [5, 9, 2]
    assert shapes == [(3, *out.images.shape[1:])] * 3  # one batch of three, three steps
    denoising = [(done, total) for phase, done, total in seen if phase == "denoising"]
    assert denoising == [(1, 3), (2, 3), (3, 3)]  # one bar of 3 steps (was 3 bars counting 1..3 each)
    # the API's per-output seeds: the same run, and the same batches
    same = api.text_to_image(pipe.model, ["a red circle"], api.GenerateOptions(
        steps=4, guidance=3.0, seed=0, seeds=[5, 9, 2], num_per_prompt=3, batch_size=3))
    assert torch.equal(torch.stack([r.latents for r in same]), out.images)
    # each output is its generator's seed's: one at a time, bit for bit a call with that seed alone
    single = pipe("a red circle", num_images_per_prompt=3, generator=gens(5, 9, 2), batch_size=1, **call).images
    assert torch.equal(single[1], pipe("a red circle", seed=9, **call).images[0])
    assert torch.allclose(single, out.images, atol=1e-3)  # batching moves float rounding only
    # generators seeded as --seed 7 -n 2 seeds its outputs (7, 8): the command's images, bit for bit
    assert torch.equal(pipe("a", num_images_per_prompt=2, generator=gens(7, 8), **call).images,
                       pipe("a", num_images_per_prompt=2, seed=7, **call).images)
    # several prompts, num_images_per_prompt each: the generators in the run's order
    two = pipe(["a", "b"], num_images_per_prompt=2, generator=gens(1, 2, 3, 4), **call)
    assert [(r.prompt, r.seed) for r in two.results] == [("a", 1), ("a", 2), ("b", 3), ("b", 4)]


def test_per_output_seeds_are_checked(pipe):
    from showo2_cli import api

    with pytest.raises(ValueError, match="got 2 seeds for 3 outputs"):
        api.text_to_image(pipe.model, ["a"], api.GenerateOptions(steps=2, seeds=[1, 2], num_per_prompt=3))
    for bad in ("12", 7, [1, -1], [1.5], []):
        with pytest.raises(ValueError, match="seeds"):
            api.GenerateOptions(steps=2, seeds=bad).validate()
    assert api.GenerateOptions(seeds=[np.int64(3)]).seeds == [3] and type(api.GenerateOptions(
        seeds=[np.int64(3)]).seeds[0]) is int


def test_a_step_callback_returning_nan_is_named(pipe):
    """A callback's NaN latents were reported after the run as the model's own NaN ('the model's
    weights hold NaN or infinity, or half precision overflowed'), which sent users to their weights."""

    def nan(p, i, t, kwargs):
        return {"latents": kwargs["latents"] * float("nan")}

    with pytest.raises(ValueError, match="step callback returned latents holding NaN or infinite"):
        pipe("a", num_inference_steps=3, seed=1, callback_on_step_end=nan)


def test_loads_and_moves_inside_inference_mode_make_ordinary_weights(tiny_model_dir, tmp_path):
    """`with torch.inference_mode():` around a notebook cell's `from_pretrained` (or `pipe.to`)
    made the weights inference tensors, unlike the heads and VAE halves loaded later (those run
    outside inference mode): `load_lora_weights` then failed with 'Inplace update to inference
    tensor outside InferenceMode is not allowed', and so did autograd through the weights."""
    from conftest import random_lora
    from showo2_cli import Showo2Pipeline

    adapter = random_lora(tiny_model_dir, tmp_path / "lora")
    with torch.inference_mode():
        pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    tensors = lambda p: [*p.network.parameters(), *p.network.buffers(), *p.vae.parameters(), *p.vae.buffers()]  # noqa: E731
    assert not any(t.is_inference() for t in tensors(pipe))
    call = dict(num_inference_steps=3, seed=1, output_type="latent")
    base = pipe("a", **call).images
    with torch.inference_mode():
        pipe.to(torch.float64)
        pipe.to(torch.float32)
    assert not any(t.is_inference() for t in tensors(pipe))
    weights = {k: v.clone() for k, v in pipe.network.state_dict().items()}
    with torch.inference_mode():
        pipe.load_lora_weights(str(adapter))
    merged = pipe.network.state_dict()
    assert sum(not torch.equal(merged[k], v) for k, v in weights.items()) == 2 * pipe.spec.num_layers  # q and v of each layer
    pipe.unload_lora_weights()
    assert all(torch.equal(pipe.network.state_dict()[k], v) for k, v in weights.items())
    assert torch.equal(pipe("a", **call).images, base)


def test_diffusers_lora_calls_say_what_to_call(pipe, tiny_model_dir, tmp_path):
    """diffusers' LoRA script (`load_lora_weights`, then `fuse_lora()` or `set_adapters(...)`) met
    an AttributeError on its second line; the adapters are merged on load here."""
    from conftest import random_lora

    adapter = random_lora(tiny_model_dir, tmp_path / "lora")
    weights = {k: v.clone() for k, v in pipe.network.state_dict().items()}
    pipe.load_lora_weights(str(adapter), adapter_name="style")
    try:
        merged = {k: v.clone() for k, v in pipe.network.state_dict().items()}
        pipe.fuse_lora()  # fused already: nothing changes
        pipe.fuse_lora(lora_scale=np.float32(1.0))
        pipe.enable_lora()
        assert all(torch.equal(pipe.network.state_dict()[k], v) for k, v in merged.items())
        for call, hint in ((lambda: pipe.fuse_lora(lora_scale=0.5), r"weight=0\.5"),
                           (lambda: pipe.set_adapters(["style"], adapter_weights=[0.5]), r"weight=\.\.\."),
                           (pipe.unfuse_lora, "unload_lora_weights"), (pipe.disable_lora, "unload_lora_weights"),
                           (lambda: pipe.delete_adapters("style"), "unload_lora_weights")):
            with pytest.raises(ValueError, match=hint) as refused:
                call()
            assert "merged into the weights" in str(refused.value) and "\n" not in str(refused.value)
        assert all(torch.equal(pipe.network.state_dict()[k], v) for k, v in merged.items())
    finally:
        pipe.unload_lora_weights()
    assert all(torch.equal(pipe.network.state_dict()[k], v) for k, v in weights.items())


def test_outputs_record_a_component_assigned_in_python(tiny_model_dir):
    """`pipe.vae = ...` / `pipe.network = ...` (diffusers' component swap) made outputs whose
    records named only the model, as if its own VAE and network had made them: a re-run from the
    record gave other pixels without a word. The records now say so; the parts loaded, assigned
    back, record nothing again, and a compiled wrapper of the same network is no swap."""
    import copy

    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_inference_steps=2, seed=1)
    own_vae, own_network = pipe.vae, pipe.network
    assert {"vae", "network"}.isdisjoint(pipe("a", **call).results[0].params)
    other = copy.deepcopy(own_vae)
    with torch.no_grad():
        other.model.decoder.conv_out.bias.add_(0.5)  # another VAE of the same shape
    pipe.vae = other
    swapped = pipe("a", **call).results[0]
    assert swapped.params["vae"] == "assigned in Python (pipe.vae = ...)"
    assert pipe.model.record()["vae"] == swapped.params["vae"]  # (what captions and chats record too)
    pipe.vae = own_vae
    assert "vae" not in pipe("a", **call).results[0].params
    pipe.network = copy.deepcopy(own_network)
    assert pipe("a", **call).results[0].params["network"] == "assigned in Python (pipe.network = ...)"
    pipe.network = own_network
    assert "network" not in pipe("a", **call).results[0].params
    pipe.transformer = torch.compile(own_network)  # (compiled when first run: not run here)
    assert "network" not in pipe.model.record()


def test_a_list_of_images_of_two_sizes_says_it_is_read_as_a_video(pipe):
    """`pipe.caption([photo_a, photo_b])`, transformers' batch habit, said only that 'the frames
    of a video share one size': the list is one video's frames here (README), and the error now
    says so and what to do for several images."""
    from PIL import Image

    images = [Image.new("RGB", (32, 32)), Image.new("RGB", (48, 32))]
    with pytest.raises(ValueError, match=r"share one size; a list of images is one video's frames \(several "
                                         r"images: one call each\)"):
        pipe.caption(images, "what is it?", max_new_tokens=2)


def test_a_list_of_one_generator_for_several_outputs_says_what_one_means(pipe):
    """`generator=[g]` with two outputs said 'got 1 generators for 2 outputs: give one, or one per
    output' (one was given); it says a single generator goes outside a list."""
    with pytest.raises(ValueError, match=r"a list of 1 generators for 2 outputs: give one generator \(not in a "
                                         r"list\) for all, or a list of one per output"):
        pipe("a", num_images_per_prompt=2, generator=gens(3), num_inference_steps=2)
