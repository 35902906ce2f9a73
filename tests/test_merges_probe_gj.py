"""Probe GJ: the day's merges read together (probes GB-GG, each written from the same commit)."""

from __future__ import annotations

import pytest
import torch

from showo2_cli.pipelines.arguments import CALL_HINTS, check_kwargs
from showo2_cli.serve import ApiError, ServerConfig
from showo2_cli.serve.requests import parse_images
from showo2_cli.specs import get_spec


@pytest.mark.parametrize("extra", [{"sigmas": [1.0, 0.5, 0.0]}, {"true_cfg_scale": 4.0}, {"max_sequence_length": 77},
                                   {"negative_prompt_2": "blur"}, {"shift": 3.0}, {"sampler": "heun"}])
def test_the_image_endpoint_refuses_what_the_pipeline_refuses_or_it_does_not_take(extra):
    """Probe GD had the endpoint take diffusers' names (which it dropped); probe GG had the pipeline
    refuse diffusers' names it has no use for. The endpoint still dropped those without a word: a
    request with ``sigmas`` or ``true_cfg_scale`` made the default image."""
    (key,) = extra
    with pytest.raises(ApiError) as e:
        parse_images({"prompt": "a cat", **extra}, ServerConfig(), get_spec("tiny"))
    assert (e.value.status, e.value.code, e.value.param) == (400, "unsupported_parameter", key)
    assert f"'{key}'" in str(e.value) and "num_inference_steps" in str(e.value)


def test_every_call_argument_the_pipeline_refuses_the_endpoint_refuses():
    spec, config = get_spec("tiny"), ServerConfig()
    for key in CALL_HINTS:
        with pytest.raises(TypeError):
            check_kwargs("Showo2Pipeline.__call__", {key: 1}, hints=CALL_HINTS)
        with pytest.raises(ApiError) as e:
            parse_images({"prompt": "a cat", key: 1}, config, spec)
        assert e.value.param == key
    # a null is a field left out; the names the endpoint takes still work
    plan = parse_images({"prompt": "a cat", "sigmas": None, "num_inference_steps": 3, "guidance_scale": 2.0},
                        config, spec)
    assert (plan.steps, plan.guidance) == (3, 2.0)


def test_one_stop_string_is_one_stop_string_everywhere():
    """Probe GG made ``CaptionOptions(stop_strings="END")`` one stop string; ``TextSampling``
    (``Conversation.ask``'s) still held the string, which the decoder read as the stop strings
    E, N and D. A number was "TypeError: object of type 'int' has no len()"."""
    from showo2_cli.errors import UsageError
    from showo2_cli.options import CaptionOptions, TextSampling

    for opts in (TextSampling(stop_strings="END"), CaptionOptions(stop_strings="END").sampling()):
        assert opts.stop_strings == ("END",)
        opts.validate()
    assert TextSampling(stop_strings=["a", "b"]).stop_strings == ("a", "b")
    for bad in (5, {"END"}, None):
        with pytest.raises(UsageError, match=r"^stop_strings must be a text or a list of texts, got "):
            TextSampling(stop_strings=bad).validate()


def test_a_caption_option_refused_in_python_is_named_as_python_names_it(tiny_pipe):
    """Probe GC checks ``vae_sample`` is True or False (``--vae-sample``); the pipeline's caption
    said "--vae-sample must be ..." to a Python caller, a name its call does not have."""
    import numpy as np

    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"^vae_sample must be True or False, got 'no'"):
        tiny_pipe.caption(image, "What?", vae_sample="no", max_new_tokens=2)
    with pytest.raises(ValueError, match=r"^stop_strings must be a text or a list of texts, got 5"):
        tiny_pipe.caption(image, "What?", stop_strings=5, max_new_tokens=2)


def test_under_autocast_the_converted_mask_is_kept_once_per_module(tiny_model_dir):
    """Probe GE converts the omni mask once per module (``sdpa_mask``) in the module's dtype. Under
    autocast (training's mixed precision: ``run.mixed_precision: auto`` is bf16 on CUDA) SDPA runs
    in bf16 and autocast cast the float32 mask in every call: one bf16 copy kept per layer, the
    copies probe GE removed. Now the mask is made in autocast's dtype: one per module, same bits."""
    from conftest import enliven
    from showo2_cli.loading import load
    from showo2_cli.modeling import attention
    from showo2_cli.sequences import generation_layout
    from test_mask_probe_ge import _step

    model = load(tiny_model_dir)
    enliven(model.network)
    net = model.network
    layout = generation_layout([[97, 98, 99, 100], [101] * 9], 1 + 2 * 16, model.tokens, 60, video=True)
    x = torch.randn(layout.input_ids.shape[0], 16, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_grads, saved = _step(net, layout, x)
        fp32 = attention.sdpa_mask  # the module's dtype (float32) whatever autocast runs in: the old form
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(attention, "sdpa_mask", lambda mask_bool, dtype: torch.where(
                mask_bool, torch.zeros((), dtype=dtype), torch.full((), float("-inf"), dtype=dtype)))
            want, want_grads, old_saved = _step(net, layout, x)
    assert fp32 is attention.sdpa_mask
    assert len(saved) == 2 and all(dtype == torch.bfloat16 for _, dtype in saved.values()), saved
    assert len(old_saved) > 2  # (3 here: bf16 copies made by autocast's casts, per call)
    assert torch.equal(got, want)
    assert all(torch.equal(grad, want_grads[name]) for name, grad in got_grads.items())
