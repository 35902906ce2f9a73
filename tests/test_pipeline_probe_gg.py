"""Probe GG: the diffusers-shaped pipeline against what diffusers' and transformers' users write,
round four (tiny model, in process)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


CALL = dict(num_inference_steps=2, height=32, width=32, output_type="latent")


def test_pipe_config_and_name_or_path_are_diffusers(pipe, tiny_model_dir):
    """``pipe.config`` (diffusers' FrozenDict of the class and its components) and
    ``pipe.name_or_path`` were AttributeErrors. Now as diffusers records them; a component
    assigned, or compiled, shows what it is."""
    from diffusers import FlowMatchHeunDiscreteScheduler
    from diffusers.configuration_utils import FrozenDict

    from showo2_cli import Showo2Pipeline

    config = pipe.config
    assert isinstance(config, FrozenDict)
    assert config["_class_name"] == "Showo2Pipeline"
    assert pipe.name_or_path == config["_name_or_path"] == str(tiny_model_dir)
    assert config["transformer"] == config["network"] == ("showo2_cli.modeling.showo2", "Showo2Model")
    assert config["vae"] == ("showo2_cli.modeling.vae", "WanVAE")
    assert config["scheduler"] == ("diffusers", "FlowMatchEulerDiscreteScheduler")
    assert config["tokenizer"][0] == "transformers"
    assert set(config) == {"_class_name", "_name_or_path", *pipe.components}
    heun = Showo2Pipeline.from_pipe(pipe, scheduler=FlowMatchHeunDiscreteScheduler())
    assert heun.config["scheduler"] == ("diffusers", "FlowMatchHeunDiscreteScheduler")
    assert pipe.config["scheduler"][1] == "FlowMatchEulerDiscreteScheduler"  # the first keeps its own


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_sequence_length": 64}, r"'max_sequence_length': Show-o2 has no text encoder whose length a call picks: "
                                  r".*pipe.spec.text_budget tokens"),
    ({"attention_kwargs": {"scale": 0.5}}, r"'attention_kwargs': LoRA adapters are merged .*weight="),
    ({"joint_attention_kwargs": {"scale": 0.5}}, r"'joint_attention_kwargs': LoRA adapters are merged"),
    ({"prompt_embeds": torch.zeros(1, 4, 8)}, r"'prompt_embeds': Show-o2 has no separate text encoder"),
    ({"fps": 16}, r"'fps': the model takes no frame rate; .*export_to_video\(frames, path, fps=\)"),
    ({"true_cfg_scale": 4.0}, r"'true_cfg_scale': pass guidance_scale="),
    ({"colour": 1}, r"^Showo2Pipeline.__call__\(\) got an unexpected keyword argument 'colour'$"),
])
def test_diffusers_call_arguments_not_taken_say_what_to_pass(pipe, kwargs, message):
    """FluxPipeline's / WanPipeline's ``max_sequence_length``, ``attention_kwargs``,
    ``prompt_embeds``, ``fps`` ... were Python's bare "unexpected keyword argument": nothing said
    why, or what does the job here. Each is refused by name with what to pass instead."""
    with pytest.raises(TypeError, match=r"^Showo2Pipeline.__call__\(\) got an unexpected keyword argument " + message
                       if not message.startswith("^") else message):
        pipe("a cat", generator=torch.Generator().manual_seed(0), **CALL, **kwargs)


def test_a_negative_prompt_guidance_does_not_use_is_warned_of(pipe):
    """``pipe(p, negative_prompt=n, guidance_scale=1.0)`` (or 0) dropped the negative prompt without
    a word, where the CLI gives a notice; it now warns at the caller's line. The output is the one
    without it; with guidance it steers and nothing is said."""
    gen = torch.Generator
    plain = pipe("a cat", guidance_scale=1.0, generator=gen().manual_seed(1), **CALL).images
    for scale in (1.0, 0.0):
        with pytest.warns(UserWarning, match=rf"^negative_prompt has no effect at guidance_scale {scale:g} ") as got:
            out = pipe("a cat", negative_prompt="blurry", guidance_scale=scale, generator=gen().manual_seed(1), **CALL)
        assert got[0].filename == __file__
    assert torch.equal(out.images, pipe("a cat", guidance_scale=0.0, generator=gen().manual_seed(1), **CALL).images)
    assert torch.equal(pipe("a cat", guidance_scale=1.0, generator=gen().manual_seed(1), **CALL).images, plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe("a cat", negative_prompt="blurry", guidance_scale=3.0, generator=gen().manual_seed(1), **CALL)
        pipe(["a", "b"], negative_prompt="", guidance_scale=1.0, generator=gen().manual_seed(1), **CALL)


def test_caption_takes_do_sample_as_transformers_does(pipe):
    """``pipe.caption(image, q, do_sample=True)`` (transformers' way to sample) was refused. It now
    means what it means to ``generate``: True samples, at temperature 1.0 unless one is given;
    False (or neither) decodes greedily; a contradiction is refused rather than one of the two
    ignored."""
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    ask = dict(max_new_tokens=12)
    greedy = pipe.caption(image, "What?", **ask)
    assert pipe.caption(image, "What?", do_sample=False, **ask) == greedy
    sampled = pipe.caption(image, "What?", do_sample=True, seed=3, **ask)
    assert sampled == pipe.caption(image, "What?", temperature=1.0, seed=3, **ask)
    assert sampled != greedy
    assert pipe.caption(image, "What?", do_sample=True, temperature=0.5, seed=3, **ask) == \
        pipe.caption(image, "What?", temperature=0.5, seed=3, **ask)
    with pytest.raises(ValueError, match=r"^do_sample=True needs temperature > 0"):
        pipe.caption(image, "What?", do_sample=True, temperature=0, **ask)
    with pytest.raises(ValueError, match=r"^do_sample=False decodes greedily, but temperature=0.7 samples"):
        pipe.caption(image, "What?", do_sample=False, temperature=0.7, **ask)
    with pytest.raises(TypeError, match=r"^do_sample must be True or False, got 'yes'"):
        pipe.caption(image, "What?", do_sample="yes", **ask)


def test_caption_ends_answers_at_stop_strings_and_refuses_an_empty_question_list():
    """``pipe.caption(image, q, stop_strings=[...])`` (transformers' ``generate(stop_strings=)``)
    was refused, pointing at ``Conversation.ask``. Each answer now ends where a stop string first
    appears, as a chat's answer does (the text before it). ``question=[]`` gave a one-item list
    describing the image (a list of no questions, one answer); it is now refused. (The bundled
    demo, whose answers are words: the tiny model's are random bytes.)"""
    from PIL import Image

    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained("demo")
    image = Image.new("RGB", (64, 64), (200, 10, 10))
    ask = dict(max_new_tokens=8)
    whole = pipe.caption(image, **ask)
    assert whole == "a red square on a gray background"
    assert pipe.caption(image, stop_strings=" on", **ask) == "a red square"
    assert pipe.caption(image, ["Describe the image.", "What shape is it?"], stop_strings=["\x00", "are"],
                        **ask) == ["a red squ", "squ"]
    assert pipe.caption(image, stop_strings=["never in it"], **ask) == whole
    assert pipe.caption(image, temperature=1.5, seed=1, stop_strings="gray", **ask) == "a red square on a"
    with pytest.raises(TypeError, match=r"^caption\(\) got an unexpected keyword argument 'stop': pass stop_strings="):
        pipe.caption(image, "What?", stop=" on", **ask)
    with pytest.raises(ValueError, match="a stop string must be 1 to"):
        pipe.caption(image, "What?", stop_strings=[""], **ask)
    with pytest.raises(ValueError, match=r"^question is an empty list: pass None"):
        pipe.caption(image, [], **ask)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"push_to_hub": True}, r"'push_to_hub': save to a folder, then upload it with huggingface_hub"),
    ({"variant": "fp16"}, r"'variant': one weight set is written, in the pipeline's dtype"),
    ({"max_shard_size": "1GB"}, r"'max_shard_size': the weights are written as one model.safetensors"),
])
def test_diffusers_save_arguments_not_taken_say_what_to_do_and_write_nothing(pipe, tmp_path, kwargs, message):
    """diffusers' ``save_pretrained(..., push_to_hub=True / variant= / max_shard_size=)`` were bare
    "unexpected keyword argument" errors; each now says what to do instead, and nothing is written."""
    folder = tmp_path / "saved"
    with pytest.raises(TypeError, match=r"^save_pretrained\(\) got an unexpected keyword argument " + message):
        pipe.save_pretrained(folder, **kwargs)
    assert not folder.exists()


def test_an_image_where_the_prompt_goes_says_to_pass_image(pipe):
    """``pipe(image, "it moves")``, WanImageToVideoPipeline's order (its first argument is the
    image), said only "prompt must be a string or a list of strings, got Image". It now says to
    pass the image as ``image=``; the call made so is image to video."""
    from PIL import Image

    image = Image.new("RGB", (32, 32), (200, 10, 10))
    for given in (image, np.zeros((32, 32, 3), np.uint8), torch.zeros(3, 32, 32), [image]):
        with pytest.raises(TypeError, match=r"^prompt must be a string or a list of strings, got \w+: pass the "
                                            r"image as image= \(by name"):
            pipe(given, "it moves", num_frames=5)  # (WanImageToVideoPipeline's order)
    with pytest.raises(TypeError, match=r"^prompt must be a string or a list of strings, got int$"):
        pipe(3, **CALL)
    out = pipe("it moves", image=image, num_frames=5, generator=torch.Generator().manual_seed(0), **CALL)
    assert out.frames.shape[0] == 1 and out.frames.ndim == 5
