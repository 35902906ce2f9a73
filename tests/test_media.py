"""Tests for showo2_cli.media: probing, reading, geometry, tensors, frame counts, atomic writes."""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from showo2_cli import media
from showo2_cli.errors import InputError, OutputError, ResourceError, UsageError
from showo2_cli.media import (
    Media,
    atomic_output,
    check_output_path,
    frames_to_tensor,
    is_valid_frames,
    latent_frames,
    pixel_frames,
    probe_kind,
    read_image,
    read_media,
    read_metadata,
    read_png_metadata,
    read_video,
    resize_and_pad,
    resize_center_crop,
    round_frames,
    slugify,
    tensor_to_frames,
    uniform_indices,
    unique_path,
    write_image,
    write_video,
)
from showo2_cli.media.geometry import MAX_RESIZE_FACTOR

MEDIA_DIR = Path(
    os.environ.get("SHOWO2_MEDIA_DIR", str(Path(__file__).resolve().parents[1].parent / "shared" / "media"))
)
PORTRAIT = MEDIA_DIR / "pexels-talha-ahmed-26040377-7949588.jpg"
AVOCADO = MEDIA_DIR / "pexels-taryn-elliott-4144459.jpg"
VIDEO1 = MEDIA_DIR / "video1.mp4"
WAVES = MEDIA_DIR / "waves.gif"


def need(path: Path) -> Path:
    """Skip the test when a real media file is absent."""
    if not path.is_file():
        pytest.skip(f"real test media {path.name} not found in {MEDIA_DIR} (set SHOWO2_MEDIA_DIR)")
    return path


def gradient_frames(t: int = 9, h: int = 48, w: int = 64) -> np.ndarray:
    """Smooth moving colour gradients: lossy codecs reproduce them closely."""
    y, x = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        out[i, ..., 0] = (x * 255 // max(w - 1, 1) + 6 * i) % 256
        out[i, ..., 1] = y * 255 // max(h - 1, 1)
        out[i, ..., 2] = 128 + 8 * i
    return out


def noise_image(h: int = 40, w: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_names(exc: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(exc.value)
    assert path.name in msg, msg
    assert "\n" not in msg


# ---------------------------------------------------------------------------------------------
# real media
# ---------------------------------------------------------------------------------------------


class TestRealMedia:
    def test_probe_kinds(self):
        assert probe_kind(need(PORTRAIT)) == "image"
        assert probe_kind(need(AVOCADO)) == "image"
        assert probe_kind(need(VIDEO1)) == "video"
        assert probe_kind(need(WAVES)) == "video"

    def test_photos_read_upright_rgb(self):
        img = read_image(need(PORTRAIT))
        assert img.mode == "RGB" and img.size == (3024, 4032)
        img = read_image(need(AVOCADO))
        assert img.mode == "RGB" and img.size == (4000, 6000)

    def test_read_media_image(self):
        m = read_media(need(PORTRAIT))
        assert isinstance(m, Media)
        assert m.kind == "image" and m.fps is None and m.total_frames == 1
        assert m.frames.shape == (1, 4032, 3024, 3) and m.frames.dtype == np.uint8
        assert m.frames.flags.writeable
        assert (m.width, m.height, m.num_frames) == (3024, 4032, 1)
        assert m.source == str(PORTRAIT)

    def test_video1_all_frames(self):
        m = read_video(need(VIDEO1))
        assert m.kind == "video"
        assert m.frames.shape == (52, 960, 540, 3) and m.frames.dtype == np.uint8
        assert m.total_frames == 52
        assert m.fps == pytest.approx(30.0)
        assert (m.width, m.height) == (540, 960)
        assert m.frames.std() > 5  # real content, not a blank decode

    def test_video1_uniform_sampling_matches_full_decode(self):
        full = read_video(need(VIDEO1)).frames
        idx = [int(i) for i in np.linspace(0, 51, 8)]
        assert uniform_indices(52, 8) == idx == [0, 7, 14, 21, 29, 36, 43, 51]
        m = read_video(VIDEO1, num_frames=8)
        assert m.frames.shape == (8, 960, 540, 3)
        assert m.total_frames == 52 and m.fps == pytest.approx(30.0)
        np.testing.assert_array_equal(m.frames, full[idx])

    def test_video1_more_frames_than_source_repeats(self):
        m = read_video(need(VIDEO1), num_frames=64)
        assert m.frames.shape[0] == 64 and m.total_frames == 52
        idx = uniform_indices(52, 64)
        assert len(set(idx)) == 52 and idx[0] == 0 and idx[-1] == 51
        np.testing.assert_array_equal(m.frames[0], m.frames[1])  # 0, 0, 1, ...

    def test_waves_gif(self):
        m = read_media(need(WAVES))
        assert m.kind == "video"
        assert m.frames.shape == (17, 480, 720, 3)
        assert m.total_frames == 17
        assert 7.0 < m.fps < 9.0  # 130 ms per frame, FFmpeg's average rate is 25/3
        one = read_media(WAVES, num_frames=1)
        np.testing.assert_array_equal(one.frames[0], m.frames[0])

    def test_gif_frames_match_pil(self):
        m = read_video(need(WAVES), num_frames=3)
        with Image.open(WAVES) as im:
            im.seek(16)
            last = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(m.frames[-1], last)

    def test_wrong_kind(self):
        with pytest.raises(InputError, match="video") as exc:
            read_image(need(VIDEO1))
        assert_names(exc, VIDEO1)
        with pytest.raises(InputError, match="animated GIF") as exc:
            read_image(need(WAVES))
        with pytest.raises(InputError, match="still image") as exc:
            read_video(need(PORTRAIT))
        assert_names(exc, PORTRAIT)

    def test_max_pixels(self, monkeypatch):
        with pytest.raises(ResourceError, match="too large") as exc:
            read_image(need(AVOCADO), max_pixels=4000 * 6000 - 1)
        assert_names(exc, AVOCADO)
        assert read_image(AVOCADO, max_pixels=4000 * 6000).size == (4000, 6000)
        with pytest.raises(ResourceError) as exc:
            read_video(need(VIDEO1), max_pixels=540 * 960 - 1)
        assert_names(exc, VIDEO1)
        monkeypatch.setenv("SHOWO2_MAX_PIXELS", "1000")
        with pytest.raises(ResourceError, match="SHOWO2_MAX_PIXELS"):
            read_media(PORTRAIT)
        monkeypatch.setenv("SHOWO2_MAX_PIXELS", "lots")
        with pytest.raises(UsageError, match="SHOWO2_MAX_PIXELS"):
            read_image(PORTRAIT)

    def test_truncated_real_jpeg(self, tmp_path):
        data = need(PORTRAIT).read_bytes()
        bad = tmp_path / "cut-photo.jpg"
        bad.write_bytes(data[: len(data) // 3])
        assert probe_kind(bad) == "image"  # the header is fine
        with pytest.raises(InputError, match="truncated or corrupt") as exc:
            read_image(bad)
        assert_names(exc, bad)

    def test_truncated_real_mp4(self, tmp_path):
        data = need(VIDEO1).read_bytes()
        for n, cut in enumerate((200, len(data) // 2, len(data) - 1000)):
            bad = tmp_path / f"cut-{n}.mp4"
            bad.write_bytes(data[:cut])
            with pytest.raises(InputError) as exc:
                read_video(bad)
            assert_names(exc, bad)

    def test_center_crop_real_photo(self):
        img = read_image(need(PORTRAIT))
        out = resize_center_crop(img, 432)
        assert out.size == (432, 432)
        out = resize_center_crop(img, (432, 768))
        assert out.size == (768, 432)


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------


class TestBadInputs:
    def test_missing(self, tmp_path):
        p = tmp_path / "nothere.png"
        for fn in (probe_kind, read_image, read_video, read_media):
            with pytest.raises(InputError, match="no such file") as exc:
                fn(p)
            assert_names(exc, p)

    def test_directory(self, tmp_path):
        d = tmp_path / "afolder.png"
        d.mkdir()
        for fn in (probe_kind, read_image, read_video, read_media):
            with pytest.raises(InputError, match="is a directory") as exc:
                fn(d)
            assert_names(exc, d)

    def test_empty(self, tmp_path):
        for name in ("empty.png", "empty.mp4"):
            p = tmp_path / name
            p.touch()
            for fn in (probe_kind, read_image, read_video, read_media):
                with pytest.raises(InputError, match="empty file") as exc:
                    fn(p)
                assert_names(exc, p)

    @pytest.mark.parametrize("name", ["notes.png", "notes.jpg", "notes.mp4", "notes.gif", "notes.webm"])
    def test_text_file_with_media_extension(self, tmp_path, name):
        p = tmp_path / name
        p.write_text("this is just some text, not a picture\n" * 4)
        for fn in (probe_kind, read_image, read_video, read_media):
            with pytest.raises(InputError) as exc:
                fn(p)
            assert_names(exc, p)

    def test_truncated_png(self, tmp_path):
        good = tmp_path / "good.png"
        Image.fromarray(noise_image(64, 64)).save(good)
        data = good.read_bytes()
        # cut inside the header, the pixel data, and the end of the compressed stream (a file missing
        # only its IEND chunk still has every pixel and is accepted, like other readers do)
        for cut in (40, len(data) // 2, len(data) - 30):
            bad = tmp_path / f"cut{cut}.png"
            bad.write_bytes(data[:cut])
            with pytest.raises(InputError) as exc:
                read_image(bad)
            assert_names(exc, bad)
            with pytest.raises(InputError):
                read_media(bad)

    def test_truncated_generated_jpeg(self, tmp_path):
        buf = io.BytesIO()
        Image.fromarray(noise_image(64, 64)).save(buf, format="JPEG")
        bad = tmp_path / "cut.jpg"
        bad.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
        with pytest.raises(InputError, match="truncated or corrupt") as exc:
            read_image(bad)
        assert_names(exc, bad)

    def test_too_large_refused_before_decoding(self, tmp_path, monkeypatch):
        p = tmp_path / "big.png"
        Image.fromarray(noise_image(100, 120)).save(p)

        def boom(self, *a, **k):
            raise AssertionError("pixels were decoded")

        monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
        with pytest.raises(ResourceError, match="12,000 pixels") as exc:
            read_image(p, max_pixels=11999)
        assert_names(exc, p)

    def test_decompression_bomb_header(self, tmp_path):
        # a PNG whose header claims 20000 x 20000 pixels: PIL's own bomb check fires on open
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
        data = (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 10))
            + chunk(b"IEND", b"")
        )
        p = tmp_path / "bomb.png"
        p.write_bytes(data)
        with pytest.raises(ResourceError, match="400,000,000 pixels is more than the limit of 1,000,000 ") as exc:
            read_image(p, max_pixels=10**6)  # our limit and the size, not PIL's limit (178956970)
        assert_names(exc, p)
        assert "178956970" not in str(exc.value)
        with pytest.raises(ResourceError, match="400,000,000 pixels is more than the limit of 399,999,999 "):
            read_image(p, max_pixels=400_000_000 - 1)  # over twice PIL's limit: still ours that is said
        with pytest.raises(InputError, match="truncated"):  # within a limit raised past PIL's: decoded (probe BO)
            read_image(p, max_pixels=10**9)

    def test_audio_only_file(self, tmp_path):
        p = tmp_path / "sound.mp4"
        with av.open(str(p), "w") as c:
            s = c.add_stream("aac", rate=16000)
            for i in range(5):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate = 16000
                frame.pts = i * 1024
                for pkt in s.encode(frame):
                    c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        with pytest.raises(InputError, match="no video stream") as exc:
            read_video(p)
        assert_names(exc, p)
        with pytest.raises(InputError):
            probe_kind(p)

    def test_bad_arguments(self, tmp_path):
        p = tmp_path / "v.gif"
        write_video(p, gradient_frames(3, 8, 8), 4)
        with pytest.raises(UsageError):
            read_video(p, num_frames=0)
        with pytest.raises(ResourceError):
            read_video(p, num_frames=50, max_frames=10)
        with pytest.raises(ResourceError):
            read_video(p, max_frames=2)


# ---------------------------------------------------------------------------------------------
# image modes
# ---------------------------------------------------------------------------------------------


class TestImageModes:
    def read(self, tmp_path: Path, im: Image.Image, name: str, **save) -> Image.Image:
        p = tmp_path / name
        im.save(p, **save)
        assert probe_kind(p) == "image"
        out = read_image(p)
        assert out.mode == "RGB"
        return out

    def test_grayscale(self, tmp_path):
        out = self.read(tmp_path, Image.new("L", (30, 20), 77), "g.png")
        assert out.size == (30, 20) and out.getpixel((3, 3)) == (77, 77, 77)

    def test_one_bit(self, tmp_path):
        out = self.read(tmp_path, Image.new("1", (9, 7), 1), "b.png")
        assert out.size == (9, 7) and out.getpixel((0, 0)) == (255, 255, 255)

    def test_palette_with_transparency(self, tmp_path):
        im = Image.new("P", (16, 12), 1)
        im.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
        im.info["transparency"] = 1
        out = self.read(tmp_path, im, "p.png", transparency=1)
        assert out.size == (16, 12)
        assert out.getpixel((2, 2)) == (200, 10, 20)  # alpha dropped, colour kept

    def test_rgba_drops_alpha(self, tmp_path):
        out = self.read(tmp_path, Image.new("RGBA", (10, 11), (10, 20, 30, 0)), "a.png")
        assert out.size == (10, 11) and out.getpixel((5, 5)) == (10, 20, 30)

    def test_la(self, tmp_path):
        out = self.read(tmp_path, Image.new("LA", (5, 6), (90, 10)), "la.png")
        assert out.getpixel((1, 1)) == (90, 90, 90)

    def test_cmyk(self, tmp_path):
        out = self.read(tmp_path, Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "c.jpg", quality=95)
        assert out.size == (20, 10)
        r, g, b = out.getpixel((10, 5))
        assert r > 200 and g < 60 and b < 60  # red

    def test_16_bit_scaled_not_clipped(self, tmp_path):
        arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(3, axis=0)
        p = tmp_path / "deep.png"
        Image.fromarray(arr).save(p)
        with Image.open(p) as im:
            assert im.mode.startswith("I")
        out = np.asarray(read_image(p))
        assert out.shape == (3, 4, 3)
        assert out[0, :, 0].tolist() == [0, 1, 128, 255]

    def test_16_bit_tiff(self, tmp_path):
        arr = np.full((6, 8), 1000, dtype=np.uint16)
        out = self.read(tmp_path, Image.fromarray(arr), "deep.tif")
        assert out.getpixel((0, 0)) == (4, 4, 4)  # 1000 * 255 / 65535 = 3.9

    def test_exif_orientation_6(self, tmp_path):
        arr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
        arr[:5, :5] = (255, 0, 0)  # red stored top-left
        im = Image.fromarray(arr)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        out = self.read(tmp_path, im, "rot.jpg", exif=exif.tobytes(), quality=95)
        assert out.size == (20, 40)  # transposed
        r, g, b = out.getpixel((17, 2))  # stored top-left is now top-right
        assert r > 200 and g < 60 and b < 60

    def test_one_frame_gif_is_image(self, tmp_path):
        p = tmp_path / "still.gif"
        Image.new("RGB", (12, 8), (255, 0, 0)).save(p)
        assert probe_kind(p) == "image"
        m = read_media(p)
        assert m.kind == "image" and m.frames.shape == (1, 8, 12, 3)

    def test_multi_frame_gif_is_video(self, tmp_path):
        p = tmp_path / "anim.gif"
        frames = [Image.new("RGB", (12, 8), (40 * i, 0, 0)) for i in range(5)]
        frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
        assert probe_kind(p) == "video"
        m = read_media(p)
        assert m.kind == "video" and m.frames.shape == (5, 8, 12, 3)
        assert m.fps == pytest.approx(10.0, rel=0.1)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


def test_resize_center_crop_matches_torchvision_formula():
    img = Image.fromarray(noise_image(400, 300))  # 300 wide, 400 high
    out = resize_center_crop(img, 256)
    # torchvision: short side 256, long int(256 * 400 / 300) = 341; top = round((341 - 256) / 2) = 42
    expected = img.resize((256, 341), Image.Resampling.BICUBIC).crop((0, 42, 256, 298))
    assert out.size == (256, 256)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))


@pytest.mark.parametrize("width,height,side", [(2, 700, 64), (5, 300, 48), (4, 900, 32), (10, 400, 64)])
def test_resize_center_crop_of_a_thin_strip_matches_torchvision(width, height, side):
    # a strip this thin is enlarged past MAX_RESIZE_FACTOR times the output, so only the kept region is
    # resized: one resize(box=) over both axes was up to 21/255 off Resize + CenterCrop (probe ED)
    img = Image.fromarray(noise_image(height, width))
    long_side = int(side * height / width)
    assert side * long_side > MAX_RESIZE_FACTOR * side * side  # the region path
    top = int(round((long_side - side) / 2.0))
    expected = img.resize((side, long_side), Image.Resampling.BICUBIC).crop((0, top, side, top + side))
    np.testing.assert_array_equal(np.asarray(resize_center_crop(img, side)), np.asarray(expected))
    wide = img.transpose(Image.Transpose.TRANSPOSE)  # the same strip lying down: crosswise offsets
    expected = wide.resize((long_side, side), Image.Resampling.BICUBIC).crop((top, 0, top + side, side))
    np.testing.assert_array_equal(np.asarray(resize_center_crop(wide, side)), np.asarray(expected))


def test_resize_center_crop_tuple_and_identity():
    img = Image.fromarray(noise_image(300, 400))
    out = resize_center_crop(img, (100, 300))  # (h, w): scale max(100/300, 300/400) = 0.75
    assert out.size == (300, 100)
    expected = img.resize((300, 225), Image.Resampling.BICUBIC).crop((0, 62, 300, 162))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    same = Image.fromarray(noise_image(64, 64))
    np.testing.assert_array_equal(np.asarray(resize_center_crop(same, 64)), np.asarray(same))


def test_resize_and_pad_geometry():
    img = Image.new("RGB", (100, 30), (255, 255, 255))
    out = resize_and_pad(img, 64)
    assert out.size == (64, 64)
    arr = np.asarray(out)
    # 100x30 -> 64 x ceil(19.2) = 20 rows, pasted at y = (64 - 20) // 2 = 22
    assert arr[:22].max() == 0 and arr[42:].max() == 0
    assert arr[22:42].min() == 255
    out = resize_and_pad(Image.new("RGB", (30, 100), (255, 255, 255)), (50, 80))
    arr = np.asarray(out)
    assert arr.shape == (50, 80, 3)
    cols = np.nonzero(arr[25, :, 0])[0]  # 15 (= ceil(30 * 0.5)) columns from x = 32
    assert cols.min() == 32 and cols.max() == 46


def test_resize_and_pad_rounds_its_scale_as_the_official_code():
    """Probe N: the official ``resize_and_pad_image`` scales by the float ``target / side``, so a
    360p or 720p video frame at 432 gets ceil(243.00000000000003) = 244 rows; exact integer
    arithmetic gave 243, a different resize of every frame."""
    for w, h in ((640, 360), (1280, 720)):
        arr = np.asarray(resize_and_pad(Image.new("RGB", (w, h), (255, 255, 255)), 432))
        rows = np.nonzero(arr[:, 200, 0])[0]
        assert (rows.min(), rows.max()) == (94, 337)  # 244 rows from y = (432 - 244) // 2
        arr = np.asarray(resize_and_pad(Image.new("RGB", (h, w), (255, 255, 255)), 432))
        cols = np.nonzero(arr[200, :, 0])[0]
        assert (cols.min(), cols.max()) == (94, 337)


def test_resize_bad_sizes():
    img = Image.new("RGB", (8, 8))
    for bad in (0, -3, (0, 5), (5,), "32", 2.5, True):
        with pytest.raises(UsageError):
            resize_center_crop(img, bad)
        with pytest.raises(UsageError):
            resize_and_pad(img, bad)


# ---------------------------------------------------------------------------------------------
# tensors and frame counts
# ---------------------------------------------------------------------------------------------


def test_frames_to_tensor():
    frames = np.zeros((2, 3, 4, 3), np.uint8)
    frames[0, 0, 0] = (0, 128, 255)
    x = frames_to_tensor(frames)
    assert x.shape == (3, 2, 3, 4) and x.dtype == torch.float32
    assert x[:, 0, 0, 0].tolist() == pytest.approx([-1.0, 128 / 255 * 2 - 1, 1.0], abs=1e-6)
    assert frames_to_tensor(frames[0]).shape == (3, 1, 3, 4)
    with pytest.raises(ValueError):
        frames_to_tensor(frames.astype(np.float32))


def test_tensor_to_frames_truncates():
    values = torch.tensor([0.999, 1.0, -1.0, 0.0, 2.0, -5.0, float("nan")])
    x = values.view(1, 1, -1).expand(3, 1, -1).clone()  # (3, H=1, W=7)
    out = tensor_to_frames(x)
    assert out.shape == (1, 1, 7, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [254, 255, 0, 127, 255, 0, 0]
    assert tensor_to_frames(x.to(torch.bfloat16).unsqueeze(1)).shape == (1, 1, 7, 3)
    with pytest.raises(ValueError):
        tensor_to_frames(torch.zeros(4, 2, 2))


def test_tensor_round_trip_within_one():
    frames = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    back = tensor_to_frames(frames_to_tensor(frames))
    diff = frames.astype(int) - back.astype(int)
    assert diff.min() >= 0 and diff.max() <= 1  # truncation only ever loses


def test_round_frames_examples():
    assert round_frames(16) == 17
    assert round_frames(16, "up") == 17
    assert round_frames(16, "down") == 13
    assert round_frames(17) == 17 and round_frames(17, "down") == 17
    assert round_frames(1) == 1 and round_frames(2, "down") == 1
    assert round_frames(0) == 1 and round_frames(0, "down") == 1  # documented: 0 -> 1
    with pytest.raises(UsageError):
        round_frames(-1)
    with pytest.raises(UsageError):
        round_frames(5, "nearest")
    assert [is_valid_frames(n) for n in (0, 1, 2, 5, 16, 17)] == [False, True, False, True, False, True]
    assert latent_frames(17) == 5 and latent_frames(1) == 1 and latent_frames(16) == 4
    assert pixel_frames(5) == 17 and pixel_frames(1) == 1
    with pytest.raises(UsageError):
        latent_frames(0)
    with pytest.raises(UsageError):
        pixel_frames(0)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=10_000))
def test_round_frames_properties(n):
    up, down = round_frames(n, "up"), round_frames(n, "down")
    assert is_valid_frames(up) and is_valid_frames(down)
    assert down <= n <= up and up - down in (0, 4)
    assert pixel_frames(latent_frames(up)) == up
    assert latent_frames(n) == latent_frames(down)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=500), st.integers(min_value=1, max_value=200))
def test_uniform_indices_properties(total, k):
    idx = uniform_indices(total, k)
    assert len(idx) == k and idx == sorted(idx)
    assert idx[0] == 0 and 0 <= idx[-1] <= total - 1
    if k > 1:
        assert idx[-1] == total - 1


# ---------------------------------------------------------------------------------------------
# paths
# ---------------------------------------------------------------------------------------------


def test_unique_path(tmp_path):
    p = tmp_path / "cat.png"
    assert unique_path(p) == p
    p.touch()
    assert unique_path(p) == tmp_path / "cat-1.png"
    (tmp_path / "cat-1.png").touch()
    assert unique_path(p) == tmp_path / "cat-2.png"


def test_slugify():
    assert slugify("A cat, sitting on a MAT!") == "a-cat-sitting-on-a-mat"
    assert slugify("Café crème") == "cafe-creme"
    assert slugify("") == "output" and slugify("???") == "output" and slugify("日本") == "output"
    long = slugify("word " * 30)
    assert len(long) <= 40 and not long.endswith("-") and long.startswith("word-word")
    assert slugify("x" * 100, max_len=10) == "x" * 10
    assert slugify("con") != "con"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=1, max_value=80))
def test_slugify_always_safe(text, max_len):
    s = slugify(text, max_len)
    assert s and len(s) <= max(max_len, len("output"))
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in s)
    assert not s.startswith("-") and not s.endswith("-")


# ---------------------------------------------------------------------------------------------
# atomic output
# ---------------------------------------------------------------------------------------------


class TestAtomicOutput:
    def test_success_and_temp_name(self, tmp_path):
        target = tmp_path / "out.mp4"
        with atomic_output(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.mp4.")
            assert tmp.suffix == ".mp4" and ".tmp" in tmp.name
            tmp.write_bytes(b"data")
            assert not target.exists()
        assert target.read_bytes() == b"data"
        assert os.listdir(tmp_path) == ["out.mp4"]
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask

    @pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
    def test_body_raises_leaves_nothing(self, tmp_path, exc_type):
        target = tmp_path / "out.png"
        with pytest.raises(exc_type):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"partial")
                raise exc_type("stop")
        assert os.listdir(tmp_path) == []

    def test_library_errors_in_the_body_are_not_write_failures(self, tmp_path):
        """ModelError and OutputError are OSErrors (as transformers reports a model it cannot load);
        one raised while an output is made is passed on as it is, not called a write failure."""
        from showo2_cli.errors import ModelError

        for error in (ModelError("the VAE is corrupt"), OSError(28, "No space left on device")):
            with pytest.raises(OSError) as e:
                with atomic_output(tmp_path / "out.png") as tmp:
                    tmp.write_bytes(b"partial")
                    raise error
            assert isinstance(e.value, OutputError) == (type(error) is OSError)
            assert str(e.value) == "the VAE is corrupt" or "no space left" in str(e.value)
            assert os.listdir(tmp_path) == []

    def test_existing_refused_unchanged(self, tmp_path):
        target = tmp_path / "keep.png"
        target.write_bytes(b"old")
        with pytest.raises(OutputError, match="exists; pass --overwrite") as exc:
            with atomic_output(target):
                pytest.fail("body must not run")
        assert_names(exc, target)
        with pytest.raises(OutputError):
            check_output_path(target)
        assert target.read_bytes() == b"old"
        with atomic_output(target, overwrite=True) as tmp:
            tmp.write_bytes(b"new")
        assert target.read_bytes() == b"new"
        assert os.listdir(tmp_path) == ["keep.png"]

    def test_target_appearing_meanwhile_is_not_clobbered(self, tmp_path):
        target = tmp_path / "race.png"
        with pytest.raises(OutputError, match="exists"):
            with atomic_output(target) as tmp:
                tmp.write_bytes(b"mine")
                target.write_bytes(b"theirs")
        assert target.read_bytes() == b"theirs"
        assert os.listdir(tmp_path) == ["race.png"]

    def test_missing_folder(self, tmp_path):
        target = tmp_path / "nope" / "out.png"
        with pytest.raises(OutputError, match="does not exist") as exc:
            with atomic_output(target):
                pass
        assert_names(exc, target)
        with pytest.raises(OutputError, match="does not exist"):
            check_output_path(target)
        assert not (tmp_path / "nope").exists()

    def test_target_is_directory(self, tmp_path):
        d = tmp_path / "out.png"
        d.mkdir()
        for overwrite in (False, True):
            with pytest.raises(OutputError, match="directory"):
                check_output_path(d, overwrite=overwrite)

    def test_parent_is_a_file(self, tmp_path):
        f = tmp_path / "file"
        f.touch()
        with pytest.raises(OutputError, match="not a folder"):
            check_output_path(f / "out.png")

    def test_read_only_folder_simulated(self, tmp_path, monkeypatch):
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
        with pytest.raises(OutputError, match="read-only"):
            check_output_path(tmp_path / "x.png")

    @pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores folder permissions")
    def test_read_only_folder_real(self, tmp_path):
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError, match="read-only"):
                write_image(ro / "x.png", noise_image())
        finally:
            ro.chmod(0o700)

    def test_check_output_path_writes_nothing(self, tmp_path):
        assert check_output_path(tmp_path / "a.png") == tmp_path / "a.png"
        assert check_output_path(str(tmp_path / "a.png")) == tmp_path / "a.png"
        assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# writing images and videos
# ---------------------------------------------------------------------------------------------


META = {"prompt": "a red fox\nin snow", "seed": 42, "steps": 50, "guidance": 5.0, "size": [432, 432]}


class TestWriteImage:
    def test_png_lossless_with_metadata(self, tmp_path):
        pixels = noise_image()
        p = write_image(tmp_path / "fox.png", pixels, metadata=META)
        assert p == tmp_path / "fox.png"
        np.testing.assert_array_equal(np.asarray(read_image(p)), pixels)
        assert read_png_metadata(p) == META
        assert read_metadata(p) == META
        with Image.open(p) as im:
            assert json.loads(im.info["showo2"]) == META
            params = im.info["parameters"]
        assert params.startswith("a red fox in snow | ") and "seed: 42" in params and "\n" not in params
        assert os.listdir(tmp_path) == ["fox.png"]

    def test_png_without_metadata(self, tmp_path):
        p = write_image(tmp_path / "plain.png", noise_image())
        assert read_png_metadata(p) is None
        with pytest.raises(InputError, match="not a PNG"):
            read_png_metadata(write_image(tmp_path / "x.jpg", noise_image()))

    @pytest.mark.parametrize("ext,tol", [(".jpg", 12.0), (".jpeg", 12.0), (".webp", 12.0), (".bmp", 0.0)])
    def test_other_formats(self, tmp_path, ext, tol):
        pixels = gradient_frames(1, 40, 56)[0]
        p = write_image(tmp_path / f"img{ext}", pixels, metadata=META)
        back = np.asarray(read_image(p))
        assert back.shape == pixels.shape
        assert np.abs(back.astype(int) - pixels).mean() <= tol
        if ext != ".bmp":
            assert read_metadata(p) == META  # EXIF UserComment

    def test_webp_lossless(self, tmp_path):
        pixels = noise_image()
        p = write_image(tmp_path / "l.webp", pixels, lossless=True)
        np.testing.assert_array_equal(np.asarray(read_image(p)), pixels)

    def test_unknown_extension(self, tmp_path):
        with pytest.raises(UsageError, match=r"\.png, \.jpg") as exc:
            write_image(tmp_path / "x.xyz", noise_image())
        assert_names(exc, tmp_path / "x.xyz")
        assert os.listdir(tmp_path) == []

    def test_refuses_existing(self, tmp_path):
        p = tmp_path / "x.png"
        p.write_bytes(b"old")
        with pytest.raises(OutputError, match="--overwrite"):
            write_image(p, noise_image())
        assert p.read_bytes() == b"old"
        write_image(p, noise_image(), overwrite=True)
        assert read_image(p).size == (56, 40)

    def test_bad_pixels(self, tmp_path):
        with pytest.raises(ValueError):
            write_image(tmp_path / "x.png", np.zeros((4, 4), np.float32))
        assert os.listdir(tmp_path) == []


class TestWriteVideo:
    @pytest.mark.parametrize("ext", [".mp4", ".webm", ".mkv", ".mov"])
    def test_round_trip_av(self, tmp_path, ext):
        frames = gradient_frames(9, 48, 64)
        p = write_video(tmp_path / f"clip{ext}", frames, fps=8, metadata=META)
        m = read_video(p)
        assert m.frames.shape == frames.shape and m.total_frames == 9
        assert m.fps == pytest.approx(8.0, rel=0.01)
        assert np.abs(m.frames.astype(int) - frames).mean() < 4
        assert read_metadata(p) == META
        assert probe_kind(p) == "video"
        assert os.listdir(tmp_path) == [p.name]

    def test_mp4_uses_h264_and_pads_odd_sizes(self, tmp_path):
        frames = gradient_frames(5, 33, 45)
        p = write_video(tmp_path / "odd.mp4", frames, fps=24)
        with av.open(str(p)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
        m = read_video(p)
        assert m.frames.shape == (5, 34, 46, 3)
        assert np.abs(m.frames[:, :33, :45].astype(int) - frames).mean() < 4
        assert m.fps == pytest.approx(24.0)

    def test_mpeg4_fallback(self, tmp_path, monkeypatch):
        monkeypatch.setitem(media.VIDEO_CONTAINERS, ".mp4", ("mp4", ("no-such-encoder", "mpeg4")))
        p = write_video(tmp_path / "fallback.mp4", gradient_frames(5, 32, 32), fps=10)
        with av.open(str(p)) as c:
            assert c.streams.video[0].codec_context.name == "mpeg4"
        assert read_video(p).frames.shape == (5, 32, 32, 3)

    def test_no_encoder_leaves_nothing(self, tmp_path, monkeypatch):
        monkeypatch.setitem(media.VIDEO_CONTAINERS, ".mp4", ("mp4", ("no-such-encoder",)))
        with pytest.raises(OutputError, match="encoder"):
            write_video(tmp_path / "x.mp4", gradient_frames(3, 8, 8), fps=8)
        assert os.listdir(tmp_path) == []

    def test_gif(self, tmp_path):
        frames = gradient_frames(7, 30, 40)
        p = write_video(tmp_path / "clip.gif", frames, fps=10, metadata=META)
        assert probe_kind(p) == "video"
        m = read_video(p)
        assert m.frames.shape == (7, 30, 40, 3)
        assert m.fps == pytest.approx(10.0, rel=0.1)
        assert np.abs(m.frames.astype(int) - frames).mean() < 8  # 256-colour palette
        assert read_metadata(p) == META
        with Image.open(p) as im:
            assert im.info["loop"] == 0 and im.info["duration"] == 100

    def test_webm_sampling_without_frame_count(self, tmp_path):
        frames = gradient_frames(13, 32, 32)
        p = write_video(tmp_path / "s.webm", frames, fps=12)
        with av.open(str(p)) as c:
            assert c.streams.video[0].frames == 0  # webm does not store it: counted first
        full = read_video(p).frames
        m = read_video(p, num_frames=5)
        assert m.total_frames == 13
        np.testing.assert_array_equal(m.frames, full[uniform_indices(13, 5)])

    def test_single_frame_to_image_extension(self, tmp_path):
        frames = gradient_frames(1, 16, 16)
        p = write_video(tmp_path / "still.png", frames, fps=8, metadata=META)
        np.testing.assert_array_equal(np.asarray(read_image(p)), frames[0])
        assert read_png_metadata(p) == META
        with pytest.raises(UsageError, match="3-frame"):
            write_video(tmp_path / "many.png", gradient_frames(3, 16, 16), fps=8)

    def test_bad_arguments(self, tmp_path):
        frames = gradient_frames(3, 16, 16)
        with pytest.raises(UsageError, match="supported"):
            write_video(tmp_path / "x.avi", frames, fps=8)
        for fps in (0, -1, float("nan"), float("inf"), "fast"):
            with pytest.raises(UsageError):
                write_video(tmp_path / "x.mp4", frames, fps=fps)
        with pytest.raises(ValueError):
            write_video(tmp_path / "x.mp4", frames.astype(np.float32), fps=8)
        assert os.listdir(tmp_path) == []

    def test_refuses_existing(self, tmp_path):
        p = tmp_path / "v.mp4"
        p.write_bytes(b"old")
        with pytest.raises(OutputError, match="--overwrite"):
            write_video(p, gradient_frames(3, 16, 16), fps=8)
        assert p.read_bytes() == b"old"
        write_video(p, gradient_frames(3, 16, 16), fps=8, overwrite=True)
        assert read_video(p).total_frames == 3


# ---------------------------------------------------------------------------------------------
# special videos made with PyAV directly
# ---------------------------------------------------------------------------------------------


def _encode(path: Path, frames: np.ndarray, pts: list[int], time_base: Fraction, rotation: int | None = None):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = "yuv420p"
        s.codec_context.time_base = time_base
        if rotation is not None:
            s.set_display_rotation(rotation)
        for f, t in zip(frames, pts, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = t
            vf.time_base = time_base
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_variable_frame_rate(tmp_path):
    p = tmp_path / "vfr.mp4"
    frames = gradient_frames(10, 32, 32)
    _encode(p, frames, [0, 40, 120, 130, 200, 400, 410, 420, 600, 700], Fraction(1, 1000))
    m = read_video(p)
    assert m.frames.shape == (10, 32, 32, 3) and m.total_frames == 10
    assert m.fps is not None and 0 < m.fps < 1000
    assert read_video(p, num_frames=4).frames.shape == (4, 32, 32, 3)


def test_display_rotation_applied(tmp_path):
    p = tmp_path / "phone.mp4"
    frames = np.zeros((3, 32, 64, 3), np.uint8)  # stored 64 wide, 32 high
    frames[:, :8, :8] = (255, 0, 0)  # red stored top-left
    _encode(p, frames, [0, 1, 2], Fraction(1, 25), rotation=90)  # display 90 degrees counter-clockwise
    m = read_video(p)
    assert m.frames.shape == (3, 64, 32, 3)
    assert m.frames[0, -4, 4, 0] > 200 and m.frames[0, 4, 4, 0] < 60  # top-left went bottom-left


# ---------------------------------------------------------------------------------------------
# media given in memory (found by probing the Python API)
# ---------------------------------------------------------------------------------------------


class TestMediaInMemory:
    def test_sizes_are_checked_from_the_shape_before_any_copy(self):
        """A broadcast 12000x12000 float view was converted in full (6.6 GB, then MemoryError) before
        the pixel limit was looked at; a meta tensor tried to allocate 120 GB."""
        import torch

        from showo2_cli.errors import ResourceError
        from showo2_cli.media import image_input

        huge = np.broadcast_to(np.float32(0.5), (100_000, 100_000, 3))
        with pytest.raises(ResourceError, match="too large"):
            image_input(huge)
        with pytest.raises(ResourceError, match="too large"):
            image_input(torch.zeros(3, 1, 1).expand(3, 100_000, 100_000))
        with pytest.raises(TypeError, match="meta"):
            image_input(torch.empty(3, 100_000, 100_000, device="meta"))
        with pytest.raises(TypeError, match="numbers"):
            image_input(np.ones((8, 8, 3), np.complex64))

    def test_16_bit_pixels_are_16_bit_in_any_byte_order_and_any_form(self, tmp_path):
        """'>u2' arrays were read as 0-255; a PIL I;16 image (and a 16-bit PNG) holding small values
        was taken as 8-bit, 257 times too bright, while the same uint16 array was scaled."""
        from showo2_cli.media import image_input

        for arr in (np.full((4, 4), 65535, ">u2"), np.full((4, 4), 65535, "<u2")):
            assert np.asarray(image_input(arr))[0, 0].tolist() == [255, 255, 255]
        dark = np.full((4, 4), 200, np.uint16)
        Image.fromarray(dark).save(tmp_path / "dark.png")
        forms = [dark, Image.fromarray(dark), tmp_path / "dark.png"]
        assert {int(np.asarray(image_input(f))[0, 0, 0]) for f in forms} == {1}  # 200 * 255 / 65535

    def test_animated_and_lazy_pil_images(self, media_dir, tmp_path):
        """An animated PIL image was read as one still (its current frame), silently; a list of one
        image was a one-frame video; a lazy image whose file was closed failed deep inside."""
        from showo2_cli.media import image_input, read_media

        with Image.open(media_dir / "waves.gif") as gif:
            clip = read_media(gif)
            assert clip.kind == "video" and clip.frames.shape[0] == gif.n_frames > 1
            with pytest.raises(ValueError, match="animated image of"):
                image_input(gif)
            assert read_media(gif, num_frames=4).frames.shape[0] == 4
        one = Image.new("RGB", (16, 16), "red")
        assert read_media([one]).kind == "image"
        one.save(tmp_path / "r.png")
        with open(tmp_path / "r.png", "rb") as fh:
            lazy = Image.open(fh)
        with pytest.raises(ValueError, match="cannot be read"):
            image_input(lazy)
