"""The weights-on-disk leftovers of probe IC (probe IN): a short commit hash offline, a model cached
only under the legacy ``TRANSFORMERS_CACHE``, a folder holding only a ``variant`` weight file, a
tokenizer or VAE that is a Git LFS pointer under ``showo2 info``, a snapshot whose ``tokenizer.json``
was deleted by hand.
"""

from __future__ import annotations

import shutil

import pytest

from showo2_cli.errors import ModelError
from test_hub_pipeline import hub, offline  # noqa: F401  (the local Hub fixture)


def test_a_short_commit_hash_is_resolved_offline_as_git_does(hub, tiny_model_dir, monkeypatch):  # noqa: F811
    """``acme/tiny@3f31c78`` offline was "not in the Hugging Face cache" while the cache held that
    commit: a unique prefix of a cached snapshot's commit now names it; an ambiguous one is refused
    naming the candidates; a prefix of none is the miss it was."""
    from showo2_cli.hub import pull, resolve_root

    hub.add_folder("acme/tiny", tiny_model_dir)
    snap = pull("acme/tiny").path
    commit = snap.name
    offline(monkeypatch)
    before = len(hub.requests)
    assert resolve_root(f"acme/tiny@{commit[:7]}") == (f"acme/tiny@{commit[:7]}", snap)
    assert resolve_root(f"acme/tiny@{commit[:4]}")[1] == snap
    assert pull(f"acme/tiny@{commit[:7]}").path == snap
    other = commit[:7] + ("0" if commit[7] != "0" else "1") + commit[8:]
    shutil.copytree(snap, snap.parent / other, symlinks=True)
    with pytest.raises(ModelError) as e:
        resolve_root(f"acme/tiny@{commit[:7]}")
    assert str(e.value) == (f"revision '{commit[:7]}' of 'acme/tiny' is ambiguous: the cache holds the commits "
                            f"{', '.join(sorted([commit, other]))}; give more of its digits")
    assert resolve_root(f"acme/tiny@{commit[:8]}")[1] == snap  # (more digits: one again)
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        resolve_root("acme/tiny@" + ("f" if commit[0] != "f" else "e") * 7)
    assert len(hub.requests) == before


def test_a_model_cached_only_under_the_legacy_transformers_cache_is_named(hub, tiny_model_dir, tmp_path,  # noqa: F811
                                                                         monkeypatch, capsys):
    """transformers 4 read ``TRANSFORMERS_CACHE``; no library does now, so a model cached only there
    is not found (as the libraries have it). Offline the miss said "not in the Hugging Face cache ...
    get it while online": it now names the folder that holds it and the variable that uses it."""
    from showo2_cli.cli import main
    from showo2_cli.hub import pull, resolve_root

    hub.add_folder("acme/tiny", tiny_model_dir)
    snap = pull("acme/tiny").path
    legacy = tmp_path / "legacy cache"
    shutil.move(str(hub.cache), str(legacy))
    monkeypatch.setenv("TRANSFORMERS_CACHE", str(legacy))
    offline(monkeypatch)
    line = (f"model 'acme/tiny' is not a local folder, not in the Hugging Face cache and HF_HUB_OFFLINE is set; it "
            f"is cached under TRANSFORMERS_CACHE ('{legacy}'), which no library reads any more: set "
            f"HF_HUB_CACHE='{legacy}' to use that cache")
    with pytest.raises(ModelError) as e:
        resolve_root("acme/tiny")
    assert str(e.value) == line
    assert main(["info", "acme/tiny"]) == 4
    assert capsys.readouterr().err.strip() == f"showo2: error: {line}"
    monkeypatch.setenv("HF_HUB_CACHE", str(legacy))  # followed: the same snapshot
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_CACHE", str(legacy))
    assert resolve_root("acme/tiny")[1] == legacy / snap.relative_to(hub.cache)
    monkeypatch.delenv("TRANSFORMERS_CACHE")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(ModelError, match="get it while online with: showo2 pull acme/tiny$"):
        resolve_root("acme/tiny")


def test_a_snapshot_whose_tokenizer_json_was_deleted_names_it(hub, tiny_model_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A cache snapshot without a recorded listing (an older cache) whose ``tokenizer.json`` was
    deleted by hand still counts as cached (config and weights are there); its load was "cannot load
    the tokenizer in '...': Couldn't instantiate the backend tokenizer from one of: (1) ...", no file
    named. It names the file, the fallback files also absent, and the download that puts it back;
    followed (against the local Hub), the caption runs. A plain folder is told the same, without
    the download."""
    from huggingface_hub import hf_hub_download
    from PIL import Image

    from showo2_cli.cli import main

    hub.add_folder("acme/tiny", tiny_model_dir)
    for file in sorted(tiny_model_dir.rglob("*")):  # file by file (no recorded listing), then one deleted
        if file.is_file():
            hf_hub_download("acme/tiny", file.relative_to(tiny_model_dir).as_posix())
    (snap,) = (hub.cache / "models--acme--tiny" / "snapshots").iterdir()
    assert (snap / "tokenizer.json").is_file() and not (hub.cache / "models--acme--tiny" / "trees").exists()
    (snap / "tokenizer.json").unlink()
    offline(monkeypatch)
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["caption", str(image), "-m", "acme/tiny", "--max-new-tokens", "1"]) == 4
    err = capsys.readouterr().err.strip()
    assert err == (f"showo2: error: cannot load the tokenizer in '{snap}': tokenizer.json is missing, and so are "
                   f"vocab.json and merges.txt to build it from; fetch it again with: hf download acme/tiny "
                   f"tokenizer.json --revision {snap.name}")
    import huggingface_hub.constants as C

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)
    hf_hub_download("acme/tiny", "tokenizer.json", revision=snap.name)  # what the hint says
    offline(monkeypatch)
    assert main(["caption", str(image), "-m", "acme/tiny", "--max-new-tokens", "1"]) == 0
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.json").write_text("{}")
    assert main(["caption", str(image), "-m", str(folder), "--max-new-tokens", "1"]) == 4
    assert capsys.readouterr().err.strip().endswith(
        f"cannot load the tokenizer in '{folder}': tokenizer.json is missing, and so is merges.txt to build it from")


def test_a_folder_holding_only_a_variant_weight_file_names_it_and_the_fix(tiny_model_dir, tmp_path, capsys):
    """``save_pretrained(variant="fp16")`` writes ``model.fp16.safetensors``; showo2 reads the plain
    names (as ``from_pretrained`` without ``variant=`` does), and such a folder was "model '...' has
    no weights in '...'" (info) or "missing weights (no model.safetensors / pytorch_model.bin in
    '...')" (the load), the file beside them unnamed. Each names it, the variant and the rename;
    followed, the folder loads. Sharded variants are told to save again without variant=."""
    from PIL import Image

    from showo2_cli.cli import main

    folder = tmp_path / "variant"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "model.fp16.safetensors")
    hint = (f"no model.safetensors / pytorch_model.bin in '{folder}'; it holds model.fp16.safetensors, saved with "
            "variant='fp16', which showo2 does not read: rename model.fp16.safetensors to model.safetensors")
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["info", str(folder)]) == 4
    assert capsys.readouterr().err.strip() == f"showo2: error: model '{folder}' has no weights: {hint}"
    assert main(["caption", str(image), "-m", str(folder), "--max-new-tokens", "1"]) == 4
    assert hint in capsys.readouterr().err
    (folder / "model.fp16.safetensors").rename(folder / "model.safetensors")  # the hint, followed
    assert main(["info", str(folder)]) == 0
    capsys.readouterr()
    from showo2_cli.hub import variant_hint

    sharded = ["model.fp16.safetensors.index.json", "model.fp16-00001-of-00002.safetensors",
               "model.fp16-00002-of-00002.safetensors"]
    assert variant_hint(sharded) == ("; it holds model.fp16-00001-of-00002.safetensors, model.fp16-00002-of-00002"
                                     ".safetensors, model.fp16.safetensors.index.json, saved with variant='fp16', "
                                     "which showo2 does not read: save the model again without variant=")
    assert variant_hint(["model.safetensors", "model.safetensors.index.json", "config.json"]) == ""


def test_a_hub_repo_holding_only_variant_weights_names_them(hub, tiny_model_dir, tmp_path):  # noqa: F811
    """The same repo on the Hub: "has no weights (model.safetensors / pytorch_model.bin)" after its
    config.json was fetched; the variant file is named now, and nothing of it downloaded."""
    from showo2_cli.hub import pull

    folder = tmp_path / "variant"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "model.safetensors").rename(folder / "model.fp16.safetensors")
    hub.add_folder("acme/variant", folder)
    with pytest.raises(ModelError) as e:
        pull("acme/variant")
    assert str(e.value) == ("'acme/variant' on the Hub has no weights (model.safetensors / pytorch_model.bin); it "
                            "holds model.fp16.safetensors, saved with variant='fp16', which showo2 does not read: "
                            "rename model.fp16.safetensors to model.safetensors")
    assert not any("model.fp16" in str(r) for r in hub.requests if "resolve" in str(r))


def test_info_flags_a_tokenizer_or_vae_that_is_a_git_lfs_pointer(tiny_model_dir, tmp_path, capsys):
    """A clone without Git LFS whose VAE weights and tokenizer.json are pointers: ``showo2 info``
    listed both as found (exit 0, nothing said; the load then named one, then the other). The one
    check (``media.lfs_pointer_note``, in ``find_files``) now lists each under "missing" with the
    Git LFS advice, in ``info`` (text and JSON) and in the load's one line, both at once."""
    import json

    from showo2_cli.cli import main
    from test_weights_on_disk_probe_ic import ADVICE, lfs_pointer

    folder = tmp_path / "clone"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("tokenizer.json", "vae/diffusion_pytorch_model.safetensors"):
        lfs_pointer(folder / name)
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    tok = f"'{folder / 'tokenizer.json'}' is a Git LFS pointer, not the file ({ADVICE})"
    vae = f"'{folder / 'vae' / 'diffusion_pytorch_model.safetensors'}' is a Git LFS pointer, not the file ({ADVICE})"
    assert f"missing    tokenizer: {tok}" in out.splitlines() and f"missing    VAE: {vae}" in out.splitlines()
    assert main(["info", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["missing"] == ["tokenizer", "VAE"]
    assert main(["t2i", "a red square", "-m", str(folder), "-o", str(tmp_path / "o.png"), "--steps", "2"]) == 4
    assert capsys.readouterr().err.strip() == (f"showo2: error: model '{folder}' is incomplete: missing tokenizer "
                                               f"({tok}); VAE ({vae})")
    assert not (tmp_path / "o.png").exists()
