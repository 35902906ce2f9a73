"""A new user from nothing, by the README (probe BP): the mistakes a first session makes get a
message that says what was wrong and what to type."""

import json
import os

import pytest

from showo2_cli.cli import main


def _error(capsys, argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)["error"]["message"]


@pytest.mark.parametrize("argv, says, takes", [
    (["t2i", "a cat", "-o", "out"], "the name has no extension", "use .png, .jpg, .jpeg, .webp for t2i"),
    (["t2i", "a cat", "-o", "out."], "the name has no extension", "use .png"),
    (["t2i", "a cat", "-o", ".png"], "a leading '.' makes the name a hidden file's", "use .png"),
    (["t2v", "a cat", "-o", ".gif"], "a leading '.' makes the name a hidden file's", "use .mp4"),
    (["t2i", "a cat", "-o", "x.tiff"], "unsupported output extension '.tiff'", "use .png"),
    (["encode", "in.png", "-o", ".safetensors"], "hidden file's", "latents are written as .safetensors"),
    (["encode", "in.png", "-o", "z.png"], "unsupported output extension '.png'", "latents are written as .safetensors"),
    (["decode", "z.safetensors", "-o", ".png"], "hidden file's", "use .png/.jpg"),
    (["decode", "z.safetensors", "-o", "out"], "the name has no extension", "use .png/.jpg"),
])
def test_an_output_name_without_an_extension_is_said_to_have_none(tmp_path, monkeypatch, capsys, argv, says, takes):
    """`t2i -o .png` said "unsupported output extension '.png' for t2i: use .png, ...", `-o out`
    called 'out' the extension, and `decode -o out` an extension ''."""
    monkeypatch.chdir(tmp_path)
    code, message = _error(capsys, argv)
    assert code == 2
    assert says in message and takes in message, message
    assert message.startswith(f"cannot write '{argv[-1]}': ")
    assert "extension 'out" not in message and "extension ''" not in message
    assert os.listdir(tmp_path) == []


def test_the_python_writers_say_the_same(tmp_path):
    import numpy as np

    from showo2_cli.errors import UsageError
    from showo2_cli.media import write_image, write_video

    frame = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(UsageError, match=r"/\.png': a leading '\.' makes the name a hidden file's, with no "
                                         r"extension; use \.png, \.jpg"):
        write_image(tmp_path / ".png", frame)
    with pytest.raises(UsageError, match=r"/clip': the name has no extension; use \.mp4, .* for a video"):
        write_video(tmp_path / "clip", np.stack([frame] * 5), fps=8)
    assert os.listdir(tmp_path) == []
