"""The merge review (probe Z1): what the day's probes' changes had to agree on across the command
line, the Python API and the server."""

from __future__ import annotations

import threading

import pytest
import torch

from showo2_cli.loading import load
from showo2_cli.serve.jobs import images_job
from showo2_cli.serve.requests import ImagePlan
from showo2_cli.tokenizer import encode_user_text


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return load("demo")


class _Job:
    cancel = threading.Event()


def test_the_servers_revised_prompt_is_the_part_of_the_prompt_the_image_was_made_from(demo):
    """`showo2 t2i` says when a prompt is longer than the model's text budget and the pipeline warns;
    the server answered OpenAI's `revised_prompt` with the whole prompt, as if all of it was used."""
    tokenizer, budget = demo.require_tokenizer(), demo.spec.text_budget
    long = " ".join(["a red circle on a white background"] * 10)
    assert len(encode_user_text(tokenizer, long)) == 70 > budget == 27
    (out,) = images_job(demo, ImagePlan(long, 1, (32, 32), 1, 2, None), _Job())
    used = out["revised_prompt"]
    assert used == " ".join(["a red circle on a white background"] * 3) + " a red circle on a white"
    assert len(encode_user_text(tokenizer, used)) == budget and long.startswith(used)
    short = "a blue square"
    (out,) = images_job(demo, ImagePlan(short, 1, (32, 32), 1, 2, None), _Job())
    assert out["revised_prompt"] == short


def test_a_chats_t2i_says_when_the_prompt_was_longer_than_the_model_holds(demo, tmp_path, monkeypatch, capsys):
    """`showo2 t2i` and the pipeline say so; the chat's `/t2i` cut the prompt without a word."""
    import io

    import showo2_cli.cli  # noqa: F401  (the commands' shared helpers)
    from showo2_cli.chat import Conversation
    from showo2_cli.cli import common
    from showo2_cli.cli.chat import ChatSession

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(common.STATE, "quiet", False)  # an earlier command of the run may have left --quiet/--json
    monkeypatch.setitem(common.STATE, "json", False)
    session = ChatSession(Conversation(demo), out=io.StringIO(), err=io.StringIO())
    long = " ".join(["a red circle on a white background"] * 10)
    assert session.handle(f"/t2i {long} -o long.png --steps 2 --seed 1 --size 32x32 -n 2")
    assert session.handle("/t2i a blue square -o short.png --steps 2 --seed 1 --size 32x32")
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["prompt 0 has 70 tokens; the model's sequence holds 27, so the rest was not used",
                     "saved long-000.png (seed 1); attach it with /image long-000.png",
                     "saved long-001.png (seed 2); attach it with /image long-001.png",
                     "saved short.png (seed 1); attach it with /image short.png"]
    assert (tmp_path / "long-001.png").exists() and (tmp_path / "short.png").exists()


@pytest.mark.parametrize("name", ["tokenizer_config.json", "tokenizer.json"])
def test_a_tokenizer_file_that_is_not_a_regular_file_is_refused_by_name(tmp_path, name):
    """README (probe W): a FIFO or a device given as a tokenizer file is refused before it is read.
    transformers passes over what is not a file: a FIFO `tokenizer_config.json` loaded the tokenizer
    without its config and `showo2 t2i` ran; a FIFO `tokenizer.json` said "Couldn't instantiate the
    backend tokenizer from one of:"."""
    import os
    import shutil

    from showo2_cli.errors import ModelError
    from showo2_cli.hub import bundled_demo_path
    from showo2_cli.tokenizer import load_tokenizer

    folder = tmp_path / "tok"
    folder.mkdir()
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bundled_demo_path() / file, folder / file)
    assert load_tokenizer(folder)("a red circle")["input_ids"]
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(ModelError) as e:
        load_tokenizer(folder)
    assert str(e.value) == f"cannot load the tokenizer in '{folder}': {name} is not a regular file (a FIFO, a device or a folder)"


def test_a_long_prompt_is_named_once_by_its_index_among_the_prompts(demo, tmp_path, capsys):
    """`showo2 t2i --prompts-file` (a short prompt, then a long one) with `-n 2` said "the prompt of
    output 1 has 70 tokens ..." twice: output 1 is the short prompt's second image (multi-001.png);
    prompt 1 made outputs 2 and 3. The note names the prompt, once."""
    from showo2_cli.cli import main

    long = " ".join(["a red circle on a white background"] * 10)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"a blue square\n{long}\n")
    negative = " ".join(["a blue square"] * 20)
    assert main(["t2i", "--prompts-file", str(prompts), "-n", "2", "--steps", "2", "--seed", "1", "--size", "32x32",
                 "--negative-prompt", negative, "-o", str(tmp_path / "multi.png")]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "so the rest was not used" in line]
    assert notes == ["the negative prompt of prompt 0 has 60 tokens; the model's sequence holds 27, so the rest was "
                     "not used",
                     "prompt 1 has 70 tokens; the model's sequence holds 27, so the rest was not used",
                     "the negative prompt of prompt 1 has 60 tokens; the model's sequence holds 27, so the rest was "
                     "not used"]
    assert sorted(p.name for p in tmp_path.glob("multi-*.png")) == [f"multi-00{k}.png" for k in range(4)]
