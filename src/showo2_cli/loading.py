"""Resolve a model name to files, read the official or our own format, and build the bundle.

A model is named by a local folder, a registry name (``1.5B``, ``7B``, ...), or a Hugging Face
repo id: found in the local cache, else downloaded when online (:mod:`showo2_cli.hub`; never with
``HF_HUB_OFFLINE``). Two folder
formats load:

* **official** (``showlab/show-o2-*``): diffusers-style ``config.json`` and ``pytorch_model.bin``
  (single or sharded) or ``*.safetensors``; the tokenizer and LLM config come from
  ``llm_model_path`` (a folder or the Qwen2.5 repo in the cache); the VAE from the Wan2.1 files.
* **showo2** (written by ``showo2 convert`` / ``init`` / ``train``): ``config.json`` with a
  ``showo2`` section holding the full :class:`ModelSpec`, ``model.safetensors``, the tokenizer
  files and a diffusers-format ``vae/`` folder, all pickle-free and memory-mapped on load.

Sizes that the config does not record (the flow head's, the LLM's depth) are read from the
weights' shapes, so the same loader reads the real checkpoints, the parity fixtures and any
other set. Pickle files are read only with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ModelError, UsageError, short
from .hub import (  # names to folders (re-exported: the loading API users know)
    WAN_VAE_FILE,
    WAN_VAE_REPO,
    bundled_demo_path,
    find_tokenizer,
    find_vae,
    find_weights,
    local_or_cached_dir,
    resolve_root,
)
from .hub import cached_snapshot as hf_cached_snapshot
from .runtime import torch_dtype
from .sequences import SpecialTokens
from .specs import (
    IMAGE_UND,
    MAX_SEQ_LEN_LIMIT,
    REGISTRY,
    T2I,
    VIDEO_UND,
    ModelSpec,
    get_spec,
    spec_for_hidden_size,
)
from .weights import check_fit, read_json, read_state_dict

FORMAT_VERSION = 1
OFFICIAL_FIELDS = (
    "add_qk_norm", "add_time_embeds", "clip_latent_dim", "clip_pretrained_model_path", "hidden_size",
    "image_latent_dim", "image_latent_height", "image_latent_width", "llm_model_path", "llm_vocab_size",
    "load_from_showo", "num_diffusion_layers", "patch_size", "video_latent_height", "video_latent_width",
)
# ---- finding files ----------------------------------------------------------------------------

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
    label, root = resolve_root(name, local_files_only)
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        given = Path(name) if isinstance(name, (str, os.PathLike)) else root
        if given.exists() and not given.is_dir():
            raise ModelError(f"'{given}' is a file, not a Show-o2 model folder (give the folder holding config.json)")
        raise ModelError(f"'{root}' is not a Show-o2 model folder: it has no config.json")
    config = read_json(cfg_path)
    fmt = "showo2" if "showo2" in config else "official"
    if fmt == "official":
        _check_official_config(config, cfg_path)
    files = ModelFiles(label, root, fmt, config, find_weights(root))
    if not files.weights:
        files.missing.append(("weights", f"no model.safetensors / pytorch_model.bin in '{root}'"))
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
            files.missing.append(("tokenizer", f"hf download {repo}"))
    else:
        files.tokenizer = find_tokenizer(root, {}, None)
        if files.tokenizer is None:
            files.missing.append(("tokenizer", f"no tokenizer files in '{root}'"))
    files.vae = find_vae(root, vae)
    if files.vae is None:
        files.missing.append(("VAE", f"hf download {WAN_VAE_REPO} {WAN_VAE_FILE} (or pass --vae PATH)"))
    return files


_OFFICIAL_INTS = ("hidden_size", "image_latent_dim", "image_latent_height", "image_latent_width", "patch_size",
                  "clip_latent_dim", "llm_vocab_size", "num_diffusion_layers", "video_latent_height",
                  "video_latent_width")


def _check_official_config(config: dict, where: Path) -> None:
    """The official config.json fields the loader reads must have their types."""
    for key in _OFFICIAL_INTS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**24):
            raise ModelError(f"'{where}': '{key}' must be a positive whole number, got {_shown(value)}")
    for key in ("llm_model_path", "clip_pretrained_model_path"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelError(f"'{where}': '{key}' must be text, got {_shown(value)}")


def _shown(value) -> str:
    return short(json.dumps(value, default=str))


def check_spec_fields(raw: dict, where: Path | str) -> None:
    """Every field of a ``showo2.spec`` section must have its declared type (and sizes a sane
    range) before a network is built from it: a config is read from disk, maybe a download."""
    import dataclasses
    import math

    for f in dataclasses.fields(ModelSpec):
        if f.name not in raw:
            continue
        value, kind = raw[f.name], str(f.type).replace(" ", "")

        def bad(want: str, value=value, name=f.name) -> ModelError:
            return ModelError(f"'{where}': spec field '{name}' must be {want}, got {_shown(value)}")

        if kind == "int":
            low = 0 if f.name.endswith("_layers") or f.name == "frame_embeddings" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 2**24:
                raise bad(f"a whole number from {low} to {2**24 - 1}")
        elif kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad("a finite number")
        elif kind == "bool":
            if not isinstance(value, bool):
                raise bad("true or false")
        elif kind == "str":
            if not isinstance(value, str):
                raise bad("text")
        elif kind in ("str|None", "Optional[str]"):
            if value is not None and not isinstance(value, str):
                raise bad("text or null")
        elif kind.startswith("tuple[int"):
            if not isinstance(value, list) or not value or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**24 for v in value):
                raise bad("a list of positive whole numbers")
        elif kind.startswith("tuple[str"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad("a list of text")
        elif kind == "dict":
            if value is not None and not isinstance(value, dict):
                raise bad("an object")


def missing_message(files: ModelFiles, pieces: tuple[str, ...]) -> str | None:
    wanted = [(p, h) for p, h in files.missing if p in pieces]
    if not wanted:
        return None
    parts = "; ".join(f"{p} ({h})" for p, h in wanted)
    return f"model '{files.name}' is incomplete: missing {parts}"


# ---- reading weights --------------------------------------------------------------------------

def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


#: (spec field, key pattern whose group(1) counts the blocks) of every repeated block.
DEPTHS = (("num_layers", r"showo\.model\.layers\.(\d+)\."), ("semantic_layers", r"und_trans\.layers\.(\d+)\."),
          ("head_layers", r"diffusion_head_a\.(\d+)\."))


def check_depths(spec: ModelSpec, state: dict, where: str) -> None:
    """Every depth (and the width) a config declares must be what the weights hold: compared from
    the keys and shapes before a network is built, so an absurd config fails at once."""
    for field_name, pattern in DEPTHS:
        have, want = _count(state, pattern), getattr(spec, field_name)
        if have != want:
            raise ModelError(f"'{where}': the config says {field_name} = {want} but the weights hold {have} "
                             "such block(s)")
    emb = state.get("showo.model.embed_tokens.weight")
    if emb is not None and tuple(emb.shape) != (spec.vocab_size, spec.hidden_size):
        raise ModelError(f"'{where}': the config says vocab {spec.vocab_size} x hidden {spec.hidden_size} but the "
                         f"embedding is {tuple(emb.shape)}")


def _shape(state: dict, key: str, root: Path) -> tuple[int, ...]:
    if key not in state:
        raise ModelError(f"weights in '{root}' lack '{key}': not a Show-o2 checkpoint or incomplete")
    return tuple(state[key].shape)


def _typed(cfg: dict, key: str, kind: str, where) -> Any:
    """``cfg[key]`` when it has the type a config of the official code gives it (``bool``,
    ``int`` (positive), ``number`` (positive, finite) or ``dict``), None when absent or null; else
    one ModelError: a wrong type would be misread (``bool("false")`` is true) or fail deep inside."""
    value = cfg.get(key)
    if value is None:
        return None
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf"),
          "dict": lambda v: isinstance(v, dict)}[kind](value)
    if not ok:
        wanted = {"bool": "true or false", "int": "a positive integer", "number": "a positive number",
                  "dict": "an object"}[kind]
        raise ModelError(f"'{where}': {key} must be {wanted}, got {str(value)[:20]}")
    return value


def spec_from_official(files: ModelFiles, state: dict) -> ModelSpec:
    """A full spec from the official config.json, the LLM/SigLIP configs and the weights' shapes."""
    cfg, root = files.config, files.root
    embed = _shape(state, "showo.model.embed_tokens.weight", root)
    hidden = embed[1]
    named = _registry_by_name(files.name, root, hidden)
    base = named or spec_for_hidden_size(hidden)
    llm_cfg = read_json(files.llm_config) if files.llm_config else {}
    sig_cfg = read_json(files.siglip_config) if files.siglip_config else {}
    sig_cfg = _typed(sig_cfg, "vision_config", "dict", files.siglip_config) or sig_cfg
    if not llm_cfg and base is None:
        raise ModelError(f"cannot tell the LLM's head count for '{root}': put the Qwen2 config.json "
                         f"at llm_model_path ('{cfg.get('llm_model_path')}')")
    for key in ("num_attention_heads", "num_key_value_heads", "head_dim", "num_hidden_layers", "hidden_size"):
        value = llm_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ModelError(f"'{files.llm_config}': {key} must be a positive integer, got {str(value)[:20]}")
    if "num_attention_heads" not in llm_cfg and base is None:
        raise ModelError(f"'{files.llm_config}' does not say num_attention_heads")
    heads = int(llm_cfg.get("num_attention_heads") or base.num_heads)
    head_dim = int(llm_cfg.get("head_dim") or hidden // heads)
    kv_dim = _shape(state, "showo.model.layers.0.self_attn.k_proj.weight", root)[0]
    und = _shape(state, "image_embedder_und.proj.weight", root)
    clip_dim = und[0]
    if not sig_cfg and (base is None or base.clip_latent_dim != clip_dim):
        raise ModelError(f"cannot tell the semantic layers' head count for '{root}': put the SigLIP "
                         f"config.json at clip_pretrained_model_path ('{cfg.get('clip_pretrained_model_path')}')")
    q_norm = _shape(state, "diffusion_head_a.0.self_attn.q_norm.weight", root)[0]
    tied = _typed(llm_cfg, "tie_word_embeddings", "bool", files.llm_config)
    if tied is None:
        tied = base.tie_word_embeddings if base else ("showo.lm_head.weight" not in state)
    rope_theta = _typed(llm_cfg, "rope_theta", "number", files.llm_config) or _typed(
        _typed(llm_cfg, "rope_parameters", "dict", files.llm_config) or {}, "rope_theta", "number", files.llm_config)
    grid = int(cfg.get("image_latent_height") or 27)
    patch = und[2]
    tasks = base.tasks if base else (IMAGE_UND, T2I)
    if "video-und" in files.name.lower() or "video-und" in str(root).lower():
        tasks = tuple(dict.fromkeys((*tasks, VIDEO_UND)))
    pos_rows = _shape(state, "position_embedding.weight", root)[0]
    resolution = grid * patch * 8
    visual = grid * grid + 1
    changes = dict(
        name=files.name, hidden_size=hidden, vocab_size=embed[0],
        num_layers=_count(state, r"showo\.model\.layers\.(\d+)\."),
        num_heads=heads, head_dim=head_dim, num_kv_heads=kv_dim // head_dim,
        intermediate_size=_shape(state, "showo.model.layers.0.mlp.gate_proj.weight", root)[0],
        rope_theta=float(rope_theta or (base.rope_theta if base else 1e6)),
        rms_norm_eps=float(_typed(llm_cfg, "rms_norm_eps", "number", files.llm_config)
                           or (base.rms_norm_eps if base else 1e-6)),
        tie_word_embeddings=bool(tied),
        max_position_embeddings=int(_typed(llm_cfg, "max_position_embeddings", "int", files.llm_config) or 32768),
        clip_latent_dim=clip_dim, latent_channels=und[1], patch_size=patch,
        semantic_layers=_count(state, r"und_trans\.layers\.(\d+)\."),
        semantic_heads=int(_typed(sig_cfg, "num_attention_heads", "int", files.siglip_config)
                           or (base.semantic_heads if base else 16)),
        semantic_intermediate=_shape(state, "und_trans.layers.0.mlp.fc1.weight", root)[0],
        semantic_eps=float(_typed(sig_cfg, "layer_norm_eps", "number", files.siglip_config) or 1e-6),
        position_embedding_rows=pos_rows,
        head_hidden=_shape(state, "diffusion_head_b.linear.weight", root)[1],
        head_layers=_count(state, r"diffusion_head_a\.(\d+)\."),
        head_dim_flow=q_norm,
        head_heads=_shape(state, "diffusion_head_a.0.self_attn.q_proj.weight", root)[0] // q_norm,
        head_kv_heads=_shape(state, "diffusion_head_a.0.self_attn.k_proj.weight", root)[0] // q_norm,
        head_intermediate=_shape(state, "diffusion_head_a.0.mlp.gate_proj.weight", root)[0],
        image_latent_grid=grid, tasks=tasks,
    )
    if named is None:
        # the sequence budget the official code uses: the configured max_seq_len (default 1024),
        # else the official model of this width's; the text budget is what the visual block leaves
        configured = cfg.get("max_seq_len")
        max_seq = int(configured) if isinstance(configured, int) and not isinstance(configured, bool) else \
            (base.max_seq_len if base is not None else 1024)
        if not 1 <= max_seq <= MAX_SEQ_LEN_LIMIT:
            raise ModelError(f"'{root / 'config.json'}': max_seq_len must be 1 to {MAX_SEQ_LEN_LIMIT}, got {max_seq}")
        changes.update(resolution=resolution, resolutions=(resolution,), video_resolution=resolution,
                       max_seq_len=max(max_seq, visual + 4 + 16))
    template = base if base is not None else REGISTRY["tiny"]
    spec = template.replace(**changes)
    spec.validate()
    return spec


def _registry_by_name(name: str, root: Path, hidden: int) -> ModelSpec | None:
    """The registry variant a name or cache path refers to (longest repo name first)."""
    texts = (name.lower(), str(root).lower().replace("--", "/"))
    for spec in sorted(REGISTRY.values(), key=lambda s: -len(s.repo_id or "")):
        if not spec.repo_id or spec.hidden_size != hidden:
            continue
        repo = spec.repo_id.lower()
        if any(repo in t or t == spec.name.lower() or t.rstrip("/").endswith(repo.split("/")[1]) for t in texts):
            return spec
    return None


def spec_from_files(files: ModelFiles, state: dict) -> ModelSpec:
    if files.format == "showo2":
        raw = files.config["showo2"]
        if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
            raise ModelError(f"'{files.root / 'config.json'}' has a malformed 'showo2' section")
        check_spec_fields(raw["spec"], files.root / "config.json")
        try:
            return ModelSpec.from_dict(raw["spec"])
        except (UsageError, TypeError, ValueError) as e:
            raise ModelError(f"'{files.root / 'config.json'}': {e}") from e
    try:
        return spec_from_official(files, state)
    except (UsageError, ValueError, ZeroDivisionError) as e:  # sizes that make no model
        raise ModelError(f"'{files.root / 'config.json'}': {e}") from e


# ---- building the network ---------------------------------------------------------------------

def check_state_dict(model: torch.nn.Module, state: dict, where: str) -> None:
    """Strict key and shape check of Show-o2 weights (a tied embedding may be stored once)."""
    tied = getattr(getattr(model, "spec", None), "tie_word_embeddings", False)
    check_fit(model.state_dict(), state, where, optional={"showo.lm_head.weight"} if tied else ())


def build_network(spec: ModelSpec, state: dict | None, dtype: torch.dtype, where: str = "weights"):
    """The Show-o2 network; with a state dict, built on 'meta' and filled without extra copies."""
    from .modeling.showo2 import Showo2Model

    if state is None:
        model = Showo2Model(spec)
        model.init_weights(seed=0)
        return model.to(dtype)
    check_depths(spec, state, where)  # before building: a config's sizes are not trusted
    with torch.device("meta"):
        model = Showo2Model(spec)
    check_state_dict(model, state, where)
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in state.items()}
    if spec.tie_word_embeddings:
        state.pop("showo.lm_head.weight", None)
    model.load_state_dict(state, strict=False, assign=True)
    model.reset_buffers()
    leftover = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.is_meta]
    if leftover:
        raise ModelError(f"weights in '{where}' left {len(leftover)} tensor(s) unset (e.g. {leftover[0]})")
    return model


# ---- the bundle -------------------------------------------------------------------------------

class Showo2:
    """A loaded model: spec + tokenizer + network + VAE, moved together with :meth:`to`."""

    def __init__(self, spec: ModelSpec, network, tokenizer=None, tokens: SpecialTokens | None = None,
                 vae=None, files: ModelFiles | None = None, load_seconds: float = 0.0):
        self.spec, self.network, self.tokenizer, self.tokens = spec, network, tokenizer, tokens
        self.vae, self.files, self.load_seconds = vae, files, load_seconds
        self.adapters: list[str] = []  # LoRA adapters merged into the weights on load

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> Showo2:
        self.network.to(device=device, dtype=dtype)
        if self.vae is not None:
            self.vae.to(device=device, dtype=dtype)
        return self

    def require_vae(self):
        if self.vae is None:
            name = self.files.name if self.files else self.spec.name
            raise ModelError(f"model '{name}' has no VAE: pass --vae PATH or get it with "
                             f"hf download {WAN_VAE_REPO} {WAN_VAE_FILE}")
        return self.vae

    def require_tokenizer(self):
        if self.tokenizer is None:
            raise ModelError(f"model '{self.spec.name}' has no tokenizer")
        return self.tokenizer

    def parameter_counts(self) -> dict[str, int]:
        counts = parameter_counts(self.network.state_dict(keep_vars=True), self.spec.tie_word_embeddings)
        if self.vae is not None:
            counts["vae"] = sum(p.numel() for p in self.vae.parameters())
        return counts


PARAMETER_GROUPS = {
    "llm": ("showo.",), "semantic": ("image_embedder_und.", "position_embedding.", "und_trans."),
    "projector+fusion": ("image_embedder_gen.", "fusion_proj."), "time": ("time_embed.", "time_embed_proj."),
    "flow_head": ("diff_proj.", "diffusion_head_a.", "diffusion_head_b."),
}


def parameter_counts(state: dict[str, torch.Tensor], tied: bool = False) -> dict[str, int]:
    """Parameters per part of the network (a tied lm_head, or any shared tensor, counted once)."""
    counts = dict.fromkeys(PARAMETER_GROUPS, 0)
    seen = set()
    for k, v in state.items():
        if tied and k == "showo.lm_head.weight":
            continue
        key = k if v.device.type == "meta" else (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen:
            continue
        seen.add(key)
        for group, prefixes in PARAMETER_GROUPS.items():
            if k.startswith(prefixes):
                counts[group] += v.numel()
    counts["total"] = sum(counts.values())
    return counts


def require_model(model) -> Showo2:
    """``model`` when it is a loaded :class:`Showo2`; else the TypeError that says what to pass (a
    pipeline or a name in its place failed deep inside with an AttributeError)."""
    if not isinstance(model, Showo2):
        hint = " (a Showo2Pipeline's is pipe.model)" if hasattr(model, "model") else ""
        raise TypeError(f"model must be a loaded Showo2 (api.load), got {type(model).__name__}{hint}")
    return model


def load(name: str | os.PathLike, *, vae: str | os.PathLike | None = None, device: str | torch.device = "cpu",
         dtype: str | torch.dtype = torch.float32, need: tuple[str, ...] = ("tokenizer", "VAE"),
         runtime=None, lora: list | tuple = (), local_files_only: bool = False,
         use_safetensors: bool | None = None) -> Showo2:
    """Load a model by name, folder or cached repo id. ``need`` lists the pieces that must exist;
    ``lora`` LoRA adapters (folders or training runs, see :mod:`showo2_cli.lora`) merged into
    the weights in order; ``runtime`` (:class:`~showo2_cli.options.RuntimeOptions`) brings the
    attention backend, quantization, compilation and VAE tiling (:func:`showo2_cli.acceleration.apply`),
    applied after the adapters are merged. A repo id that is not cached is downloaded when
    online, unless ``local_files_only``. ``use_safetensors=True`` (diffusers' switch) refuses a
    model whose weights or VAE file are pickles (``.bin``/``.pth``, which are otherwise read with
    ``torch.load(weights_only=True)``) before anything is read."""
    from .acceleration import apply
    from .lora import find_adapter, merge_adapters
    from .modeling.vae_files import load_vae
    from .tokenizer import add_showo2_tokens, load_tokenizer

    start = time.perf_counter()
    dtype = torch_dtype(dtype)
    files = find_files(name, vae=vae, local_files_only=local_files_only)
    message = missing_message(files, ("weights", *need))
    if message:
        raise ModelError(message)
    if use_safetensors:
        _require_safetensors(files)
    for ref in lora:  # a wrong path fails before the weights are read
        find_adapter(ref)
    state = read_state_dict(files.weights)
    spec = spec_from_files(files, state)
    network = build_network(spec, state, dtype, where=str(files.root)).eval()
    del state
    adapters = merge_adapters(network, lora) if lora else []
    tokenizer = tokens = None
    if files.tokenizer is not None:
        tokenizer = load_tokenizer(files.tokenizer)
        tokens = add_showo2_tokens(tokenizer)
        if len(tokenizer) != spec.vocab_size:
            raise ModelError(f"tokenizer in '{files.tokenizer}' has {len(tokenizer)} entries after Show-o2's "
                             f"additions but the model has {spec.vocab_size} rows: wrong tokenizer")
    vae_model = load_vae(files.vae, dtype=dtype) if files.vae is not None else None
    bundle = Showo2(spec, network, tokenizer, tokens, vae_model, files)
    bundle.adapters = adapters
    bundle.to(device=device)
    apply(bundle, runtime)
    bundle.load_seconds = time.perf_counter() - start
    return bundle


def _require_safetensors(files: ModelFiles) -> None:
    from .modeling.vae_files import vae_source

    pieces = list(files.weights) + ([vae_source(Path(files.vae).expanduser())[0]] if files.vae is not None else [])
    pickled = [p for p in pieces if p.suffix.lower() != ".safetensors"]
    if pickled:
        raise ModelError(f"use_safetensors=True but '{files.name}' has pickled weights ({pickled[0].name}); "
                         "`showo2 convert` writes a safetensors copy")


# ---- writing our own format -------------------------------------------------------------------

def official_config(spec: ModelSpec) -> dict:
    """The official config.json fields for a spec (so official tooling can read the geometry)."""
    return {
        "_class_name": "Showo2Qwen2_5", "_diffusers_version": "0.31.0", "add_qk_norm": True,
        "add_time_embeds": True, "clip_latent_dim": spec.clip_latent_dim,
        "clip_pretrained_model_path": "google/siglip-so400m-patch14-384", "hidden_size": spec.hidden_size,
        "image_latent_dim": spec.latent_channels, "image_latent_height": spec.image_latent_grid,
        "image_latent_width": spec.image_latent_grid, "llm_model_path": spec.llm_repo_id or "",
        "llm_vocab_size": spec.vocab_size, "load_from_showo": True, "num_diffusion_layers": spec.head_layers,
        "patch_size": spec.patch_size, "video_latent_height": spec.image_latent_grid,
        "video_latent_width": spec.image_latent_grid,
    }


def save_folder(dst: Path, spec: ModelSpec, state: dict[str, torch.Tensor], tokenizer=None, vae=None,
                dtype: torch.dtype | None = None, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write a showo2-format folder atomically: everything goes to a temporary sibling folder,
    which is renamed into place only when complete (a crash never leaves a half-written model)."""
    from .media import atomic_folder

    with atomic_folder(Path(dst), overwrite=overwrite) as tmp:  # the one atomic writer: all or nothing
        write_folder(tmp, spec, state, tokenizer, vae, dtype, extra)
    return Path(dst)


def write_folder(folder: Path, spec: ModelSpec, state: dict[str, torch.Tensor], tokenizer=None, vae=None,
                 dtype: torch.dtype | None = None, extra: dict | None = None) -> None:
    """Fill an existing (empty, temporary) folder with a showo2-format model: the body of
    :func:`save_folder`, for writers that publish the folder themselves (checkpoints)."""
    from safetensors.torch import save_file

    tmp = Path(folder)
    tensors = {}
    for k, v in state.items():
        if spec.tie_word_embeddings and k == "showo.lm_head.weight":
            continue
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt", "showo2_format": str(FORMAT_VERSION)})
    config = official_config(spec)
    config["showo2"] = {"format_version": FORMAT_VERSION, "spec": spec.to_dict(), **(extra or {})}
    (tmp / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    if vae is not None:
        if dtype is not None:
            vae = vae.to(dtype=dtype)
        vae.save_pretrained(tmp / "vae")


def init_model(spec_name: str | ModelSpec, dst: Path, seed: int = 0, dtype: torch.dtype = torch.float32,
               vae_base_dim: int | None = None, overwrite: bool = False, tokenizer=None,
               max_memory_gb: float | None = None) -> Path:
    """Write a randomly initialised model folder of any spec (with a byte-level tokenizer and a
    random Wan-architecture VAE unless given). The network is built in float32 (the same weights
    whatever ``dtype`` it is saved in) and written with a ``dtype`` copy: a job the memory limit
    (``max_memory_gb``, else ``$SHOWO2_MAX_MEMORY_GB``, else the RAM available) cannot hold is
    refused before anything is allocated."""
    from .modeling.vae import WanVAE
    from .options import check_seed
    from .runtime import check_memory
    from .tokenizer import add_showo2_tokens, byte_level_tokenizer

    check_seed(seed)

    spec = spec_name if isinstance(spec_name, ModelSpec) else get_spec(spec_name)
    saved = torch.empty((), dtype=dtype).element_size()
    per_param = 4 + 2 * saved if saved != 4 else 4 + saved  # float32 build, the dtype copy, its bytes
    check_memory(spec.parameter_estimate() * per_param * 1.05 / 1e9, f"initialising a '{spec.name}' model",
                 max_memory_gb, "cpu", "initialise a smaller spec")
    if tokenizer is None:
        tokenizer = byte_level_tokenizer()
        add_showo2_tokens(tokenizer)
        if len(tokenizer) != spec.vocab_size:
            spec = spec.replace(vocab_size=len(tokenizer))
    torch.manual_seed(seed)
    model = build_network(spec, None, torch.float32)
    model.init_weights(seed=seed)
    base = vae_base_dim if vae_base_dim is not None else (96 if spec.hidden_size >= 1024 else 8)
    vae = WanVAE.random(base_dim=base, seed=seed)
    return save_folder(dst, spec, model.state_dict(), tokenizer=tokenizer, vae=vae, dtype=dtype,
                       overwrite=overwrite, extra={"initialised": {"seed": seed}})


# ---- the default model and a VAE alone -------------------------------------------------------

DEFAULT_OFFICIAL = "showlab/show-o2-1.5B"


def default_model() -> tuple[str, str]:
    """The model to use when none is named, and a one-line notice saying which and why."""
    env = os.environ.get("SHOWO2_MODEL")
    if env:
        return env, f"using model '{env}' (from SHOWO2_MODEL)"
    if hf_cached_snapshot(DEFAULT_OFFICIAL) is not None:
        return DEFAULT_OFFICIAL, f"using model '{DEFAULT_OFFICIAL}' (found in the Hugging Face cache)"
    if (bundled_demo_path() / "config.json").exists():
        return "demo", "using the bundled demo model (set SHOWO2_MODEL or pass --model for another)"
    raise ModelError("no model given and none found: pass --model NAME|FOLDER, set SHOWO2_MODEL, "
                     f"or get the official one with: hf download {DEFAULT_OFFICIAL}")


def resolve_vae(model: str | None = None, vae: str | os.PathLike | None = None,
                dtype: torch.dtype = torch.float32, device="cpu"):
    """(WanVAE, where it came from): an explicit path, else the named model's, else the default model's."""
    from .modeling.vae_files import load_vae

    if vae is not None:
        return load_vae(vae, dtype=dtype, device=device), str(vae)
    name = model if model is not None else default_model()[0]
    files = find_files(name)
    if files.vae is None:
        raise ModelError(f"model '{name}' has no VAE: pass --vae PATH")
    return load_vae(files.vae, dtype=dtype, device=device), str(files.vae)
