"""Every broken model folder and latents file of the corpus, loaded in-process through the library
(the subprocess suite runs a representative part of them through the CLI): each is refused with
the documented error type and a one-line message naming the file and the problem, and the pickle
payloads never run."""

from __future__ import annotations

import json

import pytest
import torch
from hostile_corpus import MODEL_NEEDLES, corpus_for

from conftest import MEDIA_DIR
from showo2_cli import api, runtime
from showo2_cli.cli import main
from showo2_cli.errors import InputError, ModelError, ResourceError
from showo2_cli.loading import load

LATENTS_NEEDLES = {
    "wrong-key": "no 'latents' tensor", "wrong-rank": "(C, T, h, w)", "batch-of-two": "(C, T, h, w)",
    "zero-size": "empty", "int32": "floating point", "bool": "floating point", "nan": "NaN", "inf": "NaN/inf",
    "meta-not-json": "malformed", "meta-not-object": "malformed", "meta-wrong-types": "'fps'",
    "meta-bad-fps": "'fps'", "meta-nan-fps": "'fps'", "truncated": "truncated", "empty": "safetensors",
    "text": "safetensors", "header-lies": "safetensors", "a-folder": "directory",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_model_dir):
    return corpus_for(tmp_path_factory, tiny_model_dir, MEDIA_DIR if MEDIA_DIR.is_dir() else None)


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_every_broken_model_folder_is_refused(corpus):
    root, marker, files = corpus
    assert set(MODEL_NEEDLES) == set(files["models"]) - {"ok"}
    for name, needle in MODEL_NEEDLES.items():
        with pytest.raises(ModelError) as exc:
            load(files["models"][name])
        _one_line(exc, needle)
        assert name in str(exc.value) or "config.json" in str(exc.value), str(exc.value)
    assert not marker.exists()
    assert load(files["models"]["ok"]).spec.name == "tiny"


def test_every_broken_latents_file_is_refused(corpus):
    _, marker, files = corpus
    for name, needle in LATENTS_NEEDLES.items():
        path = files["latents"][f"{name}.safetensors"]
        with pytest.raises(InputError) as exc:
            api.load_latents(path, z_dim=16)
        _one_line(exc, needle, path.name)
    with pytest.raises(InputError, match="8 channels"):
        api.load_latents(files["latents"]["wrong-channels.safetensors"], z_dim=16)
    z, meta = api.load_latents(files["latents"]["ok.safetensors"], z_dim=16)
    assert z.shape == (16, 1, 4, 4) and meta["kind"] == "image"
    assert not marker.exists()


def test_noise_of_the_wrong_shape_is_an_input_error(corpus, tiny_model_dir, tmp_path, capsys):
    _, _, files = corpus
    code = main(["t2i", "a cat", "-m", str(tiny_model_dir), "-o", str(tmp_path / "c.png"), "--steps", "2",
                 "--noise", str(files["latents"]["noise-wrong-shape.safetensors"]), "--json"])
    out, err = capsys.readouterr()
    assert code == 3 and "(3, 5, 7)" in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["error"]["exit_code"] == 3
    assert not list(tmp_path.iterdir())


def test_the_vae_memory_estimate_refuses_before_decoding(corpus, tiny_model_dir, monkeypatch):
    from showo2_cli.modeling.vae_files import load_vae

    vae = load_vae(tiny_model_dir / "vae")
    called = []
    monkeypatch.setattr(vae, "decode", lambda x, tiled=False: called.append(tiled) or torch.zeros(1, 3, 1, 2048, 2048))
    z = torch.zeros(16, 1, 256, 256)
    vae.disable_tiling()  # untiled, a 2048x2048 decode does not fit in 0.5 GB
    with pytest.raises(ResourceError, match=r"needs about \d+\.\d GB"):
        api.decode(z, vae, max_memory_gb=0.5)
    monkeypatch.setenv(runtime.MAX_MEMORY_ENV, "0.5")
    with pytest.raises(ResourceError, match="SHOWO2_MAX_MEMORY_GB"):
        api.decode(z, vae)
    assert not called
    vae.tiling = "auto"  # the default: the job the guard refuses untiled is decoded in tiles
    api.decode(z, vae)
    assert called == [True]
