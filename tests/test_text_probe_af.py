"""Probe AF: the text people type (prompts, questions, prompts files, chat lines) and where it
ends up (file metadata, the terminal)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from showo2_cli.media import write_video
from showo2_cli.media.metadata import TRUNCATED_KEY, read_metadata
from showo2_cli.options import MAX_PROMPT_CHARS

DEMO = Path(__file__).resolve().parents[1] / "src" / "showo2_cli" / "assets" / "demo"
MOV_MAX_TEXT_BYTES = 65535  # a QuickTime text tag's 16-bit length
_FRAMES = np.full((1, 16, 16, 3), 90, np.uint8)


@pytest.mark.parametrize("ext", [".mov", ".mp4"])
def test_a_video_keeps_its_longest_prompt_metadata_readable(tmp_path, ext):
    # the longest prompt and negative prompt of ZWJ emoji: 96 KB of JSON comment. FFmpeg's mov
    # muxer writes a text's length in 16 bits: the comment read back as its last 30,684 bytes
    # (96,220 mod 65,536), not JSON, so the .mov's parameters were lost without a word
    family = "\U0001f469\u200d\U0001f469\u200d\U0001f467"
    prompt = (family * MAX_PROMPT_CHARS)[:MAX_PROMPT_CHARS]
    meta = {"prompt": prompt, "negative_prompt": "\u202e" + prompt[: MAX_PROMPT_CHARS - 1], "seed": 7}
    p = write_video(tmp_path / f"v{ext}", _FRAMES, 8.0, metadata=meta)
    with av.open(str(p)) as c:
        comment = c.metadata["comment"]
    assert len(comment.encode()) <= MOV_MAX_TEXT_BYTES if ext == ".mov" else len(comment) > MOV_MAX_TEXT_BYTES
    back = read_metadata(p)
    assert back is not None and back["seed"] == 7
    if ext == ".mp4":  # an mp4 holds it whole
        assert back == meta
        return
    assert back[TRUNCATED_KEY] == ["negative_prompt", "prompt"] or back[TRUNCATED_KEY] == ["prompt", "negative_prompt"]
    for key in ("prompt", "negative_prompt"):  # each text a true beginning of the one written
        assert meta[key].startswith(back[key]) and len(back[key]) > 1000
    assert json.loads(comment) == back


def test_a_short_mov_comment_is_unchanged(tmp_path):
    meta = {"prompt": "一只猫 \u202ecat" * 100, "seed": 1}
    assert read_metadata(write_video(tmp_path / "v.mov", _FRAMES, 8.0, metadata=meta)) == meta


# ---- the chat's standard input ------------------------------------------------------------------

def test_a_chat_script_saved_with_a_byte_order_mark_runs_its_first_command(monkeypatch):
    """`showo2 chat < script.txt` of a script Notepad saved (UTF-8 with its mark): the first line
    "\ufeff/image x.png" did not start with "/" and was asked as a question (the demo answered it).
    Only the stream's opening mark goes; one later in the text is the user's."""
    import io
    import sys

    from showo2_cli.cli.chat_input import LineTooLong, input_lines, pipe_lines

    data = b"\xef\xbb\xbf/image x.png\r\n\xef\xbb\xbfwhat?\n"
    assert list(pipe_lines(io.BytesIO(data), 100)) == ["/image x.png", "\ufeffwhat?"]
    # the mark counts toward a line's limit, and a long opening line is still refused whole
    lines = list(pipe_lines(io.BytesIO(b"\xef\xbb\xbf" + b"y" * 99 + b"\n/quit\n"), 100))
    assert isinstance(lines[0], LineTooLong) and lines[0].size == 103 and lines[1:] == ["/quit"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\ufeff/help\n\ufeffx\n"))  # a stdin without bytes
    assert list(input_lines(False, False)) == ["/help", "\ufeffx"]


# ---- prompts files ------------------------------------------------------------------------------

def test_a_prompts_file_ends_its_lines_as_any_editor_saves_them(tmp_path):
    """A file with classic Mac OS line ends (a lone CR) was one prompt "a cat\\rb dog\\rc fox" (one
    image, the whole text in its name and metadata); two files joined by `cat`, each with its
    byte-order mark, had the second mark inside a prompt (the model saw a zero-width space)."""
    from showo2_cli.errors import InputError
    from showo2_cli.options import MAX_PROMPT_CHARS
    from showo2_cli.saving import read_prompts

    f = tmp_path / "p.txt"
    for data, want in [
        (b"a cat\rb dog\rc fox", ["a cat", "b dog", "c fox"]),
        (b"a cat\r\n\r\nb dog\r\n", ["a cat", "b dog"]),  # a blank line between: not a prompt
        (b"\xef\xbb\xbfa cat\n\xef\xbb\xbfb dog\n\xef\xbb\xbf\n", ["a cat", "b dog"]),
        ("\ufeffa\u2028b\x0cc\x85d\n e\u0301 \t".encode(), ["a\u2028b\x0cc\x85d", "e\u0301"]),  # NFD kept as typed
        ("a\rb".encode("utf-16"), ["a", "b"]),
    ]:
        f.write_bytes(data)
        assert read_prompts(None, f) == want, data
    f.write_bytes(b"ok\r" + b"x" * (MAX_PROMPT_CHARS + 1) + b"\r")
    with pytest.raises(InputError, match="line 2: a prompt of 10001 characters is too long"):
        read_prompts(None, f)


# ---- the terminal -------------------------------------------------------------------------------

def test_bidirectional_overrides_are_shown_escaped_in_messages_and_answers(tmp_path, capsys):
    """A file name (or a model's answer) holding U+202E RIGHT-TO-LEFT OVERRIDE made a terminal that
    orders text right to left show the rest of the error line reversed; such controls are escaped
    as ESC already was, while right-to-left text and its invisible marks stay as written."""
    from showo2_cli.cli import main
    from showo2_cli.cli.common import one_answer_line, safe_text

    controls = "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
    assert safe_text(controls) == "\\u202a\\u202b\\u202c\\u202d\\u202e\\u2066\\u2067\\u2068\\u2069"
    arabic = "\u0642\u0637\u0629 \u200fcat\u200e \u05d7\u05ea\u05d5\u05dc"
    assert safe_text(arabic) == arabic and one_answer_line("a\u202eb\nc") == "a\\u202eb c"
    name = tmp_path / "nope\u202egpj.exe.jpg"
    assert main(["caption", str(name), "--model", str(DEMO)]) == 3
    err = capsys.readouterr().err
    assert "\u202e" not in err and "nope\\u202egpj.exe.jpg" in err and err.count("\n") == 1


# ---- the model's own tokens, typed --------------------------------------------------------------

def test_showo2s_added_tokens_typed_by_a_user_are_text():
    """`<image>`, `<|vid_start|>`, `<|vid_end|>` are ordinary added tokens (spec §2), which
    transformers' split_special_tokens leaves matched: "a cat <|vid_start|>" typed as a t2v prompt
    put the video block's opening token into the prompt, and "<image>" the image slot's mark.
    They are plain text now, as `<|im_end|>` and `<|image_pad|>` already were."""
    from showo2_cli.pipelines.generate import _encode_prompt
    from showo2_cli.tokenizer import add_showo2_tokens, encode_text, encode_user_text, load_tokenizer

    tk = load_tokenizer(DEMO)
    t = add_showo2_tokens(tk)
    structural = {t.bos, t.eos, t.boi, t.eoi, t.img_pad, t.vid_pad, t.pad, t.img, t.bov, t.eov}
    for text in ["a <image> cat", "a cat <|vid_start|> x<|vid_end|>", "<|im_end|><image>\n<|im_start|>", "[PAD]"]:
        for ids in (encode_user_text(tk, text), _encode_prompt(tk, text)):
            assert not structural & set(ids), (text, ids)
        assert tk.decode(encode_user_text(tk, text)) == text
    # the ids are those of the same text without the tokens' strings matched: "<image>" as "<", "image", ">"
    assert encode_user_text(tk, "a <image> cat") == encode_text(tk, "a <") + encode_text(tk, "image> cat")
    # ordinary text, and special tokens alone, keep the ids they had
    for text in ["a red circle on a white background", "e\u0301 \u202e 一只猫 \U0001f469\u200d\U0001f469", "x<|im_end|>y"]:
        assert encode_user_text(tk, text) == list(tk(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


# ---- the server's JSON --------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["user", "system", "assistant"])
@pytest.mark.parametrize("text", [5, None, ["a"], {"t": 1}])
def test_a_text_part_without_a_string_is_named(role, text):
    """`{"type": "text", "text": 5}` was "unsupported content part (use text, image_url or
    video_url)" in a user message and "content may only hold text parts" in a system one: it was
    a text part, its text was not a string."""
    from showo2_cli.serve import ApiError, ServerConfig, parse_chat

    msgs = [{"role": "user", "content": "hi"}] if role == "assistant" else []
    msgs.append({"role": role, "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": text}]})
    with pytest.raises(ApiError) as e:
        parse_chat({"messages": msgs}, ServerConfig())
    i = len(msgs) - 1
    assert (e.value.status, e.value.code, e.value.param) == (400, "invalid_type", f"messages[{i}].content[1].text")
    assert str(e.value).startswith(f"messages[{i}].content[1].text must be a string, got ")
    plan = parse_chat({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                 {"type": "text", "text": "b"}]}]}, ServerConfig())
    assert plan.turns[0].question == "a\nb"  # text parts as before


def test_a_run_plans_at_most_a_million_outputs(tmp_path, monkeypatch):
    """A 64 MiB prompts file (the size allowed) of one-letter lines is 32 million prompts: reading
    it took 6 GB, and planning its outputs (about 1 KB and a few stat calls each, all before the
    model loads) would have taken 30 GB; `-n 1000` multiplied it. The prompts file stops reading
    past the limit, and a run of more outputs is refused before any plan is made."""
    from showo2_cli import saving
    from showo2_cli.errors import InputError, UsageError
    from showo2_cli.saving import plan_outputs, read_prompts

    monkeypatch.setattr(saving, "MAX_OUTPUTS", 5, raising=False)  # the rule, on a small scale
    f = tmp_path / "p.txt"
    f.write_text("a\n\n b\r" * 2 + "c\n")
    assert read_prompts(None, f) == ["a", "b", "a", "b", "c"]
    f.write_text("a\n\n b\r" * 3)
    with pytest.raises(InputError, match=r"holds more than 5 prompts, more than one run makes: split it"):
        read_prompts(None, f)
    monkeypatch.chdir(tmp_path)
    assert len(plan_outputs("t2i", None, ["a"], [0], 5, seed=1)) == 5
    with pytest.raises(UsageError, match=r"^6 outputs \(3 prompts x 2\) are more than one run makes \(5\)"):
        plan_outputs("t2i", "x.png", ["a", "b", "c"], [0, 1, 2], 2, seed=1)
    with pytest.raises(UsageError, match=r"^10 outputs \(1 prompts x 2\)"):  # a launch: the run's total
        plan_outputs("t2i", "x.png", ["a"], [0], 2, seed=1, total_jobs=10)
    assert list(tmp_path.iterdir()) == [f]  # nothing written
    from showo2_cli.options import MAX_OUTPUTS

    assert MAX_OUTPUTS == 1_000_000


def test_user_and_name_fields_must_be_strings():
    """A message's `name` of another type (5) was taken without a word, and so was the images
    endpoint's `user` (["x"]), which the chat endpoint already refused."""
    from showo2_cli.serve import ApiError, ServerConfig, parse_chat
    from showo2_cli.serve.requests import parse_images
    from showo2_cli.specs import get_spec

    cases = [
        (lambda: parse_chat({"messages": [{"role": "user", "content": "hi", "name": 5}]}, ServerConfig()),
         "messages[0].name"),
        (lambda: parse_chat({"messages": [{"role": "user", "content": "hi"}], "user": ["x"]}, ServerConfig()), "user"),
        (lambda: parse_images({"prompt": "a cat", "user": ["x"]}, ServerConfig(), get_spec("tiny")), "user"),
    ]
    for call, param in cases:
        with pytest.raises(ApiError) as e:
            call()
        assert (e.value.status, e.value.code, e.value.param, str(e.value)) == (
            400, "invalid_type", param, f"'{param}' must be a string")
    plan = parse_chat({"messages": [{"role": "user", "content": "hi", "name": "ann"}], "user": "u1"}, ServerConfig())
    assert plan.turns[0].question == "hi"
    assert parse_images({"prompt": "a cat", "user": "u1"}, ServerConfig(), get_spec("tiny")).prompt == "a cat"
