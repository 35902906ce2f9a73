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
