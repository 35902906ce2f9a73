"""Probe D: the pipeline and the API as transformers and diffusers users write them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack
from torch.utils._device import DeviceContext

from conftest import RecordingStreamer


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


class Recorder(TorchFunctionMode):
    """A caller's own torch-function mode (a profiler, a tracer): it must stay in place."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_a_callers_default_device_costs_the_library_nothing():
    """cpu_by_default ran the library under ``with torch.device("cpu")``: a CPU DeviceContext in place
    of the caller's, through which every torch call still passed in Python (a tiny model's t2i and
    caption: 0.108 s with the CPU default, 0.162 s under a default device, +50%; +32% after
    ``torch.set_default_device("cpu")``, which was not even replaced). The library now runs with no
    device mode at all, torch's own CPU default; other modes stay, and everything is put back."""
    from showo2_cli.runtime import cpu_by_default

    seen = {}

    @cpu_by_default
    def library(fail: bool = False):
        seen["stack"] = _get_current_function_mode_stack()
        seen["default"] = torch.get_default_device()
        seen["device"] = torch.zeros(1).device
        if fail:
            raise RuntimeError("boom")
        return "done"

    recorder = Recorder()
    with torch.device("meta"), recorder:
        before = _get_current_function_mode_stack()
        assert library() == "done"
        assert seen["stack"] == [recorder]  # no DeviceContext: no Python hop per torch call
        assert seen["default"] == torch.device("cpu") and seen["device"] == torch.device("cpu")
        assert recorder.calls > 0  # the caller's mode still saw the calls
        assert _get_current_function_mode_stack() == before
        assert torch.get_default_device() == torch.device("meta")
        with pytest.raises(RuntimeError, match="boom"):
            library(fail=True)
        assert _get_current_function_mode_stack() == before
        assert torch.zeros(1).device.type == "meta"

    torch.set_default_device("cpu")  # even a CPU default is a mode every torch call goes through
    try:
        library()
        assert not any(isinstance(m, DeviceContext) for m in seen["stack"])
        assert torch.get_default_device() == torch.device("cpu")
        assert any(isinstance(m, DeviceContext) for m in _get_current_function_mode_stack())
    finally:
        torch.set_default_device(None)
    assert _get_current_function_mode_stack() == []


def test_a_pipeline_call_under_a_default_device_makes_no_device_mode_calls(pipe, monkeypatch):
    """A whole generation and caption under a caller's default device: the DeviceContext saw 5002
    torch calls of a 6-step t2i; now none reach it from inside the library, and the numbers are the
    CPU default's."""
    want = pipe("a cat", num_inference_steps=3, seed=1, output_type="latent").images
    calls = [0]
    original = DeviceContext.__torch_function__

    def counting(self, func, types, args=(), kwargs=None):
        calls[0] += 1
        return original(self, func, types, args, kwargs)

    monkeypatch.setattr(DeviceContext, "__torch_function__", counting)
    with torch.device("meta"):
        got = pipe("a cat", num_inference_steps=3, seed=1, output_type="latent").images
        pipe.caption(np.full((32, 32, 3), 90, np.uint8), "What?", max_new_tokens=3)
    assert torch.equal(got, want)
    assert calls[0] < 20  # the pipeline's own argument handling only (hundreds per step before)


def test_caption_feeds_a_transformers_streamer(pipe):
    """``pipe.caption(image, q, streamer=TextStreamer(tok))``, transformers' streaming idiom, was a
    TypeError (only ``on_text=`` existed). A streamer is now fed as ``generate(streamer=)`` feeds it:
    the prompt's ids, then each new id, then ``end()`` (also on failure, so a reading thread ends)."""
    import threading

    from transformers import TextIteratorStreamer

    from showo2_cli import api

    image = np.full((32, 32, 3), 90, np.uint8)
    kwargs = {"max_new_tokens": 6, "temperature": 1.0, "seed": 3}
    alone = api.caption(pipe.model, image, api.CaptionOptions(questions=["What?"], **kwargs))
    recording = RecordingStreamer()
    assert pipe.caption(image, "What?", streamer=recording, **kwargs) == alone.answers[0]
    prompt, *new = recording.puts
    assert prompt.dim() == 2 and prompt.shape[0] == 1 and prompt.dtype == torch.long
    assert all(t.shape == (1,) for t in new) and len(new) == alone.token_counts[0] and recording.ends == 1

    streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = threading.Thread(target=pipe.caption, args=(image, "What?"), kwargs={"streamer": streamer, **kwargs})
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text.strip() == alone.answers[0].strip()

    failing = RecordingStreamer()
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        pipe.caption(np.full((32, 32, 3), 9.0), "What?", streamer=failing)
    assert failing.ends == 1 and failing.puts == []
    with pytest.raises(ValueError, match="a streamer takes one answer, got 2 questions"):
        pipe.caption(image, ["What?", "Why?"], streamer=RecordingStreamer())
    with pytest.raises(TypeError, match="streamer must have put"):
        pipe.caption(image, "What?", streamer=print)


def test_diffusers_memory_and_placement_calls_are_answered(pipe):
    """``pipe.enable_attention_slicing()`` and ``enable_xformers_memory_efficient_attention()``, habits of
    diffusers code, were AttributeErrors about a missing attribute; they are now one clear error
    that names what to use, and the ``disable_*`` counterparts are harmless. ``pipe.to(torch.bfloat16,
    "cpu")`` said "--device must be ..., got 'torch.bfloat16'" (a CLI option the caller never used)
    and ``to(..., silence_dtype_warnings=True)`` was a TypeError; diffusers takes the latter and
    says which argument comes first for the former."""
    with pytest.raises(ValueError, match="attention slicing is not offered.*enable_model_cpu_offload"):
        pipe.enable_attention_slicing()
    with pytest.raises(ValueError, match=r"xformers attention is not offered.*RuntimeOptions\(attn="):
        pipe.enable_xformers_memory_efficient_attention()
    assert pipe.disable_attention_slicing() is None and pipe.disable_xformers_memory_efficient_attention() is None

    with pytest.raises(ValueError, match=r"device first and the dtype second"):
        pipe.to(torch.bfloat16, "cpu")
    assert pipe.dtype == torch.float32
    with pytest.raises(ValueError, match="^device must be auto") as error:
        pipe.to("gpu")
    assert "--device" not in str(error.value)
    for call in (lambda: type(pipe).from_pretrained("demo", device="gpu"),
                 lambda: pipe.enable_model_cpu_offload(device="gpu")):
        with pytest.raises(ValueError, match="^device must be auto"):
            call()
    assert pipe.offload == "none"
    assert pipe.to("cpu", torch.float32, silence_dtype_warnings=True) is pipe and pipe.dtype == torch.float32


def test_caption_warns_of_sampling_arguments_greedy_decoding_ignores(pipe):
    """``pipe.caption(image, q, top_p=0.9)`` decoded greedily (temperature 0 by default) and dropped
    ``top_p`` without a word; the CLI gives a notice for this, and transformers' ``generate`` a
    UserWarning. The pipeline now warns, naming its own arguments; the answer is unchanged."""
    import warnings

    image = np.full((32, 32, 3), 90, np.uint8)
    greedy = pipe.caption(image, "What?", max_new_tokens=3)
    with pytest.warns(UserWarning, match=r"^top_p, min_p, seed have no effect at temperature 0 \(decoding is greedy\)"):
        assert pipe.caption(image, "What?", max_new_tokens=3, top_p=0.9, min_p=0.1, seed=2) == greedy
    with pytest.warns(UserWarning, match="^top_k has no effect") as caught:
        pipe.caption(image, "What?", max_new_tokens=3, top_k=5)
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.caption(image, "What?", max_new_tokens=3, temperature=0.7, top_p=0.9, seed=2)
        pipe.caption(image, "What?", max_new_tokens=3, repetition_penalty=1.1)  # applies to greedy decoding too


def test_a_size_error_gives_width_and_height_in_the_order_it_names_them(pipe):
    """``pipe(p, height=80, width=48)`` said "height/width must be positive multiples of 16 ..., got
    48x80": the CLI's WIDTHxHEIGHT under the pipeline's names in the other order, so it read as a
    height of 48. The names now come in the order of the numbers."""
    with pytest.raises(ValueError, match=r"^width/height must be positive multiples of 16 up to 4096, got 50x80$"):
        pipe("a cat", height=80, width=50, num_inference_steps=2)


def test_a_seed_from_torchs_global_generator_is_the_same_under_a_default_device(pipe):
    """With neither ``generator`` nor ``seed``, the pipeline drew its seed with ``torch.randint``
    outside the library's CPU pinning: under a caller's default device it came from that device's
    generator (``torch.manual_seed(5)`` then gave another image under ``set_default_device("cuda")``
    than without) or failed (``Tensor.item() cannot be called on meta tensors``). The whole call now
    runs as with the CPU default."""
    torch.manual_seed(5)
    want = pipe("a cat", num_inference_steps=2, output_type="latent").images
    torch.manual_seed(5)
    with torch.device("meta"):
        got = pipe("a cat", num_inference_steps=2, output_type="latent").images
    assert got.device.type == "cpu" and torch.equal(got, want)


def test_a_refused_caption_ends_its_streamer(pipe):
    """Probe J: a caption refused before it ran (two questions, max_new_tokens=0, an unknown keyword,
    a question that is no string) raised without ``streamer.end()``: a thread reading a
    ``TextIteratorStreamer`` (transformers' idiom) then waited for ever. Every refusal ends it now."""
    import threading

    from transformers import TextIteratorStreamer

    from showo2_cli import api

    image = np.full((32, 32, 3), 90, np.uint8)
    for kwargs in ({"question": ["What?", "Why?"]}, {"question": "What?", "max_new_tokens": 0},
                   {"question": "What?", "frobnicate": 1}, {"question": 3}):
        recording = RecordingStreamer()
        with pytest.raises((ValueError, TypeError)):
            pipe.caption(image, streamer=recording, **kwargs)
        assert recording.ends == 1 and recording.puts == [], kwargs
    recording = RecordingStreamer()
    with pytest.raises(ValueError, match="max-new-tokens"):
        api.caption(pipe.model, image, api.CaptionOptions(max_new_tokens=0), streamer=recording)
    assert recording.ends == 1

    streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True)
    reader = threading.Thread(target=lambda: "".join(streamer), daemon=True)
    reader.start()
    with pytest.raises(ValueError, match="a streamer takes one answer"):
        pipe.caption(image, ["What?", "Why?"], streamer=streamer)
    reader.join(timeout=10)
    assert not reader.is_alive()
