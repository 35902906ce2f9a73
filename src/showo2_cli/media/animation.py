"""Animations in still-image formats read with Pillow (APNG, animated WebP and AVIF, and a GIF given as
a PIL image): their frames, and each frame's time, so they are sampled as a video is; and their
frames counted from the file's structure without decoding any (a GIF's blocks, an APNG's chunks),
which the probe's checks judge a file by."""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

from PIL import Image

from .frame_index import FrameIndex

#: the formats whose several frames are an animation (TIFF pages and an MPO's stereo views are not);
#: an AVIF image sequence (what browsers play, and converters such as ezgif or ffmpeg write) included
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP", "AVIF")
#: a frame delay this short or shorter (milliseconds) is played as :data:`PLAYED_DELAY_MS`, as
#: browsers (Chrome, Firefox, Safari) play a GIF's, APNG's or WebP's: many files hold 0 for "as fast
#: as possible", and GIF makers 1 centisecond (FFmpeg reads 0 so, 1 as 100 fps)
MIN_DELAY_MS = 10
PLAYED_DELAY_MS = 100


class PilFrames:
    """The frames of an animated PIL image, each read when it is indexed (seek + copy)."""

    def __init__(self, image: Image.Image):
        self.image = image
        self.duration_ms = 0  #: the animation's length, once :meth:`index` read it
        self.skip = default_image(image)  #: an APNG's default image, no frame of its animation

    def __len__(self) -> int:
        return int(self.image.n_frames) - self.skip

    def __getitem__(self, i: int) -> Image.Image:
        self.image.seek(i + self.skip)
        frame = self.image.copy()
        return frame.convert("RGBA") if frame.mode == "P" else frame  # the palette of this frame

    def delay_ms(self) -> int:
        """The current frame's delay in milliseconds, as a browser plays it."""
        try:
            value = float(self.image.info.get("duration") or 0)
        except (TypeError, ValueError):
            value = 0.0
        return int(round(value)) if value > MIN_DELAY_MS and value < 2**40 else PLAYED_DELAY_MS

    def index(self) -> FrameIndex:
        """Each frame's start time from the frame delays, read by stepping through the frames
        (Pillow decodes an animation frame after frame to seek in it), in the format's own ticks: a
        GIF's centiseconds (as FFmpeg times it by path, so a 15 fps GIF's 70, 70, 60 ms delays are
        evenly spaced in memory too, within one tick), else milliseconds."""
        tick = 10 if self.image.format == "GIF" else 1  # (milliseconds; Pillow's GIF delays are whole centiseconds)
        index, start = FrameIndex(Fraction(tick, 1000)), 0
        for i in range(len(self)):
            self.image.seek(i + self.skip)
            self.image.load()  # an animated WebP tells a frame's delay once it is decoded
            index.add(start // tick, keyframe=i == 0)
            start += self.delay_ms()
        self.duration_ms = start
        return index.finish()

    def fps(self) -> float | None:
        """Frames per second over the animation's length (each frame's delay counted, the last's
        too, as FFmpeg rates a GIF), once :meth:`index` read it; None before."""
        return len(self) * 1000.0 / self.duration_ms if self.duration_ms > 0 else None


def default_image(image: Image.Image) -> int:
    """1 for an APNG whose default image is no frame of its animation (its IDAT before the first
    fcTL, as the APNG spec allows: browsers play the frames after it), which Pillow counts as frame
    0 of ``n_frames``; else 0."""
    return int(image.format == "PNG" and bool(getattr(image, "default_image", False))
               and int(getattr(image, "n_frames", 1)) > 1)


# ---- frames counted from a file's structure, none decoded ---------------------------------------

def gif_frame_count(p: Path, stop_after: int | None = None) -> int:
    """Frames of a GIF counted from its block structure, without decoding any (stops counting
    past ``stop_after``); a damaged structure ends the count there."""
    with open(p, "rb") as f:
        head = f.read(13)
        if len(head) < 13 or head[:3] != b"GIF":
            return 0
        if head[10] & 0x80:
            f.seek(3 << ((head[10] & 7) + 1), 1)  # the global colour table

        def skip_sub_blocks() -> bool:
            while True:
                size = f.read(1)
                if not size:
                    return False
                if size[0] == 0:
                    return True
                f.seek(size[0], 1)

        count = 0
        while stop_after is None or count <= stop_after:
            kind = f.read(1)
            if kind == b"\x21":  # an extension: its label, then sub-blocks
                if not f.read(1) or not skip_sub_blocks():
                    break
            elif kind == b"\x2c":  # an image: its descriptor, local colour table, LZW size, data
                desc = f.read(9)
                if len(desc) < 9:
                    break
                if desc[8] & 0x80:
                    f.seek(3 << ((desc[8] & 7) + 1), 1)
                if not f.read(1) or not skip_sub_blocks():
                    break
                count += 1
            else:  # the trailer (0x3b), the end of the file or garbage
                break
        return count


def png_frame_count(p: Path, stop_after: int | None = None) -> int:
    """Frames of an APNG counted from its chunks (one ``fcTL`` a frame), none decoded: its ``acTL``
    header's count may lie (stops counting past ``stop_after``; 0 for a file that is no PNG)."""
    count = 0
    with open(p, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return 0
        while stop_after is None or count <= stop_after:
            head = f.read(8)
            if len(head) < 8 or head[4:] == b"IEND":
                break
            count += head[4:] == b"fcTL"
            f.seek(int.from_bytes(head[:4], "big") + 4, 1)  # the data and its CRC
    return count


def declared_frame_count(p: Path) -> int:
    """The frames an APNG's, animated WebP's or AVIF's header declares (0 if it cannot be read)."""
    try:
        with warnings.catch_warnings(), Image.open(p) as im:
            warnings.simplefilter("ignore")
            return int(getattr(im, "n_frames", 1)) - default_image(im)
    except Exception:
        return 0
