"""Probe AC: each command loads only the VAE half it runs (t2i/t2v the decoder, caption the encoder);
a half left out loads from the same file on first use, with the same values."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from showo2_cli import api
from showo2_cli.cli import main
from showo2_cli.errors import ModelError
from showo2_cli.hub import bundled_demo_path
from showo2_cli.modeling.vae_files import load_vae

DEMO_VAE = bundled_demo_path() / "vae"


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_a_half_loaded_vae_holds_no_weights_of_the_other_and_loads_them_equal_on_first_use():
    from showo2_cli.modeling.parts import NotLoaded

    full = load_vae(DEMO_VAE, dtype=torch.bfloat16)
    dec = load_vae(DEMO_VAE, dtype=torch.bfloat16, parts=("decoder",))
    assert dec.loaded_parts == ("decoder",) and full.loaded_parts == ("encoder", "decoder")
    assert isinstance(dec.model.encoder, NotLoaded) and isinstance(dec.model.quant_conv, NotLoaded)
    assert not any(k.startswith(("model.encoder.", "model.quant_conv.")) for k in dec.state_dict())
    n_full = sum(p.numel() for p in full.parameters())
    assert sum(p.numel() for p in dec.parameters()) < n_full == dec.num_parameters() == full.num_parameters()
    latents = torch.randn(1, 16, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(dec.decode(latents), full.decode(latents))
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert torch.equal(dec.encode(pixels), full.encode(pixels))  # the encoder loads here, then stays
    assert dec.loaded_parts == ("encoder", "decoder") and dec.model.encoder.conv_in.weight.dtype == torch.bfloat16
    _same_weights(dec, full)

    enc = load_vae(DEMO_VAE, parts="encoder")
    assert enc.loaded_parts == ("encoder",)
    enc.to(dtype=torch.float16)  # moved after loading: the decoder comes in the VAE's present dtype
    enc.load_parts()
    assert enc.loaded_parts == ("encoder", "decoder") and enc.model.decoder.conv_in.weight.dtype == torch.float16
    _same_weights(enc, load_vae(DEMO_VAE).to(dtype=torch.float16))
    with pytest.raises(ValueError, match="VAE parts must be some of encoder, decoder"):
        load_vae(DEMO_VAE, parts=())
    with pytest.raises(ValueError, match="unknown VAE part 'decodr'"):
        enc.load_parts("decodr")


def test_a_part_is_not_loaded_from_a_file_that_changed_since(tmp_path):
    folder = tmp_path / "vae"
    shutil.copytree(DEMO_VAE, folder)
    vae = load_vae(folder, parts=("decoder",))
    weights = folder / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    with pytest.raises(ModelError, match="the VAE file changed or went away since it was loaded"):
        vae.encode(torch.zeros(1, 3, 16, 16))
    assert vae.loaded_parts == ("decoder",)
    whole = folder.parent / "copy.safetensors"
    shutil.copy(weights, whole)
    vae = load_vae(whole, parts=("encoder",))
    whole.unlink()
    with pytest.raises(ModelError, match="went away"):
        vae.decode(torch.zeros(1, 16, 2, 2))


def _loaded_bundles(monkeypatch) -> list:
    import showo2_cli.loading as loading

    bundles, real = [], loading.load

    def spy(*args, **kwargs):
        bundles.append(real(*args, **kwargs))
        return bundles[-1]

    monkeypatch.setattr(loading, "load", spy)
    return bundles


@pytest.mark.parametrize(("args", "parts"), [
    (["t2i", "a red circle", "--steps", "2"], ("decoder",)),
    (["caption", "IMAGE", "--max-new-tokens", "2"], ("encoder",)),
])
def test_each_command_loads_the_vae_half_it_runs(monkeypatch, tmp_path, capsys, args, parts):
    image = tmp_path / "in.png"
    from PIL import Image

    Image.new("RGB", (40, 24), (200, 30, 30)).save(image)
    args = [str(image) if a == "IMAGE" else a for a in args]
    out = ["-o", str(tmp_path / "out.png")] if args[0] == "t2i" else []
    bundles = _loaded_bundles(monkeypatch)
    assert main([*args, *out, "--seed", "1", "--quiet"]) == 0
    assert [b.vae.loaded_parts for b in bundles] == [parts]


def test_a_pipeline_used_for_t2i_holds_no_encoder_until_asked(tiny_model_dir):
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.loaded_parts == ("decoder",)
    full = api.load(tiny_model_dir)
    assert pipe.model.parameter_counts() == full.parameter_counts()
    opts = api.GenerateOptions(steps=2, seed=3)
    a = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="np").images
    b = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(3), output_type="np").images
    assert np.array_equal(a, b) and pipe.vae.loaded_parts == ("decoder",)
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    got = api.caption(pipe.model, image, api.CaptionOptions(max_new_tokens=3))
    want = api.caption(full, image, api.CaptionOptions(max_new_tokens=3))
    assert pipe.vae.loaded_parts == ("encoder", "decoder") and got.answers == want.answers
    _same_weights(pipe.vae, full.vae)
    assert np.array_equal(api.text_to_image(pipe.model, ["a cat"], opts)[0].frames,
                          api.text_to_image(full, ["a cat"], opts)[0].frames)


@pytest.mark.parametrize(("lines", "parts"), [("", ("encoder",)),
                                              ("/t2i a red circle -o gen.png --steps 2 --seed 1\n", ("encoder", "decoder"))])
def test_chat_loads_the_decoder_on_its_first_t2i(monkeypatch, tmp_path, capsys, lines, parts):
    import io

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    bundles = _loaded_bundles(monkeypatch)
    assert main(["chat", "--quiet"]) == 0
    assert [b.vae.loaded_parts for b in bundles] == [parts]
    assert (tmp_path / "gen.png").is_file() == bool(lines)


def test_encode_loads_the_encoder_and_decode_the_decoder(monkeypatch, tmp_path, capsys):
    from PIL import Image

    import showo2_cli.modeling.vae_files as vae_files

    loaded, real = [], vae_files.load_vae  # encode calls it, decode through loading.resolve_vae
    monkeypatch.setattr(vae_files, "load_vae", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    Image.new("RGB", (40, 24), (200, 30, 30)).save(tmp_path / "in.png")
    lat, out = tmp_path / "in.safetensors", tmp_path / "out.png"
    assert main(["encode", str(tmp_path / "in.png"), "-o", str(lat), "--quiet"]) == 0
    assert main(["decode", str(lat), "-o", str(out), "--quiet"]) == 0
    assert [v.loaded_parts for v in loaded] == [("encoder",), ("decoder",)] and out.is_file()


def test_a_part_first_used_under_inference_mode_loads_as_ordinary_tensors():
    """Probe AI: a caption or encode run by a caller inside ``torch.inference_mode()`` loaded the
    left-out half as inference tensors, unlike an eager load's: a later encode with autograd (a
    gradient through the VAE, training on the same bundle) failed with 'Inference tensors do not
    track version counter'."""
    full = load_vae(DEMO_VAE)
    dec = load_vae(DEMO_VAE, parts=("decoder",))
    pixels = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(dec.encode(pixels), full.encode(pixels))
    assert not any(p.is_inference() for p in dec.model.parameters())
    grads = []
    for vae in (full, dec):
        x = pixels.clone().requires_grad_(True)
        vae.encode(x).sum().backward()  # was a RuntimeError for the lazily loaded encoder
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_a_part_named_twice_is_one_part_and_the_other_still_loads_on_first_use():
    """Probe AI: parts=("decoder", "decoder") (api.load's vae_parts) counted as both halves, so the
    VAE kept no file to load the encoder from: 'the VAE's encoder is not loaded and this VAE has no
    file to load it from' on the first encode."""
    full = load_vae(DEMO_VAE)
    dec = load_vae(DEMO_VAE, parts=["decoder", "decoder"])
    assert dec.loaded_parts == ("decoder",)
    pixels = torch.rand(1, 3, 1, 16, 16) * 2 - 1
    assert torch.equal(dec.encode(pixels), full.encode(pixels))
    _same_weights(dec.model, full.model)
