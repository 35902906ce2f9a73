"""Probe CK: what the README, the CHANGELOG and the messages say, held against what the code does."""
import dataclasses

import pytest


@pytest.mark.parametrize("scaling", [{"factor": 2.0}, {"rope_type": "ntk", "factor": 2.0}])
def test_a_rope_scaling_refusal_offers_only_types_that_load(scaling):
    """An unknown or missing RoPE type was told to pick 'among default, dynamic, linear, ...', and the
    `dynamic` it offered is itself refused (probe CF: "not supported", exit 4). Every type offered loads."""
    from showo2_cli.errors import UsageError
    from showo2_cli.specs import get_spec

    base = get_spec("tiny")
    with pytest.raises(UsageError, match="among default, ") as caught:
        dataclasses.replace(base, rope_scaling=scaling).validate()
    offered = str(caught.value).split("among ")[1].split(", got")[0].split(", ")
    assert "dynamic" not in offered and {"default", "linear", "yarn"} <= set(offered)
    for kind in offered:  # each one offered passes the type check (its own numbers aside)
        try:
            dataclasses.replace(base, rope_scaling={"rope_type": kind, "factor": 2.0}).validate()
        except UsageError as e:
            assert "among default" not in str(e) and "not supported" not in str(e), (kind, str(e))


def test_models_offers_no_wan_vae_download_when_showo2_vae_names_another(tmp_path, monkeypatch, capsys):
    """With `$SHOWO2_VAE` naming a repo id not cached (probe DC's), `showo2 models` noted that a
    command online downloads it, then told to get the missing VAE with `hf download
    Wan-AI/Wan2.1-T2V-14B Wan2.1_VAE.pth`, a file no load would read: `$SHOWO2_VAE` comes first
    (probe DO). `showo2 pull NAME`, which it still offers, fetches that repo's VAE."""
    import json

    import huggingface_hub.constants as C

    from showo2_cli.cli import main

    for name, value in {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}.items():  # nothing cached
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("SHOWO2_VAE", "acme/wan-vae")
    assert main(["models", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["models"] if r["name"] == "1.5B")
    assert "VAE" in row["missing"] and row["get"][0] == "showo2 pull 1.5B"
    assert not any("Wan-AI/" in g for g in row["get"]), row["get"]
    monkeypatch.delenv("SHOWO2_VAE")  # without it the Wan2.1 VAE is the one to get
    assert main(["models", "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["models"] if r["name"] == "1.5B")
    assert "hf download Wan-AI/Wan2.1-T2V-14B Wan2.1_VAE.pth" in row["get"]
