"""Probe GE: turns a /load left unread (their media not read: they could not fit the budget then)
are read when they come back into the context, as an app's undo (``turns.pop()``) or a larger
``max_context`` brings them: the loaded chat's next prompt is the saved chat's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import bundled_demo_path, load

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def _saved(demo, tmp_path):
    """16 turns, the first 12 with an image each, all in the context (as add_turn records them),
    saved; and the files."""
    from showo2_cli import chat as C
    from showo2_cli.dialogue import encode_media
    from test_chat_serve import scene, write_scene

    files = [str(write_scene(tmp_path / f"{i}.png", scene(i))) for i in range(12)]
    old = C.Conversation(demo, max_context=160)
    old.options.max_new_tokens = 4
    for i in range(16):
        old.add_turn(f"question {i}", f"answer {i}", [encode_media(demo, files[i], old.options, name=files[i])]
                     if i < 12 else [])
    old.save(tmp_path / "chat.json")
    return old, files


def _loaded(demo, tmp_path, monkeypatch):
    from showo2_cli import chat as C
    from showo2_cli import chat_transcript  # (load and the reads it leaves look encode_media up there)

    calls: list[str] = []
    real = chat_transcript.encode_media
    monkeypatch.setattr(chat_transcript, "encode_media", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    new = C.Conversation(demo, max_context=160)
    new.options.max_new_tokens = 4
    new.load(tmp_path / "chat.json")
    return new, calls


@pytest.mark.parametrize("popped", [5, 8])
def test_turns_popped_bring_the_unread_turns_back(demo, tmp_path, monkeypatch, popped):
    """FH measured it: 5 turns popped, the loaded chat's next prompt was 26 tokens where the saved
    chat's is 116 (8 popped: 26 against 114): the unread turns had left the context for good."""
    old, files = _saved(demo, tmp_path)
    new, calls = _loaded(demo, tmp_path, monkeypatch)
    assert calls == [files[11]]  # /load still reads only what a prompt can hold
    for conv in (old, new):
        del conv.turns[-popped:]
    assert new.prompt_tokens == old.prompt_tokens
    assert new.ask("what now?") == old.ask("what now?")
    assert new.turns[-1].prompt_tokens == old.turns[-1].prompt_tokens > 100
    assert new.notices == old.notices
    assert new.to_json()["turns"][:-1] == old.to_json()["turns"][:-1]
    # read when they came back: the turns the prompt holds, each file once, never those it dropped
    held = {m.source for t in new.turns[new._start:] for m in t.media} - {files[11]}  # (11: /load read it)
    assert sorted(calls[1:]) == sorted(held) and 0 < len(held) < 11
    assert all(not m.released for t in new.turns[new._start:] for m in t.media)
    assert new.ask("and?") == old.ask("and?")


def test_a_larger_budget_brings_the_unread_turns_back(demo, tmp_path, monkeypatch):
    """FD's rule kept them out ("a larger budget set afterwards brings no unread turn into a prompt");
    the saved chat has them all in its context: so has the loaded one now."""
    old, files = _saved(demo, tmp_path)
    new, calls = _loaded(demo, tmp_path, monkeypatch)
    for conv in (old, new):
        conv.max_context = 4000
    assert new._start == 0 and new.prompt_tokens == old.prompt_tokens
    assert new.ask("what now?") == old.ask("what now?")
    assert new.turns[-1].prompt_tokens == old.turns[-1].prompt_tokens
    assert sorted(calls) == sorted(files)  # every file once: all are in the prompt


def test_an_unread_turn_whose_file_is_gone_leaves_the_context_with_a_notice(demo, tmp_path, monkeypatch):
    """A file gone since the chat was saved cannot come back: that turn and those before it stay out
    (FD's rule, for that turn only), said in a notice; the question is answered."""
    old, files = _saved(demo, tmp_path)
    new, calls = _loaded(demo, tmp_path, monkeypatch)
    os.unlink(files[8])
    del new.turns[-6:]  # turns 0-9 left: the prompt can hold turns from 8 or so on
    notices = []
    new.on_notice = notices.append
    answer = new.ask("what now?")
    assert isinstance(answer, str) and new._start == 9
    assert any(files[8] in n and "can no longer be read" in n for n in notices), notices
    assert all(not m.released for t in new.turns[new._start:] for m in t.media)


def test_a_failed_read_changes_nothing_and_the_next_question_reads_on(demo, tmp_path, monkeypatch):
    """Another error while reading them (a memory refusal): the question fails, the media read stay
    read, the others stay unread (not let go), and the next question gets the saved chat's prompt."""
    from showo2_cli import chat_transcript  # (the reads a load leaves look encode_media up there)
    from showo2_cli.errors import ResourceError

    old, files = _saved(demo, tmp_path)
    new, calls = _loaded(demo, tmp_path, monkeypatch)
    for conv in (old, new):
        del conv.turns[-5:]
    counted = chat_transcript.encode_media

    def second_refused(*a, **k):
        if len(calls) == 2:
            calls.append("refused")
            raise ResourceError("not enough memory")
        return counted(*a, **k)

    monkeypatch.setattr(chat_transcript, "encode_media", second_refused)
    with pytest.raises(ResourceError):
        new.ask("what now?")
    assert len(new.turns) == 11 and not new.notices
    monkeypatch.setattr(chat_transcript, "encode_media", counted)
    assert new.ask("what now?") == old.ask("what now?")
    assert new.turns[-1].prompt_tokens == old.turns[-1].prompt_tokens and new.notices == old.notices
