"""Option combinations since the last combination rounds (probe EG): what each output records
of the options that made it."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from showo2_cli import media as M
from showo2_cli.cli import main
from showo2_cli.pipelines.latents import load_latents


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_encode_and_decode_record_a_half_precision_dtype(tmp_path, capsys):
    """``encode --dtype bf16`` and ``decode --dtype bf16`` record ``dtype`` (in the latents file, the
    output's metadata and ``--json``), as generation does: a bf16 VAE gives other latents and pixels
    than fp32's (a decode of a 288 px photo 18/255 apart), and the records said nothing of it."""
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
    lat = {}
    for dtype in ("fp32", "bf16"):
        lat[dtype] = tmp_path / f"{dtype}.safetensors"
        code, out, err = run(["encode", photo, "-o", lat[dtype], "--model", "demo", "--size", 64,
                              "--dtype", dtype, "--json", "--quiet"], capsys)
        assert code == 0, err
        assert json.loads(out).get("dtype") == (None if dtype == "fp32" else "bf16")
        assert load_latents(lat[dtype])[1].get("dtype") == (None if dtype == "fp32" else "bf16")
    z32, zbf = load_latents(lat["fp32"])[0], load_latents(lat["bf16"])[0]
    assert float((z32 - zbf).abs().max()) > 1e-3  # the dtype changed the latents: the record says why
    assert load_latents(lat["fp32"])[1].keys() | {"dtype"} == load_latents(lat["bf16"])[1].keys()

    pixels = {}
    for dtype in ("fp32", "bf16"):
        png = tmp_path / f"{dtype}.png"
        code, out, err = run(["decode", lat["fp32"], "-o", png, "--model", "demo", "--dtype", dtype, "--json",
                              "--quiet"], capsys)
        assert code == 0, err
        want = None if dtype == "fp32" else "bf16"
        assert json.loads(out).get("dtype") == want
        assert M.read_png_metadata(png).get("dtype") == want
        pixels[dtype] = np.asarray(M.read_image(png).convert("RGB"), dtype=np.int16)
    assert int(np.abs(pixels["fp32"] - pixels["bf16"]).max()) > 0  # (18/255 for a 288 px photo)


def test_caption_records_the_vae_tiles_it_encoded_in():
    """A caption whose media the VAE encoded in tiles (``--vae-tiling on`` with frames larger than a
    tile: the released models' 432 px, or ``CaptionOptions(size=272)``) says so (``vae_tiles``), as
    generation and ``encode`` do: tiled latents differ from whole ones (a 288 px photo's by 0.21),
    and so may the answers. The caption's record said nothing of it."""
    from showo2_cli import api
    from showo2_cli.options import CaptionOptions, RuntimeOptions

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (272, 272, 3), dtype=np.uint8))
    model = api.load("demo", runtime=RuntimeOptions(vae_tiling="on"))
    assert api.caption(model, photo, CaptionOptions(size=272, max_new_tokens=1)).vae_tiles == [256, 256, 192, 192]
    assert api.caption(model, photo, CaptionOptions(max_new_tokens=1)).vae_tiles is None  # 64 px: within a tile
    model.vae.tiling = "off"
    assert api.caption(model, photo, CaptionOptions(size=272, max_new_tokens=1)).vae_tiles is None
