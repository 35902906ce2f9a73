"""Probe FH: the bounded JPEG marker walk (media/jpeg_markers.py, probe FD) against what Pillow's own
walk skips without a length: restart markers, SOI, EOI, escaped 0xFF, stray bytes, segments whose
length is 0 or 1. Each refusal fails on the code before the probe (the walk let them through, and
Pillow then walked them one by one: 3.9 s per open for 16 MiB of RST0, 53 s for `showo2 caption`)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from showo2_cli.errors import InputError
from showo2_cli.media import image as M
from showo2_cli.media import jpeg_markers
from showo2_cli.media.headers import pil_header

STEPS = jpeg_markers.JPEG_MAX_MARKER_STEPS


def _jpeg(progressive: bool = False) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 10)).save(buf, "JPEG", quality=90, progressive=progressive)
    return buf.getvalue()


def _after_soi(data: bytes, run: bytes) -> bytes:
    return data[:2] + run + data[2:]


# what Pillow's walk skips one by one without a length (each run just past the walk's bound)
_RUNS = {
    "restart markers": b"\xff\xd0" * (STEPS + 1),
    "SOI markers": b"\xff\xd8" * (STEPS + 1),
    "EOI markers": b"\xff\xd9" * (STEPS + 1),
    "JPGn markers": b"\xff\xf3" * (STEPS + 1),
    "escaped 0xFF": b"\xff\x00" * (STEPS + 1),
    "empty comments of length 0": b"\xff\xfe\x00\x00" * (STEPS + 1),
    "empty comments of length 1": b"\xff\xfe\x00\x01" * (STEPS + 1),
    "stray bytes": b"\xff\x00" + b"\x00" * ((1 << 20) + 1),
}


@pytest.mark.parametrize("name", list(_RUNS))
def test_what_pillow_skips_without_a_length_counts_toward_the_bound(tmp_path, name):
    """The walk read a length after every marker (or stopped at the first stray byte), so a file of
    restart markers, SOIs or escaped 0xFF before its frame passed it in a few hundred 64 KB leaps
    (or at once) while Pillow walked every one; each is now a step, as Pillow takes it, and past the
    bound the file is refused unopened in the image reader and in the media probe."""
    data = _after_soi(_jpeg(), _RUNS[name])
    path = tmp_path / "lying.jpg"
    path.write_bytes(data)
    with Image.open(path) as im:  # Pillow (and libjpeg) read it: only the bound stops it
        assert im.size == (24, 16)
    with pytest.raises(InputError, match=r"a JPEG with more than 4096 marker segments and fill bytes, or 1 MiB"):
        M.read_image(path)
    with pytest.raises(InputError, match=r"cannot read media file .*lying\.jpg.*: a JPEG with more than 4096"):
        pil_header(path)
    assert path.read_bytes() == data  # (nothing written)


@pytest.mark.parametrize("run", [
    b"\xff\xd0" * 100 + b"\xff\xd9" + b"\xff\xd8",  # RSTs before the frame, an EOI first, a second SOI
    b"\xff\x00" + b"\x00" * 5000,  # a writer's stray bytes
    b"\xff\xfe\x00\x00\xff\xfe\x00\x01\x07\xff\xfe\x00\x02",  # comment lengths 0, 1 (one byte read on), 2
    b"\xff" * 300 + b"\xff\xe1\xff\xff" + b"\x00" * 65533,  # fill bytes, an APP1 of the largest length
])
def test_a_photo_with_a_few_of_them_reads_as_before_and_the_walk_finds_its_frame(tmp_path, run):
    """Under the bound they are read as Pillow reads them: the same pixels as the clean file, and the
    walk reaches the first scan with the frame and component count Pillow's header has (what the
    reduced read and the scan check rely on)."""
    for progressive in (False, True):
        clean = _jpeg(progressive)
        path = tmp_path / "odd.jpg"
        path.write_bytes(_after_soi(clean, run))
        with open(path, "rb") as fh:
            fh.seek(5)
            assert jpeg_markers.walk_jpeg_markers(fh) == (0xC2 if progressive else 0xC0, 3, True)
            assert fh.tell() == 5  # put back
        want = Image.open(io.BytesIO(clean)).convert("RGB")
        assert list(M.read_image(path).getdata()) == list(want.getdata())


def test_the_stray_bytes_bound_is_a_count_not_a_read_of_the_file(monkeypatch):
    """Stray bytes are skipped in chunks, counted exactly: with the allowance at 10, ten pass and
    eleven are refused."""
    monkeypatch.setattr(jpeg_markers, "JPEG_MAX_STRAY_BYTES", 10)
    clean = _jpeg()
    for stray, within in [(9, True), (10, True), (11, False), (100_000, False)]:
        data = _after_soi(clean, b"\xff\x00" + b"\x01" * stray)
        assert jpeg_markers.walk_jpeg_markers(io.BytesIO(data))[2] is within, stray


def test_a_pipeline_given_as_the_model_is_a_type_error_naming_from_pipe():
    """``Showo2Pipeline(pipe)`` (a second pipeline, as ``Showo2Pipeline(model)`` makes the first)
    passed the "is it a loaded model" check (a pipeline has a ``network``) and failed inside with
    AttributeError: 'Showo2Pipeline' object has no attribute 'network_given'. It is now the
    constructor's TypeError, naming ``from_pipe``; the pipeline given is untouched."""
    from types import SimpleNamespace

    import torch

    from showo2_cli import Showo2Pipeline

    # (the constructor takes any loaded-model-shaped object: the type check comes before the weights)
    model = SimpleNamespace(network=torch.nn.Linear(1, 1), vae=None, tokenizer=None, network_given=None,
                            vae_given=None)
    pipe = Showo2Pipeline(model)
    for call in (lambda: Showo2Pipeline(pipe), lambda: Showo2Pipeline(model=pipe, vae=None)):
        with pytest.raises(TypeError, match=r"needs the loaded model: .*from_pipe\(pipe\).*got model=Showo2Pipeline$"):
            call()
    assert pipe.model is model and pipe.network is model.network
