"""Probe KG: chat's stdin is UTF-8 text; binary data there (`showo2 chat -m demo < photo.png`) was
asked as questions, its bytes replaced by U+FFFD (exit 0). (The training leftover's test is
`test_train.py`'s resume test: the saved random state.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from showo2_cli.cli.chat_input import pipe_lines
from showo2_cli.errors import InputError
from showo2_cli.loading import bundled_demo_path


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _lines(data: bytes, max_bytes: int = 100) -> list:
    return [x if isinstance(x, str) else ("long", x.size) for x in pipe_lines(io.BytesIO(data), max_bytes)]


def test_stdin_that_is_not_utf8_text_is_refused_where_it_comes():
    """Not UTF-8, a NUL, or UTF-16 text: one line naming the byte (its offset in the stream), also
    in a line too long to hold and across the pieces it is read in; UTF-8 split across them is text."""
    with pytest.raises(InputError, match=r"^standard input is not UTF-8 text \(byte 0 is 0x89\): .* as a file"):
        _lines(_png())
    with pytest.raises(InputError, match=r"byte 7 is 0x89"):
        _lines(b"what?\r\n" + _png())
    with pytest.raises(InputError, match=r"byte 153 is 0xff"):  # (in a line over the limit, its second piece)
        _lines(b"ok\n" + b"a" * 150 + b"\xff\n")
    with pytest.raises(InputError, match=r"byte 103 is 0xc3"):  # (a character cut short by the line's end)
        _lines(b"ok\n" + b"x" * 100 + b"\xc3\n")
    with pytest.raises(InputError, match=r"^standard input is not text \(byte 5 is a NUL\)"):
        _lines(b"ok\nab\x00c\n")
    with pytest.raises(InputError, match=r"^standard input is UTF-16 text: chat reads UTF-8"):
        _lines("hi\n".encode("utf-16"))
    assert _lines(b"\xef\xbb\xbfq\n" + "\u00e9".encode() * 80 + b"\nlast") == ["q", ("long", 161), "last"]


def test_chat_given_an_image_on_stdin_says_so_in_one_line_and_fails(monkeypatch, capsys):
    """The question before the image is answered; the image's bytes are not asked: exit 3 (an input)."""
    from showo2_cli.cli import main

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    stdin = io.TextIOWrapper(io.BytesIO(b"hi\n" + _png()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert main(["chat", "--model", "demo", "--max-new-tokens", "3"]) == 3
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1, out
    assert err.splitlines()[-1:] == [
        "showo2: error: standard input is not UTF-8 text (byte 3 is 0x89): chat reads questions and commands a "
        "line each; give an image or a video as a file (`showo2 chat -m MODEL FILE`, or `/image FILE`)"], err
    assert "Traceback" not in err
