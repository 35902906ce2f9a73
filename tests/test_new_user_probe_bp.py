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


@pytest.mark.parametrize("argv, hint", [
    (["t2i", "a", "red", "circle"], "; quote a prompt of several words: 'a red circle'"),
    (["t2v", "a", "red", "circle", "--steps", "3"], "; quote a prompt of several words: 'a red circle'"),
    (["i2v", "c.png", "a", "circle", "moving", "up"], "; quote a prompt of several words: 'a circle moving up'"),
    (["t2i", "a cat", "cat.png"], "; name the output with -o: -o cat.png"),
    (["t2i", "a", "cat", "cat.png"], "; quote a prompt of several words: 'a cat', and name the output with -o: -o cat.png"),
    (["caption", "c.png", "What", "color is it?"], "; ask a question with -q: -q 'What color is it?'"),
    (["encode", "c.png", "c.safetensors"], "; name the output with -o: -o c.safetensors"),
    (["decode", "c.safetensors", "c.mp4"], "; name the output with -o: -o c.mp4"),
])
def test_extra_arguments_say_what_they_were_meant_as(tmp_path, monkeypatch, capsys, argv, hint):
    """`showo2 t2i a red circle` (an unquoted prompt) said only "Got unexpected extra argument(s)
    (red circle)"; ollama takes such words as one prompt: here the error says to quote them, and
    likewise for a question without -q or an output without -o."""
    monkeypatch.chdir(tmp_path)
    code, message = _error(capsys, argv)
    assert code == 2
    assert "unexpected extra argument" in message and hint in message, message
    assert message.endswith(f"(see: showo2 {argv[0]} --help)")
    assert os.listdir(tmp_path) == []


def test_extra_arguments_with_nothing_to_suggest_keep_the_plain_message(capsys):
    for argv in (["models", "foo"], ["info", "demo", "extra"], ["encode", "c.png", "foo", "c.safetensors"]):
        code, message = _error(capsys, argv)
        assert code == 2 and message.startswith("Got unexpected extra argument") and ";" not in message, message


def test_a_mistyped_spec_gets_the_closest_name_as_a_mistyped_model_does(tmp_path, monkeypatch, capsys):
    """`showo2 init --spec tiy` listed the specs and `showo2 pull dmeo` said it was no variant, but
    unlike `--model dmeo` neither suggested the closest name."""
    monkeypatch.chdir(tmp_path)
    code, message = _error(capsys, ["init", "--spec", "tiy", "-o", "m"])
    assert code == 2 and message.endswith("; did you mean 'tiny'?"), message
    code, message = _error(capsys, ["init", "--spec", "7b-video", "-o", "m"])
    assert code == 2 and message.endswith("; did you mean '7B-w-video-und'?"), message
    code, message = _error(capsys, ["init", "--spec", "qwen", "-o", "m"])
    assert code == 2 and "did you mean" not in message, message
    code, message = _error(capsys, ["info", "dmeo"])  # the one suggestion, shared with --model
    assert code == 4 and message.endswith("; did you mean 'demo'?"), message
    code, message = _error(capsys, ["pull", "7B-video@main"])  # and with pull, which suggested nothing
    assert code == 4 and message.endswith("; did you mean '7B-w-video-und'?"), message
    assert os.listdir(tmp_path) == []


@pytest.mark.slow  # seven model loads, a video among them
def test_readme_opening_and_generation_commands_run_one_after_another(tmp_path, monkeypatch, capsys):
    """README's opening command wrote circle.png, then its Generation section's first example
    wrote circle.png again (exit 5: it exists) and so did the stdin one: a new user copying the
    README top to bottom met two errors. Each command now runs after the ones before it (the demo,
    two sampling steps each to stay fast)."""
    import io
    import shlex
    import sys

    from conftest import REPO

    readme = (REPO / "README.md").read_text()
    opening = readme[readme.index("On a fresh machine"):].split("\n\n")[1]
    lines = [part.strip() for part in opening.split("&&") if part.strip().startswith("showo2 ")]
    generation = readme[readme.index("### Generation"):].split("\n\n")[1]
    lines += [line.strip() for line in generation.splitlines()]
    assert len(lines) == 7, lines
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a red circle on a white background\na blue square on a black background\n")
    for line in lines:
        stdin, _, command = line.rpartition("|") if line.startswith("echo ") else ("", "", line)
        argv = shlex.split(command, comments=True)
        assert argv[0] == "showo2", line
        data = ("\n".join(shlex.split(stdin)[1:]) + "\n").encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        fast = ["--steps", "2"] if argv[1] in ("t2i", "t2v", "i2v") else []
        assert main([*argv[1:], "--model", "demo", *fast]) == 0, (line, capsys.readouterr().err)
    capsys.readouterr()
    for name in ("circle.png", "red.png", "out-000.png", "out-007.png", "blue.png", "square.mp4", "up.gif"):
        assert (tmp_path / name).is_file(), name


def test_prompts_read_from_a_terminal_say_so_before_waiting(tmp_path, monkeypatch, capsys):
    """`showo2 t2i -` typed at a terminal waited for stdin and said nothing: it looked hung. (The
    output is taken, so each run stops after reading its prompts, before any model loads.)"""
    import io
    import sys

    class Terminal(io.TextIOWrapper):
        def isatty(self):
            return True

    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.png").write_bytes(b"mine")
    for kind, quiet, said in ((Terminal, [], 1), (io.TextIOWrapper, [], 0), (Terminal, ["--quiet"], 0)):
        monkeypatch.setattr(sys, "stdin", kind(io.BytesIO(b"a red circle\n"), encoding="utf-8"))
        assert main(["t2i", "-", "-o", "taken.png", "--model", "demo", *quiet]) == 5
        err = capsys.readouterr().err
        assert err.count("reading the prompts from the terminal, one a line; Ctrl-D ends them\n") == said, err
        assert "'taken.png' exists" in err and sys.stdin.read() == ""  # the prompts were read
    assert (tmp_path / "taken.png").read_bytes() == b"mine"


def test_a_file_where_an_output_folder_should_be_is_not_called_missing(tmp_path, monkeypatch, capsys):
    """`showo2 convert demo -o circle.png/x` (circle.png a file) said "folder '.../circle.png' does
    not exist"; `t2i -o circle.png/x.png` already said it "is not a folder"."""
    from showo2_cli.errors import OutputError
    from showo2_cli.media import atomic_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "circle.png").write_bytes(b"mine")
    for argv in (["convert", "demo", "-o", "circle.png/x"], ["init", "--spec", "tiny", "-o", "circle.png/x"]):
        code, message = _error(capsys, argv)
        assert code == 5 and message.endswith("circle.png' is not a folder") and "exist" not in message, message
    code, message = _error(capsys, ["init", "--spec", "tiny", "-o", "nowhere/x"])
    assert code == 5 and message.endswith("nowhere' does not exist"), message
    with pytest.raises(OutputError, match=r"circle\.png' is not a folder$"):
        with atomic_folder(tmp_path / "circle.png" / "x"):
            pass
    assert sorted(os.listdir(tmp_path)) == ["circle.png"] and (tmp_path / "circle.png").read_bytes() == b"mine"


def test_a_path_whose_tilde_the_shell_left_names_the_path_meant(tmp_path, monkeypatch, capsys):
    """`showo2 t2i x --output=~/out.png` (bash expands '~' only at a word's start, not after '=')
    said only "folder '~' does not exist"."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    said = " (the shell left '~' as typed, as it does in quotes or after '=': write {})"
    for argv, meant, code in ((["t2i", "a cat", "--output=~/out.png"], home / "out.png", 5),
                              (["caption", "~/photo.jpg"], home / "photo.jpg", 3),
                              (["init", "--spec", "tiny", "-o", "~/m"], home / "m", 5)):
        got, message = _error(capsys, argv)
        assert got == code and message.endswith(said.format(meant)), message
    for argv in (["t2i", "a cat", "-o", "nodir/x.png"], ["caption", "a~/photo.jpg"], ["caption", "~nosuchuser/x.png"]):
        got, message = _error(capsys, argv)
        assert got in (3, 5) and "'~'" not in message, message
    assert sorted(os.listdir(tmp_path)) == ["home"] and os.listdir(home) == []


def test_the_media_and_the_words_given_the_other_way_round_are_named(tmp_path, monkeypatch, capsys):
    """`showo2 i2v "a red circle moving up" circle.png` said "cannot read image 'a red circle moving
    up': no such file" and `showo2 caption "What color is it?" circle.png` (where the hint above
    would take circle.png for a question) now say which comes first."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), "white").save(tmp_path / "circle.png")
    code, message = _error(capsys, ["i2v", "a red circle moving up", "circle.png", "-o", "up.mp4"])
    assert (code, message) == (2, "the image comes first, then the prompt: showo2 i2v circle.png 'a red circle moving up'")
    code, message = _error(capsys, ["caption", "What color is it?", "circle.png"])
    assert code == 2 and message.endswith("; the image or video comes first: circle.png -q 'What color is it?' "
                                          "(see: showo2 caption --help)"), message
    long = "a" * 5000  # longer than a file name may be: no internal error, and a bounded line
    code, message = _error(capsys, ["i2v", long, "circle.png"])
    assert code == 2 and message.startswith("the image comes first") and len(message) < 400, message
    code, message = _error(capsys, ["i2v", long, "a cat"])
    assert code == 3 and "name too long" in message, message
    assert sorted(os.listdir(tmp_path)) == ["circle.png"]


def test_a_question_of_several_words_after_q_is_quoted_whole(capsys):
    """`caption x.png -q What color is it?` suggested `-q 'color is it?'`, losing the -q's own word."""
    for argv, hint in ((["caption", "c.png", "-q", "What", "color", "is", "it?"], "-q 'What color is it?'"),
                       (["caption", "c.png", "-q", "Hi", "--question", "What", "color"], "-q 'What color'")):
        code, message = _error(capsys, argv)
        assert code == 2 and f"; quote a question of several words: {hint} (see" in message, message
