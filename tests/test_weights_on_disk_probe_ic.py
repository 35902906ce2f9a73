"""The weights as users have them on disk (probe IC): a git clone made without Git LFS, whose small
files are pointers too, and a Hugging Face cache an interrupted download left behind, read offline.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from showo2_cli.cli import main
from showo2_cli.errors import ModelError
from test_hub_pipeline import hub, offline  # noqa: F401  (the local Hub fixture)

ADVICE = "the repository was cloned without Git LFS: run 'git lfs install' and 'git lfs pull' in it"


def lfs_pointer(path: Path) -> None:
    """Replace ``path`` by the Git LFS pointer a clone without Git LFS holds in its place."""
    data = path.read_bytes()
    path.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\n"
                    f"size {len(data)}\n")


@pytest.mark.parametrize("name", ["config.json", "vae/config.json", "tokenizer.json", "tokenizer_config.json"])
def test_a_git_lfs_pointer_in_place_of_a_config_or_tokenizer_file_is_named(tiny_model_dir, tmp_path, name, capsys):
    """A repo whose .gitattributes sends JSON through Git LFS (Qwen2.5's tokenizer.json, 7 MB, is an
    LFS file), cloned without it: the pointer was read as JSON, "cannot read '.../config.json': not
    valid JSON (Expecting value: line 1 column 1 (char 0))" or "cannot load the tokenizer in '...':
    Expecting value: ...", with no word of Git LFS (the weights' pointers were named already)."""
    from PIL import Image

    from showo2_cli.loading import load

    folder = tmp_path / "clone"
    shutil.copytree(tiny_model_dir, folder)
    lfs_pointer(folder / name)
    with pytest.raises(ModelError) as e:
        load(folder)
    message = str(e.value)
    assert f"{Path(name).name} is a Git LFS pointer" in message or f"{name}' is a Git LFS pointer" in message
    assert ADVICE in message and "\n" not in message
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32), "red").save(image)
    assert main(["caption", str(image), "-m", str(folder), "--max-new-tokens", "1"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a Git LFS pointer, not the file" in err[0]


def _interrupted(hub, tiny_model_dir):  # noqa: F811
    """acme/tiny pulled into the cache, then its weights' link gone and the blob left as huggingface_hub
    leaves a download that stopped half-way (``<sha256>.incomplete``); the snapshot's folder."""
    from showo2_cli.hub import pull

    hub.add_folder("acme/tiny", tiny_model_dir)
    snap = pull("acme/tiny").path
    blob = (snap / "model.safetensors").resolve()
    (snap / "model.safetensors").unlink()
    blob.rename(blob.with_name(blob.name + ".incomplete"))
    blob.with_name(blob.name + ".incomplete").write_bytes(blob.name.encode())  # a few bytes of it
    return snap


def test_an_interrupted_download_in_the_cache_is_said_so_offline(hub, tiny_model_dir, monkeypatch, capsys):  # noqa: F811
    """Offline, a cache holding all of a model but the file a download was cut in was "model 'acme/tiny'
    is not a local folder, not in the Hugging Face cache and HF_HUB_OFFLINE is set": the user saw the
    cache entry, its config and its tokenizer there. It now names the missing file and the pull that
    finishes it, for a pinned commit too."""
    from showo2_cli.loading import load

    snap = _interrupted(hub, tiny_model_dir)
    offline(monkeypatch)
    before = len(hub.requests)
    with pytest.raises(ModelError) as e:
        load("acme/tiny")
    assert str(e.value) == ("model 'acme/tiny' is in the Hugging Face cache without model.safetensors (an "
                            "interrupted download?) and HF_HUB_OFFLINE is set; finish it while online with: "
                            "showo2 pull acme/tiny")
    pinned = f"acme/tiny@{snap.name}"
    assert main(["info", "-m", pinned]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"showo2: error: model '{pinned}' is in the Hugging Face cache without model.safetensors (an "
                   f"interrupted download?) and HF_HUB_OFFLINE is set; finish it while online with: "
                   f"showo2 pull {pinned}"]
    with pytest.raises(ModelError, match="is not a local folder, not in the Hugging Face cache"):
        load("acme/absent")  # a repo the cache does not hold: as before
    assert len(hub.requests) == before


def test_an_interrupted_download_is_finished_online_by_the_load(hub, tiny_model_dir):  # noqa: F811
    """Online, the same cache is completed by the load's own step (the cut file alone is fetched)."""
    from showo2_cli.loading import load

    _interrupted(hub, tiny_model_dir)
    before = len(hub.downloads())
    load("acme/tiny")
    assert hub.downloads()[before:] == ["acme/tiny:model.safetensors"]


def test_the_tokenizer_hint_of_an_official_folder_fetches_no_llm_weights(hub, tmp_path, monkeypatch):  # noqa: F811
    """A folder of the official layout (`hf download showlab/show-o2-1.5B --local-dir X`) lacks the Qwen2.5
    tokenizer; the hint was `hf download Qwen/Qwen2.5-1.5B-Instruct`, which fetches the whole repo: the
    LLM's weights too (3.1 GB; the 7B's 15 GB), never read. It now names the files the load reads;
    followed as the `hf` command line runs it (several names: `snapshot_download(allow_patterns=...)`),
    the LLM's weights stay on the Hub and the folder then finds its tokenizer."""
    from huggingface_hub import snapshot_download

    from showo2_cli.model_files import find_files
    from test_hub_pipeline import official_repos

    repo = official_repos(hub, tmp_path)  # acme/tiny-qwen holds a model.safetensors of 50,000 bytes
    folder = Path(snapshot_download(repo, local_dir=tmp_path / "local"))
    hint = dict(find_files(folder).missing)["tokenizer"]
    assert hint == "hf download acme/tiny-qwen config.json tokenizer.json tokenizer_config.json vocab.json merges.txt"
    _, _, llm_repo, *names = hint.split()
    before = len(hub.downloads())
    snapshot_download(llm_repo, allow_patterns=names)
    fetched = hub.downloads()[before:]
    assert fetched and not any(f.endswith(".safetensors") for f in fetched)
    assert find_files(folder).tokenizer is not None and "tokenizer" not in dict(find_files(folder).missing)


def test_a_download_into_a_read_only_cache_says_which_cache_and_what_to_do(hub, tiny_model_dir, monkeypatch):  # noqa: F811
    """A cache on a read-only volume (a Docker volume mounted `:ro`, an NFS share) holding other models:
    a model not in it was "downloading model 'acme/tiny' failed: '<cache>/models--acme--tiny': Read-only
    file system", no word of the cache or of HF_HUB_CACHE. huggingface_hub raises that OSError as it
    creates the repo's folder (seen on a read-only bind mount; root writes through file modes, so the
    test raises it where huggingface_hub does)."""
    import errno

    import huggingface_hub

    from showo2_cli.loading import load

    hub.add_folder("acme/tiny", tiny_model_dir)
    entry = hub.cache / "models--acme--tiny"

    def read_only(repo_id, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(entry))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", read_only)
    with pytest.raises(ModelError) as e:
        load("acme/tiny")
    assert str(e.value) == (f"downloading model 'acme/tiny' failed: '{entry}': Read-only file system; the Hugging Face "
                            f"cache {hub.cache} cannot be written (a read-only volume?): set HF_HUB_CACHE to a folder "
                            "you can write, or pull the model where the cache can be written")
