"""Probe HN: a chat's transcript is never one ``/load`` refuses. Repeated notices (a full context lets a
turn go at each question) are recorded once with their count, and ``/save`` refuses, writing nothing,
a transcript over the size ``/load`` reads (``MAX_TRANSCRIPT_BYTES``), where it wrote one before."""

from __future__ import annotations

import json

import pytest

from showo2_cli.chat_transcript import collapsed_notices
from showo2_cli.errors import UsageError
from showo2_cli.loading import bundled_demo_path, load


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def test_repeated_notices_are_recorded_once_with_their_count(demo, tmp_path):
    from showo2_cli.chat import Conversation

    dropped = "context budget of 400 tokens reached: the oldest 1 turn left the context"
    assert collapsed_notices([]) == []
    assert collapsed_notices(["a", "b", "b", "a"]) == ["a", "b (2 times)", "a"]
    conv = Conversation(demo)
    conv.notices += ["a video given", *[dropped] * 3000, "the answer is limited to 3 tokens", dropped]
    record = conv.to_json()
    assert record["notices"] == ["a video given", f"{dropped} (3000 times)", "the answer is limited to 3 tokens",
                                 dropped]
    assert len(conv.notices) == 3003  # (the conversation's own list, its on_notice lines: each said)
    path = conv.save(tmp_path / "chat.json")
    assert len(json.loads(open(path, encoding="utf-8").read())["notices"]) == 4


def test_save_refuses_a_transcript_load_would_refuse(demo, tmp_path, monkeypatch):
    """The limit is lowered to a few turns' size here; a chat of some 30,000 turns met the real one."""
    import showo2_cli.chat as chat
    import showo2_cli.chat_transcript as chat_transcript  # (where save and load read the limit)

    conv = chat.Conversation(demo)
    for k in range(20):
        conv.add_turn(f"Question {k}?", "An answer of a few words. " * 4)
    size = len((json.dumps(conv.to_json(), indent=1, ensure_ascii=False) + "\n").encode())
    monkeypatch.setattr(chat_transcript, "MAX_TRANSCRIPT_BYTES", size + 200)  # (saved_at's length may differ)
    kept = conv.save(tmp_path / "fits.json")
    assert chat.Conversation(demo).load(kept) == 20  # what /save writes, /load reads
    before = (tmp_path / "fits.json").read_bytes()
    conv.add_turn("One more?", "An answer of a few words. " * 10)
    with pytest.raises(UsageError, match=r"^the transcript of 21 turns would be 0\.0 MiB, more than the 0\.0\d* MiB a "
                                         r"transcript may be to be loaded again: not written"):
        conv.save(tmp_path / "fits.json", overwrite=True)
    assert (tmp_path / "fits.json").read_bytes() == before  # not clobbered
    with pytest.raises(UsageError, match="not written"):
        conv.save(tmp_path / "new.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fits.json"]  # no file, no temporary one


def test_the_chat_command_says_it_in_one_line_and_goes_on(demo, tmp_path, monkeypatch):
    """``showo2 chat``'s ``/save`` of such a transcript: one error line, no file, the chat goes on."""
    import io

    import showo2_cli.chat as chat
    import showo2_cli.chat_transcript as chat_transcript  # (where save and load read the limit)
    import showo2_cli.cli  # noqa: F401  (the commands' shared helpers)
    from showo2_cli.cli.chat import ChatSession

    conv = chat.Conversation(demo)
    conv.add_turn("Hi?", "Hello. " * 50)
    monkeypatch.setattr(chat_transcript, "MAX_TRANSCRIPT_BYTES", 200)
    out, err = io.StringIO(), io.StringIO()
    session = ChatSession(conv, out=out, err=err)
    assert session.handle(f"/save {tmp_path / 'chat.json'}")  # (True: the chat goes on)
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and "the transcript of 1 turns would be" in lines[0] and "not written" in lines[0]
    assert list(tmp_path.iterdir()) == [] and "saved" not in out.getvalue()
