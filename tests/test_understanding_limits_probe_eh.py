"""Understanding what is too big for the limits (probe EH): ``--vae-tiling auto`` tiles a caption's
encode that fits only in tiles, as ``encode``, ``decode`` and generation do."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from showo2_cli.errors import ResourceError


@pytest.fixture(scope="module")
def demo():
    from showo2_cli import api

    return api.load("demo")


def test_caption_vae_tiling_auto_tiles_what_fits_only_in_tiles(demo):
    """A 432 px encode on the demo needs about 0.175 GB whole, 0.074 GB in 256 px tiles: under
    ``--max-memory 0.1`` the default ``auto`` refused it ("needs about 175.1 MB ... more than the
    100.0 MB") instead of tiling it; it now runs in tiles, records them, and answers as
    ``--vae-tiling on`` does. ``off`` still refuses, naming ``--vae-tiling auto``."""
    from showo2_cli import api
    from showo2_cli.options import CaptionOptions

    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (432, 432, 3), dtype=np.uint8))
    tight = CaptionOptions(size=432, max_new_tokens=4, max_memory_gb=0.1)
    assert demo.vae.tiling == "auto"
    auto = api.caption(demo, photo, tight)
    assert auto.vae_tiles == [256, 256, 192, 192]
    roomy = api.caption(demo, photo, CaptionOptions(size=432, max_new_tokens=4))  # fits whole: not tiled
    assert roomy.vae_tiles is None
    try:
        demo.vae.tiling = "on"
        on = api.caption(demo, photo, CaptionOptions(size=432, max_new_tokens=4))
        assert on.vae_tiles == [256, 256, 192, 192] and on.answers == auto.answers
        demo.vae.tiling = "off"
        with pytest.raises(ResourceError, match=r"tile the VAE with --vae-tiling auto"):
            api.caption(demo, photo, tight)
    finally:
        demo.vae.tiling = "auto"


def test_caption_check_before_loading_counts_auto_tiling(demo):
    """The command line's check before the load gives the loaded check's verdict: ``auto`` passes a
    job that fits in tiles (it refused it before the load, at ``--vae-tiling auto``)."""
    from showo2_cli.pipelines.understand import check_understanding_memory, understanding_weights

    args = (demo.spec, demo.dtype, 1, 432, False, 0.1, torch.device("cpu"), demo.vae.base_dim,
            understanding_weights(demo), demo.vae.dtype)
    need, tiled = check_understanding_memory(*args, tiling="auto")
    assert tiled and need == pytest.approx(0.064, abs=0.002)
    with pytest.raises(ResourceError, match=r"needs about 175\.\d MB"):
        check_understanding_memory(*args, tiling="off")


def _photo(path, width: int, height: int, **save) -> np.ndarray:
    """A smooth photo-like JPEG (gradients and a disc) of ``width x height``, written to ``path``."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    disc = ((x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2) * 120.0
    arr = np.stack([x / width * 255, y / height * 255, 255 - disc - x / width * 100], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path, "JPEG", quality=92, **save)
    return arr


def test_a_photo_over_the_pixel_limit_is_decoded_reduced_for_understanding(tmp_path):
    """A 24 or 48 MP phone photo sent to a server (``--max-input-pixels`` 16.7 MP) was a 422 ("too
    large"), though understanding resizes it to 432 px: a baseline JPEG over the limit is now decoded
    reduced in the DCT (Pillow's draft) to the smallest 1/2, 1/4, 1/8 scale that keeps the short side
    the caller needs, never allocating the full image. Here a 1600x1200 JPEG under a 500,000-pixel
    limit, 64 px needed: decoded at 1/8, 200x150, close to the full decode resized (mean under
    1/255). A JPEG within the limit decodes in full as before; a progressive JPEG (it holds the whole
    image's coefficients) and a PNG over the limit are refused as before."""
    from showo2_cli import media as M
    from showo2_cli.errors import ResourceError

    photo = tmp_path / "photo.jpg"
    _photo(photo, 1600, 1200)
    with pytest.raises(ResourceError, match="1600x1200 = 1,920,000 pixels is more than the limit of 500,000"):
        M.read_image(photo, max_pixels=500_000)  # no size asked for: refused as before
    small = M.read_image(photo, max_pixels=500_000, min_side=64)
    assert small.size == (200, 150) and small.mode == "RGB"
    full = M.read_image(photo, max_pixels=2_000_000)
    a, b = (np.asarray(M.resize_center_crop(im, 64), dtype=np.int16) for im in (full, small))
    assert np.abs(a - b).mean() < 1.0
    assert M.read_image(photo, max_pixels=500_000, min_side=200).size == (400, 300)  # 1/4: 150 < 200
    with pytest.raises(ResourceError):  # 1/8 leaves 150 < 1200/2=600 px: no scale fits the limit
        M.read_image(photo, max_pixels=500_000, min_side=700)
    # within the limit: the full decode, pixel for pixel, min_side or not
    assert np.array_equal(np.asarray(M.read_image(photo, max_pixels=2_000_000, min_side=64)), np.asarray(full))
    progressive, png = tmp_path / "progressive.jpg", tmp_path / "photo.png"
    _photo(progressive, 1600, 1200, progressive=True)
    full.save(png)
    for refused in (progressive, png):
        with pytest.raises(ResourceError, match="more than the limit of 500,000"):
            M.read_image(refused, max_pixels=500_000, min_side=64)


def test_a_chat_attaches_a_photo_over_the_server_limit_upright(demo, tmp_path):
    """What the server does with an image part (``Conversation.attach`` under ``--max-input-pixels``):
    a portrait phone photo (EXIF orientation 6) over the limit was refused; it is now read reduced,
    upright, and answered about as the same photo within the limit is, nearly (the encoded tokens
    of a 64 px input differ by little)."""
    from showo2_cli.chat import Conversation

    photo = tmp_path / "portrait.jpg"
    arr = _photo(tmp_path / "plain.jpg", 1600, 1200)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    Image.fromarray(arr).save(photo, "JPEG", quality=92, exif=exif)
    reduced = Conversation(demo).attach(photo, max_pixels=500_000)
    whole = Conversation(demo).attach(photo, max_pixels=2_000_000)
    assert reduced.tokens.shape == whole.tokens.shape
    assert torch.nn.functional.cosine_similarity(reduced.tokens.flatten(), whole.tokens.flatten(), dim=0) > 0.99
    from showo2_cli import media as M

    assert M.read_image(photo, max_pixels=500_000, min_side=64).size == (150, 200)  # portrait, upright


def test_caption_command_reads_a_photo_over_the_limit(tmp_path, monkeypatch, capsys):
    """``caption`` checked its image before the load by decoding it whole against the limit, so a
    JPEG over ``SHOWO2_MAX_PIXELS`` (default 8192x8192: a 108 MP 12000x9000 photo) was exit 6 "too
    large" before the reduced read could take it; it is now read reduced there too, and answered."""
    import json

    from showo2_cli.cli import main

    photo = tmp_path / "photo.jpg"
    _photo(photo, 1600, 1200)
    monkeypatch.setenv("SHOWO2_MAX_PIXELS", "500000")
    assert main(["caption", str(photo), "--max-new-tokens", "2", "--json", "--model", "demo"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "image" and out["answers"][0]["tokens"] == 2
