"""Videos as phones, camcorders, screen recorders and the web make them (probe FG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _gif(path: Path, delays: list[int], transparent: bool = False) -> None:
    frames = []
    for i in range(len(delays)):
        a = np.zeros((16, 16, 4), np.uint8)
        a[..., :3] = (0, 200, 0)  # the colour stored under the transparent pixels
        a[..., 3] = 0 if transparent else 255
        a[4:12, i % 8:i % 8 + 8] = (255, 0, 0, 255)
        frames.append(Image.fromarray(a, "RGBA"))
    kwargs = {"transparency": 0, "disposal": 2} if transparent else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=delays, loop=0, **kwargs)


def test_a_gif_s_frame_rate_is_the_rate_it_plays_at(tmp_path):
    """A GIF of 17 frames held 130 and 120 ms in turn (2.13 s) was read at 8.33 fps by path (FFmpeg's
    average rate, guessed from its first delays) and at 7.98 fps as a PIL image: `encode` recorded the
    guess, and `decode` played the clip 4% fast. Both now give the rate it plays at, n / its length."""
    from showo2_cli.media import read_media, read_video

    delays = [130, 120] * 8 + [130]
    p = tmp_path / "waves.gif"
    _gif(p, delays)
    played = len(delays) * 1000 / sum(delays)  # 7.981...
    by_path = read_video(p, num_frames=8)
    with Image.open(p) as im:
        in_memory = read_media(im, num_frames=8)
    assert by_path.fps == pytest.approx(played, rel=1e-9)
    assert in_memory.fps == pytest.approx(played, rel=1e-9)
    assert np.array_equal(by_path.frames, in_memory.frames)
    assert read_video(p).fps == pytest.approx(played, rel=1e-9)  # every frame, read in order


def test_a_training_folder_lists_camcorder_broadcast_and_older_web_videos(tmp_path):
    """A pairs folder of camcorder clips (AVCHD's ``.MTS``/``.m2ts``, ``.MOD``/``.TOD``, DV, MXF), a
    saved HLS stream (``.ts``), DVD ``.vob``, ``.flv``/``.f4v``, ``.wmv``/``.asf`` or ``.qt`` files
    held "no images or videos" (mixed with others, they were left out silently), though FFmpeg reads
    every one. They are listed now, and read like any video."""
    import av

    from showo2_cli.media import read_video
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    data = tmp_path / "data"
    data.mkdir()
    names = ["a.MTS", "b.m2ts", "c.ts", "d.MOD", "e.TOD", "f.dv", "g.mxf", "h.VOB", "i.flv", "j.f4v", "k.wmv",
             "l.asf", "m.qt"]
    for name in names[1:]:
        (data / name).write_bytes(b"x")
    with av.open(str(data / "a.MTS"), "w", format="mpegts") as c:  # what an AVCHD camcorder records
        s = c.add_stream("libx264", rate=25)  # AVCHD: H.264 in MPEG-TS
        s.width, s.height, s.pix_fmt = 32, 16, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((16, 32, 3), 40 * i, np.uint8), format="rgb24")
            for packet in s.encode(frame.reformat(format="yuv420p")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    (data / "notes.md").write_text("not media")
    records = Records(*build_index(DataSource(kind="pairs", role="t2v", path=str(data)), tmp_path / "i"))
    assert sorted(Path(records[i]["path"]).name for i in range(len(records))) == sorted(names)
    clip = read_video(data / "a.MTS")
    assert clip.frames.shape == (5, 16, 32, 3) and clip.fps == 25
    assert [int(f.mean()) for f in clip.frames] == pytest.approx([0, 40, 80, 120, 160], abs=3)


def test_encode_refuses_a_cut_off_fragmented_mp4_before_looking_for_a_model(tmp_path, monkeypatch, capsys):
    """A screen recording or download in fragmented MP4 (``frag_keyframe+empty_moov``: OBS's, a
    browser's) cut off mid-fragment opens and lists its frames; only its packets show the cut.
    ``caption`` refused it before the model loaded, ``encode`` only after importing torch and
    diffusers and finding the model (70 s on this shared machine, for a one-line error). The video
    is now checked right after its kind, as ``caption`` checks it: the model is never looked up."""
    import av

    import showo2_cli.model_files as model_files
    from showo2_cli.cli import main

    p = tmp_path / "recording.mp4"
    with av.open(str(p), "w", options={"movflags": "frag_keyframe+empty_moov"}) as c:
        s = c.add_stream("libx264", rate=10, options={"g": "5"})
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(30):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in s.encode(frame.reformat(format="yuv420p")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    data = p.read_bytes()
    p.write_bytes(data[:len(data) * 6 // 10])  # the download cut off

    def looked_up(*args, **kwargs):
        raise AssertionError("the model was looked up before the video was checked")

    monkeypatch.setattr(model_files, "find_files", looked_up)
    out = tmp_path / "latents.safetensors"
    code = main(["encode", str(p), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert "truncated or corrupt" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["recording.mp4"]
