"""The JPEG marker walk: a JPEG's segments from its start to its first scan, read a bounded number
of steps. Pillow's own walk at ``Image.open`` has no bound (a 16 MiB file of empty comment
segments took 7 s per open, and a command opens a file up to four times), so every reader of a
user's image runs :func:`check_jpeg_markers` before Pillow opens it."""

from __future__ import annotations

import os
from typing import BinaryIO, NamedTuple

from showo2_cli.errors import InputError

#: the marker segments and fill bytes :func:`walk_jpeg_markers` reads before it gives up (a photo has
#: a few dozen segments, up to about 300 with a split ICC profile and extended XMP; a crafted file
#: millions, each read one by one). A JPEG with more before its first scan is refused unopened.
JPEG_MAX_MARKER_STEPS = 4096

#: the stray bytes between segments (not 0xFF, not in a segment) :func:`walk_jpeg_markers` lets pass
#: before the first scan: Pillow skips them one at a time (about 50 ns each; 16 MiB of them, 0.8 s per
#: open), a writer's slip leaves a few. More is refused unopened, as too many segments are.
JPEG_MAX_STRAY_BYTES = 1 << 20

# Markers Pillow's walk reads without a length after them (``JpegImagePlugin.MARKER``'s entries with
# no handler: JPG, RST0-7, SOI, EOI, JPG0-13): each is one step, as a fill byte is. A marker below
# SOF0 (but 0x00, an escaped 0xFF, and 0xFF, a fill byte) ends Pillow's walk ("no marker found").
_NO_LENGTH = frozenset([0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)])
_NOT_FRAMES = (0xC4, 0xC8, 0xCC)  # DHT, JPG, DAC: the rest of SOF0..SOF15 are frames


def _skip_stray(fp: BinaryIO, allowance: int) -> tuple[bytes, int]:
    """Reads past the stray bytes (not 0xFF) at ``fp``'s position, at most ``allowance`` of them:
    ``(b"\\xff" or b"" at the end of the file or past the allowance, how many were read)``."""
    read = 0
    while read <= allowance:
        chunk = fp.read(min(65536, allowance + 1 - read))
        at = chunk.find(b"\xff")
        if at >= 0:
            fp.seek(at + 1 - len(chunk), os.SEEK_CUR)
            return b"\xff", read + at
        read += len(chunk)
        if not chunk:
            return b"", read
    return b"", read


class _Walk(NamedTuple):
    frame: int | None  # the last SOF marker before the first scan
    components: int | None  # how many components the first scan holds
    within: bool  # the walk ended within its bounds
    frame_header: bytes = b""  # that SOF segment's body (precision, size, components and sampling)
    data_at: int | None = None  # where the first scan's entropy-coded data starts


def walk_jpeg_markers(fp: BinaryIO) -> tuple[int | None, int | None, bool]:
    """``(frame, components, within)`` of the JPEG in ``fp``: its frame marker (the last SOF before
    the first scan, the one Pillow's size is from), how many components its first scan holds
    (fewer than the frame's: one scan per component or group); None where not found; ``within`` is
    False when more than :data:`JPEG_MAX_MARKER_STEPS` segments, fill bytes and markers without a
    length (RSTn, SOI, EOI), or more than :data:`JPEG_MAX_STRAY_BYTES` stray bytes, come before the
    first scan (the walk stopped there). The walk is Pillow's (``JpegImageFile._open``), bounded:
    what Pillow skips, it skips. Walks from the start of ``fp``, then puts it back."""
    return _walk(fp)[:3]


def _walk(fp: BinaryIO) -> _Walk:
    """:func:`walk_jpeg_markers`, with the frame header and where the first scan's data starts."""
    here = fp.tell()
    frame, frame_header = None, b""
    try:
        fp.seek(0)
        if fp.read(3) != b"\xff\xd8\xff":  # (Pillow's test: anything else is not its JPEG)
            return _Walk(None, None, True)
        byte, steps, stray = b"\xff", 0, 0  # steps and stray bytes: bounded, so a file that lies costs no more
        while steps < JPEG_MAX_MARKER_STEPS:
            if byte != b"\xff":  # a stray byte between segments (or the end of the file)
                if not byte:
                    return _Walk(frame, None, True, frame_header)
                byte, skipped = _skip_stray(fp, JPEG_MAX_STRAY_BYTES - stray)
                stray += skipped + 1
                if stray > JPEG_MAX_STRAY_BYTES:
                    return _Walk(frame, None, False, frame_header)
                continue
            marker = fp.read(1)
            steps += 1
            if not marker:
                return _Walk(frame, None, True, frame_header)
            code = marker[0]
            if code == 0xFF:  # a fill byte before a marker
                continue
            if code == 0x00 or code in _NO_LENGTH:  # an escaped 0xFF, RSTn, SOI, EOI...: no length
                byte = fp.read(1)
                continue
            if code < 0xC0:  # not a marker: Pillow stops here ("no marker found")
                return _Walk(frame, None, True, frame_header)
            at = fp.tell()
            head = fp.read(3 if code == 0xDA else 2)
            if len(head) < 2:
                return _Walk(frame, None, True, frame_header)
            length = int.from_bytes(head[:2], "big")
            if code == 0xDA:
                return _Walk(frame, head[2] if len(head) == 3 else None, True, frame_header, at + max(length, 3))
            if code <= 0xCF and code not in _NOT_FRAMES:
                frame, frame_header = code, fp.read(max(length - 2, 0))
            elif length > 2:  # (a length of 0, 1 or 2 holds nothing: Pillow reads on after it)
                fp.seek(length - 2, os.SEEK_CUR)
            byte = fp.read(1)
        return _Walk(frame, None, False, frame_header)  # more segments or fill bytes before the first scan than a photo has
    finally:
        fp.seek(here)


def check_jpeg_markers(fp: BinaryIO, prefix: str) -> None:
    """Refuse (:class:`InputError`, ``prefix: ...``) a JPEG with more than :data:`JPEG_MAX_MARKER_STEPS`
    segments, fill bytes and markers without a length, or more than :data:`JPEG_MAX_STRAY_BYTES` stray
    bytes, before its first scan, before Pillow walks them one by one; any other file passes (Pillow
    judges it)."""
    if not walk_jpeg_markers(fp)[2]:
        raise InputError(f"{prefix}: a JPEG with more than {JPEG_MAX_MARKER_STEPS} marker segments and fill "
                         f"bytes, or {JPEG_MAX_STRAY_BYTES >> 20} MiB of stray bytes, before its image data "
                         "(a photo has at most a few hundred segments)")


#: the fewest bits a block of 8x8 samples takes in a Huffman-coded JPEG's scans: a sequential frame
#: (SOF0 baseline, SOF1 extended) codes each block's DC difference and its end of block, each a code
#: of at least one bit; a progressive one (SOF2) at least the DC difference in its first DC scan (its
#: AC scans may skip whole bands of blocks with one end-of-band run). Arithmetic-coded and lossless
#: frames have no such floor and are not judged.
MIN_BLOCK_BITS = {0xC0: 2, 0xC1: 2, 0xC2: 1}


def missing_scan_data(fp: BinaryIO) -> tuple[int, int, int, int] | None:
    """``(width, height, bytes needed, bytes held)`` of a Huffman-coded JPEG whose frame (SOF) claims
    more blocks than the rest of the file after its first scan's header can code
    (:data:`MIN_BLOCK_BITS` a block, every component's blocks at its sampling), else None. libjpeg
    meets such a file's end (or a marker) before its last blocks, warns, and fills the rest with
    gray, which Pillow decodes without an error: 693 bytes whose frame says 8000x8000 were read as
    a 64-megapixel picture (0.8 s and 500 MB). Walks from the start of ``fp``, then puts it back."""
    walk = _walk(fp)
    floor, body = MIN_BLOCK_BITS.get(walk.frame or 0), walk.frame_header
    if not walk.within or floor is None or walk.data_at is None or len(body) < 6 or len(body) < 6 + 3 * body[5]:
        return None
    height, width, count = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5]
    sampling = [(b >> 4, b & 15) for b in body[7:6 + 3 * count:3]]
    if not width or not height or not sampling or min(min(h, v) for h, v in sampling) < 1:
        return None  # (a height given later, in a DNL segment, or a corrupt frame: Pillow judges it)
    most_h, most_v = max(h for h, _ in sampling), max(v for _, v in sampling)
    blocks = sum(_ceil(_ceil(width * h, most_h), 8) * _ceil(_ceil(height * v, most_v), 8) for h, v in sampling)
    here = fp.tell()
    try:
        held = max(fp.seek(0, os.SEEK_END) - walk.data_at, 0)
    finally:
        fp.seek(here)
    needed = _ceil(blocks * floor, 8)
    return (width, height, needed, held) if held < needed else None


def _ceil(a: int, b: int) -> int:
    return -(-a // b)
