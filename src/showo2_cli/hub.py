"""Models from the Hugging Face Hub: what a Show-o2 model needs, found in the cache or downloaded.

Everything goes through ``huggingface_hub``: its cache (``HF_HOME`` / ``HF_HUB_CACHE``), its
endpoint (``HF_ENDPOINT``), its offline switch (``HF_HUB_OFFLINE``), its token, its
downloads and its ``.incomplete`` files; a Python call's own ``cache_dir`` and ``token``
(:mod:`showo2_cli.hub_auth`) stand for the environment's for that call. This module only decides *which* files: a Show-o2
checkpoint is its ``config.json`` plus one set of weights (the set :func:`find_weights`
would read: safetensors before pickles, never both), its tokenizer files, and its VAE (the rule, in
:mod:`showo2_cli.hub_files`, re-exported here); the official
repos keep the tokenizer and the LLM config in the Qwen2.5 repo, the SigLIP config in the SigLIP
repo and the VAE in ``Wan-AI/Wan2.1-T2V-14B`` (``Wan2.1_VAE.pth`` only, not the 14B weights), so
:func:`pull` fetches just those files from each.

A snapshot counts as cached only when every file the selection names is there: a download that
failed half-way leaves a snapshot ``huggingface_hub`` records as incomplete, and it is not used
(the next pull resumes it). The library never prints: progress goes to a
``progress(phase, done, total)`` callback in bytes.

A name may pin a revision of the model's repo: ``showlab/show-o2-1.5B@<commit, tag or branch>``
(or ``1.5B@...``); without one it is the repo's ``main``. The companions (tokenizer, VAE) come
from their own repos' ``main``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelError, UsageError, did_you_mean, short
from .hub_auth import access
from .hub_download import (
    cache_ref_readable,
    cached_commit,
    download_files,
    expand_commit,
    offline,
    remote_listing,
    repo_cache_folder,
)

# (re-exported: every name of hub_files)
from .hub_files import DIFFUSERS_VAE_WEIGHTS as DIFFUSERS_VAE_WEIGHTS
from .hub_files import INDEX_FILES as INDEX_FILES
from .hub_files import SINGLE_BIN as SINGLE_BIN
from .hub_files import SINGLE_SAFETENSORS as SINGLE_SAFETENSORS
from .hub_files import TOKENIZER_FILES as TOKENIZER_FILES
from .hub_files import VARIANT_WEIGHTS as VARIANT_WEIGHTS
from .hub_files import WAN_VAE_FILES as WAN_VAE_FILES
from .hub_files import find_weights, model_files, tokenizer_repo_files, variant_hint
from .hub_files import safe_name as safe_name
from .hub_files import tokenizer_files as tokenizer_files
from .hub_files import weight_files as weight_files
from .run_folders import ADAPTER_CONFIG, resolve_run_path
from .weights import read_json

Progress = Callable[[str, int, int], None]

REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")
REVISION = re.compile(r"[\w.-]+(/[\w.-]+)*")  # a commit sha, a tag or a branch (maybe with "/")
SIGLIP_REPO = "google/siglip-so400m-patch14-384"

# ---- names --------------------------------------------------------------------------------------


def existing_path(name: str | os.PathLike) -> Path | None:
    """``name`` (``~`` expanded) when it is an existing file or folder; None when it is not, or
    cannot be a path at all (longer than the file system takes, an unknown ``~user``, a NUL)."""
    try:
        path = Path(str(name)).expanduser()
        return path if path.exists() else None
    except (OSError, RuntimeError, ValueError):
        return None


def is_local(name: str | os.PathLike) -> bool:
    """``demo`` or an existing path: a name the Hugging Face Hub has no part in (no revision, no
    snapshot, no download)."""
    return str(name) == "demo" or existing_path(str(name)) is not None


def split_revision(name: str | os.PathLike) -> tuple[str, str | None]:
    """``owner/name@rev`` or ``variant@rev`` -> ``(name, rev)``; anything else (a path, which may
    hold an ``@``) -> ``(name, None)``."""
    text = str(name)
    if "@" not in text or existing_path(text) is not None:
        return text, None
    base, rev = text.rsplit("@", 1)
    if not base or not REVISION.fullmatch(rev) or ".." in rev or repo_id_for(base) is None:
        return text, None
    return base, rev


def with_revision(name: str | os.PathLike, revision: str | None) -> str | os.PathLike:
    """``name`` pinned to ``revision`` (``from_pretrained(name, revision=...)``): ``name@revision``."""
    if revision is None:
        return name
    text = str(name)
    if not isinstance(revision, str) or not REVISION.fullmatch(revision) or ".." in revision:
        raise UsageError(f"revision must be a commit, tag or branch name, got {revision!r}")
    if split_revision(text)[1] is not None:
        raise UsageError(f"'{text}' already names a revision; give it once")
    if is_local(text) or repo_id_for(text) is None:
        raise UsageError(f"revision= applies to a Hugging Face repo id or a variant, not to '{text}'")
    return f"{text}@{revision}"


def repo_id_for(name: str) -> str | None:
    """The Hub repo of a registry variant (``1.5B`` -> ``showlab/show-o2-1.5B``, any case) or of a
    text shaped like a repo id; None for anything else (a path, ``demo``)."""
    from .specs import REGISTRY

    text = str(name)
    for key, spec in REGISTRY.items():
        if key.lower() == text.lower() and spec.repo_id:
            return spec.repo_id
    return text if is_repo_id(text) else None


def is_repo_id(text: str) -> bool:
    """``owner/name`` as the Hub accepts it (huggingface_hub's own validator: no ``..``, ``--``,
    leading ``.``, trailing ``.``, at most 96 characters)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(text, str) or not REPO_ID.fullmatch(text):
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return not any(part.startswith(".") or part.endswith(".") for part in text.split("/"))


# ---- local folders and the cache, no network ---------------------------------------------------

WAN_VAE_REPO, WAN_VAE_FILE = "Wan-AI/Wan2.1-T2V-14B", "Wan2.1_VAE.pth"
WAN_VAE_DIFFUSERS_REPO = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
def in_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether huggingface_hub's cache lookups may find something of ``repo_id``: its folder is in
    the cache (they find nothing otherwise; a miss, the usual case, then skips importing them, most
    of the time of ``showo2 models``) and its ``refs`` pointer can be read (:func:`cache_ref_readable`)."""
    try:
        return repo_cache_folder(repo_id).is_dir() and cache_ref_readable(repo_id, revision)
    except (OSError, ValueError):
        return False


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    if not in_cache(repo_id):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename, cache_dir=access().cache_dir)
        return Path(found) if isinstance(found, str) and os.path.exists(found) else None
    except Exception:
        return None


def bundled_demo_path() -> Path:
    return Path(__file__).resolve().parent / "assets" / "demo"


def snapshot_revision(root: Path) -> str | None:
    """The commit of a Hugging Face cache snapshot folder (``models--OWNER--NAME/snapshots/COMMIT``),
    which names the exact weights where a repo id or a branch moves on; None for other folders."""
    root = Path(root)
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        return root.name
    return None


def check_name(name: str | os.PathLike) -> None:
    """:func:`resolve_root`'s error for a name that names nothing (not demo, an existing path, a
    variant or a repo id), said without the network and without torch: a mistyped ``--model``
    fails before the command line imports the model libraries (seconds). Other names pass."""
    text = str(name)
    if is_local(text) or repo_id_for(split_revision(text)[0]) is not None:
        return
    resolve_root(text, local_files_only=True)


def check_adapter_name(ref: str | os.PathLike) -> None:
    """A ``--lora`` that is neither an existing path nor a Hugging Face repo id (maybe
    ``@revision``) is a :class:`UsageError`, said without torch: a mistyped adapter path fails
    before any model library is imported or any weight read."""
    text = str(ref)
    if not text.strip():  # (a path of "" is the current folder: a run folder's adapter would load unasked)
        raise UsageError("--lora: the name is empty (give an adapter folder, a training run or a Hugging Face repo id)")
    if existing_path(text) is None and not is_repo_id(split_revision(text)[0]):
        raise UsageError(f"--lora: '{short(text, 200)}' does not exist (give an adapter folder, a training run or a "
                         "Hugging Face repo id: owner/name, maybe @revision)")


def resolve_root(name: str | os.PathLike, local_files_only: bool = False,
                 vae_given: bool = False) -> tuple[str, Path]:
    """Turn a model name into a local folder: demo, a path, a registry name, or a cached repo id
    (downloaded when online, unless ``local_files_only``; ``vae_given``: the caller's load reads
    another VAE, so a repo's own ``vae/`` is neither needed in the cache nor downloaded)."""
    text = str(name)
    if text == "demo":
        root = bundled_demo_path()
        if not (root / "config.json").exists():
            raise ModelError("the bundled demo model is not part of this installation")
        return "demo", root
    if not text.strip():
        raise ModelError("the model name is empty: give demo, a folder, a variant (1.5B, ...) or a repo id")
    path = existing_path(text)
    if path is not None:
        if path.is_file():
            return text, path.parent
        if not (path / "config.json").exists():  # a training run folder: its latest checkpoint
            return text, resolve_run_path(path)
        return text, path
    base, revision = split_revision(text)
    repo = repo_id_for(base)
    if repo is not None:
        revision = expand_commit(repo, revision)  # a short commit hash, as git takes one
        snap = cached_snapshot(repo, revision=revision, vae_given=vae_given)
        if snap is not None:
            return text, snap
        if offline() or local_files_only:
            why = "HF_HUB_OFFLINE is set" if offline() else "local_files_only is set"
            if not vae_given and cached_snapshot(repo, revision=revision, vae_given=True) is not None:
                raise ModelError(f"model '{text}' is in the Hugging Face cache without its own VAE (fetched for a "
                                 f"run with --vae) and {why}: pass --vae, or get it while online with: "
                                 f"showo2 pull {text}")
            gaps = cache_gaps(repo, revision, vae_given)  # (was "not in the Hugging Face cache")
            if gaps:
                raise ModelError(f"model '{text}' is in the Hugging Face cache without {', '.join(gaps[:3])} (an "
                                 f"interrupted download?) and {why}; finish it while online with: showo2 pull {text}")
            folder = "not a local folder, " if "/" in text else ""  # a mistyped path looks like a repo id
            fix = legacy_cache_hint(repo) or f"get it while online with: showo2 pull {text}"
            raise ModelError(f"model '{text}' is {folder}not in the Hugging Face cache and {why}; {fix}")
        return text, download_model(repo, revision=revision, vae_given=vae_given)  # the companions (tokenizer, VAE): showo2 pull
    from .specs import REGISTRY

    spec = next((v for k, v in REGISTRY.items() if k.lower() == text.lower()), None)
    if spec is not None:  # a spec without weights anywhere (tiny): made by init, not loaded
        raise ModelError(f"'{text}' is a model spec with no published weights: make a random one with "
                         f"showo2 init --spec {spec.name} -o DIR, then load DIR")
    names = model_names()
    raise ModelError(f"no model '{short(text, 80)}': not a folder, not a known variant ({', '.join(names)}), "
                     f"not a Hugging Face repo id{did_you_mean(text, names)}")


LEGACY_CACHE_ENV = ("TRANSFORMERS_CACHE", "PYTORCH_TRANSFORMERS_CACHE", "PYTORCH_PRETRAINED_BERT_CACHE")


def legacy_cache_hint(repo_id: str) -> str | None:
    """Where ``repo_id`` is cached only under a legacy cache variable (transformers 4 read
    ``TRANSFORMERS_CACHE``; huggingface_hub never did, transformers 5 and diffusers no longer do),
    the line that names it and how to use it; None otherwise."""
    for var in LEGACY_CACHE_ENV:
        folder = os.environ.get(var, "").strip()
        try:
            if folder and (Path(folder).expanduser() / repo_cache_folder(repo_id).name / "snapshots").is_dir() \
                    and Path(folder).expanduser().resolve() != repo_cache_folder(repo_id).parent.resolve():
                return (f"it is cached under {var} ('{folder}'), which no library reads any more: "
                        f"set HF_HUB_CACHE='{folder}' to use that cache")
        except (OSError, RuntimeError, ValueError):
            continue
    return None


def model_names() -> list[str]:
    """The names a model goes by without a path or a repo id: the published variants, then demo."""
    from .specs import REGISTRY

    return [*(k for k, v in REGISTRY.items() if v.repo_id), "demo"]


def local_or_cached_dir(ref: str | None, root: Path, filename: str) -> Path | None:
    """A folder holding ``filename``: ``ref`` relative to root, absolute, or a cached repo id."""
    if not ref:
        return None
    for cand in (root / ref, ref):
        found = existing_path(Path(cand) / filename)
        if found is not None:
            return found.parent
    if is_repo_id(ref):
        found = hf_cached_file(ref, filename)
        if found is not None:
            return found.parent
    return None


def find_tokenizer(root: Path, config: dict, llm_repo: str | None) -> Path | None:
    for cand in (root, root / "tokenizer"):
        if os.path.exists(cand / "tokenizer.json") or os.path.exists(cand / "tokenizer_config.json"):
            return cand
    for ref in (config.get("llm_model_path"), llm_repo):
        found = local_or_cached_dir(ref, root, "tokenizer_config.json") or local_or_cached_dir(ref, root, "tokenizer.json")
        if found is not None:
            return found
    return None


# ---- the cache ----------------------------------------------------------------------------------


def cached_listing(repo_id: str, revision: str | None = None) -> list[str] | None:
    try:
        from huggingface_hub import get_cached_repo_tree  # huggingface_hub >= 1.x records tree listings
    except ImportError:
        return None
    try:
        return [f.path for f in get_cached_repo_tree(repo_id, revision=revision, cache_dir=access().cache_dir)]
    except Exception:
        return None


def _cached_config(repo_id: str, revision: str | None = None) -> dict | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision, cache_dir=access().cache_dir)
        if isinstance(found, str):
            return read_json(found)
    except (OSError, ModelError):
        return None
    return None


def cached_snapshot(repo_id: str, role: str = "model", revision: str | None = None,
                    vae_given: bool = False) -> Path | None:
    """The cached snapshot folder of ``repo_id`` without any network access, or None.

    Where huggingface_hub recorded the repo's file listing, the snapshot must hold every file that
    :func:`model_files` (``role="model"``) or :func:`tokenizer_repo_files` (``role="tokenizer"``)
    selects from it, so a half-finished download is not a model; without a listing (an older
    cache, a single file fetched by ``hf download``), the folder when it holds a config.json and a
    whole weight set (a tokenizer file for ``role="tokenizer"``). ``revision``: that commit, tag or branch (default ``main``);
    ``vae_given``: a model's own VAE is not needed (the load reads the caller's)."""
    if not in_cache(repo_id, revision):
        return None
    from huggingface_hub import snapshot_download

    listing = cached_listing(repo_id, revision)
    patterns = None
    if listing is not None:
        patterns = (model_files(listing, _cached_config(repo_id, revision), vae_given) if role == "model"
                    else tokenizer_repo_files(listing))
    try:
        snap = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns, revision=revision,
                                      cache_dir=access().cache_dir))
    except Exception:
        return None
    if listing is None and not _looks_complete(snap, role):  # e.g. `hf download REPO config.json` alone
        return None
    return snap


def cache_gaps(repo_id: str, revision: str | None = None, vae_given: bool = False) -> list[str]:
    """The files of the model's selection (:func:`cached_snapshot`'s) that its snapshot in the cache
    lacks, where the cache holds a snapshot of that revision; [] where it holds none (no network)."""
    commit = cached_commit(repo_id, revision)
    try:
        if commit is None or not (snap := repo_cache_folder(repo_id) / "snapshots" / commit).is_dir():
            return []
        if (listing := cached_listing(repo_id, commit)) is not None:
            config = read_json(snap / "config.json") if os.path.isfile(snap / "config.json") else None
            return [n for n in model_files(listing, config, vae_given) if not os.path.isfile(snap / n)]
        weights = [p.relative_to(snap).as_posix() for p in find_weights(snap)]  # _looks_complete's rule
        gaps = [n for n in ("config.json", *weights) if not os.path.isfile(snap / n)]
        return gaps if weights else [*gaps, "its weights"]
    except (OSError, ValueError, ModelError):
        return []


def _looks_complete(snap: Path, role: str) -> bool:
    """Without a recorded listing: a model folder needs its config.json and a whole weight set, a
    tokenizer repo a tokenizer file."""
    if role != "model":
        return any(os.path.isfile(snap / n) for n in ("tokenizer.json", "tokenizer_config.json"))
    try:
        weights = find_weights(snap)
    except ModelError:
        return True  # a damaged shard index: loading says what is wrong
    return os.path.isfile(snap / "config.json") and bool(weights) and all(os.path.isfile(p) for p in weights)


# ---- downloading (the machinery is in hub_download) --------------------------------------------------

def download_model(repo_id: str, progress: Progress | None = None, revision: str | None = None,
                   force_download: bool = False, vae_given: bool = False) -> Path:
    """Fetch a Show-o2 repo's own files (:func:`model_files`; its VAE's not with ``vae_given``) into
    the cache (again where cached, with ``force_download``); return the snapshot."""
    remote = remote_listing(repo_id, "model", revision)
    if "config.json" not in remote:
        adapter = f" (it is a LoRA adapter: give it as --lora {repo_id} with its base model)" \
            if ADAPTER_CONFIG in remote else ""
        raise ModelError(f"'{repo_id}' on the Hub is not a Show-o2 model: it has no config.json{adapter}")
    snap = download_files(repo_id, ["config.json"], None, "model", revision, remote, force_download)
    try:
        config = read_json(snap / "config.json")
    except ModelError as e:
        raise ModelError(f"'{repo_id}' has an unreadable config.json (the Hub's, or the cache's copy): {e}; "
                         f"showo2 pull {repo_id} --force-download fetches it again") from e
    files = model_files(list(remote), config if isinstance(config, dict) else None, vae_given)
    if not weight_files({n for n in remote if safe_name(n)}):  # (was len(files) == 1: never, beside a tokenizer)
        raise ModelError(f"'{repo_id}' on the Hub has no weights (model.safetensors / pytorch_model.bin)"
                         f"{variant_hint(remote)}")
    rest = [f for f in files if f != "config.json"] if force_download else files  # config.json: just fetched
    return download_files(repo_id, rest, progress, "model", revision, remote, force_download)


def is_hub_name(name: str | os.PathLike) -> bool:
    """A variant or repo id (maybe ``@revision``) that names no local folder: a name the Hub serves."""
    return not is_local(name) and repo_id_for(split_revision(name)[0]) is not None


def needs_download(name: str, vae: str | os.PathLike | None = None) -> bool:
    """True for a variant or repo id (maybe ``@revision``) that is not a local folder and may be
    fetched (online): not cached, or cached without a companion :func:`pull` would fetch (``vae``:
    a VAE given by the caller, so the Wan2.1 VAE is no companion)."""
    if not is_hub_name(name) or offline():
        return False
    base, revision = split_revision(name)
    repo = repo_id_for(base)
    snap = cached_snapshot(repo, revision=expand_commit(repo, revision), vae_given=vae is not None)
    if snap is None:
        return True
    from .hub_vae import env_vae_download
    from .model_files import find_files

    if vae is None and env_vae_download(snap) is not None:  # $SHOWO2_VAE's repo, for a model without a VAE
        return True
    try:
        return bool(_companions(find_files(snap, local_files_only=True), vae is not None))
    except ModelError:  # a damaged model: loading says what is wrong
        return False


def _companions(files, vae_given: bool = False) -> list[tuple[str, str]]:
    """(repo, what) of each companion repo :func:`pull` fetches for what ``files`` (find_files) misses
    (``vae_given``: the load reads the caller's VAE, so the Wan2.1 VAE repo's is none)."""
    from .specs import spec_for_hidden_size

    config, out = files.config, []
    if files.format == "official":
        llm_ref = config.get("llm_model_path")
        if files.tokenizer is None or files.llm_config is None:
            llm_repo = llm_ref if isinstance(llm_ref, str) and is_repo_id(llm_ref) else None
            if llm_repo is None:
                guess = spec_for_hidden_size(int(config.get("hidden_size", 0) or 0))
                llm_repo = guess.llm_repo_id if guess else None
            if llm_repo is not None:
                out.append((llm_repo, "tokenizer"))
        sig = config.get("clip_pretrained_model_path")
        if files.siglip_config is None and isinstance(sig, str) and is_repo_id(sig):
            out.append((sig, "SigLIP config"))
    if files.vae is None and not vae_given:
        out.append((WAN_VAE_REPO, "VAE"))
    return out


@dataclass
class PullResult:
    """What :func:`pull` did: the model's folder, each piece's location, the repos it fetched."""

    name: str
    repo_id: str | None  # None for the bundled demo or a local folder (nothing to download)
    path: Path
    pieces: dict[str, str | None] = field(default_factory=dict)
    downloaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def pull(name: str, progress: Progress | None = None, *, force_download: bool = False,
         cache_dir: str | os.PathLike | None = None, token: bool | str | None = None,
         vae: str | os.PathLike | None = None) -> PullResult:
    """Make a model loadable offline: its repo, then whatever :func:`model_files.find_files` still
    misses (the tokenizer from the LLM repo, the SigLIP config, the Wan2.1 VAE file). Cached pieces
    are not fetched again; ``force_download`` fetches the model repo's files anew (the companion
    repos, which other models share, only when missing); with ``HF_HUB_OFFLINE`` set, only the cache is consulted.
    ``cache_dir`` and ``token`` are huggingface_hub's, for this call (default: the environment's,
    or those of the running :func:`~showo2_cli.hub_download.hub_access`). ``vae``: the VAE the
    caller's load reads instead (``--vae``, ``load(vae=)``): it must exist (a repo id's VAE is
    fetched first), said before any download, and neither the Wan2.1 VAE nor the model's own
    ``vae/`` is fetched for it."""
    from contextlib import nullcontext

    if vae is not None:  # a VAE that is not there: the load's own error, before anything is fetched
        from .hub_vae import explicit_vae

        explicit_vae(vae, progress)  # (a Hub repo id's VAE: fetched first)

    from .hub_auth import hub_access

    with hub_access(cache_dir, token) if cache_dir is not None or token is not None else nullcontext():
        return _pull(name, progress, force_download, vae is not None)


def _pull(name: str, progress: Progress | None, force_download: bool, vae_given: bool = False) -> PullResult:
    from .model_files import find_files

    if is_local(name):  # the demo (listed by `showo2 models` as every variant is) or a folder: already here,
        root = resolve_root(name)[1].absolute()  # and what every command loads by that name (a folder first)
        files = find_files(root)
        return PullResult(str(name), None, root, _pieces(files), missing=[p for p, _ in files.missing])
    base, revision = split_revision(name)
    repo = repo_id_for(base)
    if repo is None:
        raise ModelError(f"'{short(name, 80)}' is neither a known variant nor a Hugging Face repo id (owner/name, "
                         f"maybe @revision){did_you_mean(base, model_names())}")
    if force_download and offline():
        raise ModelError(f"force_download needs the Hub, but HF_HUB_OFFLINE is set; '{name}' was not fetched again")
    revision = expand_commit(repo, revision)
    downloaded = []
    snap = None if force_download else cached_snapshot(repo, revision=revision, vae_given=vae_given)
    if snap is None:
        snap = download_model(repo, progress, revision, force_download, vae_given)
        downloaded.append(repo if revision is None else f"{repo}@{revision}")
    from .hub_vae import env_vae_download, fetch_vae

    env = None if vae_given else env_vae_download(snap)
    if env is not None:  # a model without a VAE of its own takes $SHOWO2_VAE's: a Hub repo not yet cached
        fetch_vae(env, progress)
        downloaded.append(env)
    files = find_files(snap, local_files_only=True)
    for companion, what in _companions(files, vae_given):
        remote = remote_listing(companion, what)  # sizes and checksums
        chosen = (tokenizer_repo_files(list(remote)) if what == "tokenizer" else
                  ["config.json"] if what == "SigLIP config" else [WAN_VAE_FILE])
        download_files(companion, chosen, progress, what, remote=remote)
        downloaded.append(companion)
    if downloaded:
        files = find_files(snap)
    return PullResult(str(name), repo, snap, _pieces(files), downloaded, [p for p, _ in files.missing])


def _pieces(files) -> dict[str, str | None]:
    """Where each piece of a pulled model is (``showo2 pull --json``'s ``pieces``)."""
    return {"config": str(files.root / "config.json"), "weights": ", ".join(str(p) for p in files.weights) or None,
            "tokenizer": str(files.tokenizer) if files.tokenizer else None,
            "VAE": str(files.vae) if files.vae else None}
