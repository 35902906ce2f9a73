"""Hostile inputs, round fifteen (probe CD): the leftovers of the earlier rounds, judged. UTF-16
saved without its byte-order mark split a JSONL file at the byte 0A; a GIF's 1-centisecond delays
were read at 100 fps where browsers play 10; TRL's vision records (``content`` as a list of parts)
were passed over. Each test fails on the code before its fix."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_prompts_file_in_utf16_without_a_byte_order_mark_is_read_whole(tmp_path, encoding):
    """UTF-16 saved without its byte-order mark (.NET's ``Encoding.Unicode`` streams, Python's
    ``"utf-16-le"``): a prompts file "holds a NUL character"; a ``.jsonl`` was split at the byte 0A
    and a ``.json`` array was "not UTF-8 text" (round thirteen's records test now covers those
    too). A NUL in one of the first two bytes, not both, is UTF-16 (RFC 4627's rule)."""
    from showo2_cli.saving import read_prompts

    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes("a red circle\r\nun café bleu\r\n".encode(encoding))
    assert read_prompts(prompts_file=prompts) == ["a red circle", "un café bleu"]


def test_a_gifs_delays_of_one_centisecond_play_at_10_fps_as_in_a_browser(tmp_path):
    """A GIF's delays of 0 or 1 centisecond play at 10 fps in every browser (Chrome, Firefox and
    Safari show a delay of 10 ms or less as 100 ms; an APNG's or WebP's were read so already), but
    FFmpeg reads 1 cs as it is: a clip whose first ten frames are held 1 cs and the next ten 10 cs
    (a browser plays all twenty at 10 fps) was sampled as if its first half flashed by in 0.1 s
    (five frames picked: 0, 11, 14, 16, 19); now 0, 4, 9, 14, 19 at 10 fps, as the same
    animation as an APNG is read."""
    from PIL import Image

    from conftest import frame_number, numbered_frame
    from showo2_cli.media import read_video

    frames = [Image.fromarray(numbered_frame(i)) for i in range(20)]
    for ext in ("gif", "png"):
        frames[0].save(tmp_path / f"clip.{ext}", save_all=True, append_images=frames[1:], loop=0,
                       duration=[10] * 10 + [100] * 10)
        media = read_video(tmp_path / f"clip.{ext}", num_frames=5)
        assert [frame_number(f) for f in media.frames] == [0, 4, 9, 14, 19], ext
        assert media.fps == pytest.approx(10.0), ext
    frames[0].save(tmp_path / "fast.gif", save_all=True, append_images=frames[1:], loop=0, duration=10)
    assert read_video(tmp_path / "fast.gif").fps == pytest.approx(10.0)
    frames[0].save(tmp_path / "slow.gif", save_all=True, append_images=frames[1:], loop=0,
                   duration=[130] + [120] * 19)  # no delay replaced: the rate it plays at (probe FG),
    assert read_video(tmp_path / "slow.gif").fps == pytest.approx(20 / 2.41)  # not FFmpeg's guess (100 / 12)


def test_trl_vision_records_with_content_as_a_list_of_parts_train_with_their_pictures(tmp_path):
    """TRL's vision data sets (and transformers' chat templates) give a message's ``content`` as a
    list of parts: ``[{"type": "image"}, {"type": "text", "text": ...}]``. Every such record was "a
    malformed conversation turn", passed over (a run on such data trained on nothing). They read as
    the server reads OpenAI's parts (text parts joined by newlines, a picture part as LLaVA's
    ``<image>``); a part neither text nor a picture is still refused, naming it."""
    from PIL import Image

    from showo2_cli.errors import InputError
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "red.png")
    user = [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]
    records = [
        {"messages": [{"role": "user", "content": user},
                      {"role": "assistant", "content": [{"type": "text", "text": "Red."}]}], "images": ["red.png"]},
        {"messages": [{"role": "user", "content": [{"type": "audio"}]},
                      {"role": "assistant", "content": "Red."}], "images": ["red.png"]},
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "llava", "role": "mmu", "path": str(tmp_path / "chat.jsonl"),
                                                    "resolution": 32}], batch={"mmu": 1}), source="c.toml")
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    sample = source.get(0)
    assert sample.turns == [("<image>\nWhat colour is it?", "Red.")] and sample.has_visual
    assert sample.pixels is not None and sample.pixels[0, 16, 16].tolist() == [255, 0, 0]
    with pytest.raises(InputError, match=r"record 1 has a malformed conversation turn \(content part 0 is audio, "
                                         r"not text or a picture\)"):
        source.get(1)


@pytest.mark.parametrize("args", [
    ["t2i", *["word"] * 20000],  # a paragraph pasted unquoted
    ["t2i", "a red circle", "w" * 100000],
    ["t2i", "a red circle", "--sampler", "9" * 100000],
    ["t2i", "a red circle", "--x" + "9" * 100000],
    ["x" + "9" * 100000],
])
def test_clicks_messages_quote_a_pasted_paragraph_or_a_huge_word_cut(args, capsys):
    """click quotes what was typed whole: "Got unexpected extra argument(s) (...)" of a pasted
    paragraph, "Invalid value for '--sampler'", "No such option" and "No such command" of a 10^5-
    character word were 100 KB "lines" (the hints after them already cut at 120 characters). Each
    word is cut at 200 characters (a long path stays whole) and the message at 500, the hints and
    ``--help`` pointer kept."""
    from showo2_cli.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 800 and err.endswith("--help)"), err[:300]


@pytest.mark.parametrize("scaling, needle", [
    ({"rope_type": "linear", "factor": 0.0}, "factor field must be a float or int >= 1, got 0.0"),
    ({"rope_type": "yarn", "factor": -1.0}, "factor field must be a float or int >= 1, got -1.0"),
    ({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}, "short_factor field must have length 8"),
    ({"rope_type": "linear", "factor": float("nan")}, "its numbers must be finite"),
    ({"rope_type": "dynamic", "factor": 2.0}, "is not supported: the official code recomputes"),
])
def test_a_rope_scaling_transformers_refuses_is_a_model_error_not_nan_positions(tiny_model_dir, tmp_path, scaling,
                                                                                 needle):
    """A model folder whose LLM RoPE scaling has a linear factor of 0 (or NaN) loaded, and every
    position's rotation was NaN: each answer garbage, exit 0. The spec check handed the scaling to
    transformers' Qwen2Config, which raised on bad numbers up to transformers 4; transformers 5 logs
    what it refuses and builds the RoPE anyway. Its refusals are the model error now; NaN (which
    passes its "< 1" tests) too; a factor it accepts still loads."""
    import dataclasses
    import shutil

    from showo2_cli.errors import ModelError, UsageError
    from showo2_cli.loading import load
    from showo2_cli.specs import get_spec

    with pytest.raises(UsageError, match=r"invalid model spec 'tiny': rope_scaling .*" + needle.replace("(", r"\(")):
        dataclasses.replace(get_spec("tiny"), rope_scaling=scaling).validate()
    dataclasses.replace(get_spec("tiny"), rope_scaling={"rope_type": "linear", "factor": 2.0}).validate()
    if scaling["rope_type"] != "linear":
        return
    folder = tmp_path / "m"  # a model folder saying so: a model error (exit 4) before anything is built
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["showo2"]["spec"]["rope_scaling"] = scaling
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=needle):
        load(folder, need=())


@pytest.mark.parametrize("head", [b"\xff\x0a\xfa\x1f", b"\x00\x00\x00\x0cJXL \r\n\x87\n\x00\x00\x00\x14ftypjxl "])
def test_a_jpeg_xl_photo_is_said_to_be_one(tmp_path, head, capsys):
    """A JPEG XL image (a bare codestream or its ISO container: what `file` names so; GIMP, darktable
    and Apple's ProRAW previews write them) was "not an image or video this tool can read (unknown
    format, truncated or corrupt)" of a sound file; neither Pillow nor this FFmpeg decodes one. It is
    said to be one, with what to do, as a HEIC photo is; a folder lists ``.jxl`` to refuse it so."""
    from showo2_cli.cli import main
    from showo2_cli.media import IMAGE_EXTS

    photo = tmp_path / "photo.jxl"
    photo.write_bytes(head + bytes(64))
    for args in (["caption", str(photo)], ["i2v", str(photo), "a cat", "-o", str(tmp_path / "v.mp4")]):
        assert main([*args, "--quiet"]) == 3
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "a JPEG XL image, which this tool does not decode: convert it" in err
    assert ".jxl" in IMAGE_EXTS and not (tmp_path / "v.mp4").exists()


@pytest.mark.parametrize("tags, kind", [({254: 1, 50706: b"\x01\x04\x00\x00"}, "a camera raw (DNG) photo"),
                                        ({254: 1}, "a reduced-resolution copy of another image")])
def test_a_camera_raw_photo_is_refused_not_read_as_its_small_preview(tmp_path, tags, kind, capsys):
    """A DNG (phones' RAW and ProRAW photos) or another raw built as a TIFF opens with a small preview
    (NewSubFileType 1), the first page Pillow reads: `caption IMG_0001.DNG` described a 64x43
    thumbnail, exit 0 (i2v and encode used it too). Such a file is refused with what to do; a TIFF
    that is no preview still reads."""
    from PIL import Image, TiffImagePlugin

    from showo2_cli.cli import main
    from showo2_cli.media import IMAGE_EXTS, read_image

    info = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value in tags.items():
        info[tag] = value
        if isinstance(value, bytes):
            info.tagtype[tag] = 1
    raw = tmp_path / "IMG_0001.DNG"
    Image.new("RGB", (64, 43), (200, 30, 30)).save(raw, format="TIFF", tiffinfo=info)
    assert main(["caption", str(raw), "--quiet"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{kind}" in err and "reads only its 64x43 preview" in err
    Image.new("RGB", (64, 43), (200, 30, 30)).save(tmp_path / "plain.tif", format="TIFF")
    assert read_image(tmp_path / "plain.tif").size == (64, 43) and ".dng" in IMAGE_EXTS


def test_a_records_file_edited_while_a_run_reads_it_is_said_to_have_changed(tmp_path):
    """A JSONL file is indexed once (each line's offset) and read by seeking. Edited while a run read
    it (a typo fixed, a bad line deleted), the lines moved: the records after the edit were "not
    valid JSON" of a valid file, or, a line deleted among lines of one length, each item read the
    next record, silently (item 1 trained on record 2's picture and caption). A read now checks the
    file is as it was indexed (size and modification time; in loader workers too)."""
    import pickle

    from showo2_cli.errors import InputError
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    path = tmp_path / "d.jsonl"
    records = [{"path": f"{i}.png", "prompt": f"caption {i}"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    read = Records(*build_index(DataSource(kind="pairs", role="t2i", path=str(path)), tmp_path / "index"))
    assert read[1] == records[1]
    in_worker = pickle.loads(pickle.dumps(read))
    path.write_text("".join(json.dumps(r) + "\n" for r in records[1:]))  # the first line deleted
    for records_of in (read, in_worker):
        with pytest.raises(InputError, match=r"d.jsonl' changed since it was indexed \(record 1 is no longer where"):
            records_of[1]


def test_a_model_whose_outputs_are_nan_is_a_model_error_not_a_black_picture(tiny_model_dir, tmp_path, capsys):
    """A checkpoint holding a NaN (a corrupt or badly converted file; half precision overflowing does
    the same) made `t2i` write an all-black picture and latents that `decode` itself refuses, and
    `caption` answer five NUL characters (the argmax of NaN scores is token 0), both exit 0. Sampled
    latents and the language head's scores are checked: one line, exit 4, nothing written (the
    server: 500)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from showo2_cli.cli import main

    for key, args in (("diff_proj.0.weight", ["t2i", "a cat", "-o", str(tmp_path / "x.png"), "--save-latents",
                                               "--steps", "2"]),
                      ("showo.model.layers.0.mlp.down_proj.weight", ["caption", str(tmp_path / "in.png"),
                                                                     "--max-new-tokens", "3", "--json"])):
        folder = tmp_path / key
        shutil.copytree(tiny_model_dir, folder)
        state = load_file(folder / "model.safetensors")
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        from PIL import Image

        Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "in.png")
        assert main([*args, "--model", str(folder), "--quiet"]) == 4, key
        captured = capsys.readouterr()
        assert len(captured.err.strip().splitlines()) == 1 and "NaN or infinite" in captured.err
        assert "answer" not in captured.out
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["in.png"]
    from showo2_cli.errors import non_finite
    from showo2_cli.serve.errors import api_error_of

    answer = api_error_of(non_finite("sampling gave latents"))  # the served model's fault: a 500, not a 400
    assert (answer.status, answer.code) == (500, "server_error") and "NaN or infinite" in str(answer)


def test_an_apng_whose_header_lists_more_frames_than_it_holds_is_said_corrupt(tmp_path, capsys):
    """An APNG's ``acTL`` chunk claiming 2^31 - 1 frames over the 2 the file holds was "too large to
    decode: more than 2147483646 frames on a 16x16 canvas" (exit 6, a limit to raise), where the
    file is corrupt; its frames are counted from its chunks (one ``fcTL`` each, none decoded), as an
    AVI's lying header is said ("lists ... frames and holds ...", exit 3). A true APNG still reads."""
    import struct
    import zlib

    from PIL import Image

    from showo2_cli.cli import main
    from showo2_cli.media import read_video

    frames = [Image.new("RGB", (16, 16), (60 * i, 0, 0)) for i in range(2)]
    good = tmp_path / "good.png"
    frames[0].save(good, save_all=True, append_images=frames[1:], duration=100)
    data = good.read_bytes()
    at = data.index(b"acTL")
    body = b"acTL" + struct.pack(">II", 2**31 - 1, 0)
    (tmp_path / "lying.png").write_bytes(data[:at] + body + struct.pack(">I", zlib.crc32(body)) + data[at + 16:])
    assert main(["caption", str(tmp_path / "lying.png"), "--quiet"]) == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "truncated or corrupt (the file lists 2147483647 frames and holds 2)" in err
    assert read_video(good).frames.shape[0] == 2
