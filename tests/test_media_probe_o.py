"""Probe O: the media files we write, opened by independent readers (Pillow, PyAV).

Parameters stored in every output must come back whole (non-ASCII prompts, prompts of the
longest length accepted), in the places other tools look for them.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from showo2_cli.errors import UsageError
from showo2_cli.media import write_image
from showo2_cli.media.metadata import JPEG_MAX_EXIF_BYTES, TRUNCATED_KEY, read_metadata
from showo2_cli.options import MAX_PROMPT_CHARS

_IMG = np.full((16, 16, 3), 90, np.uint8)


def _user_comment(path) -> tuple[bytes, str | None]:
    with Image.open(path) as im:
        exif = im.getexif()
        return exif.get_ifd(0x8769)[0x9286], exif.endian


def test_jpeg_keeps_the_longest_non_ascii_prompt(tmp_path):
    # 10,000 emoji as \u escapes are 120 KB of EXIF: the write failed after the generation
    prompt = "\U0001f431" * MAX_PROMPT_CHARS
    p = write_image(tmp_path / "cat.jpg", _IMG, metadata={"prompt": prompt, "seed": 1})
    back = read_metadata(p)
    assert back == {"prompt": prompt, "seed": 1}
    raw, endian = _user_comment(p)  # as exiftool reads it: UNICODE, in the EXIF's byte order
    assert raw.startswith(b"UNICODE\x00")
    text = raw[8:].decode("utf-16-le" if endian == "<" else "utf-16-be")
    assert text.startswith('{"prompt":"\U0001f431\U0001f431')


def test_jpeg_metadata_too_large_for_exif_is_shortened_and_says_so(tmp_path):
    prompt, negative = "\U0001f431" * MAX_PROMPT_CHARS, "\U0001f436" * MAX_PROMPT_CHARS
    meta = {"prompt": prompt, "negative_prompt": negative, "seed": 7, "steps": 30}
    p = write_image(tmp_path / "two.jpg", _IMG, metadata=meta)
    back = read_metadata(p)
    assert back["seed"] == 7 and back["steps"] == 30
    assert sorted(back[TRUNCATED_KEY]) == ["negative_prompt", "prompt"]
    assert 1000 < len(back["prompt"]) < MAX_PROMPT_CHARS and prompt.startswith(back["prompt"])
    assert 1000 < len(back["negative_prompt"]) < MAX_PROMPT_CHARS and negative.startswith(back["negative_prompt"])
    with Image.open(p) as im:
        assert len(im.info["exif"]) <= JPEG_MAX_EXIF_BYTES


def test_ascii_prompt_stays_ascii_in_exif(tmp_path):
    p = write_image(tmp_path / "a.jpg", _IMG, metadata={"prompt": "a red circle", "seed": 1})
    raw, _ = _user_comment(p)
    assert raw == b'ASCII\x00\x00\x00{"prompt":"a red circle","seed":1}'
    p = write_image(tmp_path / "a.webp", _IMG, metadata={"prompt": "\u732b" * MAX_PROMPT_CHARS})
    assert read_metadata(p) == {"prompt": "\u732b" * MAX_PROMPT_CHARS}


def test_png_parameters_chunk_keeps_non_ascii_prompt(tmp_path):
    prompt = "一只红色的猫 café \U0001f431"
    p = write_image(tmp_path / "cat.png", _IMG, metadata={"prompt": prompt, "seed": 3})
    with Image.open(p) as im:
        assert im.info["parameters"] == f"{prompt} | seed: 3"  # was '?????? café ? | seed: 3'
    assert read_metadata(p) == {"prompt": prompt, "seed": 3}


def test_jpeg_keeps_full_colour_resolution_at_high_quality(tmp_path):
    from PIL import JpegImagePlugin

    yy, xx = np.mgrid[:64, :64]
    img = np.full((64, 64, 3), 255, np.uint8)
    img[(yy - 31.5) ** 2 + (xx - 31.5) ** 2 < 20**2] = (230, 20, 20)  # a red disc on white
    errors = {}
    for quality, sampling in ((95, 0), (90, 0), (75, 2)):  # 0: 4:4:4, 2: 4:2:0
        p = write_image(tmp_path / f"q{quality}.jpg", img, quality=quality)
        with Image.open(p) as im:
            assert JpegImagePlugin.get_sampling(im) == sampling
            errors[quality] = np.abs(np.asarray(im.convert("RGB"), np.int16) - img).max()
    assert errors[95] <= 16  # was 4:2:0 at 95: the disc's edge 30/255 off


def test_decode_to_an_image_names_every_video_format_it_writes(tmp_path, capsys):
    import torch

    from showo2_cli.cli import main
    from showo2_cli.media import VIDEO_WRITE_EXTS
    from showo2_cli.pipelines.latents import save_latents, write_decoded

    with pytest.raises(UsageError, match=r"\.mov/\.mkv"):  # was 'use .mp4, .webm or .gif'
        write_decoded(tmp_path / "x.png", np.zeros((5, 8, 8, 3), np.uint8), 8.0, None)
    with pytest.raises(UsageError, match=r"\.bmp for one frame or .*\.mkv"):
        write_decoded(tmp_path / "x.xyz", np.zeros((5, 8, 8, 3), np.uint8), 8.0, None)
    lat = save_latents(tmp_path / "z.latents.safetensors", torch.zeros(16, 2, 2, 2), {"kind": "video"})
    assert main(["decode", str(lat), "-o", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert all(ext in err for ext in VIDEO_WRITE_EXTS) and not (tmp_path / "x.png").exists()
