"""Video as phones and cameras make it, read for understanding (probe AT).

A question about a video sees ``K`` sampled frames: only the groups of pictures that hold them
are decoded (an hour of video is not decoded whole to answer it), and a variable-frame-rate video
is sampled over its time, not its count of frames. Every file is generated here, small.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from conftest import NUMBERED_SIZE, frame_number, numbered_frame, write_h264
from showo2_cli.media import read_video, uniform_indices
from showo2_cli.media.frame_index import FrameIndex, decode_picked

W, H = NUMBERED_SIZE


def _encode(path, pts: list[int], time_base: Fraction, gop: int = 25, fmt: str | None = None, bframes: int = 2):
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.codec_context.time_base = time_base
        s.options = {"preset": "ultrafast", "crf": "12", "g": str(gop), "keyint_min": str(gop),
                     "sc_threshold": "0", "bf": str(bframes)}
        for i, t in enumerate(pts):
            vf = av.VideoFrame.from_ndarray(numbered_frame(i), format="rgb24")
            vf.pts, vf.time_base = t, time_base
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


class _Counting:
    """``av.open`` whose containers count the frames they decode."""

    def __init__(self, real_open):
        self.real_open, self.decoded = real_open, 0

    def __call__(self, *args, **kwargs):
        counter, container = self, self.real_open(*args, **kwargs)

        class Container:
            def __getattr__(self, name):
                return getattr(container, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                container.close()

            def decode(self, *streams, **kw):
                for frame in container.decode(*streams, **kw):
                    counter.decoded += 1
                    yield frame

        return Container()


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_a_long_video_decodes_only_the_groups_of_pictures_it_samples(tmp_path, monkeypatch, ext):
    """Every frame of the video was decoded to keep 8 of them (an MKV, whose header gives no frame
    count, twice: 500 decoded for 250 frames); a 2-hour 160x96 MP4 took 36 s for 32 frames, and
    30 minutes of MKV 14 s. Now only the groups of pictures holding the sampled frames are decoded,
    and the frames are the same ones."""
    p = tmp_path / f"long.{ext}"
    n = 250  # 10 s at 25 fps, a keyframe every 10 frames
    _encode(p, list(range(n)), Fraction(1, 25), gop=10)
    counting = _Counting(av.open)
    monkeypatch.setattr(av, "open", counting)
    m = read_video(p, num_frames=8)
    assert [frame_number(f) for f in m.frames] == uniform_indices(n, 8)
    assert m.total_frames == n
    assert counting.decoded <= 8 * 10 + 8  # at most a group of pictures for each (and a few frames of look-ahead)
    counting.decoded = 0
    whole = read_video(p)  # all frames: read in order, as before
    assert counting.decoded == n and [frame_number(f) for f in whole.frames[::50]] == list(range(0, n, 50))
    assert np.array_equal(whole.frames[uniform_indices(n, 8)], m.frames)  # the same pixels as decoding in order


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_a_variable_frame_rate_video_is_sampled_over_its_time(tmp_path, ext):
    """A clip of 10 frames in its first second and then two frames 10 s apart (a phone holding a
    still, a screen recording) gave frames 0, 2, 5, 8, 11: four of five from the first second of
    twenty. Now the frames shown at 0, 5, 10, 15 and 20 s."""
    p = tmp_path / f"vfr.{ext}"
    _encode(p, [*range(10), 100, 200], Fraction(1, 10), gop=4)
    assert [frame_number(f) for f in read_video(p, num_frames=5).frames] == [0, 9, 10, 10, 11]
    assert [frame_number(f) for f in read_video(p, num_frames=2).frames] == [0, 11]
    assert [frame_number(f) for f in read_video(p, num_frames=1).frames] == [0]


def test_a_constant_rate_keeps_the_official_indices():
    """Timestamps rounded to the time base (29.97 fps at 1/600 s, 240 fps in milliseconds) are a
    constant rate: the official ``linspace`` indices, exactly."""
    for tb, rate in ((Fraction(1, 600), Fraction(30000, 1001)), (Fraction(1, 1000), Fraction(240))):
        index = FrameIndex(tb)
        for i in range(997):
            index.add(round(i / rate / tb), keyframe=i % 30 == 0)
        index.finish()
        assert index.evenly_spaced()
        for k in (1, 2, 5, 32, 1000):
            assert index.pick(k) == uniform_indices(997, k)


def test_b_frames_a_late_start_and_files_without_timestamps_keep_their_order(tmp_path):
    """B-frames (negative decoding timestamps), a first frame at 10 s, and an AVI (which stores no
    presentation timestamps: it is read in order) give frame i at position i."""
    for name, fmt, start in (("b.mp4", None, 0), ("late.mp4", None, 250), ("late.mkv", None, 250),
                             ("b.avi", "avi", 0)):
        p = tmp_path / name
        _encode(p, [start + i for i in range(25)], Fraction(1, 25), gop=12, fmt=fmt, bframes=3)
        assert [frame_number(f) for f in read_video(p, num_frames=5).frames] == [0, 6, 12, 18, 24], name
        assert [frame_number(f) for f in read_video(p).frames] == list(range(25)), name


def test_a_trimmed_phone_video_starts_at_its_edit(tmp_path):
    """A video cut without re-encoding (a phone's trim: the MP4 edit list starts 7 frames into a
    group of pictures) shows frames 7 to 29: the frames before the edit are decoded but not shown,
    and the sampled frames are the shown ones, seeking or not."""
    src, cut = tmp_path / "src.mp4", tmp_path / "trimmed.mp4"
    _encode(src, list(range(30)), Fraction(1, 25), gop=10)
    with av.open(str(src)) as i, av.open(str(cut), "w") as o:
        si = i.streams.video[0]
        so = o.add_stream_from_template(si)
        shift = int(Fraction(7, 25) / si.time_base)
        for pkt in i.demux(si):
            if pkt.dts is not None:
                pkt.pts, pkt.dts, pkt.stream = pkt.pts - shift, pkt.dts - shift, so
                o.mux(pkt)
    assert [frame_number(f) for f in read_video(cut).frames] == list(range(7, 30))
    m = read_video(cut, num_frames=5)
    assert [frame_number(f) for f in m.frames] == [7 + i for i in uniform_indices(23, 5)] and m.total_frames == 23


def test_a_stream_that_does_not_keep_to_its_index_is_read_in_order(tmp_path, monkeypatch):
    """Where a picked frame does not come out at its timestamp, the picked decode gives up (None)
    and the video is read in order, with the same frames."""
    p = tmp_path / "v.mp4"
    _encode(p, list(range(100)), Fraction(1, 25), gop=10)
    expected = [frame_number(f) for f in read_video(p, num_frames=6).frames]

    class Frame:
        def __init__(self, pts):
            self.pts = pts

    class Fake:
        def decode(self, stream):
            yield from (Frame(t) for t in (0, 1, 3))  # frame 2 never comes

        def seek(self, *a, **kw):
            pass

    index = FrameIndex(Fraction(1, 25))
    for t in range(5):
        index.add(t, keyframe=t == 0)
    assert decode_picked(Fake(), None, index.finish(), [0, 2], lambda f, pos: None) is None

    import showo2_cli.media.video as video_module

    monkeypatch.setattr(video_module, "decode_picked", lambda *a, **kw: None)
    assert [frame_number(f) for f in read_video(p, num_frames=6).frames] == expected == uniform_indices(100, 6)


def test_a_gif_is_sampled_over_its_frame_delays(tmp_path):
    """A GIF's frames last their own delays: one that holds its first frame 5 s, plays ten frames
    in a second and holds the last gave frames 0, 2, 5, 8, 11 (ten of twelve frames are one second
    of six); now the frames shown at 0, 1.5, 3, 4.5 and 6 s. A GIF at an even rate (delays of 12
    and 13 centiseconds, as the shared waves.gif has) keeps the official indices."""
    from PIL import Image

    frames = [Image.fromarray(numbered_frame(i)) for i in range(12)]
    frames[0].save(tmp_path / "hold.gif", save_all=True, append_images=frames[1:],
                   duration=[5000] + [100] * 10 + [5000], loop=0)
    assert [frame_number(f) for f in read_video(tmp_path / "hold.gif", num_frames=5).frames] == [0, 0, 0, 0, 11]
    frames[0].save(tmp_path / "even.gif", save_all=True, append_images=frames[1:], duration=[120, 130] * 6, loop=0)
    assert [frame_number(f) for f in read_video(tmp_path / "even.gif", num_frames=5).frames] == uniform_indices(12, 5)


@pytest.mark.parametrize("ext", ["png", "webp"])
def test_an_apng_or_animated_webp_file_is_a_video_as_the_same_file_opened_with_pil(tmp_path, ext):
    """An animated PNG or WebP file was read as its first frame (captioned as a still, animated by
    i2v), while the same file opened with PIL and given to the Python API was a video, and an
    animated GIF file a video too. Now the file is a video like a GIF, sampled over its frame
    delays (the PIL image too), and refused where an image goes."""
    from PIL import Image

    from showo2_cli.errors import InputError
    from showo2_cli.media import check_video, image_input, probe_kind, read_image, read_media

    p = tmp_path / f"hold.{ext}"
    frames = [Image.fromarray(numbered_frame(i)) for i in range(12)]
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=[5000] + [100] * 10 + [5000], loop=0,
                   **({"lossless": True} if ext == "webp" else {}))
    assert probe_kind(p) == "video"
    check_video(p)  # what the CLI checks before loading a model (FFmpeg reads no animated WebP)
    m = read_media(p, num_frames=5)
    assert m.kind == "video" and m.total_frames == 12 and m.fps == pytest.approx(12 / 11.0)
    assert [frame_number(f) for f in m.frames] == [0, 0, 0, 0, 11]
    assert [frame_number(f) for f in read_media(p, first=3).frames] == [0, 1, 2]
    with Image.open(p) as im:
        assert [frame_number(f) for f in read_media(im, num_frames=5).frames] == [0, 0, 0, 0, 11]
        with pytest.raises(ValueError, match="animated"):
            image_input(im)
    with pytest.raises(InputError, match="animated"):
        read_image(p)
    with pytest.raises(InputError, match="animated"):
        image_input(p)
    one = tmp_path / f"one.{ext}"
    frames[5].save(one)
    assert probe_kind(one) == "image" and frame_number(np.asarray(read_image(one))) == 5


def test_the_server_takes_an_animation_sent_as_the_image_type_it_is(tmp_path, monkeypatch):
    """OpenAI clients send a GIF as ``data:image/gif`` (its MIME type, animated or not): an animated
    one was refused with 400 "the data URL says image/*, but it holds a video". An animated GIF,
    PNG or WebP is now taken as the video it is; a video sent as ``image/png`` is still refused."""
    pytest.importorskip("fastapi")
    import base64
    import io
    from types import SimpleNamespace

    from fastapi.testclient import TestClient
    from PIL import Image

    from showo2_cli import chat
    from showo2_cli.media import probe_kind
    from showo2_cli.serve import ServerConfig, create_app

    attached = []  # what the chat was given: the server's checks are under test, not the model

    class Conversation:
        def __init__(self, *args, **kwargs):
            self.turns, self.notices = [SimpleNamespace(stopped=True, prompt_tokens=1, generated_tokens=1)], []

        def check_text_fits(self, *args, **kwargs):  # (probe HG: the text is checked before the media)
            pass

        def attach(self, path, **kwargs):
            attached.append(probe_kind(path))

        def ask(self, *args, **kwargs):
            return "ok"

    monkeypatch.setattr(chat, "Conversation", Conversation)

    def data(mime: str, raw: bytes) -> dict:
        url = f"data:{mime};base64,{base64.b64encode(raw).decode()}"
        return {"model": "demo", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What happens?"}, {"type": "image_url", "image_url": {"url": url}}]}]}

    frames = [Image.fromarray(numbered_frame(i)) for i in range(3)]
    mp4 = tmp_path / "v.mp4"
    _encode(mp4, list(range(5)), Fraction(1, 25))
    model = SimpleNamespace(spec=SimpleNamespace(vocab_size=1000, latent_multiple=16))
    with TestClient(create_app(model, ServerConfig(model_id="demo"))) as http:
        for fmt, mime in (("GIF", "image/gif"), ("PNG", "image/png"), ("WEBP", "image/webp")):
            buf = io.BytesIO()
            frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
            r = http.post("/v1/chat/completions", json=data(mime, buf.getvalue()))
            assert r.status_code == 200, (fmt, r.text)
        assert attached == ["video"] * 3
        r = http.post("/v1/chat/completions", json=data("image/png", mp4.read_bytes()))
        assert r.status_code == 400 and "holds a video" in r.json()["error"]["message"]


def test_a_phone_photo_with_a_gain_map_opened_with_pil_is_one_picture(tmp_path):
    """An Ultra HDR JPEG (Pixel 8 and later, recent Galaxy phones) carries its gain map as a second
    picture in its MPF data, which Pillow opens as a 2-frame ``MPO``: given to the Python API as
    ``Image.open(path)`` it was refused as "an animated image of 2 frames" (an image's place) or
    failed as a video whose frames differ in size (a video's place), while its path read fine. It
    is now the photo, as its path reads."""
    from PIL import Image

    from showo2_cli.media import image_input, read_image, read_media

    p = tmp_path / "pixel.jpg"
    photo = Image.fromarray(numbered_frame(300))
    photo.save(p, format="MPO", save_all=True, append_images=[Image.new("RGB", (36, 24), (128, 128, 128))],
               quality=95, subsampling=0)
    with Image.open(p) as im:
        assert im.format == "MPO" and im.n_frames == 2
        assert np.array_equal(np.asarray(image_input(im)), np.asarray(read_image(p)))
        m = read_media(im)
        assert m.kind == "image" and frame_number(m.frames[0]) == 300


def test_a_heic_photo_is_refused_in_one_line_not_read_as_a_video_of_one_tile(tmp_path):
    """An iPhone's HEIC photo is a grid of tiles in a HEIF file (``tiled.heic``: 96x128 in 64x64
    tiles, written by pillow-heif). Pillow reads no HEIF, and FFmpeg opens one as a video stream a
    tile: ``caption photo.heic`` answered about a one-frame "video" of its top-left tile. It is now
    refused (exit 3) with what to do; a tile is never taken for a video."""
    from pathlib import Path

    from showo2_cli.errors import InputError
    from showo2_cli.media import check_video, image_input, probe_kind, read_image, read_media
    from showo2_cli.media.probe import video_streams

    heic = Path(__file__).parent / "data" / "media" / "tiled.heic"
    for read in (probe_kind, read_image, read_video, read_media, check_video, image_input):
        with pytest.raises(InputError, match=r"a HEIF \(HEIC\) photo.*convert it to JPEG"):
            read(heic)
    with av.open(str(heic)) as c:
        assert len(c.streams.video) == 4 and video_streams(c) == []  # the four tiles are parts of a picture
    mp4 = tmp_path / "v.mp4"  # an MP4's ftyp is no HEIF
    _encode(mp4, list(range(3)), Fraction(1, 25))
    assert probe_kind(mp4) == "video"


@pytest.mark.parametrize(("matrix", "corner"), [
    ((-1, 0, 0, 1), "top-right"),  # mirrored (a selfie camera's): was read turned upside down
    ((1, 0, 0, -1), "bottom-left"),  # flipped upside down
    ((0, 1, 1, 0), "top-left"),  # transposed: a quarter turn and a mirror
    ((0, -1, -1, 0), "bottom-right"),
    ((0, -1, 1, 0), "bottom-left"),  # plain quarter turns and a half turn, as before
    ((-1, 0, 0, -1), "bottom-right"),
])
def test_a_mirrored_video_is_shown_mirrored_not_turned(tmp_path, matrix, corner):
    """A display matrix that mirrors (``a`` or ``d`` negative, or a quarter turn with a flip) was
    read by its rotation angle alone: a mirrored video came out turned 180 degrees. The whole
    matrix is applied now, as FFmpeg's autorotation (and a player) shows it."""
    import struct

    p = tmp_path / "stored.mp4"
    frames = np.zeros((3, 32, 64, 3), np.uint8)
    frames[:, :8, :8] = (255, 0, 0)  # red stored top-left
    write_h264(p, frames)
    data = bytearray(p.read_bytes())
    at = data.find(b"tkhd") + 4 + 4 + 4 * 5 + 8 + 8  # the track header's matrix (version 0)
    a, b, c_, d = (v * 65536 for v in matrix)
    data[at:at + 36] = struct.pack(">9i", a, b, 0, c_, d, 0, 0, 0, 1 << 30)  # what an editor writes
    shown = tmp_path / "shown.mp4"
    shown.write_bytes(bytes(data))
    for m in (read_video(shown), read_video(shown, num_frames=2)):
        f = m.frames[0]
        assert f.shape == ((64, 32, 3) if matrix[0] == 0 else (32, 64, 3))
        ys, xs = np.nonzero(f[..., 0] > 200)
        where = ("top" if ys.mean() < f.shape[0] / 2 else "bottom") + "-" + ("left" if xs.mean() < f.shape[1] / 2 else "right")
        assert where == corner


def test_frames_are_fitted_as_they_are_decoded_so_a_large_video_is_never_held_whole(tmp_path):
    """Captioning held every sampled frame at its decoded size before padding them to the model's
    square: 32 frames of a 4K phone video are 0.8 GB, for 18 MB of 432x432 input. ``fit`` is
    applied to each frame as it is decoded (understanding pads with it): the same pixels, and the
    decoded frames are never all held (here 16 frames of 640x480, 14.7 MB, against 0.2 MB fitted)."""
    import tracemalloc

    from PIL import Image

    from showo2_cli.media import resize_and_pad

    p = tmp_path / "vga.mp4"
    frames = np.zeros((16, 480, 640, 3), np.uint8)
    for i in range(16):
        frames[i, :, i * 40:(i + 1) * 40] = 255
    write_h264(p, frames, options={"preset": "ultrafast"})

    def pad(f):
        return np.asarray(resize_and_pad(Image.fromarray(f), 64))

    whole = read_video(p, num_frames=16)
    tracemalloc.start()
    try:
        fitted = read_video(p, num_frames=16, fit=pad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fitted.frames.shape == (16, 64, 64, 3)
    assert np.array_equal(fitted.frames, np.stack([pad(f) for f in whole.frames]))
    assert peak < 8 * 640 * 480 * 3  # a few decoded frames at a time (3.7 MB), never the 16 (14.7 MB)
