"""Media as devices write it: what a player or a viewer shows must be what is read.

Non-square pixels (DVD, HDV, anamorphic footage), transparency (dropped by every path, as the
official preprocessing drops it) and the EXIF orientation of a PIL image opened by the caller.
Every file is generated here, small.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from PIL import Image

from showo2_cli import media as M
from showo2_cli.media import image_input, read_image, read_media, read_video


def _encode(path, frames: np.ndarray, codec="libx264", pix_fmt="yuv420p", sar=None, rotation=None, src="rgb24"):
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height = frames.shape[2], frames.shape[1]
        s.pix_fmt = pix_fmt
        if sar is not None:
            s.codec_context.sample_aspect_ratio = sar
        if rotation is not None:
            s.set_display_rotation(rotation)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format=src).reformat(format=pix_fmt)
            vf.pts = i
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


# ---------------------------------------------------------------------------------------------
# non-square pixels


def _half_white(n=3, h=48, w=72) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:, :, : w // 2] = 255  # the left half white: its width shows the display aspect
    return frames


def test_anamorphic_video_is_read_at_its_display_aspect(tmp_path):
    p = tmp_path / "dvd.mp4"
    _encode(p, _half_white(), sar=Fraction(32, 27))  # 72x48 stored, shown 16:9 (85x48), as a DVD's 720x480
    for m in (read_video(p), read_video(p, num_frames=2), read_media(p)):
        assert m.frames.shape[1:] == (48, 85, 3)
        white = (m.frames[0, 24, :, 0] > 128).sum()
        assert abs(int(white) - 43) <= 1  # 36 stored pixels x 32/27


def test_narrow_pixels_and_rotation(tmp_path):
    p = tmp_path / "narrow.mp4"
    _encode(p, _half_white(), sar=Fraction(2, 3), rotation=-90)  # shown 48x48, then turned upright
    m = read_video(p)
    assert m.frames.shape[1:] == (48, 48, 3)
    assert m.frames[0, 2, 24, 0] > 200 and m.frames[0, -3, 24, 0] < 60  # the white half went to the top


def test_square_or_absurd_sample_aspect_is_ignored(tmp_path):
    for sar in (Fraction(1, 1), Fraction(255, 1)):  # square, and a corrupt header's ratio
        p = tmp_path / f"sq{sar.numerator}.mp4"
        _encode(p, _half_white(), sar=sar)
        assert read_video(p).frames.shape[1:] == (48, 72, 3)


# ---------------------------------------------------------------------------------------------
# transparency: dropped, as the official preprocessing does (the reference, section 10: "Palette/RGBA
# images are converted by dropping alpha"), the same by every path


def _logo() -> np.ndarray:
    rgba = np.zeros((16, 16, 4), np.uint8)  # transparent, stored black (what encoders write)
    rgba[4:12, 4:12] = (255, 0, 0, 255)  # an opaque red square
    rgba[0, 15] = (0, 0, 0, 128)  # a half-transparent black shadow
    return rgba


def _check_logo(arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    assert arr[0, 0].tolist() == [0, 0, 0]  # the stored colour, as PIL's convert("RGB") gives it
    assert arr[8, 8].tolist() == [255, 0, 0]
    assert arr[0, 15].tolist() == [0, 0, 0]


def test_transparency_is_dropped_the_same_by_every_path(tmp_path):
    logo = _logo()
    for name, kw in (("logo.png", {}), ("logo.webp", {"lossless": True}), ("logo.tif", {})):
        Image.fromarray(logo, "RGBA").save(tmp_path / name, **kw)
        _check_logo(read_image(tmp_path / name))
        _check_logo(read_media(tmp_path / name).frames[0])
        with Image.open(tmp_path / name) as im:
            _check_logo(image_input(im))
    _check_logo(image_input(logo))
    _check_logo(read_media(Image.fromarray(logo, "RGBA")).frames[0])
    frames = np.stack([logo] * 3)
    for name, codec, pix_fmt in (("a.mov", "png", "rgba"), ("q.mov", "qtrle", "argb")):
        _encode(tmp_path / name, frames, codec=codec, pix_fmt=pix_fmt, src="rgba")
        m = read_video(tmp_path / name)
        assert m.frames.shape == (3, 16, 16, 3)
        _check_logo(m.frames[2])


# ---------------------------------------------------------------------------------------------
# EXIF orientation of a PIL image given in memory


def _portrait_phone_photo(tmp_path):
    upright = np.zeros((40, 20, 3), np.uint8)  # shown 20 wide, 40 high
    upright[:8, :8] = (255, 0, 0)  # red top-left as displayed
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the sensor's landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    p = tmp_path / "phone.jpg"
    stored.save(p, exif=exif.tobytes(), quality=98, subsampling=0)
    return p


def test_a_pil_image_is_upright_as_its_file(tmp_path):
    p = _portrait_phone_photo(tmp_path)
    by_path = np.asarray(read_image(p))
    assert by_path.shape == (40, 20, 3) and by_path[3, 3, 0] > 200
    with Image.open(p) as im:
        assert np.array_equal(np.asarray(image_input(im)), by_path)
        assert np.array_equal(read_media(im).frames[0], by_path)
        assert np.array_equal(np.asarray(image_input(im.convert("RGB"))), by_path)  # converted, tag kept
    with Image.open(p) as im:
        from PIL import ImageOps

        made_upright = ImageOps.exif_transpose(im)  # the tag is dropped: not turned twice
        assert np.array_equal(np.asarray(image_input(made_upright)), by_path)
    assert M.read_media([Image.open(p), Image.open(p)]).frames.shape == (2, 40, 20, 3)
