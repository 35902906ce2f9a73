"""Which files make a Show-o2 model: in a local folder (:func:`find_weights`) and in a Hub repo's
listing (:func:`model_files`, :func:`tokenizer_repo_files`), chosen by one rule: its
``config.json``, one set of weights (a shard index and its shards, a single safetensors, pickled
shards, a single pickle: safetensors before pickles, never both), its tokenizer files, its VAE.
Names only (no network, no cache); :mod:`showo2_cli.hub` re-exports every name here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from .errors import ModelError, short
from .weights import read_json

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja")
INDEX_FILES = ("model.safetensors.index.json", "diffusion_pytorch_model.safetensors.index.json",
               "pytorch_model.bin.index.json", "diffusion_pytorch_model.bin.index.json")
SINGLE_SAFETENSORS = ("model.safetensors", "pytorch_model.safetensors", "diffusion_pytorch_model.safetensors")
SINGLE_BIN = ("pytorch_model.bin", "diffusion_pytorch_model.bin")
#: A Wan2.1 VAE file in a repo or folder (the original layout's single file, as its repos name it)
WAN_VAE_FILES = re.compile(r"Wan2\.1_VAE[^/]*\.(pth|safetensors)")
#: The weight files of a diffusers VAE folder, as ``load_vae`` reads one (safetensors first)
DIFFUSERS_VAE_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def find_weights(root: Path) -> list[Path]:
    """The weight files of a local folder, in the one order (:data:`INDEX_FILES`, then a single
    safetensors, pickled shards, a single pickle) that :func:`weight_files` applies to a repo listing."""
    for index_name in INDEX_FILES:
        index = root / index_name
        if os.path.exists(index):  # (os.path: False, not OSError, for a link to a name too long)
            try:
                shards = sorted(set(read_json(index)["weight_map"].values()))
                for x in shards:  # ("" named the folder itself: "weight file 'FOLDER' is not a regular file")
                    if not isinstance(x, str) or not x or "/" in x or x.startswith("."):
                        raise ValueError(f"shard names must be file names in the folder, got {short(repr(x), 80)}")
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise ModelError(f"cannot read the shard index '{index}': {e}") from e
            return [root / s for s in shards]
    for name in SINGLE_SAFETENSORS:
        if os.path.exists(root / name):
            return [root / name]
    shards = sorted(root.glob("pytorch_model-*-of-*.bin"))
    if shards:
        return shards
    for name in SINGLE_BIN:
        if os.path.exists(root / name):
            return [root / name]
    return []


#: a weight file saved with transformers' or diffusers' ``variant=`` (``model.fp16.safetensors``, a
#: variant's shard ``model.fp16-00001-of-00002.safetensors`` or its index)
VARIANT_WEIGHTS = re.compile(r"(model|pytorch_model|diffusion_pytorch_model)\.([\w]+)"
                             r"(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?")


def variant_hint(names) -> str:
    """For a folder or repo whose file ``names`` hold no weight set under the plain names: the
    ``variant`` weights it holds instead and how to read them (showo2 reads the plain names only,
    as ``from_pretrained`` without ``variant=`` does); "" where there are none."""
    found = sorted(n for n in names if VARIANT_WEIGHTS.fullmatch(n))
    if not found:
        return ""
    variants = sorted({VARIANT_WEIGHTS.fullmatch(n).group(2) for n in found})
    single = [n for n in found if not VARIANT_WEIGHTS.fullmatch(n).group(3) and not n.endswith(".json")]
    shown = ", ".join(found[:3]) + (f" (+{len(found) - 3} more)" if len(found) > 3 else "")
    plain = VARIANT_WEIGHTS.sub(r"\1.\4", single[0]) if single else ""
    fix = f"rename {single[0]} to {plain}" if len(single) == 1 and len(found) == 1 else \
        "save the model again without variant="
    return (f"; it holds {shown}, saved with variant={variants[0]!r}{' (and others)' if len(variants) > 1 else ''}, "
            f"which showo2 does not read: {fix}")


def weight_files(names: set[str], folder: str = "") -> list[str]:
    """The weight files of ``folder`` in a repo listing, chosen in :func:`find_weights`'s
    order (a shard index and its shards, a single safetensors, pickled shards, a single pickle)."""
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    here = sorted(n[len(prefix):] for n in names if n.startswith(prefix) and "/" not in n[len(prefix):])
    for index in INDEX_FILES:
        if index in here:
            suffix = ".safetensors" if ".safetensors" in index else ".bin"
            return [prefix + index] + [prefix + n for n in here if n.endswith(suffix) and "-of-" in n]
    for group in (SINGLE_SAFETENSORS, None, SINGLE_BIN):
        if group is None:
            shards = [n for n in here if re.fullmatch(r"pytorch_model-.+-of-.+\.bin", n)]
            if shards:
                return [prefix + n for n in shards]
            continue
        for n in group:
            if n in here:
                return [prefix + n]
    return []


def tokenizer_files(names: set[str], folder: str = "") -> list[str]:
    prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
    return [prefix + n for n in TOKENIZER_FILES if prefix + n in names]


def model_files(listing: list[str], config: dict | None, vae_given: bool = False) -> list[str]:
    """The files of a Show-o2 repo to fetch: config, one weight set, tokenizer files, a VAE (none
    with ``vae_given``: the load reads the caller's), and the LLM/SigLIP config folders when
    ``config`` points inside the repo (``llm_model_path: llm``)."""
    names = {n for n in listing if safe_name(n)}
    chosen = ["config.json", *weight_files(names), *tokenizer_files(names), *tokenizer_files(names, "tokenizer")]
    if "vae/config.json" in names and not vae_given:
        chosen += ["vae/config.json", *weight_files(names, "vae")]
    if not vae_given:
        chosen += sorted(n for n in names if WAN_VAE_FILES.fullmatch(n))[:1]
    for key in ("llm_model_path", "clip_pretrained_model_path"):
        ref = (config or {}).get(key)
        if isinstance(ref, str) and ref.strip("/") and not ref.startswith("/"):
            sub = PurePosixPath(ref.strip("/")).as_posix()
            if f"{sub}/config.json" in names:
                chosen += [f"{sub}/config.json", *tokenizer_files(names, sub)]
    return list(dict.fromkeys(chosen))


def safe_name(name: str) -> bool:
    """A relative file name inside the repo: no ``..`` or ``.`` parts, not absolute, no backslash."""
    return (isinstance(name, str) and bool(name) and not name.startswith("/") and "\\" not in name
            and all(part not in ("", ".", "..") for part in name.split("/")))


def tokenizer_repo_files(listing: list[str]) -> list[str]:
    """From an LLM repo (Qwen2.5): its config.json and tokenizer files, never its weights."""
    names = {n for n in listing if safe_name(n)}
    return [n for n in ("config.json",) if n in names] + tokenizer_files(names)
