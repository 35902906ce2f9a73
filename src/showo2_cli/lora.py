"""LoRA adapters (through peft): added to a network for training, saved alone, merged on load.

An adapter is a folder in peft's own layout (what ``PeftModel.save_pretrained`` writes):
``adapter_model.safetensors`` (the low-rank ``lora_A``/``lora_B`` matrices, keys without the
adapter name and with peft's ``base_model.model.`` prefix, so ``PeftModel.from_pretrained(network,
folder)`` loads it) and ``adapter_config.json`` (peft's ``LoraConfig``: rank, alpha, target modules,
``base_model_name_or_path``); where there is no safetensors file, ``adapter_model.bin`` (peft's
older pickle of the same tensors, still common on the Hub) is read instead. ``showo2 train``
writes one into every checkpoint of a run with a ``[lora]`` section; ``--lora PATH`` (any model
command) merges one or more into the weights of whatever base model loads, in order, each at its
``--lora-weight``; ``showo2 convert BASE --lora PATH -o OUT`` writes the merged model as a full
folder.

Loading never runs code: the weights are safetensors, or a pickle read with
``torch.load(weights_only=True)`` (the project's one reader, ``weights.read_state_dict``), and the
config is JSON. Finding and reading an adapter folder, checked to be a plain LoRA adapter, is
:mod:`showo2_cli.lora_files` (its names re-exported here).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from .errors import ModelError, UsageError, one_line, short
from .lora_files import adapter_files as adapter_files  # (re-exported, as find_adapter)
from .lora_files import find_adapter as find_adapter
from .lora_files import read_adapter
from .run_folders import ADAPTER_CONFIG, ADAPTER_PICKLE, ADAPTER_WEIGHTS
from .runtime import quiet_imports

FORMAT = "1"  # the showo2_lora value in the weights' safetensors metadata
PEFT_PREFIX = "base_model.model."  # the keys' prefix in what PeftModel.save_pretrained writes
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def target_names(network: torch.nn.Module, suffixes, within) -> list[str]:
    """Full names of the ``nn.Linear`` modules whose name ends with one of ``suffixes`` (a whole
    name part) and starts with one of ``within`` (every module when ``within`` is empty)."""
    names = []
    for name, module in network.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if not any(name == s or name.endswith("." + s) for s in suffixes):
            continue
        if within and not name.startswith(tuple(within)):
            continue
        names.append(name)
    return names


def add_lora(network: torch.nn.Module, rank: int, alpha: float, dropout: float, suffixes, within,
             base: str | None = None, adapter_name: str = "default"):
    """Add a trainable LoRA adapter to ``network`` in place (every other parameter frozen);
    returns peft's ``LoraConfig`` (its target modules are the full names it adapted)."""
    with quiet_imports():
        from peft import LoraConfig, inject_adapter_in_model

    names = target_names(network, suffixes, within)
    if not names:
        raise UsageError(f"lora: no linear layer matches target_modules {list(suffixes)} within {list(within)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names,
                        base_model_name_or_path=base)
    inject_adapter_in_model(config, network, adapter_name=adapter_name)
    for name, p in network.named_parameters():
        p.requires_grad_("lora_" in name)
    return config


def adapter_state(network: torch.nn.Module, adapter_name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's tensors in peft's saved form (keys without the adapter name). Only the
    adapter: an adapter never resizes the base's embeddings, and peft's default ("auto") asked the
    Hugging Face Hub for the base's config.json at every save (a 10 s stall per checkpoint where
    the Hub is slow, and a request naming the base)."""
    with quiet_imports():
        from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(network, adapter_name=adapter_name, save_embedding_layers=False)


def save_adapter(folder: Path, network: torch.nn.Module, config, metadata: dict | None = None) -> Path:
    """Write the adapter of ``network`` into ``folder`` (created; inside a checkpoint that is
    renamed into place when complete, so never seen half-written)."""
    import copy

    from .weights import save_tensors

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # the keys as PeftModel.save_pretrained writes them (peft's PeftModel.from_pretrained found no
    # tensor under the bare names and kept a zero adapter, with a warning only)
    state = {PEFT_PREFIX + k: v.detach().float().contiguous().cpu() for k, v in adapter_state(network).items()}
    meta = {"format": "pt", "showo2_lora": FORMAT, **{k: str(v) for k, v in (metadata or {}).items()}}
    save_tensors(state, folder / ADAPTER_WEIGHTS, meta)
    saved = copy.copy(config)  # as peft saves it (inference_mode), its targets in a fixed order: peft keeps a
    saved.inference_mode = True  # set, whose order changed with each process's string hashing
    if not isinstance(saved.target_modules, str):
        saved.target_modules = sorted(saved.target_modules)
    saved.save_pretrained(str(folder))
    return folder


def fetch_adapter(ref: str | os.PathLike, local_files_only: bool = False, progress=None) -> str | os.PathLike:
    """The local form of the adapter ``ref``: ``ref`` itself when it is a path (a path comes first,
    as for models), else, for a Hugging Face repo id (``owner/name``, maybe ``@revision``), the
    cache's snapshot folder holding its ``adapter_config.json`` and ``adapter_model.safetensors``
    (or ``adapter_model.bin`` where the repo has no safetensors), downloaded first where not
    cached (through the project's one download path, sizes and checksums checked, ``progress``
    getting the bytes) unless ``HF_HUB_OFFLINE`` or ``local_files_only``. Anything else is
    returned as it is (:func:`find_adapter` says what is wrong)."""
    from .hub import check_adapter_name, existing_path, is_repo_id, split_revision

    if not str(ref).strip():
        check_adapter_name(ref)  # (its one refusal of an empty name)
    if existing_path(ref) is not None:
        return ref
    repo, revision = split_revision(ref)
    if not is_repo_id(repo):
        return ref
    from huggingface_hub import try_to_load_from_cache

    from .hub_auth import access, offline
    from .hub_download import download_files, remote_listing

    pinned = repo if revision is None else f"{repo}@{revision}"
    try:
        cached = {n: try_to_load_from_cache(repo, n, revision=revision, cache_dir=access().cache_dir)
                  for n in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, ADAPTER_PICKLE)}
    except (OSError, ValueError):
        cached = {}
    for weights in (ADAPTER_WEIGHTS, ADAPTER_PICKLE):  # (a .bin is cached where the repo had no safetensors)
        if isinstance(cached.get(ADAPTER_CONFIG), str) and isinstance(cached.get(weights), str):
            return Path(cached[ADAPTER_CONFIG]).parent
    if offline() or local_files_only:
        why = "HF_HUB_OFFLINE is set" if offline() else "local_files_only is set"
        raise ModelError(f"--lora: '{pinned}' is not a local folder, and no LoRA adapter of that repo id is in the "
                         f"Hugging Face cache ({why}); download it while online")
    try:
        remote = remote_listing(repo, "LoRA adapter", revision)
    except ModelError as e:  # (a mistyped relative path, runs/my-lora, is shaped like a repo id)
        raise ModelError(f"--lora: '{pinned}' is not a local folder, and {e}") from None
    weights = next((n for n in (ADAPTER_WEIGHTS, ADAPTER_PICKLE) if n in remote), None)  # safetensors first
    if ADAPTER_CONFIG not in remote or weights is None:
        model = " (it is a model: give it as --model)" if "config.json" in remote and ADAPTER_CONFIG not in remote else ""
        raise ModelError(f"--lora: '{pinned}' on the Hub is not a LoRA adapter: it has no {ADAPTER_CONFIG} and "
                         f"{ADAPTER_WEIGHTS} (or {ADAPTER_PICKLE}) at its top{model}")
    return download_files(repo, [ADAPTER_CONFIG, weights], progress, "LoRA adapter", revision, remote)


def as_given(ref, fetched, recorded, weight: float = 1.0):
    """What outputs record of the adapter ``ref`` (as the caller typed it) that
    :func:`fetch_adapter` turned into ``fetched``: a repo id as given, not its folder in this
    machine's cache; else ``recorded`` (the adapter's folder); merged at another ``weight`` than 1,
    ``{"path": that, "weight": weight}`` (a form :func:`given_adapters` takes back)."""
    shown = str(ref) if fetched is not ref else recorded
    return shown if weight == 1.0 else {"path": shown, "weight": float(weight)}


def given_adapters(lora) -> list[tuple[str | os.PathLike, float]]:
    """``(adapter, weight)`` of each adapter of ``lora`` (``load(lora=)``): a path or repo id, or a
    list of them, each maybe with its strength as a pair ``(path, weight)`` or as outputs record it,
    ``{"path": ..., "weight": ...}`` (a weight checked by
    :func:`~showo2_cli.value_checks.check_lora_weight`; none: 1, the adapter as trained)."""
    from .options import check_lora_weight

    if lora is None:  # no adapter, as `()` (an optional argument passed on; it raised TypeError)
        return []
    if isinstance(lora, (str, os.PathLike)):  # one adapter (its path's characters were taken as paths)
        lora = [lora]
    elif not isinstance(lora, (list, tuple)):
        raise TypeError(f"lora must be a path or a list of paths, got {type(lora).__name__}")
    given = []
    for entry in lora:
        ref, weight = entry, 1.0
        if isinstance(entry, dict) and "path" in entry and set(entry) <= {"path", "weight"}:
            ref, weight = entry["path"], entry.get("weight", 1.0)
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            ref, weight = entry
        if not isinstance(ref, (str, os.PathLike)):
            raise TypeError(f"lora takes paths or repo ids, each maybe as a pair (path, weight), got "
                            f"{short(entry, 60)} ({type(entry).__name__}); a weighted adapter is a pair "
                            "inside the list: lora=[(path, weight)]")
        given.append((ref, check_lora_weight(weight, f"lora: the weight of '{short(ref, 60)}'")))
    return given


def load_adapter_state(network: torch.nn.Module, state: dict, where: str, adapter_name: str = "default") -> None:
    """Copy saved adapter tensors into the adapter ``adapter_name`` of ``network``; every tensor
    must find its place, with its shape."""
    with quiet_imports():
        from peft import set_peft_model_state_dict

    own = {k for k in network.state_dict() if f".{adapter_name}." in k}
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()}  # peft's saved keys, or bare ones
    try:
        result = set_peft_model_state_dict(network, state, adapter_name=adapter_name)
    except RuntimeError as e:  # size mismatch: another base model
        first = str(e).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[-1] if first else "")
        raise ModelError(f"LoRA adapter '{where}' does not fit this model: {detail}") from None
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    missing = [k for k in result.missing_keys if k in own]
    if unexpected or missing:
        example = (unexpected or missing)[0]
        raise ModelError(f"LoRA adapter '{where}' does not fit this model ({len(unexpected)} tensor(s) without a "
                         f"place, {len(missing)} missing; e.g. {example})")


def merge_adapters(network: torch.nn.Module, refs, record: list | None = None,
                   weights: list[float] | None = None) -> list[str]:
    """Merge each adapter of ``refs`` into ``network``'s weights, in order (``W += weight * alpha/r
    * B A``, its weight from ``weights``, one per adapter, else 1), leaving a plain network (no LoRA
    layers). Returns the adapter folders. A part of the network left out (a
    :class:`~showo2_cli.modeling.parts.NotLoaded` head) takes part on 'meta': its layers are matched
    and the adapter's tensors checked against them, but nothing is merged nor held (so too a network
    whose weights are still on 'meta', placed after: :mod:`showo2_cli.placement`); ``record`` (a
    list) then gets, per adapter, ``(folder, the names of the layers it adapts there, weight)``, for
    :func:`merge_recorded` when that part loads."""
    done = []
    weights = [1.0] * len(refs) if weights is None else list(weights)
    if len(weights) != len(refs):
        raise ValueError(f"merge_adapters: {len(refs)} adapters but {len(weights)} weights")
    with _left_out_on_meta(network) as left_out:
        for i, (ref, weight) in enumerate(zip(refs, weights, strict=True)):
            folder, names = _apply(network, ref, f"lora{i}", left_out, weight)
            if record is not None:
                record.append((str(folder), names, weight))
            done.append(str(folder))
    return done


def adapted_layers(spec, ref) -> tuple[str, list[str]]:
    """(folder, the full names of the layers it adapts) of the adapter ``ref`` on a network of
    ``spec``, its tensors checked against those layers' shapes: on 'meta', so nothing is read but
    the adapter and nothing is allocated (what a load checks before it reads the weights)."""
    from .modeling.showo2 import Showo2Model

    with torch.device("meta"):
        skeleton = Showo2Model(spec)
    folder, names = _apply(skeleton, ref, "adapter", [n for n, _ in skeleton.named_children()], 1.0)
    return str(folder), names


def _apply(network: torch.nn.Module, ref, name: str, left_out: list[str], weight: float) -> tuple[Path, list[str]]:
    """Read the adapter ``ref``, match its targets in ``network`` and merge it (:func:`_merge_one`)."""
    config, state, folder = read_adapter(ref)
    targets = config.target_modules
    literal_patterns(network, config, folder)  # (peft's regular expressions, as names)
    if isinstance(targets, str):  # peft: a regular expression over the full module names
        if targets != "all-linear" and not any(_has_linear(network, n) for n in config.target_modules):
            raise ModelError(f"LoRA adapter '{folder}': target_modules '{short(targets, 60)}' matches no "
                             "linear layer of this model")
    else:
        missing = [t for t in sorted(targets) if not _has_linear(network, t)]
        other = next((t for t in missing if _named(network, t)), None)  # (an embedding: Unsloth's embed_tokens)
        if other is not None:
            raise ModelError(f"LoRA adapter '{folder}' targets {other} ({type(_named(network, other)).__name__}, not "
                             "a linear layer): only adapters of linear layers can be merged")
        if missing:
            raise ModelError(f"LoRA adapter '{folder}' targets layers this model does not have (e.g. {short(missing[0], 120)})")
    return folder, _merge_one(network, config, state, folder, name, left_out, weight)


def merge_recorded(network: torch.nn.Module, recorded: list, within: list[str], read: dict | None = None) -> None:
    """Merge the adapters of ``recorded`` (what :func:`merge_adapters` recorded: ``(folder, names)``
    or ``(folder, names, weight)``) into the layers under ``within`` (modules of ``network`` that
    were left out then and are loaded now, under their names at the time), as merging them then
    would have: the same layers, ranks, scales, weights and tensors, in the same order, through peft.
    ``read``: a dict keeping each adapter as read (:func:`read_adapter`) for the next call (a load
    placing its groups one by one, :func:`showo2_cli.placement.place`)."""
    import copy

    for i, (folder, names, *weight) in enumerate(recorded):
        names = [n for n in names if any(n == w or n.startswith(w + ".") for w in within)]
        if not names:
            continue
        if read is None or folder not in read:
            found = read_adapter(folder)
            if read is not None:
                read[folder] = found
        config, state, folder = read[folder] if read is not None else found
        config = copy.deepcopy(config)  # (its target_modules are set below)
        config.target_modules = set(names)  # the layers matched then, by their full names
        state = {k: v for k, v in state.items() if k.removeprefix(PEFT_PREFIX).split(".lora_")[0] in names}
        with warnings.catch_warnings():  # the patterns of the other layers (matched on load) match none here
            warnings.filterwarnings("ignore", message=".*_pattern keys did not match", category=RuntimeWarning)
            _merge_one(network, config, state, folder, f"lora{i}", [], weight[0] if weight else 1.0)


def _merge_one(network: torch.nn.Module, config, state: dict, folder, name: str, left_out: list[str],
               weight: float = 1.0) -> list[str]:
    """Inject, fill and merge one adapter (its scale times ``weight``, diffusers' adapter weight);
    returns the names of the layers it adapted under ``left_out`` or still on 'meta'."""
    with quiet_imports():
        from peft import inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

    config.inference_mode = True
    try:
        inject_adapter_in_model(config, network, adapter_name=name)
    except (ValueError, TypeError, ImportError, NotImplementedError, AttributeError, KeyError,
            RecursionError) as e:  # peft refuses (or fails on) what it cannot apply
        raise ModelError(f"LoRA adapter '{folder}' cannot be applied: {one_line(e)}") from None
    with warnings.catch_warnings():  # a part left out: its tensors are checked, not copied (torch says so)
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
        load_adapter_state(network, state, str(folder), adapter_name=name)
    layers = [(n, m) for n, m in network.named_modules() if isinstance(m, BaseTunerLayer)]
    if weight != 1.0:  # (1.0: the scale untouched, the merge bit for bit what it was)
        for _, module in layers:
            module.scaling[name] *= weight
    # (a layer still on 'meta': of a part left out, or of a network placed later, placement.place)
    names = [n for n, m in layers if m.get_base_layer().weight.is_meta
             or any(n == w or n.startswith(w + ".") for w in left_out)]
    unload(network, merge=True, adapter_name=name)
    return names


class _left_out_on_meta:
    """Put the 'meta' modules of the network's left-out parts in place of their stand-ins for the
    block (so adapters match and are checked against the whole network); the stand-ins go back
    after. Yields the names of those parts."""

    def __init__(self, network: torch.nn.Module):
        from .modeling.parts import NotLoaded

        self.network = network
        self.stand_ins = [(n, m) for n, m in network.named_modules() if isinstance(m, NotLoaded)]

    def _put(self, which: str) -> None:
        for name, stand_in in self.stand_ins:
            parent, _, child = name.rpartition(".")
            owner = self.network.get_submodule(parent) if parent else self.network
            setattr(owner, child, stand_in.meta_module if which == "meta" else stand_in)

    def __enter__(self) -> list[str]:
        self._put("meta")
        return [n for n, _ in self.stand_ins]

    def __exit__(self, *exc) -> None:
        self._put("stand-in")


#: Seconds all of one adapter's regular expressions may take to match the model's module names
MATCH_SECONDS = 2.0
_PLAIN_KEY = r"[\w.-]+"  # a rank_pattern/alpha_pattern key peft's re matches in linear time: names and dots


def literal_patterns(network: torch.nn.Module, config, folder) -> None:
    """Replace the regular expressions of an adapter's ``config`` (a string ``target_modules`` or
    ``exclude_modules``; ``rank_pattern``/``alpha_pattern`` keys beyond names and dots) by the
    literal module names of ``network`` they match, matched here by the ``regex`` engine within
    :data:`MATCH_SECONDS` in all: peft matches them with ``re``, whose backtracking a hostile
    pattern (``(.*)*x``) keeps busy for hours, uninterruptibly. peft then compares names only."""
    import re
    import time

    import regex

    deadline = time.monotonic() + MATCH_SECONDS
    names = [n for n, _ in network.named_modules() if n]

    def compiled(pattern: str, field: str, template: str = "{}"):
        try:
            re.compile(template.format(pattern))
            return regex.compile(template.format(pattern))
        except (re.error, regex.error, OverflowError, RecursionError) as e:
            raise ModelError(f"LoRA adapter '{folder}': {field} '{short(pattern, 60)}' is not a regular expression "
                             f"({one_line(e, 80)})") from None

    def hits(rx, field: str, pattern: str, how: str = "fullmatch") -> list[str]:
        found = []
        for n in names:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                if getattr(rx, how)(n, timeout=left):
                    found.append(n)
            except TimeoutError:
                raise ModelError(f"LoRA adapter '{folder}': {field} '{short(pattern, 60)}' takes over {MATCH_SECONDS:g} "
                                 "s to match this model's layer names (a regular expression with nested "
                                 "repetition?)") from None
        return found

    for field in ("target_modules", "exclude_modules"):
        pattern = getattr(config, field, None)
        if isinstance(pattern, str) and pattern != "all-linear":
            setattr(config, field, set(hits(compiled(pattern, field), field, pattern)))
    for field in ("rank_pattern", "alpha_pattern"):
        table = getattr(config, field, None) or {}
        if all(re.fullmatch(_PLAIN_KEY, k) for k in table):
            continue
        targets = config.target_modules
        targeted = [n for n, m in network.named_modules() if n and (
            isinstance(m, torch.nn.Linear) if targets == "all-linear"
            else n in targets or any(n.endswith("." + t) for t in targets))]
        literal = {}
        for key, value in table.items():  # peft's get_pattern_key: the first key matching a name's end
            rx = compiled(key, f"{field} key", r"(.*\.)?({})$")
            for n in hits(rx, f"{field} key", key, "match"):
                if n in targeted:
                    literal.setdefault(re.escape(n), value)
        setattr(config, field, literal)


def _named(network: torch.nn.Module, name: str) -> torch.nn.Module | None:
    """The module of ``network`` named ``name``, or the first whose name ends with it; None."""
    try:
        return network.get_submodule(name)
    except AttributeError:
        return next((m for n, m in network.named_modules() if n.endswith("." + name)), None)


def _has_linear(network: torch.nn.Module, name: str) -> bool:
    try:
        return isinstance(network.get_submodule(name), torch.nn.Linear)
    except AttributeError:
        return any(n.endswith("." + name) for n, m in network.named_modules() if isinstance(m, torch.nn.Linear))


@torch.no_grad()
def unload(network: torch.nn.Module, merge: bool, adapter_name: str = "default") -> torch.nn.Module:
    """Replace every LoRA layer of ``network`` by its base layer, merging the adapter first when asked."""
    with quiet_imports():
        from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in network.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in layers:
        if merge and not module.get_base_layer().weight.is_meta:  # (a part left out: nothing to merge into)
            try:
                module.merge(safe_merge=True, adapter_names=[adapter_name])
            except (ValueError, NotImplementedError) as e:  # NaNs in the merged weights; a layer peft cannot merge
                raise ModelError(f"merging the LoRA adapter into '{name}' failed: {one_line(e)}") from None
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, module.get_base_layer())
    if "peft_config" in network.__dict__:  # what inject_adapter_in_model recorded
        del network.peft_config
    return network
