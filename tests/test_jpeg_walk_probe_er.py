"""Probe ER: the JPEG marker walk behind a reduced read (media.image._jpeg_coding) over files that
lie; each case fails on the code before the probe."""

from __future__ import annotations

import pytest
from PIL import Image
from tests.test_chunks_and_reduced_reads_probe_el import _flat_jpeg

from showo2_cli.errors import InputError
from showo2_cli.loading import bundled_demo_path, load
from showo2_cli.media import image as M
from showo2_cli.media import jpeg_markers


@pytest.fixture(scope="module")
def demo():
    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def _with_segments_before_sof(data: bytes, segments: int, fill: int = 0) -> bytes:
    """``data`` with ``segments`` empty comment segments (COM, 4 bytes each) and ``fill`` fill bytes
    (0xFF) right after its SOI: legal JPEG, which libjpeg and Pillow skip."""
    return data[:2] + b"\xff\xfe\x00\x02" * segments + b"\xff" * fill + data[2:]


@pytest.mark.parametrize("segments, fill", [(6000, 0), (0, 6000)])
def test_a_jpeg_walk_past_its_bound_is_refused_not_reduced(tmp_path, segments, fill):
    """The walk read a segment or a fill byte at a time with no bound: a 64 MiB file of 4-byte
    segments (or of fill bytes) before its first scan cost 10.6 s (8.6 s) in it alone, on top of
    Pillow's own walk. It now gives up after JPEG_MAX_MARKER_STEPS (the file is then not read
    reduced: refused as too large, as a progressive one), and a photo's few hundred segments
    still read reduced."""
    photo = _flat_jpeg(2400, 1800, separate_scans=False)
    ordinary = tmp_path / "ordinary.jpg"
    ordinary.write_bytes(_with_segments_before_sof(photo, 300, 3))
    assert M.read_image(ordinary, max_pixels=1_000_000, min_side=432).size == (600, 450)
    lying = tmp_path / "lying.jpg"
    lying.write_bytes(_with_segments_before_sof(photo, segments, fill))
    with Image.open(lying) as im:
        assert im.size == (2400, 1800)  # Pillow reads the header
        here = im.fp.tell()
        assert M._jpeg_coding(im) == (None, None)  # the SOF is past the bound
        assert im.fp.tell() == here
    # probe FD: past the bound the file is refused before Pillow opens it (its walk has no bound)
    for max_pixels in (1_000_000, 5_000_000):
        with pytest.raises(InputError, match=r"a JPEG with more than 4096 marker segments and fill bytes"):
            M.read_image(lying, max_pixels=max_pixels, min_side=432)


def test_the_walk_reads_a_bounded_number_of_steps(tmp_path, monkeypatch):
    """The bound counts fill bytes and segments: with it at 100, a file with 99 segments before its
    SOF is still sequential, one with 100 is not (no timing: the count decides)."""
    monkeypatch.setattr(jpeg_markers, "JPEG_MAX_MARKER_STEPS", 100)
    photo = _flat_jpeg(240, 180, separate_scans=False)
    for segments, want in [(96, (0xC0, 3)), (99, (None, None)), (2000, (None, None))]:
        path = tmp_path / f"{segments}.jpg"
        path.write_bytes(_with_segments_before_sof(photo, segments))
        with Image.open(path) as im:
            assert M._jpeg_coding(im) == want, segments


def _carried_from(conv, current, start: int, first: int) -> list:
    """Conversation._fit's rule: the media carried when the turns before ``first`` have left."""
    if first == start:
        return conv._carried
    if current.visuals or any(t.media for t in conv.turns[first:]):
        return []
    return next((list(t.media[-1:]) for t in reversed(conv.turns[start:first]) if t.media), conv._carried[-1:])


def test_dropping_turns_never_lengthens_the_prompt_with_carried_media(demo):
    """Conversation._fit bisects on "dropping turns never lengthens the prompt". The one way it could
    fail is the image a dropped turn carries into the first kept turn (a video or image longer than
    the turn it lands on): it is one of the dropped turn's own media, so it never is. Checked over
    random conversations of short turns with and without media (images and videos of 5 to 400
    positions, some carried already): the prompt's length never grows with the first turn kept,
    and _fit keeps the same turns as dropping one at a time would."""
    import random

    import torch

    from showo2_cli import chat as C
    from showo2_cli.dialogue import VisualInput

    model = demo
    rng = random.Random(0)
    carries = 0  # the cases where a dropped turn's image is carried

    def visual(n: int) -> VisualInput:
        kind = rng.choice(["image", "video"])
        return VisualInput(kind, torch.zeros(n, 8), None, 1 if kind == "image" else 5, "<x>")

    for case in range(40):
        conv = C.Conversation(model, max_context=100_000)
        turns = rng.randint(1, 12)
        for _ in range(turns):
            media = [visual(rng.randint(5, 400)) for _ in range(rng.choice([0, 0, 1, 2]))]
            conv.add_turn("q" * rng.randint(1, 3), "a" * rng.randint(0, 3), media)
        conv._first = start = rng.randint(0, turns - 1)
        conv._carried = [visual(rng.randint(5, 400))] if start and rng.random() < 0.5 else []
        current = C.TurnTokens(conv._question_ids("?"), [visual(50)] if rng.random() < 0.3 else [])

        lengths = [C.prompt_length(conv._context(current, f, _carried_from(conv, current, start, f)), conv._pieces, conv.template)
                   for f in range(start, turns + 1)]
        assert lengths == sorted(lengths, reverse=True), (case, lengths)
        carries += any(_carried_from(conv, current, start, f) and f > start for f in range(start, turns + 1))
        for budget in sorted(set(lengths))[:-1]:
            conv.max_context = budget + 1
            expected = start + next(i for i, n in enumerate(lengths) if n + 1 <= budget + 1)
            assert conv._fit(current, 1)[0] == expected, (case, budget)
    assert carries >= 10, carries  # 23 of the 40


def test_load_encodes_a_file_named_by_many_turns_once(demo, tmp_path, monkeypatch):
    """Conversation.load encoded every medium of every turn in the context again, the same file
    once per turn naming it: 50 turns naming one photo took 16 s on the demo (10^5: hours). Each
    file is now read and encoded once; every turn holds the same tokens as before."""
    import json

    import torch

    from showo2_cli import chat as C
    from showo2_cli import chat_transcript
    from showo2_cli.dialogue import encode_media
    from test_chat_serve import scene, write_scene

    model = demo
    write_scene(tmp_path / "a.png", scene(3))
    write_scene(tmp_path / "b.png", scene(5))
    conv = C.Conversation(model)
    for i in range(30):
        conv.add_turn(f"q {i}", f"a {i}", [encode_media(model, str(tmp_path / ("a.png" if i % 3 else "b.png")),
                                                        conv.options, name=str(tmp_path / ("a.png" if i % 3 else "b.png")))])
    conv.save(tmp_path / "chat.json")
    assert len(json.loads((tmp_path / "chat.json").read_text())["turns"]) == 30
    calls = []
    real = chat_transcript.encode_media  # (load looks it up there)
    monkeypatch.setattr(chat_transcript, "encode_media", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    again = C.Conversation(model)
    assert again.load(tmp_path / "chat.json") == 30
    assert sorted(calls) == sorted({str(tmp_path / "a.png"), str(tmp_path / "b.png")})  # it was 30 encodes
    for old, new in zip(conv.turns, again.turns, strict=True):
        assert [m.source for m in old.media] == [m.source for m in new.media]
        assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(old.media, new.media, strict=True))
