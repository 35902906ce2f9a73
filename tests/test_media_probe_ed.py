"""What understanding sees, held against the official preprocessing (probe ED)."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from showo2_cli.media import read_video


def _trimmed_mp4(path, frames: int, cut: int) -> None:
    """An MP4 of ``frames`` frames whose first ``cut`` are trimmed by an edit list (a cut made without
    re-encoding: the packets before the cut get negative timestamps, and the muxer writes the edit)."""
    src_path = path.with_name("whole.mp4")
    with av.open(str(src_path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(25), options={"g": "250", "bf": "0"})
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            f = np.full((32, 32, 3), (i * 255) // frames, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    with av.open(str(src_path)) as src, av.open(str(path), "w") as out:
        s = src.streams.video[0]
        o = out.add_stream_from_template(s)
        shift = int(cut / (s.average_rate * s.time_base))
        for p in src.demux(s):
            if p.dts is None:
                continue
            p.pts -= shift
            p.dts -= shift
            p.stream = o
            out.mux(p)


def test_a_trimmed_mp4_is_sampled_over_the_frames_it_plays(tmp_path):
    # decord (the official reader) samples all 40 stored frames, the 10 trimmed off too; a player shows 30
    p = tmp_path / "trimmed.mp4"
    _trimmed_mp4(p, 40, 10)
    m = read_video(p, num_frames=4)
    assert m.total_frames == 30
    levels = m.frames[:, 16, 16].astype(int).mean(axis=1)
    expected = [((10 + i) * 255) // 40 for i in (0, 9, 19, 29)]  # linspace(0, 29, 4) of the frames played
    np.testing.assert_allclose(levels, expected, atol=3)
