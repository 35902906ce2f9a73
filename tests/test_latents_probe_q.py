"""Probe Q: latents files as users of diffusers' ``AutoencoderKLWan`` make and read them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import showo2_cli
from showo2_cli.cli import main
from showo2_cli.errors import InputError
from showo2_cli.media.metadata import read_metadata
from showo2_cli.pipelines import latents as L

VAE_DIR = Path(showo2_cli.__file__).parent / "assets" / "demo" / "vae"


@pytest.fixture(scope="module")
def wan():
    """diffusers' own VAE from the demo's VAE folder, a 32x32 picture of the demo's world, and its pixels."""
    from diffusers import AutoencoderKLWan

    vae = AutoencoderKLWan.from_pretrained(VAE_DIR).eval()
    yy, xx = np.mgrid[0:32, 0:32]
    img = np.full((32, 32, 3), 255, np.uint8)
    img[(xx - 15) ** 2 + (yy - 17) ** 2 < 8 ** 2] = [220, 30, 30]
    x = torch.from_numpy(img).permute(2, 0, 1).float()[None, :, None] / 127.5 - 1  # (1, 3, 1, H, W)
    return vae, img, x


def _stats(vae):
    shape = (1, -1, 1, 1, 1)
    return (torch.tensor(vae.config.latents_mean).view(shape), torch.tensor(vae.config.latents_std).view(shape))


def _pixels(decoded: torch.Tensor) -> np.ndarray:
    """diffusers' (1, 3, 1, H, W) in [-1, 1] -> (H, W, 3) in [0, 255], unrounded."""
    return ((decoded.clamp(-1, 1)[0, :, 0].permute(1, 2, 0) + 1) * 127.5).numpy()


def _png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.float64)


def test_raw_diffusers_latents_decode_as_diffusers_does_with_raw(wan, tmp_path, capsys):
    """A metadata-less file of raw ``latent_dist.mean`` was decoded as normalised latents without a
    word (the demo VAE: 12.7 mean, 165 max off diffusers' own decode at 64 px); ``--raw`` decodes it
    to diffusers' pixels, and without it a notice says how the file was taken."""
    vae, _, x = wan
    with torch.no_grad():
        mu = vae.encode(x).latent_dist.mean
        ref = _pixels(vae.decode(mu).sample)
    save_file({"latents": mu.contiguous()}, str(tmp_path / "raw.safetensors"))  # a batch axis of one, as diffusers gives
    assert main(["decode", str(tmp_path / "raw.safetensors"), "--vae", str(VAE_DIR), "--raw",
                 "-o", str(tmp_path / "raw.png")]) == 0
    assert np.abs(_png(tmp_path / "raw.png") - ref).max() <= 1.0  # the official truncation to uint8
    assert read_metadata(tmp_path / "raw.png")["raw"] is True  # decoding it again needs --raw
    assert "no showo2 metadata" not in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "raw.safetensors"), "--vae", str(VAE_DIR), "-o", str(tmp_path / "as-norm.png")]) == 0
    err = capsys.readouterr().err
    assert "no showo2 metadata" in err and "--raw" in err
    assert np.abs(_png(tmp_path / "as-norm.png") - ref).max() > 20  # the confusion the notice warns of


def test_normalised_wan_latents_decode_without_raw(wan, tmp_path, capsys):
    """Normalised as Wan pipelines normalise (``output_type="latent"``): decoded as they are."""
    vae, _, x = wan
    mean, std = _stats(vae)
    with torch.no_grad():
        mu = vae.encode(x).latent_dist.mean
        ref = _pixels(vae.decode(mu).sample)
    save_file({"latents": ((mu - mean) / std)[0].half().contiguous()}, str(tmp_path / "n.safetensors"))
    assert main(["decode", str(tmp_path / "n.safetensors"), "--vae", str(VAE_DIR), "-o", str(tmp_path / "n.png")]) == 0
    assert np.abs(_png(tmp_path / "n.png") - ref).max() <= 2.0  # float16 latents: a level more
    assert "no showo2 metadata" in capsys.readouterr().err


def test_raw_is_refused_for_latents_encode_wrote(wan, tmp_path, capsys):
    _, img, _ = wan
    from showo2_cli.modeling.vae_files import load_vae

    vae = load_vae(VAE_DIR)
    result = L.encode(img, vae, L.EncodeOptions(size=(32, 32)))
    path = L.save_latents(tmp_path / "z.safetensors", result.latents, result.metadata)
    assert main(["decode", str(path), "--vae", str(VAE_DIR), "--raw", "-o", str(tmp_path / "z.png")]) == 2
    assert "drop --raw" in capsys.readouterr().err and not (tmp_path / "z.png").exists()


def test_readme_recipe_decodes_our_latents_with_diffusers(wan, tmp_path):
    """README: the file's ``latents`` (C, T', h, w) times ``latents_std`` plus ``latents_mean`` from
    its ``showo2`` metadata, a batch axis added, is what ``AutoencoderKLWan.decode`` takes."""
    dvae, img, _ = wan
    from showo2_cli.modeling.vae_files import load_vae

    vae = load_vae(VAE_DIR)
    result = L.encode(img, vae, L.EncodeOptions(size=(32, 32)))
    path = L.save_latents(tmp_path / "z.safetensors", result.latents, result.metadata)
    with safe_open(str(path), framework="pt") as f:
        z, meta = f.get_tensor("latents"), json.loads(f.metadata()["showo2"])
    assert z.shape == (16, 1, 4, 4)
    mean, std = (torch.tensor(meta[k]).view(1, -1, 1, 1, 1) for k in ("latents_mean", "latents_std"))
    with torch.no_grad():
        theirs = _pixels(dvae.decode(z[None] * std + mean).sample)
    ours = L.decode(result.latents, vae)[0].astype(np.float64)
    assert np.abs(theirs - ours).max() <= 1.0


def test_latents_normalised_with_other_statistics_get_a_notice(wan, tmp_path, capsys):
    """A VAE with the same weights but other latents_mean/std (a re-estimated one) decoded the file
    to other pixels (432 px demo: 1.3 mean, 169 max off) without a word."""
    _, img, _ = wan
    from showo2_cli.modeling.vae_files import load_vae

    other = tmp_path / "vae2"
    shutil.copytree(VAE_DIR, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["latents_mean"] = [m + 0.5 for m in cfg["latents_mean"]]
    (other / "config.json").write_text(json.dumps(cfg))
    result = L.encode(img, load_vae(VAE_DIR), L.EncodeOptions(size=(32, 32)))
    path = L.save_latents(tmp_path / "z.safetensors", result.latents, result.metadata)
    assert main(["decode", str(path), "--vae", str(other), "-o", str(tmp_path / "a.png")]) == 0
    assert "other statistics (latents_mean" in capsys.readouterr().err
    assert main(["decode", str(path), "--vae", str(VAE_DIR), "-o", str(tmp_path / "b.png")]) == 0
    assert "statistics" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["abc", [1.0, "x"], [float("nan")], {"a": 1}])
def test_malformed_recorded_statistics_are_refused(tmp_path, value):
    meta = {"format": "showo2-latents", "latents_mean": value}
    path = tmp_path / "z.safetensors"
    save_file({"latents": torch.zeros(16, 1, 2, 2)}, str(path), metadata={"showo2": json.dumps(meta)})
    with pytest.raises(InputError, match="latents_mean"):
        L.load_latents(path)


def test_api_normalize_raw_then_decode_gives_diffusers_pixels(wan):
    from showo2_cli import api
    from showo2_cli.modeling.vae_files import load_vae

    dvae, _, x = wan
    with torch.no_grad():
        mu = dvae.encode(x).latent_dist.mean
        ref = _pixels(dvae.decode(mu).sample)
    ours = api.decode(api.normalize_raw(mu[0], load_vae(VAE_DIR)), load_vae(VAE_DIR))[0]
    assert np.abs(ours.astype(np.float64) - ref).max() <= 1.0


def test_metadata_contradicting_the_latents_gets_a_notice(wan, tmp_path, capsys):
    """Metadata of a 17-frame 128 px video over one 16 px latent frame decoded to one frame without a word."""
    _, img, _ = wan
    from showo2_cli.modeling.vae_files import load_vae

    meta = {"format": "showo2-latents", "kind": "video", "frames": 17, "latent_frames": 5, "height": 128, "width": 128}
    path = L.save_latents(tmp_path / "z.safetensors", torch.zeros(16, 1, 2, 2), meta)
    assert main(["decode", str(path), "--vae", str(VAE_DIR), "-o", str(tmp_path / "z.png")]) == 0
    err = capsys.readouterr().err
    assert "contradicts" in err and "frames 17 (the latents give 1)" in err and "height 128 (the latents give 16)" in err
    result = L.encode(img, load_vae(VAE_DIR), L.EncodeOptions(size=(32, 32)))
    assert L.metadata_mismatch(result.metadata, result.latents) is None  # encode's own record agrees


def test_a_batch_of_latents_says_to_save_one_a_file(tmp_path):
    path = tmp_path / "z.safetensors"
    save_file({"latents": torch.zeros(2, 16, 1, 2, 2)}, str(path))
    with pytest.raises(InputError, match=r"a batch of 2: save one latent a file \(latents\[i\]\)"):
        L.load_latents(path)
