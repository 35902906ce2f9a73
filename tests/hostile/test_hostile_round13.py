"""Hostile inputs, round thirteen (probe BO): files as users' tools really write them. An animated
AVIF (what browsers play, and converters write) was read as its first picture where the same
animation as APNG or WebP was a video. Each test fails on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from conftest import frame_number, numbered_frame
from showo2_cli.errors import InputError


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_an_animated_avif_is_a_video_not_its_first_picture(tmp_path):
    """`caption anim.avif` described its first picture as a still, `i2v anim.avif` animated it and
    `encode` encoded it: Pillow opens an AVIF image sequence as an animation (n_frames, delays) and
    FFmpeg finds its still first picture as a stream of its own, but only GIF, PNG and WebP were
    taken as animations. It is now a video as an APNG is, sampled over its frame delays, checked
    whole before a model loads and refused where an image goes; a one-picture AVIF stays an image."""
    from showo2_cli.media import check_video, image_input, probe_kind, read_image, read_media

    p = tmp_path / "hold.avif"
    frames = [Image.fromarray(numbered_frame(i)) for i in range(12)]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=[5000] + [100] * 10 + [5000], quality=95)
    assert probe_kind(p) == "video"
    check_video(p)
    m = read_media(p, num_frames=5)
    assert m.kind == "video" and m.total_frames == 12 and m.fps == pytest.approx(12 / 11.0)
    assert [frame_number(f) for f in m.frames] == [0, 0, 0, 0, 11]  # the frames shown at 0, 1.5, 3, 4.5, 6 s
    assert [frame_number(f) for f in read_media(p, first=3).frames] == [0, 1, 2]
    with Image.open(p) as im:
        assert [frame_number(f) for f in read_media(im, num_frames=5).frames] == [0, 0, 0, 0, 11]
        with pytest.raises(ValueError, match="animated"):
            image_input(im)
    with pytest.raises(InputError, match="animated AVIF"):
        read_image(p)
    one = tmp_path / "one.avif"
    frames[5].save(one, quality=95)
    assert probe_kind(one) == "image" and frame_number(np.asarray(read_image(one))) == 5


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_i2v_refuses_an_animated_avif_in_one_line_before_loading(tmp_path, capsys):
    from showo2_cli.cli import main

    p = tmp_path / "a.avif"
    frames = [Image.fromarray(numbered_frame(i)) for i in range(3)]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    code = main(["i2v", str(p), "a cat", "-o", str(tmp_path / "o.mp4"), "--model", "/nonexistent/model"])
    err = capsys.readouterr().err
    assert code == 3 and "it is an animated AVIF (a video), not an image" in err, err
    assert len(err.strip().splitlines()) == 1 and sorted(x.name for x in tmp_path.iterdir()) == ["a.avif"]


# ---- text files as Windows tools save them: a UTF-8 byte-order mark, UTF-16 ----------------------

RECORDS = [{"path": "a.png", "prompt": "a cat"}, {"path": "b.png", "prompt": "un café"}]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be"])
def test_training_records_saved_with_a_byte_order_mark_or_as_utf16_are_read_whole(tmp_path, encoding):
    """A LLaVA ``.json`` array opening with a UTF-8 byte-order mark (Notepad, PowerShell's
    ``-Encoding UTF8``) was "not a JSON array (LLaVA format) nor JSONL", a UTF-16 one (Notepad's
    "Unicode") "not UTF-8 text"; a UTF-16 ``.jsonl`` (what Windows PowerShell's ``>`` writes) was
    split at the byte 0A: its first record was "not valid JSON" and skipped while training (its
    caption never trained on), the others read by accident, and the last NUL byte was a record of
    its own. Both are read as the same records as their UTF-8 copy. UTF-16 without its mark
    (``utf-16-le``/``-be``, round fifteen) was split so too: a NUL in one of the first two bytes,
    not both, is UTF-16 (RFC 4627's rule, :func:`json.loads`'s for JSON bytes)."""
    import json

    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    lines = tmp_path / "d.jsonl"
    lines.write_bytes("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in RECORDS).encode(encoding))
    array = tmp_path / "d.json"
    array.write_bytes(json.dumps(RECORDS, ensure_ascii=False).encode(encoding))
    for path, kind in ((lines, "pairs"), (array, "llava")):
        records = Records(*build_index(DataSource(kind=kind, role="t2i", path=str(path)), tmp_path / "index"))
        assert [records[i] for i in range(len(records))] == RECORDS, path


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_caption_file_with_a_byte_order_mark_or_in_utf16_is_its_text(tmp_path, encoding):
    """A pair's ``.txt`` caption opening with a UTF-8 byte-order mark was trained on with U+FEFF
    before its first word (str.split keeps it: it is no space); a UTF-16 one as U+FFFD, U+FFFD
    and a NUL between every letter."""
    from showo2_cli.training.captions import clean_caption, read_caption_file

    (tmp_path / "a.txt").write_bytes("un café rouge\r\n".encode(encoding))
    assert clean_caption(read_caption_file(tmp_path / "a.txt", "caption")) == "un café rouge"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_training_config_saved_by_notepad_is_read(tmp_path, encoding):
    """`showo2 train cfg.toml` of a config saved with a byte-order mark: "config 'cfg.toml' is not
    valid TOML: Invalid statement (at line 1, column 1)" (exit 2), whatever the settings."""
    from showo2_cli.training.config import read_raw

    text = 'mode = "showo2"\n[optim]\nmax_steps = 3\n'
    (tmp_path / "cfg.toml").write_bytes(text.encode(encoding))
    (tmp_path / "cfg.json").write_bytes('{"mode": "showo2", "optim": {"max_steps": 3}}'.encode(encoding))
    for name in ("cfg.toml", "cfg.json"):
        assert read_raw(tmp_path / name) == {"mode": "showo2", "optim": {"max_steps": 3}}


# ---- a file dropped on the terminal in the chat -------------------------------------------------

@pytest.mark.parametrize("typed", [
    "My\\ Photo.jpg ",  # macOS Terminal and iTerm: spaces escaped, a space after
    "'it'\\''s.jpg' ",  # GNOME's terminal: quoted as a shell quotes (a quote inside)
    "file://{root}/My%20Photo.jpg",  # a file manager's copied file
    "file://localhost{root}/caf%C3%A9%201.png",
    "'My Photo.jpg'", "My Photo.jpg", "a\\b.jpg", "it's.jpg",  # as typed (as before)
])
def test_chat_attaches_a_file_as_the_terminal_pastes_it(tmp_path, monkeypatch, typed):
    """`/image My\\ Photo.jpg` (a file dragged onto macOS Terminal), `/image 'it'\\''s.jpg'` (onto
    GNOME's) and `/image file:///.../My%20Photo.jpg` were "no such file" (or "URLs are not
    fetched"): the name was taken as typed but for surrounding quotes. The name a shell reads, or
    the URL's path, is taken when the name as typed is no file."""
    import io

    from showo2_cli.cli.chat import ChatSession

    names = {"My Photo.jpg", "it's.jpg", "a\\b.jpg", "café 1.png"}
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    attached = []

    class Conv:
        on_notice = model = None

        def attach(self, path, name=None):
            attached.append(path)
            raise KeyboardInterrupt  # what is attached is under test, not the model

    with pytest.raises(KeyboardInterrupt):
        ChatSession(Conv(), out=io.StringIO(), err=io.StringIO()).handle("/image " + typed.format(root=tmp_path))
    assert len(attached) == 1 and attached[0].is_file() and attached[0].name in names, attached


def test_chat_names_a_missing_dropped_file_as_typed(tmp_path, monkeypatch):
    import io

    from showo2_cli.cli.chat import ChatSession

    monkeypatch.chdir(tmp_path)
    err = io.StringIO()

    class Conv:
        on_notice = model = None

        def attach(self, path, name=None):
            from showo2_cli.media import check_input_file

            check_input_file(path, "media file")

    assert ChatSession(Conv(), out=io.StringIO(), err=err).handle("/image no\\ such.jpg") is True
    assert "no\\ such.jpg" in err.getvalue() and "no such file" in err.getvalue()


# ---- a pixel limit raised by the user is the limit -------------------------------------------------

def test_an_image_within_a_raised_pixel_limit_is_read_whatever_pillows_own_limit(tmp_path, monkeypatch):
    """`SHOWO2_MAX_PIXELS=250000000 showo2 caption scan.png` of a 14000x14000 scan (196 million
    pixels, within the limit the user set as the previous message said) was refused with Pillow's
    "Image size (196000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb
    DOS attack" (exit 6): Pillow refuses more than twice its own ``MAX_IMAGE_PIXELS`` whatever the
    tool's limit. Pillow's limit is made small here (the same check, on images of a few KB)."""
    from showo2_cli.errors import ResourceError
    from showo2_cli.media import probe_kind, read_image, read_media

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses over 2000 pixels
    Image.new("RGB", (60, 50), "red").save(tmp_path / "scan.png")  # 3000 pixels
    assert probe_kind(tmp_path / "scan.png", max_pixels=5000) == "image"
    assert np.asarray(read_image(tmp_path / "scan.png", max_pixels=5000)).shape == (50, 60, 3)
    monkeypatch.setenv("SHOWO2_MAX_PIXELS", "5000")
    assert read_media(tmp_path / "scan.png").frames.shape == (1, 50, 60, 3)
    Image.new("RGB", (100, 100), "red").save(tmp_path / "big.png")  # over the limit: said against it
    with pytest.raises(ResourceError, match="10,000 pixels is more than the limit of 5,000"):
        read_image(tmp_path / "big.png")
    Image.new("RGB", (200, 100), "red").save(tmp_path / "bomb.png")  # Pillow's refusal: said against it too
    with pytest.raises(ResourceError, match="20,000 pixels is more than the limit of 5,000"):
        probe_kind(tmp_path / "bomb.png")


def test_a_pairs_folder_lists_the_extensions_browsers_and_phones_write(tmp_path):
    """A pairs folder of pictures saved from a browser on Windows (Chrome and Edge name a JPEG
    ``.jfif``), AVIF images, ``.m4v`` (Apple's exports) or ``.3gp`` (phones) videos was "folder
    ... holds no images or videos" (or those files were left out, silently): the listing took
    seven image and six video extensions, though every file is read by its content. An iPhone's
    ``.HEIC`` photos were left out likewise: now listed, each is refused saying what to do."""
    import json

    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    names = ["a.jfif", "b.AVIF", "c.m4v", "d.3gp", "e.apng", "f.mpg", "g.HEIC"]
    for name in names + ["notes.md", ".hidden.jfif"]:
        (tmp_path / "data" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "data" / name).write_bytes(b"x")
    records = Records(*build_index(DataSource(kind="pairs", role="t2i", path=str(tmp_path / "data")), tmp_path / "i"))
    assert sorted(Path(records[i]["path"]).name for i in range(len(records))) == names
    assert json.dumps(records[0]).count(".txt") == 1


@pytest.mark.parametrize("chunk", ["zTXt", "iTXt"])
def test_a_png_whose_compressed_metadata_pillow_refuses_is_said_so(tmp_path, chunk, capsys):
    """A PNG holding a compressed text chunk of over 1 MB (an XMP packet, ImageMagick's raw EXIF or
    XMP profile) was "not an image or video this tool can read (unknown format, truncated or
    corrupt)" (caption, encode) or "truncated or corrupt file" (i2v): Pillow refuses its metadata
    (a guard against zlib bombs), not its pixels. One line says so, and what to do; nothing written."""
    from PIL import PngImagePlugin

    from showo2_cli.cli import main
    from showo2_cli.media import probe_kind, read_image

    info = PngImagePlugin.PngInfo()
    (info.add_text if chunk == "zTXt" else info.add_itxt)("XML:com.adobe.xmp", "x" * (1 << 20) + "y", zip=True)
    p = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), "red").save(p, pnginfo=info)
    for read in (probe_kind, read_image):
        with pytest.raises(InputError, match=r"its metadata .* is more than Pillow reads; remove it \(mogrify -strip"):
            read(p)
    for args in (["caption", str(p)], ["i2v", str(p), "a cat", "-o", str(tmp_path / "o.mp4")]):
        code = main([*args, "--model", "/nonexistent/model"])
        err = capsys.readouterr().err
        assert code == 3 and "more than Pillow reads" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["photo.png"]


def test_records_written_on_windows_or_with_a_relative_caption_file_are_read(tmp_path, monkeypatch):
    """A data set made on Windows names its files ``images\\cat.png`` (os.path.join there): on
    Linux every record was "no such file" and passed over, the run failing after 64 of them; a
    record's relative ``caption_file`` was taken from the working folder, not the records file's,
    so a run started elsewhere trained on empty captions (the unconditional row), silently."""
    import json

    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "captions").mkdir()
    Image.new("RGB", (32, 32), "red").save(data / "images" / "cat.png")
    (data / "captions" / "cat.txt").write_text("a red cat")
    records = [{"path": "images\\cat.png", "caption_file": "captions\\cat.txt"},
               {"image": "images/cat.png", "caption_file": "captions/cat.txt"}]
    (data / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.chdir(tmp_path)  # not the records' folder
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "pairs", "role": "t2i", "path": str(data / "d.jsonl"),
                                                    "resolution": 32}], batch={"t2i": 1}), source="c.toml")
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    for item in (0, 1):
        sample = source.get(item)
        assert sample.text == "a red cat" and sample.pixels.shape == (1, 32, 32, 3), item
        assert sample.pixels[0, 16, 16].tolist() == [255, 0, 0]


def test_a_training_video_is_fitted_frame_by_frame_not_held_at_its_size(tmp_path):
    """A video training sample held every sampled frame at its decoded size before fitting it: 17
    frames of a 4K phone clip took 0.42 GB in each data loader worker (a 40-frame 4K clip: 793 MB
    peak, now 416 MB, the rest FFmpeg's own buffers), for 3 MB of 256x256 frames. Frames are now
    fitted as they are decoded (read_video's ``fit``), the same pixels; here a 640x480 clip, whose
    17 decoded frames are 15.7 MB, peaks under 8 MB of Python memory."""
    import tracemalloc

    from conftest import write_h264
    from showo2_cli.media import read_video
    from showo2_cli.training.sources import _fit, _read_visual

    ramp = np.broadcast_to(np.arange(640, dtype=np.uint8)[None, :, None], (480, 640, 3))
    write_h264(tmp_path / "clip.mp4", np.stack([np.roll(ramp, 8 * i, axis=1) for i in range(18)]),
               options={"preset": "ultrafast"})
    whole = read_video(tmp_path / "clip.mp4", num_frames=17).frames
    expected = np.stack([_fit(Image.fromarray(f), 64, "crop") for f in whole])
    del whole
    tracemalloc.start()
    try:
        pixels = _read_visual(tmp_path / "clip.mp4", 64, 17, "crop", True, 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pixels.shape == (17, 64, 64, 3) and np.array_equal(pixels, expected)
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB"  # (3.8 MiB; 15.4 MiB before)
    assert _read_visual(tmp_path / "clip.mp4", 64, 17, "crop", True, 481) is None  # min_res: the decoded size


def test_a_hugging_face_imagefolder_trains_on_its_captions(tmp_path):
    """A data folder in the Hugging Face ``imagefolder`` layout (images and a ``metadata.jsonl`` of
    ``{"file_name": ..., "text": ...}``, or a ``metadata.csv``) was listed as images with ``.txt``
    captions: it has none, so every image trained as the empty caption (the unconditional row),
    silently. Its records are read now, the file names taken from the folder."""
    import json

    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    for name, rgb in colours.items():
        Image.new("RGB", (32, 32), rgb).save(data / "train" / f"{name}.png")
    (data / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f"train/{n}.png", "text": f"a {n} square"})
                                                 + "\n" for n in colours))
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "pairs", "role": "t2i", "path": str(data),
                                                    "resolution": 32}], batch={"t2i": 1}), source="c.toml")
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    assert source.size() == 2
    for item, (name, rgb) in enumerate(colours.items()):
        sample = source.get(item)
        assert sample.text == f"a {name} square" and sample.pixels[0, 16, 16].tolist() == list(rgb)
    # its metadata.csv, as Excel saves it (a byte-order mark, CRLF, a caption quoted for its comma)
    (data / "metadata.jsonl").unlink()
    (data / "metadata.csv").write_bytes('file_name,text\r\ntrain/red.png,"a red square, alone"\r\n'
                                        'train/blue.png,a blue square\r\n'.encode("utf-8-sig"))
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    assert [source.get(i).text for i in range(source.size())] == ["a red square, alone", "a blue square"]


def test_a_pairs_folder_takes_a_caption_file_as_kohya_names_it(tmp_path):
    """kohya-ss's captioners (make_captions.py) write ``image.caption``: a folder of such pairs
    trained every image as the empty caption, silently. A ``.caption`` is read where no ``.txt`` is."""
    from showo2_cli.training.captions import read_caption_file
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    for name in ("a", "b"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    (tmp_path / "a.caption").write_text("a black square")
    (tmp_path / "b.caption").write_text("not this one")
    (tmp_path / "b.txt").write_text("the txt first")
    records = Records(*build_index(DataSource(kind="pairs", role="t2i", path=str(tmp_path)), tmp_path / ".index"))
    captions = [read_caption_file(Path(records[i]["caption_file"]), "caption") for i in range(len(records))]
    assert captions == ["a black square", "the txt first"]


POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 3145728\n")


def test_git_lfs_pointers_are_said_to_be_pointers(tiny_model_dir, tmp_path, capsys):
    """`git clone` of a Hugging Face model or data set where git-lfs is not installed leaves a
    130-byte pointer in place of each large file: a model folder so cloned was "not a safetensors
    or PyTorch checkpoint (truncated or corrupt: ... header too large)" (exit 4), a picture "not a
    PNG/JPEG/WebP/BMP/TIFF/GIF image (unknown format, truncated or corrupt)", or "not an image or
    video this tool can read" (exit 3). Each is said to be a Git LFS pointer, with what to do."""
    import shutil

    from showo2_cli.cli import main
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load
    from showo2_cli.media import probe_kind, read_image

    (tmp_path / "cat.png").write_bytes(POINTER)
    for read in (probe_kind, read_image):
        with pytest.raises(InputError, match=r"cat.png': a Git LFS pointer, not the file \(.*git lfs pull"):
            read(tmp_path / "cat.png")
    cloned = tmp_path / "cloned"
    shutil.copytree(tiny_model_dir, cloned)
    weights = next(p for p in sorted(cloned.glob("*.safetensors")))
    weights.write_bytes(POINTER)
    with pytest.raises(ModelError, match=r"is a Git LFS pointer, not the weights \(.*git lfs pull"):
        load(cloned, need=())
    assert main(["caption", str(tmp_path / "cat.png"), "--model", str(cloned)]) == 3
    err = capsys.readouterr().err
    assert "a Git LFS pointer" in err and len(err.strip().splitlines()) == 1, err


def test_a_saved_web_page_or_an_svg_is_said_to_be_one(tiny_model_dir, tmp_path, capsys):
    """`wget https://huggingface.co/.../blob/main/model.safetensors` (or a GitHub "blob" link, or a
    sign-in page) saves the HTML page: a picture so saved was "not an image or video this tool can
    read (unknown format, truncated or corrupt)", weights "not a safetensors or PyTorch checkpoint
    (... header too large)"; an SVG drawing was "not a PNG/JPEG/... image". Each is said as what it
    is, with what to do, before anything loads."""
    import shutil

    from showo2_cli.cli import main
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load
    from showo2_cli.media import probe_kind, read_image, read_video

    page = b"\n<!DOCTYPE html>\n<html class=\"\" lang=\"en\">\n<head><title>cat.png</title></head></html>\n"
    (tmp_path / "cat.png").write_bytes(page)
    (tmp_path / "clip.mp4").write_bytes(page)
    (tmp_path / "logo.png").write_bytes(b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>\n')
    for read, name, said in ((probe_kind, "cat.png", "an HTML page"), (read_image, "cat.png", "an HTML page"),
                             (read_video, "clip.mp4", "an HTML page"), (read_image, "logo.png", "an SVG drawing")):
        with pytest.raises(InputError, match=f"{name}': it is {said} "):
            read(tmp_path / name)
    cloned = tmp_path / "saved"
    shutil.copytree(tiny_model_dir, cloned)
    next(p for p in sorted(cloned.glob("*.safetensors"))).write_bytes(page)
    with pytest.raises(ModelError, match="is an HTML page, not the weights"):
        load(cloned, need=())
    assert main(["i2v", str(tmp_path / "logo.png"), "a cat", "-o", str(tmp_path / "o.mp4")]) == 3
    err = capsys.readouterr().err
    assert "it is an SVG drawing (this tool reads no vector graphics" in err and len(err.strip().splitlines()) == 1


def test_conversations_as_llama_factory_and_trl_write_them_train_with_their_pictures(tmp_path):
    """Conversation data in the OpenAI-style ShareGPT layout LLaMA-Factory and TRL read
    (``messages`` of ``{role, content}``, pictures in an ``images`` list) was "record 0 has no
    conversations", every record passed over; LLaVA's ``conversations`` with an ``images`` list
    trained as text-only conversations, their pictures never seen, silently."""
    import json

    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    for name, rgb in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        Image.new("RGB", (32, 32), rgb).save(tmp_path / f"{name}.png")
    records = [
        {"messages": [{"role": "user", "content": "<image>What colour is it?"},
                      {"role": "assistant", "content": "Red."}], "images": ["red.png"]},
        {"conversations": [{"from": "human", "value": "<image>And this?"}, {"from": "gpt", "value": "Blue."}],
         "images": ["blue.png"]},
    ]
    (tmp_path / "chat.json").write_text(json.dumps(records))
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "llava", "role": "mmu", "path": str(tmp_path / "chat.json"),
                                                    "resolution": 32}], batch={"mmu": 1}), source="c.toml")
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    expected = [([("<image>What colour is it?", "Red.")], (255, 0, 0)), ([("<image>And this?", "Blue.")], (0, 0, 255))]
    for item, (turns, rgb) in enumerate(expected):
        sample = source.get(item)
        assert sample.turns == turns and sample.has_visual, item
        assert sample.pixels is not None and sample.pixels[0, 16, 16].tolist() == list(rgb)
