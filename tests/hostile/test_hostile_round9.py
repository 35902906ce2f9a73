"""Hostile inputs, round nine: where outputs go. A folder output replaced with ``--overwrite``
that holds the command's own input (``convert models/a -o models --overwrite``) deleted the
source and everything beside it; each test fails on the code before its fix."""

from __future__ import annotations

import shutil

import pytest

from showo2_cli.cli import main
from showo2_cli.errors import OutputError


@pytest.fixture
def holder(tmp_path, tiny_model_dir):
    """``hold/m`` (a copy of the tiny model) beside the user's own ``hold/notes.txt``."""
    hold = tmp_path / "hold"
    shutil.copytree(tiny_model_dir, hold / "m")
    (hold / "notes.txt").write_text("keep")
    return hold


def _names(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_convert_never_replaces_a_folder_holding_its_source(holder, tmp_path, capsys):
    before = _names(holder)
    assert main(["convert", str(holder / "m"), "-o", str(holder), "--overwrite"]) == 5
    err = capsys.readouterr().err
    # (refused before the source is read since probe FP: a folder that is not a model folder is never replaced)
    assert err.count("\n") == 1 and "not a model folder" in err and "/hold'" in err
    assert _names(holder) == before and (holder / "notes.txt").read_text() == "keep"
    # the model's own VAE folder is an input too: replaced by a model folder, the source lost its VAE
    assert main(["convert", str(holder / "m"), "-o", str(holder / "m" / "vae"), "--overwrite"]) == 5
    assert "is the input" in capsys.readouterr().err
    assert _names(holder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hold"]  # no temporary folder left


def test_convert_still_rewrites_its_source_in_place(holder, capsys):
    assert main(["convert", str(holder / "m"), "-o", str(holder / "m"), "--overwrite", "--dtype", "bf16"]) == 0
    from safetensors import safe_open

    with safe_open(holder / "m" / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    assert (holder / "notes.txt").read_text() == "keep"


def test_convert_never_replaces_a_folder_holding_an_adapter(holder, tiny_model_dir, tmp_path, capsys):
    from conftest import random_lora

    adapter = random_lora(tiny_model_dir, holder / "m" / "adapter")
    before = _names(holder)
    assert main(["convert", str(holder / "m"), "-o", str(holder / "m"), "--overwrite", "--lora", str(adapter)]) == 5
    assert "holds the input" in capsys.readouterr().err
    assert _names(holder) == before


def test_save_pretrained_never_replaces_a_folder_holding_its_model(holder):
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(holder / "m")
    before = _names(holder)
    with pytest.raises(OutputError, match="holds the input"):
        pipe.save_pretrained(holder, overwrite=True)
    assert _names(holder) == before


def test_a_dash_output_is_refused_not_a_file_named_dash(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """`/save -` in the chat wrote the transcript to a file named '-' in the current folder ('-'
    is a standard stream everywhere else, as for --prompts-file); `-o -` was refused for its
    extension, which said nothing of what '-' means."""
    import io

    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession
    from showo2_cli.loading import load

    monkeypatch.chdir(tmp_path)
    err = io.StringIO()
    session = ChatSession(Conversation(load(tiny_model_dir)), out=io.StringIO(), err=err)
    assert session.handle("/save -")
    assert "standard output" in err.getvalue() and err.getvalue().count("\n") == 1
    for argv in (["t2i", "a cat", "-m", str(tiny_model_dir), "-o", "-"],
                 ["decode", str(tmp_path / "x.safetensors"), "-o", "-"]):
        assert main(argv) == 2
        assert "standard output" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["t2i", "a cat", "-m", str(tiny_model_dir), "--steps", "2", "--size", "32", "--seed", "1",
                 "-o", "./-.png"]) == 0  # a name that starts with '-' is still a name
    assert (tmp_path / "-.png").is_file()

