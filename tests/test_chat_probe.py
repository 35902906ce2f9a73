"""The chat loop as a user sees it on a terminal: notices after the answer's line, a readable /help."""

from __future__ import annotations

import io

import pytest

from showo2_cli.loading import bundled_demo_path, load
from showo2_cli.training import shapes as S


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def test_context_notices_come_after_the_answers_line(demo, tmp_path):
    """On a terminal (stdout and stderr on one screen) the drop notice was written before the answer's
    newline: "redcontext budget of 80 tokens reached: ..." on the answer's line, then an empty one."""
    import showo2_cli.cli  # noqa: F401  (the commands' shared helpers)
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession
    from test_chat_serve import scene, write_scene

    write_scene(tmp_path / "shape.png", scene(3))
    screen = io.StringIO()  # stdout and stderr on one terminal
    conv = Conversation(demo, max_context=80, on_notice=lambda text: screen.write(f"[{text}]\n"))
    conv.options.max_new_tokens = 12
    session = ChatSession(conv, out=screen, err=screen)
    for line in (f"/image {tmp_path / 'shape.png'}", S.Q_COLOUR, S.Q_SHAPE, S.Q_COLOUR):
        assert session.handle(line)
    lines = screen.getvalue().splitlines()
    notices = [i for i, line in enumerate(lines) if "context budget" in line]
    assert notices, lines  # the third question dropped the first turn
    assert all(lines[i].startswith("[context budget") for i in notices), lines  # a line of its own
    assert "" not in lines, lines
    assert conv.on_notice is not None and len(conv.notices) == len(notices)


def test_help_is_readable_on_a_terminal(demo):
    """/help padded every command to /t2i's 160-character usage: each line wrapped on a terminal."""
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import COMMANDS, ChatSession

    err = io.StringIO()
    session = ChatSession(Conversation(demo), out=io.StringIO(), err=err)
    assert session.handle("/help")
    text = err.getvalue()
    for usage in COMMANDS:
        assert usage in text
    for name in ("/video", "/exit"):  # the aliases that work are named
        assert name in text
    assert [line for line in text.splitlines() if len(line) > 100] == [f"  {u}" for u in COMMANDS if len(u) > 98]
