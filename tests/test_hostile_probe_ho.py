"""Hostile round twenty-seven (probe HO): the images and videos users are sent, whose headers lie.
Each file is made here (Pillow, raw bytes); each test fails on the code before its fix."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from showo2_cli import media
from showo2_cli.errors import InputError
from showo2_cli.media import jpeg_markers


def _jpeg(size=(64, 64), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "JPEG", **save)
    return buf.getvalue()


def _claiming(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with its frame header (SOF0 or SOF2) saying ``width`` x ``height``."""
    at = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    assert at > 0
    return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("min_side", [None, 432])
def test_a_jpeg_whose_frame_claims_more_than_its_data_holds_is_refused(tmp_path, progressive, min_side):
    """A 64x64 JPEG whose frame header says 2000x2000 (693 bytes): libjpeg meets the end of the data
    before the last blocks, fills them with gray and warns, and Pillow says nothing: it was read as a
    2000x2000 picture (at 8000x8000, 64 MP, 0.8 s and 500 MB for 693 bytes). The data needed for that
    many blocks (2 bits a block at the least, 1 for a progressive one) is checked first."""
    path = tmp_path / "liar.jpg"
    path.write_bytes(_claiming(_jpeg(progressive=progressive), 2000, 2000))
    with pytest.raises(InputError) as e:
        media.read_image(path, min_side=min_side)
    msg = str(e.value)
    assert "truncated or corrupt JPEG (its header says 2000x2000" in msg and "\n" not in msg
    needed = -(-125 * 125 * 6 * (1 if progressive else 2) // 8)  # 4:2:0: 6 blocks a 16x16 MCU, in bytes up
    assert f"at least {needed:,} bytes" in msg
    with pytest.raises(InputError, match="its header says 2000x2000"):
        media.read_media(path)


@pytest.mark.parametrize("save", [{}, {"optimize": True}, {"progressive": True, "optimize": True},
                                  {"subsampling": "4:4:4", "quality": 100}, {"quality": 1}])
@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_the_smallest_real_jpegs_pass_the_data_check(tmp_path, save, mode):
    """A flat picture is the least data a JPEG of its size can hold (each block a DC difference of 0
    and an end of block): libjpeg's files of one colour, optimized or not, progressive or not, in every
    layout, hold more than the floor and read as before, pixel for pixel."""
    buf = io.BytesIO()
    Image.new(mode, (1536, 1024)).save(buf, "JPEG", **save)
    assert jpeg_markers.missing_scan_data(io.BytesIO(buf.getvalue())) is None
    path = tmp_path / "flat.jpg"
    path.write_bytes(buf.getvalue())
    assert media.read_image(path).size == (1536, 1024)
    # one byte less than the floor is refused: the bound is the format's, not a margin
    width, height, needed, held = jpeg_markers.missing_scan_data(
        io.BytesIO(_claiming(buf.getvalue(), 1536 * 8, 1024 * 8)))
    assert (width, height) == (1536 * 8, 1024 * 8) and held < needed


def _pdf() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 10, 10)).save(buf, "PDF")  # a page holding the picture as a JPEG
    return buf.getvalue()


@pytest.mark.parametrize("name, data, kind", [
    ("scan.pdf", _pdf(), "a PDF document"),
    ("scan.jpg", _pdf(), "a PDF document"),
    ("figure.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "a PostScript document"),
    ("figure.eps", b"\xc5\xd0\xd3\xc6" + bytes(28) + b"%!PS-Adobe-3.0 EPSF-3.0\n", "a PostScript document"),
])
def test_documents_are_refused_as_documents(tmp_path, name, data, kind):
    """A PDF (a scan, a phone's "save as PDF"): FFmpeg's raw MJPEG reader found the JPEG inside and
    `read_media` (caption's reader) gave it as a video of 1 frame, shown 4 times; `read_video` (i2v's
    and the training data's) the same. Documents are refused as what they are, by every reader."""
    path = tmp_path / name
    path.write_bytes(data)
    for read in (media.read_media, media.read_video, media.read_image, media.probe_kind):
        with pytest.raises(InputError) as e:
            read(path)
        assert f"it is {kind} (this tool reads no documents" in str(e.value), (read, str(e.value))


def test_a_pil_jpeg_whose_frame_claims_more_than_its_data_holds_is_refused():
    """The Python API given ``Image.open(io.BytesIO(data))`` of the same JPEG (as clients decode an
    upload) took its 2000x2000 of gray; a JPEG whose file is still open is judged as a path is, and
    an honest one (lazy or loaded) reads as its file does."""
    with pytest.raises(InputError, match=r"<PIL image>: truncated or corrupt JPEG \(its header says 2000x2000"):
        media.image_input(Image.open(io.BytesIO(_claiming(_jpeg(), 2000, 2000))))
    honest = _jpeg((96, 64), quality=80)
    lazy, loaded = Image.open(io.BytesIO(honest)), Image.open(io.BytesIO(honest))
    loaded.load()
    want = media.array_image(np.asarray(Image.open(io.BytesIO(honest)).convert("RGB")))
    for im in (lazy, loaded):
        assert media.image_input(im).tobytes() == want.tobytes()
