"""The JPEG marker walk: a JPEG's segments from its start to its first scan, read a bounded number
of steps. Pillow's own walk at ``Image.open`` has no bound (a 16 MiB file of empty comment
segments took 7 s per open, and a command opens a file up to four times), so every reader of a
user's image runs :func:`check_jpeg_markers` before Pillow opens it."""

from __future__ import annotations

import os
from typing import BinaryIO

from showo2_cli.errors import InputError

#: the marker segments and fill bytes :func:`walk_jpeg_markers` reads before it gives up (a photo has
#: a few dozen segments, up to about 300 with a split ICC profile and extended XMP; a crafted file
#: millions, each read one by one). A JPEG with more before its first scan is refused unopened.
JPEG_MAX_MARKER_STEPS = 4096


def walk_jpeg_markers(fp: BinaryIO) -> tuple[int | None, int | None, bool]:
    """``(frame, components, within)`` of the JPEG in ``fp``: its frame marker (the last SOF before
    the first scan, the one Pillow's size is from), how many components its first scan holds
    (fewer than the frame's: one scan per component or group); None where not found; ``within`` is
    False when more than :data:`JPEG_MAX_MARKER_STEPS` segments and fill bytes come before the first
    scan (the walk stopped there). Walks from the start of ``fp``, then puts it back."""
    here = fp.tell()
    frame = None
    try:
        fp.seek(0)
        if fp.read(2) != b"\xff\xd8":
            return None, None, True
        steps = 0  # segments and fill bytes read: bounded, so a file that lies costs no more than this
        while steps < JPEG_MAX_MARKER_STEPS:
            marker = fp.read(2)
            while marker == b"\xff\xff" and steps < JPEG_MAX_MARKER_STEPS:  # fill bytes before a marker
                marker = marker[1:] + fp.read(1)
                steps += 1
            steps += 1
            head = fp.read(3 if marker[1:] == b"\xda" else 2)
            if len(marker) < 2 or marker[0] != 0xFF or len(head) < 2:
                return frame, None, True
            if marker[1] == 0xDA:
                return frame, (head[2] if len(head) == 3 else None), True
            if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):  # (DHT, JPG, DAC)
                frame = marker[1]
            fp.seek(int.from_bytes(head[:2], "big") - 2, os.SEEK_CUR)
        return frame, None, False  # more segments or fill bytes before the first scan than a photo has
    finally:
        fp.seek(here)


def check_jpeg_markers(fp: BinaryIO, prefix: str) -> None:
    """Refuse (:class:`InputError`, ``prefix: ...``) a JPEG with more than :data:`JPEG_MAX_MARKER_STEPS`
    segments and fill bytes before its first scan, before Pillow walks them one by one; any other
    file passes (Pillow judges it)."""
    if not walk_jpeg_markers(fp)[2]:
        raise InputError(f"{prefix}: a JPEG with more than {JPEG_MAX_MARKER_STEPS} marker segments and fill "
                         "bytes before its image data (a photo has at most a few hundred)")
