"""The chat as people use ollama's and llm's: a message of several lines between \"\"\" marks, and
ollama's /bye and /clear."""

from __future__ import annotations

import io

import pytest

from showo2_cli.loading import bundled_demo_path, load


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def _read(data: bytes, max_bytes: int = 1000) -> list:
    from showo2_cli.cli.chat_input import _messages, pipe_lines

    return list(_messages(pipe_lines(io.BytesIO(data), max_bytes), max_bytes))


def test_a_message_of_several_lines_between_triple_quotes():
    """A line of \"\"\" (ollama's mark) was asked as a question, and so was every line after it: a
    text of several lines (a pasted paragraph, a here-doc's) could not be one question."""
    from showo2_cli.cli.chat_input import LineTooLong, Message, Unclosed

    got = _read(b'hi\n"""\nline one\n\n/not a command\nend"""\n/help\n')
    assert got == ["hi", "line one\n\n/not a command\nend", "/help"]
    assert [type(x) for x in got] == [str, Message, str]
    assert _read(b'"""one line"""\n  """ a\nb\n"""\n') == ["one line", " a\nb"]
    # over the limit: read to its end, not held, said too long; the input goes on after it
    got = _read(b'"""\n' + b"x" * 60 + b"\n" + b"y" * 60 + b'\n"""\nafter\n', 100)
    assert isinstance(got[0], LineTooLong) and got[0].size == 122 and got[1:] == ["after"]
    # the input ends inside a message: said, not asked
    got = _read(b'"""\nabc\ndef\n')
    assert len(got) == 1 and isinstance(got[0], Unclosed) and got[0].lines == 2


def test_ctrl_c_drops_the_message_being_typed():
    from showo2_cli.cli.chat_input import _CLEARED, _messages

    states = []
    lines = ['"""', "typo", _CLEARED, "next", _CLEARED, '"""a', 'b"""']
    assert list(_messages(iter(lines), 1000, states.append)) == ["next", "a\nb"]
    assert states == [True, False, True, False]  # the prompt shows "... " while a message is typed


def test_a_message_is_a_question_even_when_it_opens_with_a_slash(demo):
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession, Message

    out, err = io.StringIO(), io.StringIO()
    conv = Conversation(demo)
    conv.options.max_new_tokens = 4
    session = ChatSession(conv, out=out, err=err)
    assert session.handle("/usr/bin/env is what?") and "unknown command" in err.getvalue()
    assert '"""' in err.getvalue()  # the error says how to ask it
    assert not conv.turns
    assert session.handle(Message("/usr/bin/env is what?\nsay it"))
    assert [t.question for t in conv.turns] == ["/usr/bin/env is what?\nsay it"]
    assert out.getvalue().count("\n") == 1  # one answer line


def test_ollamas_bye_and_clear(demo):
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession

    err = io.StringIO()
    conv = Conversation(demo)
    conv.options.max_new_tokens = 2
    session = ChatSession(conv, out=io.StringIO(), err=err)
    assert session.handle("hello") and len(conv.turns) == 1
    assert session.handle("/clear") and conv.turns == [] and "error" not in err.getvalue()
    assert session.handle("/CLEAR all") and "/clear takes no argument" in err.getvalue()
    assert session.handle("/bye") is False


def test_a_here_doc_with_a_message_of_several_lines(tmp_path):
    """Through the command, as a here-doc feeds it: two answers on stdout, the message's lines one
    question (the transcript records it whole), an unclosed message said on stderr."""
    import json

    from typer.testing import CliRunner

    from showo2_cli.cli import app

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    out = tmp_path / "chat.json"
    script = f'"""\nWhat is\n/this?\n"""\nhi\n/save {out}\n"""\nnever asked\n'
    result = CliRunner().invoke(app, ["chat", "--model", "demo", "--max-new-tokens", "3"], input=script)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 2, result.stdout
    assert [t["question"] for t in json.loads(out.read_text())["turns"]] == ["What is\n/this?", "hi"]
    assert 'the input ended inside a """ message (1 line): not asked' in result.stderr


def test_a_file_dropped_on_the_terminal_is_attached(demo, tmp_path, monkeypatch):
    """A file dropped on the terminal at the prompt (without /image) pastes its name: a path
    opening with / was "unknown command '/home/me/...'", a quoted one ('/home/me/my photo.png', as
    GNOME's terminal pastes a name with a space) or ~/a.png was asked as a question about no image.
    A line that names an existing file whole is now attached, as /image attaches it."""
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession
    from test_chat_serve import scene, write_scene

    folder = tmp_path / "my photos"
    folder.mkdir()
    write_scene(folder / "red circle.png", scene(11, colour="red", shape="circle"))
    write_scene(tmp_path / "plain.png", scene(3))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    conv = Conversation(demo)
    conv.options.max_new_tokens = 4
    session = ChatSession(conv, out=io.StringIO(), err=err)
    for line in (f"'{folder}/red circle.png'", str(folder / "red circle.png").replace(" ", "\\ "),
                 "~/plain.png", f"file://{folder}/red%20circle.png"):
        assert session.handle(line), line
        assert len(conv.pending) == 1 and not conv.turns, (line, err.getvalue())
        conv.pending.clear()
    assert "error" not in err.getvalue()
    # a word that happens to name a file here is a question, and a missing path is still an error
    assert session.handle("plain.png") and [t.question for t in conv.turns] == ["plain.png"]
    assert session.handle(f"{folder}/missing.png") and "unknown command" in err.getvalue()
    assert session.handle(f"/image '{folder}/red circle.png'") and len(conv.pending) == 1


def test_a_question_refused_for_its_attached_media_says_they_stay(demo, tmp_path):
    """A video that did not fit --max-context made the question fail with the server's sentence
    ("Please reduce the length of the messages"), and, the attachment kept for the next question,
    every next question failed alike with nothing saying why or what helps."""
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession
    from test_chat_serve import scene, write_scene

    write_scene(tmp_path / "shape.png", scene(3))
    err = io.StringIO()
    conv = Conversation(demo, max_context=36)  # 19 tokens without the image, 39 with it
    session = ChatSession(conv, out=io.StringIO(), err=err)
    assert session.handle(f"/image {tmp_path / 'shape.png'}") and session.handle("what?")
    lines = err.getvalue().splitlines()
    assert "maximum context length is 36 tokens" in lines[-1], lines
    assert lines[-1].endswith("(1 attached file stays for your next question: /reset drops it with the "
                              "conversation)"), lines
    assert len(conv.pending) == 1 and not conv.turns
    assert session.handle("/reset") and session.handle("hi") and len(conv.turns) == 1


def test_load_goes_on_with_a_saved_chat(demo, tmp_path, monkeypatch):
    """/save wrote a transcript nothing read back: a chat could not be taken up again (ollama's
    /load, llm's -c). /load FILE restores it: the turns, those that had left the context out of it,
    the image a dropped turn left in the context and the media attached for the next question, so
    the next question's prompt and answer are the ones the saved chat would have given."""
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession
    from showo2_cli.errors import Showo2Error
    from test_chat_serve import scene, write_scene

    monkeypatch.chdir(tmp_path)
    write_scene(tmp_path / "a.png", scene(11, colour="red", shape="circle"))
    write_scene(tmp_path / "b.png", scene(3))
    old = Conversation(demo, "Answer briefly.", max_context=90)
    old.options.max_new_tokens = 8
    old.attach("a.png")
    for question in ("What color is the shape?", "and?", "more?", "again?"):
        old.ask(question)
    old.attach("b.png")
    flags = [t["in_context"] for t in old.to_json()["turns"]]
    assert not flags[0] and flags[-1] and old._carried  # the first image stays, carried
    old.save("chat.json")

    err = io.StringIO()
    new = Conversation(demo, max_context=90)
    new.options.max_new_tokens = 8
    session = ChatSession(new, out=io.StringIO(), err=err)
    assert session.handle("/load chat.json") and "error" not in err.getvalue()
    assert new.system == "Answer briefly." and len(new.turns) == 4 and len(new.pending) == 1
    assert new.prompt_tokens == old.prompt_tokens  # the carried image and b.png included
    assert [t["in_context"] for t in new.to_json()["turns"]] == flags and len(new._carried) == 1
    assert new.ask("what now?") == old.ask("what now?")
    assert new.turns[-1].prompt_tokens == old.turns[-1].prompt_tokens
    saved, again = old.to_json(), new.to_json()
    for record in (saved, again):
        del record["saved_at"], record["notices"]
        for turn in record["turns"]:
            del turn["seconds"]
    assert again == saved

    # a transcript whose image is gone, or no transcript: one error line, the chat as it was
    (tmp_path / "b.png").unlink()
    before = new.to_json()["turns"]
    for line, said in (("/load chat.json", "b.png"), ("/load a.png", "is not valid JSON"), ("/load nothing.json", "nothing.json")):
        assert session.handle(line)
        assert said in err.getvalue().splitlines()[-1], err.getvalue()
        assert new.to_json()["turns"] == before
    (tmp_path / "x.json").write_text('{"format": "showo2-chat", "version": 1, "turns": [{"question": 1}]}')
    with pytest.raises(Showo2Error, match="needs a 'question' and an 'answer'"):
        new.load("x.json")
    (tmp_path / "y.json").write_text('{"format": "showo2-chat", "version": 1, "turns": [{"question": "a", '
                                     '"answer": "b", "in_context": false, "media": [{"source": "a.png", '
                                     '"tokens": 1000000000000}]}]}')
    with pytest.raises(Showo2Error, match="'tokens' and 'frames' counts"):
        new.load("y.json")
    assert new.to_json()["turns"] == before
