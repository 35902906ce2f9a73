"""Probe FD: leftovers of earlier probes, fixed; each case fails on the code before the probe."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from showo2_cli.errors import InputError
from showo2_cli.media import image as M
from showo2_cli.media.probe import probe_kind


def _jpeg(**save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG", **save)
    return buf.getvalue()


def test_a_jpeg_past_the_marker_bound_is_refused_before_pillow_walks_it(tmp_path, monkeypatch):
    """Pillow's own marker walk at Image.open has no bound: a 16 MiB JPEG of empty comment segments
    (or fill bytes) before its frame took 7 s per open, and `caption` opened it four times (51 s
    here). Past JPEG_MAX_MARKER_STEPS the file is now refused, one line, before Pillow opens it, by
    every reader (the probe of a media file and the image reader); the walk's own cost is bounded."""
    data = _jpeg()
    for name, body in [("segments", b"\xff\xfe\x00\x02" * 4097), ("fill", b"\xff" * 4200)]:
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data[:2] + body + data[2:])
        with Image.open(path) as im:
            assert im.size == (64, 48)  # legal JPEG: Pillow reads it
        with pytest.raises(InputError, match=r"cannot read image .*a JPEG with more than 4096 marker segments"):
            M.read_image(path)
        with pytest.raises(InputError, match=r"cannot read media file .*a JPEG with more than 4096 marker"):
            probe_kind(path)
    opened = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a) or pytest.fail("Pillow opened it"))
    with pytest.raises(InputError):
        M.read_image(tmp_path / "segments.jpg")
    assert opened == []


def test_jpegs_with_the_most_metadata_a_writer_makes_still_read(tmp_path):
    """A real JPEG is never refused: an ICC profile split over 255 APP2 segments (16.7 MB, the most
    the format allows), 60 KB of EXIF and of XMP, progressive, and an MPO of three pictures read as
    before (the bound, 4096 steps, is 10x what they hold)."""
    from showo2_cli.media import jpeg_markers
    icc = bytes(range(256)) * (65519 * 255 // 256 - 1)
    exif = Image.Exif()
    exif[0x010E] = "x" * 60000
    xmp = b"<x:xmpmeta>" + b"a" * 60000 + b"</x:xmpmeta>"
    for i, save in enumerate([dict(icc_profile=icc, exif=exif, xmp=xmp), dict(exif=exif, progressive=True)]):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(_jpeg(**save))
        with open(path, "rb") as fh:
            frame, components, within = jpeg_markers.walk_jpeg_markers(fh)
            assert within and components == 3 and frame in (0xC0, 0xC2) and fh.tell() == 0
        assert M.read_image(path).size == (64, 48)
        assert probe_kind(path) == "image"
    mpo = tmp_path / "three.mpo"
    Image.new("RGB", (64, 48)).save(mpo, "MPO", save_all=True, append_images=[Image.new("RGB", (64, 48))] * 2)
    assert M.read_image(mpo).size == (64, 48)


@pytest.mark.parametrize("attach", [False, True])
def test_load_reads_only_the_media_a_prompt_can_hold(tmp_path, monkeypatch, attach):
    """/load encoded the media of every turn a transcript says is in its context, each file once:
    a (hand-made or foreign) transcript naming 10^5 different files read and encoded them all,
    though the next question keeps only the turns that fit --max-context. Media are now read from
    the newest turn back until the turns read hold the budget (no prompt can hold an older one), and
    of the older turns only the image a drop carries: the next question's prompt, answer and notices
    are those of the conversation that was saved, the image carried (or not, when the question has one)."""
    from showo2_cli import chat as C
    from showo2_cli import chat_transcript
    from showo2_cli.dialogue import encode_media
    from showo2_cli.loading import bundled_demo_path, load
    from test_chat_serve import scene, write_scene

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    model = load("demo")
    files = [str(write_scene(tmp_path / f"{i}.png", scene(i))) for i in range(12)]
    old = C.Conversation(model, max_context=160)
    old.options.max_new_tokens = 4
    for i in range(16):  # 12 turns with an image each, then 4 without: the last image is carried
        old.add_turn(f"question {i}", f"answer {i}", [encode_media(model, files[i], old.options, name=files[i])]
                     if i < 12 else [])
    old.save(tmp_path / "chat.json")
    calls = []
    real = chat_transcript.encode_media  # (load looks it up there)
    monkeypatch.setattr(chat_transcript, "encode_media", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    new = C.Conversation(model, max_context=160)
    new.options.max_new_tokens = 4
    assert new.load(tmp_path / "chat.json") == 16
    assert calls == [files[11]], calls  # the old code read all 12
    assert new.to_json()["turns"] == old.to_json()["turns"]  # every turn in the context, as recorded
    if attach:
        for conv in (old, new):
            conv.attach(files[5], name=files[5])
    assert new.ask("what now?") == old.ask("what now?")
    assert new.turns[-1].prompt_tokens == old.turns[-1].prompt_tokens
    assert new.notices == old.notices and "left the context" in new.notices[-1]
    assert (new._carried == []) == attach and [m.source for m in new._carried] == [m.source for m in old._carried]
    assert new.ask("and?") == old.ask("and?")

    # a larger budget set afterwards brings the unread turns back into the prompt, read then, as the
    # saved chat has them (probe GE; FD's rule kept them out: tests/test_chat_probe_ge.py)
    again = C.Conversation(model, max_context=160)
    again.load(tmp_path / "chat.json")
    again.max_context = 4000
    assert again._start == 0 and again.ask("what now?")
