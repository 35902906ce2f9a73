"""Which frames of a video to decode for understanding, and how to reach them without decoding the rest.

A :class:`FrameIndex` is what the packets of a video stream say, read while demuxing (no frame is
decoded): every frame's presentation timestamp, in presentation order, and which frames are
keyframes. With it:

* :meth:`FrameIndex.pick` chooses the ``K`` frames a question about the video sees: the official
  indices (``linspace(0, n - 1, K)``, cast to int) when the frames are evenly spaced in time, and
  for a variable-frame-rate video (a phone's low-light clip, a screen recording that holds a
  still for minutes) the frames shown at ``K`` evenly spaced instants between the first frame and
  the last, so the answer covers the video's time, not its count of frames.
* :func:`decode_picked` decodes only the groups of pictures that hold those frames, seeking to the
  keyframe before each one: two hours of video cost about ``K`` groups of pictures, not every
  frame (decord, which the official code reads with, seeks the same way). A stream whose frames
  do not come out where its packets said (the caller then decodes in order) is never guessed at.

Only the containers that store presentation timestamps and keyframe tables (MP4/MOV,
Matroska/WebM: what phones and cameras write) and MPEG-TS (camcorders' AVCHD, saved HLS and
broadcast recordings; each PES packet carries its timestamp) are indexed; others are read in order.
FFmpeg seeks a TS by a binary search over timestamps that may land near, not on, the keyframe asked
for, so there every seek is checked (:attr:`FrameIndex.checked_seeks`): the keyframe itself must come
out of the decoder as a keyframe before any later frame, else the video is read in order.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from showo2_cli.errors import UsageError

#: the demuxers whose packets carry reliable presentation timestamps and keyframe flags
INDEXED_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})
#: the demuxers whose packets carry timestamps and keyframe flags (from the codec's parser) but whose
#: seek is a search over timestamps, not a table: indexed, each seek checked (see the module's note)
CHECKED_SEEK_FORMATS = frozenset({"mpegts"})
#: frames are "evenly spaced" (constant rate, the official indices) when every gap between two
#: frames' timestamps is within this fraction of the median gap, or one tick of the time base
#: (the rounding of 29.97 fps to a 1/600 or 1/1000 time base, of 240 fps to milliseconds)
EVEN_TOLERANCE = 0.1


def uniform_indices(n_total: int, num_frames: int) -> list[int]:
    """The official uniform sampling: ``[int(i) for i in np.linspace(0, n_total - 1, num_frames)]``.

    Always ``num_frames`` indices, first and last frame included; repeats when the video is
    shorter than ``num_frames``.
    """
    if n_total < 1:
        raise UsageError(f"cannot sample frames from a video with {n_total} frames")
    if num_frames < 1:
        raise UsageError(f"the number of frames to sample must be at least 1, got {num_frames}")
    return [int(i) for i in np.linspace(0, n_total - 1, num_frames)]


@dataclass
class FrameIndex:
    """The frames of one video stream as its packets list them.

    Attributes:
        time_base: the stream's time base (seconds per timestamp tick).
        pts: every frame's presentation timestamp, ascending (presentation order).
        keyframes: the timestamps of the keyframes (decoding can start there), ascending.
        usable: False when a packet had no timestamp or two frames share one: then nothing here
            is trusted and the video is read in order.
        shown: every frame's start as it is played, where that is not its timestamp (a GIF's
            delays of 10 ms or less play as 100 ms in browsers), in ticks; None: the timestamps.
        duration: the length as played, the last frame's delay included (ticks; 0: not known).
        checked_seeks: the container's seeks are searches that may miss (MPEG-TS): each is checked
            as it is decoded, and a timestamp that goes back past the keyframe before the last one
            (a wrap of the 33-bit clock, a spliced recording) makes the index unusable.
    """

    time_base: Fraction
    pts: array = field(default_factory=lambda: array("q"))
    keyframes: array = field(default_factory=lambda: array("q"))
    usable: bool = True
    shown: array | None = None
    duration: int = 0
    checked_seeks: bool = False
    #: where checked seeks go: each keyframe's decoding timestamp (FFmpeg's TS search compares
    #: decoding timestamps), by its presentation timestamp
    seek_to: dict[int, int] = field(default_factory=dict)

    def add(self, pts: int | None, keyframe: bool, dts: int | None = None) -> None:
        """One packet of the stream (in decoding order)."""
        if pts is None:
            self.usable = False
            return
        if self.checked_seeks and len(self.keyframes) > 1 and pts < self.keyframes[-2]:
            self.usable = False  # the clock went back: sorted timestamps are not the order shown
        self.pts.append(int(pts))
        if keyframe:
            self.keyframes.append(int(pts))
            if self.checked_seeks:
                self.seek_to[int(pts)] = int(pts if dts is None else min(dts, pts))

    def finish(self) -> FrameIndex:
        """Sort into presentation order; a repeated timestamp makes the index unusable."""
        ordered = np.sort(np.frombuffer(self.pts, dtype=np.int64)) if len(self.pts) else np.zeros(0, np.int64)
        if ordered.size > 1 and not (np.diff(ordered) > 0).all():
            self.usable = False
        self.pts = array("q", ordered.tobytes())
        self.keyframes = array("q", sorted(self.keyframes))
        return self

    def __len__(self) -> int:
        return len(self.pts)

    def times(self) -> np.ndarray:
        """Each frame's start as played (ticks, presentation order): ``shown``, else the timestamps."""
        times = self.shown if self.shown is not None and len(self.shown) == len(self.pts) else self.pts
        return np.frombuffer(times, dtype=np.int64)

    def rate(self) -> float | None:
        """Frames per second as played (each frame's delay counted, the last's too), where
        ``duration`` tells (a GIF's); None otherwise."""
        if self.duration <= 0 or not len(self.pts):
            return None
        return float(len(self.pts) / (self.duration * self.time_base))

    def evenly_spaced(self) -> bool:
        """Every gap between consecutive frames is within :data:`EVEN_TOLERANCE` of the median gap
        (or one tick)."""
        if len(self.pts) < 3:
            return True
        gaps = np.diff(self.times())
        median = float(np.median(gaps))
        return bool(np.abs(gaps - median).max() <= max(EVEN_TOLERANCE * median, 1.0))

    def pick(self, num_frames: int) -> list[int]:
        """The positions (0-based, presentation order) of the ``num_frames`` frames to read: the
        official ``linspace`` indices for evenly spaced frames, else the frame shown at each of
        ``num_frames`` evenly spaced instants from the first frame's timestamp to the last's (the
        last frame starting at or before it). Always ``num_frames`` positions, first and last
        frame included; repeats when the video has fewer frames."""
        n = len(self.pts)
        if self.evenly_spaced() or num_frames < 2:
            return uniform_indices(n, num_frames)
        pts = self.times()
        first, span = int(pts[0]), int(pts[-1] - pts[0])
        instants = [first + span * k // (num_frames - 1) for k in range(num_frames)]  # exact integers
        return [int(np.searchsorted(pts, t, side="right")) - 1 for t in instants]


def decode_picked(container: Any, stream: Any, index: FrameIndex, picks: list[int],
                  keep: Callable[[Any, int], None]) -> int | None:
    """Decode the frames at ``picks`` (positions in ``index``), seeking to the keyframe before a
    picked frame whenever that skips frames, and hand each to ``keep(frame, position)``.

    Returns how many frames were decoded, or None when a picked frame did not come out where the
    index said (no timestamp, a seek that landed past it, the stream ending first) or, where the
    index's seeks are checked, the keyframe sought did not come out as a keyframe before any later
    frame (decoding began after it, or at a frame the decoder cannot start from): the caller then
    reads the video in order. Frames already handed to ``keep`` may be handed again then.
    """
    pts, keys = index.pts, index.keyframes
    decoded, next_pos = 0, 0  # next_pos: the position the decoder gives next without a seek
    frames = container.decode(stream)
    for pos in sorted(set(picks)):
        want, sought = pts[pos], None
        k = bisect.bisect_right(keys, want) - 1
        if k >= 0 and next_pos < len(pts) and keys[k] > pts[next_pos]:  # a keyframe past the next frame
            container.seek(index.seek_to.get(keys[k], keys[k]), backward=True, any_frame=False, stream=stream)
            frames = container.decode(stream)
            sought = keys[k] if index.checked_seeks else None
        for frame in frames:
            decoded += 1
            if frame.pts is None:
                return None
            if sought is not None and frame.pts >= sought:  # the first frame from the keyframe on
                if frame.pts != sought or not frame.key_frame:
                    return None
                sought = None
            if frame.pts < want:
                continue
            if frame.pts != want:
                return None
            keep(frame, pos)
            next_pos = pos + 1
            break
        else:
            return None
    return decoded
