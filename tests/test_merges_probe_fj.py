"""Probe FJ: this morning's merges used together (the JPEG marker bound on every reader, ...)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from showo2_cli.errors import InputError
from showo2_cli.media import read_metadata, read_png_metadata, write_image
from showo2_cli.media.jpeg_markers import JPEG_MAX_MARKER_STEPS


def _many_markers(path, segments: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    path.write_bytes(data[:2] + b"\xff\xfe\x00\x02" * segments + data[2:])  # empty comment segments


@pytest.mark.parametrize("reader", [read_metadata, read_png_metadata])
def test_metadata_readers_bound_a_jpegs_markers(tmp_path, reader):
    """read_metadata / read_png_metadata opened a JPEG with Pillow unchecked (4.7 s for 2,000,000
    empty segments, then None): refused as every other image reader refuses it."""
    bad = tmp_path / "many.jpg"
    _many_markers(bad, JPEG_MAX_MARKER_STEPS + 10)
    with pytest.raises(InputError, match=f"more than {JPEG_MAX_MARKER_STEPS} marker segments"):
        reader(bad)


def test_metadata_of_real_outputs_still_read(tmp_path):
    arr = np.full((16, 16, 3), 200, np.uint8)
    for ext in (".png", ".jpg", ".webp"):
        out = write_image(tmp_path / f"x{ext}", arr, metadata={"prompt": "a red circle", "seed": 7})
        assert read_metadata(out)["seed"] == 7
    assert read_png_metadata(tmp_path / "x.png")["prompt"] == "a red circle"
    ok = tmp_path / "few.jpg"
    _many_markers(ok, 100)  # a photo's few hundred segments pass
    assert read_metadata(ok) is None


def test_server_refuses_a_pipeline_before_it_starts(tiny_pipe):
    """create_app / server_for given a Showo2Pipeline (or one from its components) started, then
    answered every request 500 "internal error (TypeError)": now a TypeError before it starts,
    and ``pipe.model`` (a pipeline from ``components`` too) is served."""
    from fastapi.testclient import TestClient

    from showo2_cli import Showo2Pipeline
    from showo2_cli.serve.app import create_app
    from showo2_cli.serve_config import ServerConfig

    second = Showo2Pipeline(**tiny_pipe.components)
    for given in (tiny_pipe, second):
        with pytest.raises(TypeError, match=r"pipe\.model"):
            create_app(given, ServerConfig())
    with pytest.raises(TypeError, match="got str"):  # a name: load() it first
        create_app("demo", ServerConfig())
    with TestClient(create_app(second.model, ServerConfig())) as client:
        answer = client.post("/v1/images/generations",
                             json={"prompt": "a red circle", "size": "32x32", "steps": 2, "seed": 1})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["data"]) == 1


def test_metadata_nested_too_deeply_is_no_metadata(tmp_path):
    """A PNG text chunk or a video's comment of 100,000 nested brackets: read_png_metadata and
    read_metadata (a video) raised RecursionError; it is no metadata (None), as other bad JSON is."""
    from PIL import PngImagePlugin

    from showo2_cli.media import write_video

    deep = "[" * 100_000 + "]" * 100_000
    info = PngImagePlugin.PngInfo()
    info.add_text("showo2", deep)
    png = tmp_path / "deep.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, pnginfo=info)
    assert read_png_metadata(png) is None
    assert read_metadata(png) is None
    clip = write_video(tmp_path / "deep.mp4", np.zeros((3, 16, 16, 3), np.uint8), fps=8)
    import av

    with av.open(str(clip)) as container:  # the comment rewritten as one deep array, frames copied
        out = av.open(str(tmp_path / "deeper.mp4"), "w")
        out.metadata["comment"] = "[" * 100_000
        stream = out.add_stream_from_template(container.streams.video[0])
        for packet in container.demux(container.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
        out.close()
    assert read_metadata(tmp_path / "deeper.mp4") is None


def test_a_gif_in_memory_samples_the_frames_its_path_does(tmp_path):
    """A 15 fps GIF (delays 70, 70, 60 ms: a GIF's whole centiseconds) is evenly spaced by path
    (FFmpeg's centisecond ticks: the official linspace) but was not as a PIL image (milliseconds):
    8 frames of 50 were [0, 6, 13, 21, 27, 34, 42, 49] in memory, [0, 7, 14, ...] by path."""
    from showo2_cli.media import read_media
    from showo2_cli.media.frame_index import uniform_indices
    from showo2_cli.media.video import read_video

    frames = [Image.fromarray(np.full((16, 16, 3), (i * 5, 255 - i * 5, 0), np.uint8)) for i in range(50)]
    for delays in (([70, 70, 60] * 17)[:50], [20, 30] * 25):
        path = tmp_path / f"{delays[0]}.gif"
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=delays, loop=0)
        by_path = [int(f[0, 0, 0]) // 5 for f in read_video(path, num_frames=8).frames]
        with Image.open(path) as im:
            in_memory = read_media(im, num_frames=8)
        assert [int(f[0, 0, 0]) // 5 for f in in_memory.frames] == by_path == uniform_indices(50, 8)
        assert in_memory.fps == pytest.approx(50 * 1000 / sum(delays))


def test_unwritable_server_temp_is_not_retried():
    """The server's 500 for temporary files it cannot write (a read-only or forbidden folder; not
    a full disk, FE's 507) had no x-should-retry: the OpenAI SDKs ran the same generation twice
    more, each to fail at the same write."""
    import errno

    from showo2_cli.errors import OutputError
    from showo2_cli.serve.errors import api_error_of

    def failed(code: int) -> OutputError:
        try:
            raise OutputError("cannot write image '/tmp/x/image-0.png'") from OSError(code, os.strerror(code))
        except OutputError as e:
            return e

    for code in (errno.EROFS, errno.EACCES):
        err = api_error_of(failed(code))
        assert (err.status, err.retry) == (500, False)
        assert "/tmp/x" not in err.message
    full = api_error_of(failed(errno.ENOSPC))
    assert (full.status, full.code, full.retry) == (507, "insufficient_storage", None)  # room may come back
