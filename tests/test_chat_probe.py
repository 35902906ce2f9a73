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


def test_a_long_context_is_cut_to_the_fewest_dropped_turns_by_bisection(demo, monkeypatch):
    """Turns left the context one at a time, each time recounting the whole prompt: a transcript
    /load-ed with 100,000 turns in its context had not answered after 7 minutes (probe EM)."""
    from showo2_cli import chat as C

    conv = C.Conversation(demo, max_context=120)
    for i in range(300):
        conv.add_turn(f"question {i}", f"answer {i}", [])
    current = C.TurnTokens(conv._question_ids("What colour is it?"), [])

    def length(first: int) -> int:
        return C.prompt_length(conv._context(current, first, []), conv._pieces, conv.template)

    expected = next(f for f in range(301) if length(f) + 8 <= 120)  # one turn at a time, as before
    assert expected > 250
    calls = []
    real = C.prompt_length
    monkeypatch.setattr(C, "prompt_length", lambda *a: calls.append(1) or real(*a))
    first, carried, prompt, limit, notices = conv._fit(current, 8)
    assert (first, carried, limit) == (expected, [], 8)
    assert prompt == real(conv._context(current, first, []), conv._pieces, conv.template)
    assert notices == [f"context budget of 120 tokens reached: the oldest {expected} turns left the context"]
    assert len(calls) <= 12  # log2(300) + 3 (it was one per turn dropped and one more: 298)
