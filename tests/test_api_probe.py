"""The Python API as applications use it: threads sharing one pipeline, copies, caption arguments."""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


def test_vae_encodes_one_at_a_time_across_threads(pipe):
    """AutoencoderKLWan keeps a running encode's causal caches on the module: two threads encoding
    with one VAE read each other's caches (measured: 19 of 60 image latents wrong, no error).
    Encodes on one VAE now take turns: a second thread never enters the encoder while one is in it,
    and every thread gets the latents a lone call gets."""
    vae = pipe.vae
    xs = [torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(k)) * 2 - 1 for k in range(2)]
    alone = [vae.encode(x) for x in xs]
    inside, most = [0], [0]
    b_inside = threading.Event()
    count = threading.Lock()

    def enter(module, args):
        with count:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        if threading.current_thread().name == "b":
            b_inside.set()
        else:  # thread a holds the encoder until b is in it too (or 1 s: b waits its turn)
            b_inside.wait(1.0)

    def leave(module, args, out):
        with count:
            inside[0] -= 1

    hooks = [vae.model.encoder.register_forward_pre_hook(enter), vae.model.encoder.register_forward_hook(leave)]
    got = {}
    try:
        a = threading.Thread(target=lambda: got.__setitem__("a", vae.encode(xs[0])), name="a")
        a.start()
        while inside[0] == 0 and a.is_alive():
            pass
        b = threading.Thread(target=lambda: got.__setitem__("b", vae.encode(xs[1])), name="b")
        b.start()
        a.join()
        b.join()
    finally:
        for h in hooks:
            h.remove()
    assert most[0] == 1
    assert torch.equal(got["a"], alone[0]) and torch.equal(got["b"], alone[1])


def test_one_calls_interrupt_does_not_stop_another_threads_call(pipe):
    """pipe._interrupt is the running call's (diffusers' attribute): when two threads shared one
    pipeline, a callback interrupting its own call also ended the other thread's sampling after
    one step. Calls on one pipeline now take turns, so the other call runs to the end."""
    alone = pipe("a blue square", num_inference_steps=6, seed=2, output_type="np")
    a_stepping, b_stepping, a_interrupted = threading.Event(), threading.Event(), threading.Event()

    def a_callback(p, i, t, kw):
        a_stepping.set()
        b_stepping.wait(2.0)  # b's call is sampling too (old behaviour), or waits its turn
        p._interrupt = True
        a_interrupted.set()
        return kw

    def b_callback(p, i, t, kw):
        b_stepping.set()
        a_interrupted.wait(2.0)
        return kw

    got = {}
    a = threading.Thread(target=lambda: got.__setitem__("a", pipe(
        "a red circle", num_inference_steps=6, seed=1, output_type="np", callback_on_step_end=a_callback)))
    a.start()
    assert a_stepping.wait(60)  # a's call is sampling
    b = threading.Thread(target=lambda: got.__setitem__("b", pipe(
        "a blue square", num_inference_steps=6, seed=2, output_type="np", callback_on_step_end=b_callback)))
    b.start()
    a.join()
    b.join()
    assert got["a"].results[0].params["steps_done"] == 1
    assert "steps_done" not in got["b"].results[0].params
    assert np.array_equal(got["b"].images, alone.images)
    assert not pipe.interrupt


def test_pipeline_copies_and_pickles_with_a_lock_of_its_own(pipe):
    """The locks that make calls take turns do not stop deepcopy or pickle (a lock cannot be
    copied): the copy answers as the original does, and has its own locks."""
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    want = pipe.caption(image, "What is it?", max_new_tokens=4)
    for other in (copy.deepcopy(pipe), pickle.loads(pickle.dumps(pipe))):
        assert other._call_lock is not pipe._call_lock and other.vae._call_lock is not pipe.vae._call_lock
        assert other.caption(image, "What is it?", max_new_tokens=4) == want


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "file:///tmp/cat.png", "s3://bucket/clip.mp4"])
def test_a_url_is_refused_as_a_url(pipe, url):
    """pipe.caption("https://...") said `cannot read media file 'https:/example.com/cat.png': no such
    file` (the URL mangled by Path, and nothing saying URLs are not fetched)."""
    from pathlib import Path

    from showo2_cli.errors import InputError
    from showo2_cli.media.probe import check_input_file

    with pytest.raises(InputError, match=f"^cannot read media file {url}: URLs are not fetched; download"):
        pipe.caption(url, "What is it?")
    with pytest.raises(InputError, match=f"^cannot read image {url}: URLs are not fetched"):  # the CLI's Path
        check_input_file(Path(url), "image")
    with pytest.raises(InputError, match="no such file$"):  # a missing file with a colon is still a file
        check_input_file(Path("notes:/cat.png"), "image")


def test_a_float_token_count_is_called_not_whole(pipe):
    """max_new_tokens=5.0 said `must be between 1 and 1000000, got 5.0`, which it is."""
    with pytest.raises(ValueError, match=r"^max_new_tokens must be a whole number between 1 and 1000000, got 5\.0$"):
        pipe.caption(np.zeros((32, 32, 3), np.uint8), "What?", max_new_tokens=5.0)
    with pytest.raises(ValueError, match=r"^max_new_tokens must be between 1 and 1000000, got 0$"):
        pipe.caption(np.zeros((32, 32, 3), np.uint8), "What?", max_new_tokens=0)


def test_a_turn_asked_after_removing_turns_is_in_the_context(pipe):
    """An app's undo (``del chat.turns[k:]``) after older turns had left the context left fewer
    turns than the index of the oldest one in it: the next answered turn was recorded outside the
    context (``in_context`` false) and the question after it did not see it."""
    from showo2_cli.chat import Conversation
    from showo2_cli.options import TextSampling

    chat = Conversation(pipe.model, max_context=90)
    sampling = TextSampling(max_new_tokens=4)
    for _ in range(5):
        chat.ask("What is in the picture?", sampling)
    assert len(chat.context_turns) < 5  # some turns left the context
    del chat.turns[1:]  # undo all but the first, which had left it
    chat.ask("And now?", sampling)
    assert chat.context_turns == [chat.turns[-1]]
    assert chat.to_json()["turns"][-1]["in_context"] is True
    alone = Conversation(pipe.model, max_context=90)
    alone.turns.append(chat.turns[-1])
    assert chat.prompt_tokens == alone.prompt_tokens  # the next question sees the turn


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_length": 9}, r"^caption\(\) got an unexpected keyword argument 'max_length': pass max_new_tokens="),
    ({"generator": torch.Generator()}, r"^caption\(\) got an unexpected keyword argument 'generator': pass seed="),
    ({"num_beams": 2}, r"'num_beams': beam search is not offered$"),
    ({"colour": 1}, r"^caption\(\) got an unexpected keyword argument 'colour'$"),
])
def test_caption_names_itself_for_an_unknown_argument(pipe, kwargs, message):
    """pipe.caption(..., num_beams=2) (transformers' generate argument) said
    `CaptionOptions.__init__() got an unexpected keyword argument`, a class the caller never named."""
    with pytest.raises(TypeError, match=message):
        pipe.caption(np.zeros((32, 32, 3), np.uint8), "What?", **kwargs)
    assert pipe.caption(np.zeros((32, 32, 3), np.uint8), "What?", max_new_tokens=2, frames=4, min_p=0.1) is not None


def test_a_callers_default_device_does_not_reach_the_library(pipe, tiny_model_dir):
    """A caller's torch.set_default_device (a notebook's "cuda"; "meta" here, which a CPU machine
    has) put the library's noise, masks and positions on that device: every call failed deep inside
    (`Cannot copy out of meta tensor`, `Tensor.item() cannot be called on meta tensors`). Calls now
    give what they give with the CPU default."""
    from showo2_cli import api
    from showo2_cli.chat import Conversation
    from showo2_cli.options import TextSampling

    image = np.full((32, 32, 3), 90, dtype=np.uint8)
    want = {"caption": pipe.caption(image, "What?", max_new_tokens=4),
            "t2i": pipe("a cat", num_inference_steps=3, seed=1, output_type="np").images,
            "chat": Conversation(pipe.model).ask("What?", TextSampling(max_new_tokens=4)),
            "latents": api.encode(image, pipe.vae, api.EncodeOptions(size=(32, 32))).latents}
    with torch.device("meta"):
        assert pipe.caption(image, "What?", max_new_tokens=4) == want["caption"]
        assert np.array_equal(pipe("a cat", num_inference_steps=3, seed=1, output_type="np").images, want["t2i"])
        assert Conversation(pipe.model).ask("What?", TextSampling(max_new_tokens=4)) == want["chat"]
        latents = api.encode(image, pipe.vae, api.EncodeOptions(size=(32, 32))).latents
        assert torch.equal(latents, want["latents"])
        assert api.decode(latents, pipe.vae).shape == (1, 32, 32, 3)
        assert api.load(tiny_model_dir).network.device.type == "cpu"
