"""Probe HG: a caption's prompt and answer against the model's context, as a chat turn and a server
request are held to it (one rule: ``dialogue.answer_room``)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from showo2_cli.loading import bundled_demo_path, load

IMAGE = np.full((32, 32, 3), 90, np.uint8)
#: three tokens a character in the demo's byte-level vocabulary: 9,000 tokens past its 8,192 positions
TOO_LONG = "日" * 3000


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


@pytest.fixture
def short_context(demo, monkeypatch):
    """The demo with a context of ``n`` positions (its spec's ``max_position_embeddings``)."""

    def shorten(n: int):
        monkeypatch.setattr(demo, "spec", dataclasses.replace(demo.spec, max_position_embeddings=n))
        return demo

    return shorten


def prompt_tokens(demo, question: str) -> int:
    from showo2_cli.chat import Conversation

    conv = Conversation(demo)
    conv.attach(IMAGE)
    conv.ask(question)  # a one-question chat is exactly the caption's prompt
    return conv.turns[-1].prompt_tokens


def test_a_caption_past_the_context_is_refused_before_its_media_are_read(demo):
    """A question of 9,000 tokens about an image ran a 9,000-position forward past the demo's 8,192
    positions and answered, without a word (44 s here), where a chat turn is refused with OpenAI's
    sentence. Now refused the same way, and before the media are read: the source here is no file."""
    from showo2_cli import api
    from showo2_cli.errors import ContextTooLong
    from showo2_cli.pipelines import CaptionOptions

    with pytest.raises(ContextTooLong, match=r"^This model's maximum context length is 8192 tokens\. However, your "
                                             r"messages resulted in 90\d\d tokens \(before their media\)"):
        api.caption(demo, "no-such-file.png", CaptionOptions(questions=["What is it?", TOO_LONG]))


def test_a_caption_whose_answer_would_pass_the_context_is_shortened_and_says_so(demo, short_context):
    """``max_new_tokens`` past the room the prompt leaves: the answer ran on past the model's positions
    with nothing said; it is now limited to the room left, with the chat's notice."""
    from showo2_cli import api
    from showo2_cli.errors import ContextTooLong
    from showo2_cli.pipelines import CaptionOptions

    length = prompt_tokens(demo, "What is it?")
    model = short_context(length + 4)
    hot = CaptionOptions(questions=["What is it?"], max_new_tokens=40, temperature=50.0, seed=3)
    result = api.caption(model, IMAGE, hot)
    assert result.token_counts[0] <= 4
    assert f"the answer is limited to 4 tokens by the context budget of {length + 4}" in result.notices
    roomy = api.caption(model, IMAGE, dataclasses.replace(hot, max_new_tokens=3))
    assert not [n for n in roomy.notices if "limited" in n]
    # the image's tokens leave no room: refused with the whole prompt's count, before any answer
    short_context(length)
    with pytest.raises(ContextTooLong, match=f"your messages resulted in {length} tokens \\(with their media\\)"):
        api.caption(model, IMAGE, hot)


def test_the_pipeline_warns_of_a_shortened_answer(demo, short_context):
    from showo2_cli import Showo2Pipeline

    length = prompt_tokens(demo, "What is it?")
    pipe = Showo2Pipeline(short_context(length + 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.caption(IMAGE, "What is it?", max_new_tokens=30, temperature=50.0, seed=1)
    said = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert f"the answer is limited to 2 tokens by the context budget of {length + 2}" in said
    assert all(w.filename == __file__ for w in caught if "limited" in str(w.message))  # the caller's line


def test_the_command_says_a_shortened_answer_and_refuses_a_prompt_past_the_context(demo, short_context,
                                                                                  monkeypatch, tmp_path, capsys):
    from PIL import Image
    from typer.testing import CliRunner

    import showo2_cli.cli.understand as U
    from showo2_cli.cli import app, main

    image = tmp_path / "gray.png"
    Image.fromarray(IMAGE).save(image)
    length = prompt_tokens(demo, "What is it?")
    monkeypatch.setattr(U, "load_model", lambda *a, **k: short_context(length + 3))
    result = CliRunner().invoke(app, ["caption", str(image), "-q", "What is it?", "--max-new-tokens", "50",
                                      "--temperature", "50", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert f"the answer is limited to 3 tokens by the context budget of {length + 3}" in result.stderr
    capsys.readouterr()
    assert main(["caption", str(image), "-q", TOO_LONG]) == 2  # one line, the usage error's exit code
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "showo2: error: This model's maximum context length is")


def test_the_server_refuses_a_text_past_the_context_before_reading_its_images(demo):
    """A request whose text alone cannot fit (9,000 tokens of 8,192) read and encoded each of its
    images first (a bad one was the error then); it is now the 400 ``context_length_exceeded`` before
    any is read, as a history of text does with ``max_tokens`` and without."""
    import base64

    httpx = pytest.importorskip("httpx")
    from conftest import serving

    image = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n not a picture").decode()
    with serving(demo) as url:
        for extra in ({}, {"max_tokens": 5}):
            messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": TOO_LONG[:1500]},
                        {"role": "user", "content": [{"type": "text", "text": TOO_LONG[:1500]},
                                                     {"type": "image_url", "image_url": {"url": image}}]}]
            r = httpx.post(url + "/v1/chat/completions", json={"messages": messages, **extra}, timeout=120)
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["code"] == "context_length_exceeded" and "before their media" in error["message"]
        # a text that fits: its image is read, and this one, being no picture, refused for it
        messages[-1]["content"][0]["text"] = "What is it?"
        r = httpx.post(url + "/v1/chat/completions", json={"messages": messages[-1:]}, timeout=120)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_input", r.text
