"""The checks before a load and the Hub: never a download nobody asked for (probe CJ).

Against a real HTTP server on 127.0.0.1 in the Hub's layout (``local_hub``), counting its requests.
"""

from __future__ import annotations

from PIL import Image

from showo2_cli.cli import main
from test_hub_pipeline import hub  # noqa: F401  (the local Hub fixture)

WAN_REPO, WAN_FILE = "Wan-AI/Wan2.1-T2V-14B", "Wan2.1_VAE.pth"


def _files(folder, skip=()) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and not any(p.relative_to(folder).as_posix().startswith(s) for s in skip))


def test_a_model_the_check_before_the_load_needs_is_downloaded_as_the_load_does(hub, tiny_model_dir, tmp_path,  # noqa: F811
                                                                                 monkeypatch, capsys):
    """`t2i -m owner/name` of a repo not yet cached: the memory check before the load used to fetch it
    silently (find_files downloads an uncached repo id), so the load's "downloading ..." notice and
    progress bars never came; now the check fetches it through the load's own step, each file once."""
    import huggingface_hub.constants as C

    hub.add_folder("acme/cj", tiny_model_dir)
    out = tmp_path / "x.png"
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["t2i", "a red circle", "-m", "acme/cj", "-o", str(out), "--steps", "2", "--max-memory", "1"]) == 4
    err = capsys.readouterr().err.strip()  # offline: the load's own one line, nothing asked of the Hub
    assert len(err.splitlines()) == 1 and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in err
    assert hub.requests == [] and not out.exists()
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert main(["t2i", "a red circle", "-m", "acme/cj", "-o", str(out), "--steps", "2", "--max-memory", "1"]) == 0
    assert "downloading acme/cj into the Hugging Face cache" in capsys.readouterr().err
    assert sorted(hub.downloads()) == [f"acme/cj:{p}" for p in _files(tiny_model_dir)]  # each file once
    hub.requests.clear()
    again = tmp_path / "y.png"
    assert main(["t2i", "a red circle", "-m", "acme/cj", "-o", str(again), "--steps", "2", "--max-memory", "1"]) == 0
    assert hub.requests == [] and "downloading" not in capsys.readouterr().err


def _novae_repo(hub, model, tmp_path):  # noqa: F811
    """A repo of ``model`` without its VAE (so the Wan2.1 VAE is its companion), and a picture."""
    hub.add_folder("acme/cj-novae", model, skip=("vae/*",))
    hub.add(WAN_REPO, {WAN_FILE: b"\0" * 20_000})
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(image)
    return image


def test_a_vae_that_is_not_there_fails_before_the_model_is_downloaded(hub, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    """`--vae` naming nothing, with a model not yet cached: the load's own line, and nothing asked of the
    Hub (the model was downloaded first, by the check before the load, then the VAE's error said)."""
    image = _novae_repo(hub, tiny_model_dir, tmp_path)
    missing, out = tmp_path / "no-such-vae.safetensors", tmp_path / "x.png"
    for args in (["t2i", "a red circle", "-o", str(out), "--steps", "2"], ["caption", str(image)]):
        assert main([*args, "-m", "acme/cj-novae", "--vae", str(missing)]) == 4
        err = capsys.readouterr().err.strip()
        assert err.splitlines() == [f"showo2: error: VAE '{missing}' does not exist"], err
    assert hub.requests == [] and not out.exists()


def test_a_vae_given_is_why_the_wan_vae_is_not_downloaded(hub, tiny_model_dir, tmp_path, capsys):  # noqa: F811
    """A model without a VAE of its own, run with `--vae` (or `from_pretrained(vae=)`): its load reads
    that VAE, so the Wan2.1 VAE repo's file (508 MB on the Hub) is no companion to fetch."""
    from showo2_cli import Showo2Pipeline
    from showo2_cli.hub import needs_download

    image = _novae_repo(hub, tiny_model_dir, tmp_path)
    vae, out = tiny_model_dir / "vae", tmp_path / "x.png"
    assert main(["t2i", "a red circle", "-m", "acme/cj-novae", "--vae", str(vae), "-o", str(out), "--steps", "2"]) == 0
    assert "downloading acme/cj-novae" in capsys.readouterr().err
    assert sorted(hub.downloads()) == [f"acme/cj-novae:{p}" for p in _files(tiny_model_dir, ("vae/",))]
    assert not needs_download("acme/cj-novae", vae) and needs_download("acme/cj-novae")  # without: the Wan VAE
    assert main(["caption", str(image), "-m", "acme/cj-novae", "--vae", str(vae), "--max-new-tokens", "2"]) == 0
    assert Showo2Pipeline.from_pretrained("acme/cj-novae", vae=vae).model.vae is not None
    assert not any(d.startswith(WAN_REPO) for d in hub.downloads())
