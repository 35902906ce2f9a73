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
