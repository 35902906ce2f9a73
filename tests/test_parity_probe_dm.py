"""Parity probe DM (round eleven): an official checkpoint's ``patch_size``, as the official code reads it.

The official ``Showo2Qwen2_5`` builds both patch embeddings from config.json's ``patch_size`` (2
when absent), so its sides are multiples of 8 x that. A set made with the official code at
``patch_size`` 1 (``benchmarks/parity_specs/probe-dm-act.json``: 24 px images) passes every parity
test, but ``showo2 t2i -m THAT_FOLDER --size 24`` was refused before the load ("multiples of 16"):
the check before a load read only a showo2 config's spec and took every official checkpoint as
patch 2, so the CLI could make none of the sizes such a model takes but the multiples of 16. And
a ``patch_size`` (or ``image_latent_dim``, ``clip_latent_dim``, ``hidden_size``,
``llm_vocab_size``) other than the weights' loaded at the weights' sizes, where the official
constructor builds another network from the config and its loader fails on the weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from showo2_cli.cli import generate, main
from showo2_cli.errors import ModelError

VARIANT_G = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"
VAE = VARIANT_G / "vae" / "wan21_vae.safetensors"


def official_with_patch(tmp_path: Path, patch: int | None) -> Path:
    """variant-g's official folder (patch 2 weights) with config.json's patch_size set (None: absent)."""
    folder = tmp_path / f"official-p{patch}"
    shutil.copytree(VARIANT_G / "model", folder)
    config = json.loads((folder / "config.json").read_text())
    if patch is None:
        del config["patch_size"]
    else:
        config["patch_size"] = patch
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(("patch", "taken", "refused"), [(1, "24", "20"), (4, "64", "48"), (None, "48", "40")])
def test_an_official_checkpoints_sizes_are_judged_by_its_patch_size_before_the_load(tmp_path, monkeypatch, capsys,
                                                                                    patch, taken, refused):
    folder = official_with_patch(tmp_path, patch)

    reached = []

    def spy(*args, **kwargs):  # the command's load: reached only past the checks before it
        reached.append(kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "load_model", spy)
    out = tmp_path / "x.png"
    multiple = 8 * (patch or 2)
    args = ["t2i", "a red circle", "-m", str(folder), "--vae", str(VAE), "--steps", "2", "-o", str(out), "--size"]
    assert main([*args, refused]) == 2 and not reached
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"showo2: error: --size sides must be multiples of {multiple} (VAE x patch), got {refused}x{refused}"
    main([*args, taken])  # a size the model takes reaches the load
    assert len(reached) == 1 and not out.exists()


def spec_of(folder: Path):
    """The spec the load reads from an official folder (its configs and the weights' shapes)."""
    from showo2_cli.model_config import spec_from_files
    from showo2_cli.model_files import find_files
    from showo2_cli.weights import read_state_dict

    files = find_files(folder, vae=VAE, local_files_only=True)
    return spec_from_files(files, read_state_dict(files.weights))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("patch_size", 1, "patch_size is 1 but the weights' patch embedding is 2 wide"),
    ("clip_latent_dim", 24, "clip_latent_dim is 24 but the weights' semantic patch embedding is 16 wide"),
    ("hidden_size", 48, "hidden_size is 48 but the weights' token embedding is 32 wide"),
    ("image_latent_dim", 4, "image_latent_dim is 4 but the weights' patch embedding takes 16 latent channels"),
    ("llm_vocab_size", 300, "llm_vocab_size is 300 but the weights' token embedding has 282 rows")])
def test_a_config_size_other_than_the_weights_is_refused_in_one_line(tmp_path, key, value, message):
    folder = official_with_patch(tmp_path, 2)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, **{key: value})))
    with pytest.raises(ModelError, match=f"{message}: not the model the official code builds") as e:
        spec_of(folder)
    assert "\n" not in str(e.value)


def test_a_config_without_a_patch_size_takes_the_weights(tmp_path):
    spec = spec_of(official_with_patch(tmp_path, None))  # absent: the weights' (the official default 2)
    assert spec.patch_size == 2 and spec.latent_multiple == 16
