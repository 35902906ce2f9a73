"""A model's pieces found on disk: the weights, the configs, the tokenizer and the VAE of a named
model (:func:`find_files`), each missing one listed with how to get it.

Torch-free (as :mod:`showo2_cli.hub` and :func:`showo2_cli.weights.read_json`, which it uses), so
the commands that only look at files (``showo2 models``) answer without importing torch;
:mod:`showo2_cli.loading` reads the files found into a bundle.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError, OutputError, short, unexpanded_home
from .hub import (
    ADAPTER_CONFIG,
    DIFFUSERS_VAE_WEIGHTS,
    TOKENIZER_FILES,
    WAN_VAE_FILE,
    WAN_VAE_REPO,
    find_tokenizer,
    find_weights,
    is_local,
    local_or_cached_dir,
    resolve_root,
    snapshot_revision,
    variant_hint,
)
from .hub_vae import explicit_vae, find_vae
from .model_config import check_official_config
from .specs import spec_for_hidden_size
from .weights import read_json

#: what a Show-o2 load reads of the Qwen2.5 repo (:func:`~showo2_cli.hub.tokenizer_repo_files`'s
#: picks), as ``hf download REPO FILES...`` takes them: the repo alone also fetched the LLM's weights,
#: never read (Qwen2.5-1.5B-Instruct's 3.1 GB, 7B-Instruct's 15 GB)
LLM_REPO_FILES = "config.json tokenizer.json tokenizer_config.json vocab.json merges.txt"


@dataclass
class ModelFiles:
    """Where each piece of a model was found (None = missing)."""

    name: str
    root: Path
    format: str  # "official" or "showo2"
    config: dict
    weights: list[Path]
    llm_config: Path | None = None
    siglip_config: Path | None = None
    tokenizer: Path | None = None
    vae: Path | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)  # (piece, how to get it)
    revision: str | None = None  # the Hugging Face commit of a cached repo's snapshot

    def pieces(self) -> list[Path]:
        """Every file or folder the model was read from (the root, weights, configs, tokenizer, VAE)."""
        return [p for p in (self.root, *self.weights, self.llm_config, self.siglip_config, self.tokenizer, self.vae)
                if p is not None]

    def describe(self) -> dict:
        return {
            "root": str(self.root), "format": self.format, "weights": [str(p) for p in self.weights],
            "llm_config": _s(self.llm_config), "siglip_config": _s(self.siglip_config),
            "tokenizer": _s(self.tokenizer), "vae": _s(self.vae),
        }


def _s(p):
    return str(p) if p is not None else None


def find_files(name: str | os.PathLike, vae: str | os.PathLike | None = None,
               local_files_only: bool = False) -> ModelFiles:
    """Locate every piece of a model; missing pieces are listed in ``missing`` with a hint
    (``local_files_only``: never download, see :func:`showo2_cli.hub.resolve_root`)."""
    vae_given = bool(vae)
    if vae:  # a --vae that is not there fails before the model is resolved (and maybe downloaded)
        vae = explicit_vae(vae, local_files_only=local_files_only)
    label, root = resolve_root(name, local_files_only, vae_given)
    cfg_path = root / "config.json"
    if not os.path.exists(cfg_path):  # (False, not OSError, for a link to a name too long)
        if cfg_path.is_symlink():  # (a link to a removed file, or a loop: no subfolder is the model)
            from .media.files import missing_input

            raise missing_input(cfg_path, "config", ModelError)
        given = Path(name) if isinstance(name, (str, os.PathLike)) else root
        if given.exists() and not given.is_dir():
            raise ModelError(f"'{given}' is a file, not a Show-o2 model folder (give the folder holding config.json)")
        raise ModelError(f"'{root}' is not a Show-o2 model folder: it has no config.json{_subfolder_hint(root)}")
    config = read_json(cfg_path)
    fmt = "showo2" if "showo2" in config else "official"
    if fmt == "official":
        check_official_config(config, cfg_path)
    # the commit of a snapshot the name (a repo id, a variant) led to; a folder typed is the weights
    # already (a revision after it, as a record's --model NAME@REV, would name no model)
    named = not is_local(name)
    files = ModelFiles(label, root, fmt, config, find_weights(root), revision=snapshot_revision(root) if named else None)
    if not files.weights:
        files.missing.append(("weights", f"no model.safetensors / pytorch_model.bin in '{root}'"
                                         f"{variant_hint(_file_names(root))}"))
    absent = [p.name for p in files.weights if not os.path.exists(p)]  # (False for a name no file can have)
    if absent:  # shards a shard index names, not (or not yet) downloaded: was "internal error: FileNotFoundError"
        files.missing.append(("weights", f"{len(absent)} of the {len(files.weights)} shards its index names "
                                         f"(e.g. {short(repr(absent[0]), 80)}) are not in '{root}'"))
    if fmt == "official":
        llm_ref = config.get("llm_model_path")
        files.llm_config = local_or_cached_dir(llm_ref, root, "config.json")
        files.llm_config = files.llm_config / "config.json" if files.llm_config else None
        sig = local_or_cached_dir(config.get("clip_pretrained_model_path"), root, "config.json")
        files.siglip_config = sig / "config.json" if sig else None
        llm_repo = llm_ref
        if not llm_ref or not re.fullmatch(r"[\w.-]+/[\w.-]+", str(llm_ref)):
            guess = spec_for_hidden_size(int(config.get("hidden_size", 0) or 0))
            llm_repo = guess.llm_repo_id if guess else None
        files.tokenizer = find_tokenizer(root, config, llm_repo)
        if files.tokenizer is None:
            repo = llm_repo or "Qwen/Qwen2.5-1.5B-Instruct"
            files.missing.append(("tokenizer", f"hf download {repo} {LLM_REPO_FILES}"))
    else:
        files.tokenizer = find_tokenizer(root, {}, None)
        if files.tokenizer is None:
            files.missing.append(("tokenizer", f"no tokenizer files in '{root}'"))
    files.vae = vae if vae_given else find_vae(root, local_files_only)  # (a --vae: resolved above)
    if files.vae is None:
        files.missing.append(("VAE", f"hf download {WAN_VAE_REPO} {WAN_VAE_FILE} (or pass --vae PATH)"))
    from .media import lfs_pointer_note

    for piece, where, names in (("tokenizer", files.tokenizer, TOKENIZER_FILES),
                                ("VAE", files.vae, ("config.json", *DIFFUSERS_VAE_WEIGHTS))):
        # a clone without Git LFS: found, but only its pointer (was listed as found by info and models)
        note = lfs_pointer_note([where] if where and os.path.isfile(where) else
                                [Path(where) / n for n in names] if where else [])
        if note:
            files.missing.append((piece, note))
    return files


#: the official constructor's ``patch_size`` (a config.json that omits it) and the Wan2.1 VAE's
#: spatial factor: an official checkpoint's sides are multiples of their product; the released
#: models' (patch 2) multiple, where no config is at hand
OFFICIAL_DEFAULT_PATCH, VAE_SPATIAL = 2, 8
RELEASED_MULTIPLE = VAE_SPATIAL * OFFICIAL_DEFAULT_PATCH


def sizes_at_hand(name: str | os.PathLike | None):
    """``(spec, multiple)``: what the checks before a load judge sizes by, from the model's
    ``config.json`` when it is at hand without a download (the demo, a folder, a cached snapshot),
    read once. A showo2-format config: its :class:`~showo2_cli.specs.ModelSpec` and that spec's
    multiple (a ``patch_size`` 4 model takes multiples of 32 px, one of 1 multiples of 8). An
    official one: no spec (its other sizes are in its weights' shapes) and 8 x its ``patch_size``,
    from which the official constructor builds both patch embeddings (2 when absent). Otherwise
    (no name, not at hand, a config that makes no spec): ``(None, RELEASED_MULTIPLE)``, and the
    load says more."""
    from .errors import UsageError
    from .model_config import spec_from_files

    unknown = None, RELEASED_MULTIPLE
    if name is None:
        return unknown
    try:
        label, root = resolve_root(name, local_files_only=True)
        config = read_json(root / "config.json")
    except (ModelError, UsageError, OSError, ValueError, TypeError):
        return unknown
    if not isinstance(config, dict):
        return unknown
    if "showo2" in config:
        try:
            spec = spec_from_files(ModelFiles(label, root, "showo2", config, []), {})
        except (ModelError, UsageError, ValueError, TypeError):
            return unknown
        return spec, spec.latent_multiple
    try:
        check_official_config(config, root / "config.json")
    except ModelError:
        return unknown
    patch = config.get("patch_size")
    return None, VAE_SPATIAL * (OFFICIAL_DEFAULT_PATCH if patch is None else patch)


def _file_names(root: Path) -> list[str]:
    """The names in ``root`` ([] where it cannot be listed)."""
    try:
        return os.listdir(root)
    except OSError:
        return []


def _subfolder_hint(root: Path) -> str:
    """Name a subfolder holding a config.json (an official training checkpoint keeps the model in
    ``checkpoint-N/unwrapped_model``), or say the folder is a LoRA adapter (a checkpoint of a
    ``[lora]`` run: its base loads with it), for the error of a folder that has none."""
    if (root / ADAPTER_CONFIG).is_file():
        try:
            base = read_json(root / ADAPTER_CONFIG).get("base_model_name_or_path")
        except (ModelError, AttributeError):
            base = None
        base = short(base, 60) if isinstance(base, str) and base and base.isprintable() else "BASE"
        return f" (it is a LoRA adapter: give its base model and the adapter, --model {base} --lora {root})"
    if root.name.startswith("models--") and "--" in root.name[8:] and (root / "snapshots").is_dir():
        repo = root.name[8:].replace("--", "/", 1)  # huggingface_hub's cache folder of a repo
        return (f" (it is a Hugging Face cache's entry of '{short(repo, 100)}': give a folder under its snapshots/, "
                f"or the repo id {short(repo, 100)} where that cache is HF_HUB_CACHE)")
    try:
        # (a model folder's own VAE in vae/ has a config.json too, and is no model)
        found = sorted(p.name for p in root.iterdir() if p.name != "vae" and (p / "config.json").is_file())
    except OSError:
        return ""
    return f" (its subfolder '{found[0]}' has one: give that folder)" if len(found) == 1 else ""


def missing_message(files: ModelFiles, pieces: tuple[str, ...]) -> str | None:
    wanted = [(p, h) for p, h in files.missing if p in pieces]
    if not wanted:
        return None
    parts = "; ".join(f"{p} ({h})" for p, h in wanted)
    return f"model '{files.name}' is incomplete: missing {parts}"


#: a folder ``overwrite`` may replace holds one of these (a model folder: the official layout's,
#: showo2's or diffusers'), or nothing
_MODEL_FOLDER_MARKS = ("config.json", "model_index.json")


def check_output_folder(path: str | os.PathLike, overwrite: bool = False) -> None:
    """A model folder to write: its parent exists and takes new entries; it does not exist yet
    (or ``overwrite``); replacing it would not replace the current or home folder or one holding it (its
    files, and everything beside them, were deleted), nor a folder that is neither empty nor a model
    folder (a home folder). Probed by creating and removing a hidden
    folder, so a read-only or pseudo file system fails here, before anything is built. Every
    model-folder writer (:func:`save_folder`, :func:`init_model`, ``convert``, the pipeline's
    ``save_pretrained``) checks it."""
    path = Path(os.fspath(path))
    try:
        _check_output_folder(path, overwrite)
    except OutputError:  # an OSError too: said as it is
        raise
    except OSError as e:  # a name too long, a parent that cannot be searched, ...
        raise OutputError(f"cannot write '{path}': {e.strerror or e}") from None


def _check_output_folder(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise OutputError(f"'{path}' exists and is not a folder")
    if path.exists() and not overwrite:
        raise OutputError(f"'{path}' already exists; pass --overwrite to replace it")
    from .media.outputs import check_replaceable  # (media imports numpy and PIL: not for `models`, `info`)

    check_replaceable(path)
    full = path.resolve()
    for name, place in (("the current folder", Path.cwd), ("the home folder", Path.home)):
        try:
            here = place().resolve()
        except (RuntimeError, OSError, KeyError):  # (no home known)
            continue
        if path.exists() and (full == here or full in here.parents):
            raise OutputError(f"cannot replace '{path}': it is {name} or holds it (choose another folder)")
    if path.exists() and any(path.iterdir()) and not any((path / n).is_file() for n in _MODEL_FOLDER_MARKS):
        # replacing deletes the whole folder: `init -o ~ --overwrite` deleted a home folder
        raise OutputError(f"cannot replace '{path}': it is not a model folder (no {' or '.join(_MODEL_FOLDER_MARKS)} "
                          "in it) and is not empty (choose another folder, or empty it first)")
    parent = full.parent
    if not parent.is_dir():  # as check_output_path says it for a file
        gone = f"'{parent}' is not a folder" if parent.exists() else \
            f"folder '{parent}' does not exist{unexpanded_home(path)}"
        raise OutputError(f"cannot write '{path}': {gone}")
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise OutputError(f"cannot write '{path}': cannot create a folder in '{parent}' ({e.strerror or e})") from e
