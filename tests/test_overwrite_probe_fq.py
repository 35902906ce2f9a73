"""``--overwrite`` replaces a model folder, never a folder that is not one (probe FQ): ``showo2 init
-o ~ --overwrite`` deleted a home folder (its ``.pyenv`` and ``.gitconfig``) and left a tiny model
there."""

from __future__ import annotations

import pytest

from showo2_cli.errors import OutputError
from showo2_cli.model_files import check_output_folder


def test_overwrite_refuses_a_folder_that_is_not_a_model_folder(tmp_path):
    from showo2_cli.loading import init_model

    home = tmp_path / "home"
    (home / ".pyenv" / "bin").mkdir(parents=True)
    (home / ".pyenv" / "bin" / "python3").write_text("#!")
    (home / ".gitconfig").write_text("[user]")
    with pytest.raises(OutputError, match="not a model folder") as e:
        init_model("tiny", home, overwrite=True)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in home.iterdir()) == [".gitconfig", ".pyenv"]  # nothing was touched
    assert (home / ".pyenv" / "bin" / "python3").read_text() == "#!"
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output_folder(empty, overwrite=True)  # an empty folder is replaced, as before
    (home / "config.json").write_text("{}")
    check_output_folder(home, overwrite=True)  # a model folder (its config.json) is replaced, as before


def test_overwrite_never_replaces_the_home_folder_even_holding_a_config(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text("{}")  # (some tool's config.json at the top of a home folder)
    monkeypatch.setenv("HOME", str(home))
    for target in (home, tmp_path):
        with pytest.raises(OutputError, match="it is the home folder or holds it"):
            check_output_folder(target, overwrite=True)
    assert (home / "config.json").read_text() == "{}"
