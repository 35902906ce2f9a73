"""Today's later merges read together (probe EP): EK's tiles in a chat's transcript meet EJ's /load."""

from __future__ import annotations

import pytest

from showo2_cli.errors import Showo2Error
from showo2_cli.loading import bundled_demo_path, load
from showo2_cli.options import CaptionOptions


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def test_load_keeps_the_tiles_of_a_turn_that_left_the_context(demo, tmp_path, monkeypatch):
    """EK made a transcript's media record ``vae_tiles``; EJ's ``/load`` rebuilt the media of turns
    that had left the context (not read again) without them, so ``/save`` after ``/load`` described
    a tiled image as an untiled one: not the transcript it read. A bad ``vae_tiles`` or ``kind`` is
    the transcript's one error, as its other media fields are."""
    import numpy as np

    from showo2_cli.chat import Conversation

    monkeypatch.chdir(tmp_path)
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (280, 300, 3), dtype=np.uint8)).save(name)
    vae = demo.require_vae()
    before = vae.tiling
    vae.tiling = "on"  # 272 px: more than one 256 px tile
    try:
        old = Conversation(demo, max_context=340, options=CaptionOptions(size=272, max_new_tokens=1))
        old.attach("a.png")
        old.ask("what?")
        old.attach("b.png")  # in the context: a.png's turn leaves it and a.png is not carried
        old.ask("and?")
        saved = old.to_json()
        assert [t["in_context"] for t in saved["turns"]] == [False, True]
        assert [t["media"][0]["vae_tiles"] for t in saved["turns"]] == [[256, 256, 192, 192]] * 2
        old.save("chat.json")
        new = Conversation(demo, max_context=340, options=CaptionOptions(size=272, max_new_tokens=1))
        assert new.load("chat.json") == 2
        again = new.to_json()
        assert [t["media"] for t in again["turns"]] == [t["media"] for t in saved["turns"]]
    finally:
        vae.tiling = before
    import json

    for bad in ([256, 256, 192], [256, 256, 192, "192"], [0, 256, 192, 192], 7):
        record = json.loads(open("chat.json", encoding="utf-8").read())
        record["turns"][0]["media"][0]["vae_tiles"] = bad
        open("bad.json", "w", encoding="utf-8").write(json.dumps(record))
        with pytest.raises(Showo2Error, match="'vae_tiles'"):
            new.load("bad.json")
    record["turns"][0]["media"][0].pop("vae_tiles")  # saved before tiles were recorded: whole
    record["turns"][0]["media"][0]["kind"] = "audio"
    open("bad.json", "w", encoding="utf-8").write(json.dumps(record))
    with pytest.raises(Showo2Error, match="'kind'"):
        new.load("bad.json")
    record["turns"][0]["media"][0]["kind"] = "image"
    open("old.json", "w", encoding="utf-8").write(json.dumps(record))
    assert new.load("old.json") == 2 and "vae_tiles" not in new.to_json()["turns"][0]["media"][0]


def test_load_of_a_chat_about_media_given_in_memory_says_so(demo, tmp_path):
    """The Python API's chat about an image or frames given in memory (``chat.attach(array)``)
    saved them as ``<image>`` and ``<frames>``; ``Conversation.load`` of it said "cannot read media
    file '<image>': no such file", as though a file had gone. It says they were given in memory, and
    the chat is as it was."""
    import numpy as np

    from showo2_cli.chat import Conversation

    frames = [np.full((64, 64, 3), v, np.uint8) for v in (0, 90, 180)]
    path = tmp_path / "chat.json"
    for given, label in ((frames[0], "<image>"), (frames, "<frames>")):
        chat = Conversation(demo)
        chat.options.max_new_tokens = 1
        chat.ask("hello")
        chat.attach(given)
        chat.save(path, overwrite=True)  # pending
        other = Conversation(demo)
        with pytest.raises(Showo2Error, match=f"its {label} was given in memory, not by a file name"):
            other.load(path)
        chat.ask("what?")
        chat.save(path, overwrite=True)  # in the context
        with pytest.raises(Showo2Error, match=f"its {label} was given in memory"):
            other.load(path)
        assert other.turns == []
