"""Probe DF: the prompts users type and the files they keep them in (JSON Lines and JSON prompts
files, line breaks inside a prompt, a prompt that starts with '-')."""

from __future__ import annotations

import json

import pytest

from showo2_cli.cli import main
from showo2_cli.errors import InputError
from showo2_cli.saving import read_prompts

# the official evaluation files' shapes: GenEval's metadata (JSON Lines) and DPG-Bench's (an array)
GENEVAL = [{"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
           {"tag": "colors", "include": [{"class": "cow", "count": 1, "color": "red"}], "prompt": "a red cow  "}]
DPG = [{"prompt": "Seven brown\nbottles, \"glass\"", "prompt_file_name": "a.txt"}, {"prompt": "一只猫", "x": 1}]


def test_json_lines_and_json_prompts_files_give_their_prompts(tmp_path):
    """`t2i --prompts-file geneval_metadata.jsonl` (the official GenEval prompts) made an image of
    each line's JSON text, and DPG-Bench's `.json` one of each of its 4,262 lines ("[", "{",
    '"prompt": "...",'): 1,065 prompts became 4,262 wrong images without a word. A record is the
    prompt, exactly as the official evaluation scripts take it (`json.loads(line)["prompt"]`)."""
    jsonl = tmp_path / "geneval.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in GENEVAL) + "\n\n", encoding="utf-8")
    assert read_prompts(None, jsonl) == ["a photo of a bench", "a red cow  "]
    dpg = tmp_path / "dpg.json"
    dpg.write_text(json.dumps(DPG, indent=4, ensure_ascii=False), encoding="utf-8")
    assert read_prompts(None, dpg) == ["Seven brown\nbottles, \"glass\"", "一只猫"]
    # a record may be the prompt itself, or name it caption or text (the training records' fields);
    # UTF-16 with its mark and CRLF as for text files
    mixed = tmp_path / "m.JSONL"
    mixed.write_bytes('"a cat"\r\n{"caption": "b dog"}\r\n{"text": "c fox", "prompt": "d owl"}\r\n'.encode("utf-16"))
    assert read_prompts("first", mixed) == ["first", "a cat", "b dog", "d owl"]
    # a text file keeps its lines, whatever they look like
    txt = tmp_path / "p.txt"
    txt.write_text(json.dumps(GENEVAL[0]) + "\n")
    assert read_prompts(None, txt) == [json.dumps(GENEVAL[0])]


@pytest.mark.parametrize(("name", "body", "message"), [
    ("a.jsonl", '{"prompt": "ok"}\n{"tag": 1, "include": []}\n', "line 2: a record without a prompt .*its fields are tag, include"),
    ("b.jsonl", '{"prompt": 5}\n', "line 1: the prompt is a number, not a string"),
    ("c.jsonl", '{"prompt": "a"\n"b"\n', "line 1: not valid JSON"),  # never read on into the next line
    ("d.jsonl", '{"prompt": "a"} {"prompt": "b"}\n', "line 1: more than one JSON value on a line"),
    ("e.jsonl", "[" * 100_000 + "\n", "line 1: JSON nested too deeply"),
    ("f.jsonl", '"ok"\n{"prompt": "\\ud800"}\n', "line 2: the prompt is not valid UTF-8 text: a lone surrogate"),
    ("g.jsonl", '{"prompt": " "}\n', "line 1: empty prompt"),
    ("h.json", '{"prompt": "a"}', "is not a JSON array of prompts"),
    ("i.json", '["a",\n"b" "c"]', "line 2: not valid JSON"),
    ("j.json", '["a"] ["b"]', "line 1: not valid JSON \\(text after the array\\)"),
    ("k.json", "[null]", "line 1: the prompt is null, not a string"),
    ("l.json", "[]", "holds no prompt"),
    ("m.json", '["' + "x" * 10_001 + '"]', "line 1: a prompt of 10001 characters is too long"),
])
def test_a_bad_json_prompts_file_is_one_line_naming_where(tmp_path, name, body, message):
    (tmp_path / name).write_text(body, encoding="utf-8")
    with pytest.raises(InputError, match=message) as info:
        read_prompts(None, tmp_path / name)
    assert "\n" not in str(info.value) and info.value.exit_code == 3


def test_t2i_makes_the_images_of_a_json_lines_prompts_file(tiny_model_dir, tmp_path, capsys):
    jsonl = tmp_path / "geneval.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in GENEVAL) + "\n", encoding="utf-8")
    rc = main(["t2i", "--prompts-file", str(jsonl), "-m", str(tiny_model_dir), "--steps", "2", "--seed", "5",
               "-o", str(tmp_path / "o.png"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert [json.loads((tmp_path / f"o-00{i}.json").read_text())["prompt"] for i in (0, 1)] == \
        ["a photo of a bench", "a red cow  "]
    assert not (tmp_path / "o-002.png").exists()


@pytest.mark.parametrize(("argv", "hint"), [
    (["t2i", "-a red circle", "-o", "m.png"], "goes after '--', which ends the options (give them before it): -- '-a red circle'"),
    (["t2i", "--", "-a red circle", "-o", "m.png", "--seed", "3"],
     "; '--' ends the options, so give them before it: showo2 t2i -o m.png --seed 3 -- '-a red circle' ("),
    (["t2i", "--steps", "3", "--", "--json", "-o", "my file.png", "--overwrite"],
     "give them before it: showo2 t2i --steps 3 -o 'my file.png' --overwrite -- --json ("),
    (["i2v", "c.png", "--", "-up", "--frames", "5"], "give them before it: showo2 i2v c.png --frames 5 -- -up ("),
    (["caption", "c.png", "--", "-q", "-what?"], "give them before it: showo2 caption c.png -q '-what?' ("),
])
def test_a_prompt_that_starts_with_a_dash_is_shown_its_whole_command_line(tmp_path, monkeypatch, capsys, argv, hint):
    """`showo2 t2i "-a red circle" -o m.png` is told such a prompt goes after '--'; doing so,
    `showo2 t2i -- "-a red circle" -o m.png` was told "quote a prompt of several words: '-a red
    circle -o', and name the output with -o: -o m.png": the options after '--' were taken for words
    of the prompt. The hint now gives the line with the options before '--' (which runs)."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and hint in err and "quote a prompt" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_line_break_in_a_prompt_is_one_space_whichever_the_line_end(monkeypatch):
    """`t2i $'a red circle\\non white'` gave the image of "a red circle on white" (a line break is a
    space), but the same prompt pasted from Windows (`\\r\\n`) or an old Mac (`\\r`) kept its carriage
    return as a token: another image (the demo's pixels up to 223 levels apart), from the command
    line, a server request or the Python API alike. Negative prompts likewise. The token rows
    guidance runs on (prompt, then negative) are compared, the sampling is not run."""
    import torch

    from showo2_cli import api
    from showo2_cli.pipelines import generate

    torch.set_num_threads(1)
    model = api.load("demo")
    layout = generate.generation_layout

    class Rows(Exception):
        pass

    def rows(*args, **kwargs):
        raise Rows(layout(*args, **kwargs).input_ids.tolist())

    monkeypatch.setattr(generate, "generation_layout", rows)

    def tokens(prompt: str, negative: str) -> list[list[int]]:
        with pytest.raises(Rows) as info:
            api.text_to_image(model, [prompt], api.GenerateOptions(seed=4, steps=2, negative_prompt=negative))
        return info.value.args[0]

    plain = tokens("a red circle on white", "dark blue")
    assert plain[0] != plain[1]
    for typed, negative in [("a red circle\r\non white", "dark\r\nblue"), ("a red circle\ron white", "dark\rblue"),
                            ("a red circle\non white", "dark\nblue")]:
        assert tokens(typed, negative) == plain, repr(typed)
    assert tokens("a red circle on  white", "dark blue") != plain  # two spaces are two


@pytest.mark.parametrize(("line", "prompt", "output"), [
    ("a cat's hat and a dog's bone -o x.png", "a cat's hat and a dog's bone", "x.png"),
    ("l'eau de l'île", "l'eau de l'île", None),
    ('a 5" floppy disk and a 3.5" one', 'a 5" floppy disk and a 3.5" one', None),
    (r"a sign reading C:\Users\me", r"a sign reading C:\Users\me", None),
    # shell quoting of whole words still holds, for the prompt and for option values
    ("'a red circle' --negative-prompt 'a blue one' -o \"my file.png\"", "a red circle", "my file.png"),
    ('"a cat -o x" --output="b c.png"', "a cat -o x", "b c.png"),
    (r"a cat -o my\ file.png", "a cat", "my file.png"),
    ("-o d.png -- a cat's -- hat", "a cat's -- hat", "d.png"),
])
def test_a_chat_t2i_prompt_keeps_its_apostrophes_and_quotes(line, prompt, output):
    """A chat's `/t2i a cat's hat and a dog's bone` made (and recorded) "a cats hat and a dogs bone":
    the line was split by `shlex`, which took the two apostrophes for a quoted span; `l'eau de
    l'île` became "leau de lîle", inch marks vanished and backslashes were dropped. `showo2 t2i
    "a cat's hat"` had the apostrophes."""
    from showo2_cli.cli.chat import parse_t2i

    got, params = parse_t2i(line)
    assert got == prompt and params["output"] == output
    if "--negative-prompt" in line:
        assert params["negative_prompt"] == "a blue one"


def test_a_chat_script_with_lone_carriage_returns_is_read_line_by_line():
    """`showo2 chat x.png < script.txt` of a script saved with classic Mac OS line ends asked the
    whole script as one question ("what color?\\r/t2i a red circle -o c.png\\r/quit": the demo
    answered it, no image, no quit), where a prompts file, and a stdin read as text, end a line
    at a lone CR."""
    import io

    from showo2_cli.cli.chat_input import LineTooLong, pipe_lines

    script = b"\xef\xbb\xbfwhat color?\r/t2i a red circle -o c.png\r/quit\r"
    assert list(pipe_lines(io.BytesIO(script), 100)) == ["what color?", "/t2i a red circle -o c.png", "/quit"]
    assert list(pipe_lines(io.BytesIO(b"a\r\nb\rc\n"), 100)) == ["a", "b", "c"]
    (long,) = pipe_lines(io.BytesIO(b"x\r" * 60), 100)  # still one unended line over the limit: dropped
    assert isinstance(long, LineTooLong) and long.size == 120
