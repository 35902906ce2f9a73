"""Where the VAE a load reads is: ``--vae`` (:func:`explicit_vae`), a model folder's own
(:func:`own_vae`), ``$SHOWO2_VAE`` or the cached Wan2.1 VAE (:func:`shared_vae`).

``--vae``, ``$SHOWO2_VAE`` and ``load(vae=)`` may name a Hugging Face repo id, maybe
``@revision``, as diffusers users name a VAE: ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (its VAE in
``vae/``), or a repo holding one at its root (a diffusers ``config.json`` with
``diffusion_pytorch_model`` weights, or a ``Wan2.1_VAE*.pth`` / ``.safetensors`` file).

The rules are the model's (:mod:`showo2_cli.hub`): an existing path comes first; a cached
snapshot holding the VAE's files is used without a request; ``HF_HUB_OFFLINE`` (or
``local_files_only``) with nothing cached is one line; otherwise only the VAE's files are
downloaded (never the rest of a pipeline repo), with a ``progress(phase, done, total)`` callback.
Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError, short
from .hub import (
    DIFFUSERS_VAE_WEIGHTS,
    WAN_VAE_DIFFUSERS_REPO,
    WAN_VAE_FILE,
    WAN_VAE_FILES,
    WAN_VAE_REPO,
    Progress,
    cached_listing,
    existing_path,
    hf_cached_file,
    in_cache,
    is_repo_id,
    safe_name,
    split_revision,
    weight_files,
)
from .hub_auth import access
from .hub_download import download_files, offline, remote_listing
from .run_folders import resolve_run_path

#: What a name ending so is: a weight file (a mistyped path), never a repo id to ask the Hub for.
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".json")


def vae_repo(ref: str | os.PathLike) -> tuple[str, str | None] | None:
    """``(repo, revision)`` when ``ref`` names no existing path and reads as a Hub repo id (maybe
    ``@revision``); None otherwise (a path, a missing file: ``vaes/wan.pth`` is a file name)."""
    text = str(ref)
    if existing_path(text) is not None or text.lower().endswith(FILE_SUFFIXES):
        return None
    repo, revision = split_revision(text)
    return (repo, revision) if is_repo_id(repo) else None


def vae_files(listing) -> list[str]:
    """The files of a repo's VAE: its ``vae/`` folder (a diffusers pipeline repo: config and one
    weight set), else a ``Wan2.1_VAE*`` file at its root, else its root ``config.json`` and one
    ``diffusion_pytorch_model`` file (a repo of the VAE alone, as diffusers saves one; a model's
    ``model.safetensors`` or ``pytorch_model.bin`` is no VAE); [] when it has none."""
    names = {n for n in listing if safe_name(n)}
    sub = weight_files(names, "vae")
    if "vae/config.json" in names and len(sub) == 1:  # (shards and their index: load_vae reads one file)
        return ["vae/config.json", *sub]
    # own_vae's order: .pth, then .safetensors ("Wan2.1_VAE-x.safetensors" sorts before "Wan2.1_VAE.pth")
    wan = sorted((n for n in names if WAN_VAE_FILES.fullmatch(n)), key=lambda n: (not n.endswith(".pth"), n))[:1]
    if wan:
        return wan
    root = [n for n in DIFFUSERS_VAE_WEIGHTS if n in names][:1]  # (a model's own weights at its root are no VAE)
    if "config.json" in names and root:
        return ["config.json", *root]
    return []


def _location(snap: Path, files: list[str]) -> Path:
    """The folder or file :func:`~showo2_cli.modeling.vae_files.load_vae` reads from ``files``."""
    if files[0] == "vae/config.json":
        return snap / "vae"
    return snap / files[0] if WAN_VAE_FILES.fullmatch(files[0]) else snap


def cached_vae(repo: str, revision: str | None = None) -> Path | None:
    """The VAE of ``repo`` in the Hugging Face cache, without any request: a snapshot holding every
    file :func:`vae_files` selects from the recorded listing (or, without one, the files found)."""
    if not in_cache(repo, revision):
        return None
    from huggingface_hub import snapshot_download

    listing = cached_listing(repo, revision)
    try:
        snap = Path(snapshot_download(repo, local_files_only=True, revision=revision, cache_dir=access().cache_dir,
                                      allow_patterns=vae_files(listing) if listing is not None else None))
    except Exception:
        return None
    if listing is None:
        listing = [p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()]
    files = vae_files(listing)
    if not files or not all((snap / f).is_file() for f in files):
        return None
    return _location(snap, files)


def needs_vae_download(ref: str | os.PathLike | None) -> bool:
    """A VAE named by a repo id that is not cached, when online (:func:`fetch_vae` would download)."""
    found = vae_repo(ref) if ref is not None else None
    return found is not None and not offline() and cached_vae(*found) is None


def fetch_vae(ref: str | os.PathLike, progress: Progress | None = None, local_files_only: bool = False) -> Path:
    """The VAE a repo id (maybe ``@revision``) names: cached, or its files (:func:`vae_files`)
    downloaded; offline or ``local_files_only`` with nothing cached, a one-line :class:`ModelError`."""
    found = vae_repo(ref)
    if found is None:
        raise ModelError(f"VAE '{short(str(ref), 200)}' does not exist")
    repo, revision = found
    snap = cached_vae(repo, revision)
    if snap is not None:
        return snap
    if offline() or local_files_only:
        why = "HF_HUB_OFFLINE is set" if offline() else "only the cache is looked in (local_files_only)"
        raise ModelError(f"VAE '{short(str(ref), 200)}' is not a local path, not in the Hugging Face cache and {why}; "
                         "any command given it online downloads it")
    remote = remote_listing(repo, "VAE", revision)
    files = vae_files(remote)
    if not files:
        sharded = len(weight_files({n for n in remote if safe_name(n)}, "vae")) > 1
        raise ModelError(f"'{repo}' on the Hub has no Wan2.1 VAE: no vae/config.json with weights"
                         f"{' in one file (its vae/ is sharded: showo2 reads a VAE of one weight file)' if sharded else ''}, "
                         "no Wan2.1_VAE.pth, no config.json with diffusion_pytorch_model weights at its root")
    snap = download_files(repo, files, progress, "VAE", revision, remote)
    return _location(snap, files)


def env_vae_download(root: Path) -> str | None:
    """``$SHOWO2_VAE`` when the model folder ``root`` has no VAE of its own (so its load takes that
    one) and it names a Hub repo not cached yet, online: the VAE :func:`~showo2_cli.hub.pull`
    fetches with the model; None otherwise."""
    env = os.environ.get("SHOWO2_VAE", "").strip()
    return env if env and own_vae(root) is None and needs_vae_download(env) else None


# ---- the VAE a load reads ---------------------------------------------------------------------

def explicit_vae(path: str | os.PathLike, progress: Progress | None = None, local_files_only: bool = False) -> Path:
    """A VAE the user named (``--vae``, ``load(vae=)``), ``~`` expanded: one check and one message
    for every command (``encode`` and ``decode`` load a VAE alone, the others with a model). A
    training run folder (``mode = "vae"``) stands for its latest checkpoint, as for ``--model``,
    ``--lora`` and a config's ``model.vae``. A name that is no path but a Hub repo id (maybe
    ``@revision``) is that repo's VAE, cached or downloaded (:func:`fetch_vae`:
    ``progress``, ``local_files_only`` and ``HF_HUB_OFFLINE`` as for a model)."""
    found = existing_path(path)
    if found is None:
        if vae_repo(path) is not None:
            return fetch_vae(path, progress, local_files_only)
        raise ModelError(f"VAE '{short(str(path), 200)}' does not exist")
    return resolve_run_path(found)


def own_vae(root: Path) -> Path | None:
    """The VAE a model folder holds itself (``vae/``, a ``Wan2.1_VAE*`` file), or None."""
    if os.path.exists(root / "vae" / "config.json"):  # (os.path: False, not OSError, for a link to a name too long)
        return root / "vae"
    pths = sorted(root.glob("Wan2.1_VAE*.pth")) + sorted(root.glob("Wan2.1_VAE*.safetensors"))
    return pths[0] if pths else None


def find_vae(root: Path, local_files_only: bool = False) -> Path | None:
    """The VAE a model folder's load reads when none is given (a given one: :func:`explicit_vae`)."""
    found = own_vae(root)  # the model's own VAE, then $SHOWO2_VAE, then the cache
    return found if found is not None else shared_vae(local_files_only)


def shared_vae(local_files_only: bool = False) -> Path | None:
    """The VAE a model without its own takes: ``$SHOWO2_VAE`` (a path or a Hub repo id, as
    ``--vae``; an error when it names nothing), else the Wan2.1 VAE in the Hugging Face cache (the
    single file, else the diffusers repo's)."""
    env = os.environ.get("SHOWO2_VAE", "").strip()
    if env:
        path = existing_path(env)
        if path is None:
            if vae_repo(env) is not None:
                return fetch_vae(env, local_files_only=local_files_only)
            raise ModelError(f"$SHOWO2_VAE names '{short(env, 200)}', which does not exist")
        return resolve_run_path(path)
    found = hf_cached_file(WAN_VAE_REPO, WAN_VAE_FILE)
    if found is not None:
        return found
    snap = hf_cached_file(WAN_VAE_DIFFUSERS_REPO, "vae/config.json")
    if snap is not None:
        return snap.parent
    return None
