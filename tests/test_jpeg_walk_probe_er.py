"""Probe ER: the JPEG marker walk behind a reduced read (media.image._jpeg_coding) over files that
lie; each case fails on the code before the probe."""

from __future__ import annotations

import pytest
from PIL import Image
from tests.test_chunks_and_reduced_reads_probe_el import _flat_jpeg

from showo2_cli.errors import ResourceError
from showo2_cli.media import image as M


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
    with pytest.raises(ResourceError, match=r"2400x1800 = 4,320,000 pixels is more than the limit of 1,000,000"):
        M.read_image(lying, max_pixels=1_000_000, min_side=432)
    assert M.read_image(lying, max_pixels=5_000_000, min_side=432).size == (2400, 1800)  # within it, in full


def test_the_walk_reads_a_bounded_number_of_steps(tmp_path, monkeypatch):
    """The bound counts fill bytes and segments: with it at 100, a file with 99 segments before its
    SOF is still sequential, one with 100 is not (no timing: the count decides)."""
    monkeypatch.setattr(M, "JPEG_MAX_MARKER_STEPS", 100)
    photo = _flat_jpeg(240, 180, separate_scans=False)
    for segments, want in [(96, (0xC0, 3)), (99, (None, None)), (2000, (None, None))]:
        path = tmp_path / f"{segments}.jpg"
        path.write_bytes(_with_segments_before_sof(photo, segments))
        with Image.open(path) as im:
            assert M._jpeg_coding(im) == want, segments
