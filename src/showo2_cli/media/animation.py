"""Animations in still-image formats read with Pillow (APNG, animated WebP and AVIF, and a GIF given as
a PIL image): their frames, and each frame's time, so they are sampled as a video is."""

from __future__ import annotations

from fractions import Fraction

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

    def __len__(self) -> int:
        return int(self.image.n_frames)

    def __getitem__(self, i: int) -> Image.Image:
        self.image.seek(i)
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
        """Each frame's start time (milliseconds) from the frame delays, read by stepping through
        the frames (Pillow decodes an animation frame after frame to seek in it)."""
        index, start = FrameIndex(Fraction(1, 1000)), 0
        for i in range(len(self)):
            self.image.seek(i)
            self.image.load()  # an animated WebP tells a frame's delay once it is decoded
            index.add(start, keyframe=i == 0)
            start += self.delay_ms()
        self.duration_ms = start
        return index.finish()

    def fps(self) -> float | None:
        """Frames per second over the animation's length (each frame's delay counted, the last's
        too, as FFmpeg rates a GIF), once :meth:`index` read it; None before."""
        return len(self) * 1000.0 / self.duration_ms if self.duration_ms > 0 else None

