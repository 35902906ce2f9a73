"""Probe K: the command line as people coming from ollama, `llm` and diffusers scripts use it
(stdin conventions, streams in odd encodings, help that tells the truth)."""

from __future__ import annotations

import io
import json
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

from showo2_cli.cli import main


def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_prompt_dash_reads_the_prompts_from_stdin(tiny_model_dir, tmp_path, monkeypatch, capsys):
    # `echo "a cat" | showo2 t2i -` drew the prompt "-" itself
    _stdin(monkeypatch, b"a cat\na dog\n")
    rc = main(["t2i", "-", "-m", str(tiny_model_dir), "--steps", "2", "--seed", "5", "-o", str(tmp_path / "o.png"),
               "--quiet"])
    assert rc == 0
    outputs = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in outputs] == ["o-000.png", "o-001.png"]
    prompts = [json.loads((tmp_path / name).read_text())["prompt"] for name in ("o-000.json", "o-001.json")]
    assert prompts == ["a cat", "a dog"]


def test_prompt_dash_with_a_prompts_file_is_refused(tiny_model_dir, tmp_path, monkeypatch, capsys):
    _stdin(monkeypatch, b"a cat\n")
    (tmp_path / "p.txt").write_text("a dog\n")
    rc = main(["t2i", "-", "--prompts-file", str(tmp_path / "p.txt"), "-m", str(tiny_model_dir),
               "-o", str(tmp_path / "o.png")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not both" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt"]


def test_no_prompt_says_how_to_give_one(capsys):
    rc = main(["t2i", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "'-' to read the prompts from stdin" in err, err


class _Ascii(io.TextIOWrapper):
    def __init__(self):
        super().__init__(io.BytesIO(), encoding="ascii")

    def value(self) -> bytes:
        self.flush()
        return self.buffer.getvalue()


def test_streamed_caption_survives_a_stdout_that_cannot_hold_the_answer(tmp_path, monkeypatch):
    # PYTHONIOENCODING=ascii (or a C locale without UTF-8) and an answer "un café": the streamed
    # answer was an internal error (exit 1); the rest of the output escapes what it cannot encode
    from showo2_cli import pipelines as P
    from showo2_cli.cli import understand

    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")

    def fake_caption(bundle, media, opts, on_text=None, progress=None, on_done=None):
        if on_text is not None:
            on_text(0, "un caf\u00e9")
            on_done(0, "un caf\u00e9")
        return SimpleNamespace(kind="image", questions=["q"], answers=["un caf\u00e9"], token_counts=[3],
                               seconds=0.0, frames=1, options={}, vae_tiles=None, notices=[])

    monkeypatch.setattr(P, "caption", fake_caption)
    monkeypatch.setattr(understand, "load_model", lambda *a, **k: SimpleNamespace(record=dict))  # (its outputs record the load)
    for extra in ([], ["--no-stream"]):
        out = _Ascii()
        monkeypatch.setattr(sys, "stdout", out)
        assert main(["caption", str(tmp_path / "a.png"), "--model", "demo", "--quiet", *extra]) == 0
        assert out.value() == b"un caf\\xe9\n", extra


def test_chat_answer_survives_a_stdout_that_cannot_hold_it():
    from showo2_cli.cli.chat import ChatSession

    class Conv:
        on_notice = None

        def ask(self, question, on_text=None):
            on_text("un caf\u00e9")
            return "un caf\u00e9"

    out, err = _Ascii(), io.StringIO()
    session = ChatSession(Conv(), out=out, err=err)
    assert session.handle("what is it?") is True
    assert out.value() == b"un caf\\xe9\n" and err.getvalue() == ""


@pytest.mark.parametrize("command", ["t2i", "t2v", "i2v"])
def test_prompt_help_tells_of_stdin(command, capsys):
    assert main([command, "--help"]) == 0
    assert "reads the prompts from stdin" in " ".join(capsys.readouterr().out.split()).replace("│", "")


def test_help_command_shows_a_commands_help(capsys):
    # `showo2 help caption` (ollama, git, cargo) was "No such command 'help'"
    assert main(["caption", "--help"]) == 0
    direct = capsys.readouterr().out
    assert main(["help", "caption"]) == 0
    assert capsys.readouterr().out == direct and "Usage: showo2 caption" in direct
    assert main(["help"]) == 0
    assert "Usage: showo2 [OPTIONS] COMMAND" in capsys.readouterr().out
    assert main(["help", "captoin"]) == 2
    assert "Did you mean 'caption'?" in capsys.readouterr().err


def test_help_command_is_not_listed():
    from showo2_cli.cli.reference import render

    assert "## showo2 help" not in render()


@pytest.mark.parametrize("command, option, metavar", [("t2i", "--lora", "<path>"), ("caption", "--question", "<str>"),
                                                      ("serve", "--allow-origin", "<origin>"),
                                                      ("train", "--set", "<key=value>")])
def test_repeatable_options_show_no_python_types(command, option, metavar, capsys, monkeypatch):
    # they read <list[Path]> / <list[str]> (Python's type names) in --help
    monkeypatch.setenv("COLUMNS", "120")
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if f"{option} " in line)
    assert metavar in line and "list[" not in text, line


def test_outputs_escape_what_an_ascii_stdout_cannot_hold(tmp_path, monkeypatch):
    # PYTHONIOENCODING=ascii: `train --check` of a config named café.toml, and `caption --help` at
    # 80 columns (its "…" where a word is cut), were internal errors (exit 1)
    import shutil

    from conftest import REPO

    config = tmp_path / "caf\u00e9.toml"
    shutil.copy(REPO / "examples" / "train_tiny.toml", config)
    out = _Ascii()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["train", str(config), "--check"]) == 0
    assert b"caf\\xe9.toml: valid" in out.value()
    assert out.errors == "strict"  # the stream is given back as it was
    monkeypatch.setenv("COLUMNS", "80")
    out = _Ascii()
    monkeypatch.setattr(sys, "stdout", out)
    assert main(["caption", "--help"]) == 0
    assert b"Usage: showo2 caption" in out.value()


def test_a_prompt_that_starts_with_a_dash_is_told_where_it_goes(capsys):
    # `showo2 t2i "-a cat"` said only "No such option: -a"
    assert main(["t2i", "-a cat", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No such option: -a;" in err and "after '--'" in err and "-- '-a cat'" in err, err
    assert main(["t2i", "a cat", "--stepz", "2"]) == 2  # a mistyped option gets the suggestion alone
    err = capsys.readouterr().err
    assert "--steps" in err and "after '--'" not in err, err


def test_a_mistyped_model_name_gets_a_suggestion(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    assert main(["info", "dmeo"]) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith("did you mean 'demo'?"), err
    assert main(["info", "7b-video-und"]) == 4
    assert "did you mean '7B-w-video-und'?" in capsys.readouterr().err
    assert main(["info", "banana"]) == 4
    assert "did you mean" not in capsys.readouterr().err


def test_a_refused_choice_reads_without_pydantics_prefix(capsys):
    # "Invalid value for '--dtype': Value error, 'int8' is not one of ..."
    assert main(["t2i", "a cat", "--dtype", "int8"]) == 2
    err = capsys.readouterr().err
    assert "Invalid value for '--dtype': 'int8' is not one of 'auto', 'fp32', 'float32', 'bf16'" in err, err
    assert "Value error" not in err


def test_debug_after_the_command_is_the_root_option(capsys):
    # `showo2 t2i ... --debug` printed click's parser traceback, then "No such option: --debug"
    assert main(["t2i", "a cat", "--size", "17", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "No such option" not in err and "NoSuchOption" not in err, err
    assert "Traceback" in err and err.rstrip().endswith("--size sides must be multiples of 16 (VAE x patch), got 17x17")
    # the value of an option, or an argument after --, is not the flag
    assert main(["t2i", "a cat", "--size", "17", "--negative-prompt", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert main(["t2i", "--size", "17", "--", "a cat", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected extra argument" in err, err


def test_root_option_without_a_command_shows_the_help(capsys):
    # `showo2 --debug` exited 0 and printed nothing
    assert main(["--debug"]) == 2
    assert "Usage: showo2 [OPTIONS] COMMAND" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("showo2 ")
