"""The Python API as transformers users write it, round five (probe KE): ``pipe.caption`` takes
``generate``'s ``generation_config=`` (a ``GenerationConfig``; was a TypeError), and ``generate``'s
arguments it does not take say what to pass instead."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import Showo2Pipeline


@pytest.fixture(scope="module")
def captioner():
    pipe = Showo2Pipeline.from_pretrained("demo")
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images[0]
    return pipe, image


def test_caption_takes_transformers_generation_config(captioner):
    from transformers import GenerationConfig

    pipe, image = captioner
    q = ["What is in the image?", "What colour?"]
    config = GenerationConfig(max_new_tokens=3, do_sample=True, temperature=0.7, top_p=0.9, repetition_penalty=1.2)
    kw = {"max_new_tokens": 3, "do_sample": True, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2}
    # was: TypeError "caption() got an unexpected keyword argument 'generation_config'"
    assert pipe.caption(image, q, generation_config=config, seed=4) == pipe.caption(image, q, seed=4, **kw)
    # the call's own keywords override the config's settings, as in transformers' generate
    greedy = pipe.caption(image, q, max_new_tokens=2)
    with pytest.warns(UserWarning, match="top_p has no effect"):  # (the config's top_p, with a greedy decode)
        assert pipe.caption(image, q, generation_config=config, do_sample=False, temperature=0, max_new_tokens=2,
                            repetition_penalty=1.0) == greedy
    assert pipe.caption(image, q, generation_config=GenerationConfig(max_new_tokens=2)) == greedy
    with pytest.raises(TypeError, match="generation_config sets num_beams=2.*beam search"):
        pipe.caption(image, q, generation_config=GenerationConfig(num_beams=2))
    with pytest.raises(TypeError, match="generation_config must be a transformers GenerationConfig"):
        pipe.caption(image, q, generation_config={"max_new_tokens": 2})


@pytest.mark.parametrize(("name", "says"), [("pad_token_id", "no padding"), ("eos_token_id", "stop_strings="),
                                            ("no_repeat_ngram_size", "repetition_penalty=")])
def test_caption_says_what_to_pass_for_generate_arguments(captioner, name, says):
    pipe, image = captioner
    with pytest.raises(TypeError, match=f"'{name}'.*{says}"):  # was: the name alone
        pipe.caption(image, "What?", **{name: 2})
