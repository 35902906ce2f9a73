"""Which model a folder holds: its :class:`~showo2_cli.specs.ModelSpec`, from our own config's
``showo2.spec`` section or from an official ``config.json`` whose missing sizes are read from the
weights' shapes (so the real checkpoints, the parity fixtures and any other set load), every value
checked for its type and range before a network is built from it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError, UsageError, short
from .options import MAX_MODEL_SIZE, is_finite_number
from .specs import (
    IMAGE_UND,
    MAX_SEQ_LEN_LIMIT,
    REGISTRY,
    T2I,
    VIDEO_UND,
    ModelSpec,
    spec_for_hidden_size,
)
from .weights import read_json

if TYPE_CHECKING:
    from .model_files import ModelFiles


#: transformers' ``Qwen2Config`` default (4.47, the official code's), for an LLM config that omits it
QWEN2_DEFAULT_ROPE_THETA = 10000.0
#: transformers' ``SiglipVisionConfig`` default, for a SigLIP config that omits it
SIGLIP_DEFAULT_HEADS = 12

_OFFICIAL_INTS = ("hidden_size", "image_latent_dim", "image_latent_height", "image_latent_width", "patch_size",
                  "clip_latent_dim", "llm_vocab_size", "num_diffusion_layers", "video_latent_height",
                  "video_latent_width")


def check_official_config(config: dict, where: Path) -> None:
    """The official config.json fields the loader reads must have their types."""
    for key in _OFFICIAL_INTS:
        value = config.get(key)
        least = 0 if key == "num_diffusion_layers" else 1  # the official flow head may have no block
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not least <= value < MAX_MODEL_SIZE):
            kind = "a whole number from 0" if least == 0 else "a positive whole number"
            raise ModelError(f"'{where}': '{key}' must be {kind}, got {_shown(value)}")
    for key in ("llm_model_path", "clip_pretrained_model_path"):
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ModelError(f"'{where}': '{key}' must be text, got {_shown(value)}")
    missing = [key for key in ("image_latent_height", "image_latent_width") if config.get(key) is None]
    if missing:  # the weights cannot tell the grid (SigLIP's table has 729 rows whatever it is)
        raise ModelError(f"'{where}': {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: the "
                         "official class reads 16 then (its constructor's default, a 256 px model whose official "
                         "understanding demo fails at 432 px), and every saved Show-o2 model records its token grid "
                         "(27 x 27 for the 432 px models): add both")
    value = config.get("add_time_embeds")
    if value is not None and not isinstance(value, bool):
        raise ModelError(f"'{where}': 'add_time_embeds' must be true or false, got {_shown(value)}")
    if value is False:  # the official layout then has no time token before the visual block
        raise ModelError(f"'{where}': add_time_embeds false (no time token before the visual tokens) is not "
                         "supported: every released Show-o2 model has it true")


def _shown(value) -> str:
    return short(json.dumps(value, default=str))


#: the layout of a showo2 model folder this version writes (``config.json``'s
#: ``showo2.format_version``); a folder of a later one is refused rather than misread
FORMAT_VERSION = 1


def check_spec_fields(raw: dict, where: Path | str) -> None:
    """Every field of a ``showo2.spec`` section must have its declared type (and sizes a sane
    range) before a network is built from it: a config is read from disk, maybe a download."""
    import dataclasses

    for f in dataclasses.fields(ModelSpec):
        if f.name not in raw:
            continue
        value, kind = raw[f.name], str(f.type).replace(" ", "")

        def bad(want: str, value=value, name=f.name) -> ModelError:
            return ModelError(f"'{where}': spec field '{name}' must be {want}, got {_shown(value)}")

        if kind == "int":
            low = 0 if f.name.endswith("_layers") or f.name == "frame_embeddings" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value < MAX_MODEL_SIZE:
                raise bad(f"a whole number from {low} to {MAX_MODEL_SIZE - 1}")
        elif kind == "float":
            if not is_finite_number(value):  # (10**400: no float)
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
                    isinstance(v, int) and not isinstance(v, bool) and 0 < v < MAX_MODEL_SIZE for v in value):
                raise bad("a list of positive whole numbers")
        elif kind.startswith("tuple[str"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad("a list of text")
        elif kind == "int|None":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 1 <= value < MAX_MODEL_SIZE):
                raise bad(f"a whole number from 1 to {MAX_MODEL_SIZE - 1} or null")
        elif kind in ("dict", "dict|None"):
            if value is not None and not isinstance(value, dict):
                raise bad("an object")


# ---- reading weights --------------------------------------------------------------------------

def _count(state: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


#: (spec field, key pattern whose group(1) counts the blocks, where an official checkpoint states
#: that depth) of every repeated block.
DEPTHS = (("num_layers", r"showo\.model\.layers\.(\d+)\.", "llm/config.json's num_hidden_layers"),
          ("semantic_layers", r"und_trans\.layers\.(\d+)\.", "the SigLIP config's num_hidden_layers less 1"),
          ("head_layers", r"diffusion_head_a\.(\d+)\.", "config.json's num_diffusion_layers"))


def check_depths(spec: ModelSpec, state: dict, where: str) -> None:
    """Every depth (and the width) a config declares must be what the weights hold: compared from
    the keys and shapes before a network is built, so an absurd config fails at once."""
    for field_name, pattern, official in DEPTHS:
        have, want = _count(state, pattern), getattr(spec, field_name)
        if have != want:
            raise ModelError(f"'{where}': the config says {field_name} = {want} (of an official checkpoint: "
                             f"{official}) but the weights hold {have} such block(s)")
    emb = state.get("showo.model.embed_tokens.weight")
    if emb is not None and tuple(emb.shape) != (spec.vocab_size, spec.hidden_size):
        raise ModelError(f"'{where}': the config says vocab {spec.vocab_size} x hidden {spec.hidden_size} but the "
                         f"embedding is {tuple(emb.shape)}")


def _declared_depth(declared: int | None, deleted: int, state: dict, pattern: str) -> int:
    """A depth as the official constructor builds it: from the config that states it (less the
    ``deleted`` last layers: SigLIP's), else the blocks the weights hold. The official loader
    ignores blocks beyond the stated depth and fails on fewer; ``check_depths`` refuses both
    before anything is built, where counting the weights ran another network than the official."""
    return max(int(declared) - deleted, 0) if declared is not None else _count(state, pattern)


def _shape(state: dict, key: str, root: Path) -> tuple[int, ...]:
    if key not in state:
        under = next((k[:-len(key)] for k in state if k.endswith("." + key)), None)
        if under is not None:  # a training framework's wrapper (a Lightning module's attribute, ...)
            raise ModelError(f"weights in '{root}' hold '{key}' under the prefix '{short(under, 60)}': save the "
                             "network's own state dict (keys without that prefix)")
        raise ModelError(f"weights in '{root}' lack '{key}': not a Show-o2 checkpoint or incomplete")
    return tuple(state[key].shape)


def _typed(cfg: dict, key: str, kind: str, where) -> Any:
    """``cfg[key]`` when it has the type a config of the official code gives it (``bool``,
    ``int`` (positive), ``number`` (positive, finite), ``eps`` (finite, 0 included: a norm's epsilon,
    which the official code takes at 0) or ``dict``), None when absent or null; else one ModelError: a
    wrong type would be misread (``bool("false")`` is true) or fail deep inside."""
    value = cfg.get(key)
    if value is None:
        return None
    ok = {"bool": lambda v: isinstance(v, bool),
          "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
          "number": lambda v: is_finite_number(v) and v > 0,  # (10**400: no float)
          "eps": lambda v: is_finite_number(v) and v >= 0,
          "dict": lambda v: isinstance(v, dict), "str": lambda v: isinstance(v, str)}[kind](value)
    if not ok:
        wanted = {"bool": "true or false", "int": "a positive integer", "number": "a positive number",
                  "eps": "a number from 0", "dict": "an object", "str": "text"}[kind]
        raise ModelError(f"'{where}': {key} must be {wanted}, got {str(value)[:20]}")
    return value


def _llm_rope_scaling(llm_cfg: dict, where, max_positions: int) -> dict | None:
    """The Qwen2 config's RoPE scaling as the official code's transformers reads it: ``rope_scaling``
    (``type`` the older name of ``rope_type``), else a newer config's ``rope_parameters`` less its
    ``rope_theta``; None for plain RoPE. A scaling with numbers and no type (``{"factor": 2.0}``) is
    kept, for the spec's check to refuse as it refuses it in a showo2 config (the official code's
    transformers looks up a RoPE of type None and stops); it was read as plain RoPE."""
    scaling = _typed(llm_cfg, "rope_scaling", "dict", where)
    official_key = scaling is not None
    if scaling is None:
        params = _typed(llm_cfg, "rope_parameters", "dict", where) or {}
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    scaling = dict(scaling)
    if "type" in scaling:
        # the official code's transformers (4.47) sets rope_type from the older key when a
        # rope_scaling has both (``{"type": "yarn", "rope_type": "linear"}`` is YaRN there); a newer
        # config's rope_parameters keep their own rope_type
        kind = scaling.pop("type")
        scaling["rope_type"] = kind if official_key else scaling.get("rope_type", kind)
    if official_key and scaling.get("rope_type") == "yarn":
        # transformers 4.47 (the official code's) takes YaRN's correction range from the config's
        # max_position_embeddings and its attention factor from `factor` (or `attention_factor`)
        # alone; transformers 5 reads the scaling's original_max_position_embeddings, mscale,
        # mscale_all_dim and truncate, which 4.47 passes over (a transformers 5 config's
        # rope_parameters keep transformers 5's meaning)
        for key in ("mscale", "mscale_all_dim", "truncate"):
            scaling.pop(key, None)
        scaling["original_max_position_embeddings"] = max_positions
    if official_key and scaling.get("rope_type") == "longrope":
        official_longrope(scaling, _typed(llm_cfg, "original_max_position_embeddings", "int", where), max_positions)
    return scaling if scaling and scaling.get("rope_type") != "default" else None


def official_longrope(scaling: dict, top_original: int | None, max_positions: int) -> None:
    """A LongRoPE ``scaling`` (in place) as transformers 4.47, the official code's, builds it: once,
    for every length. With the LLM config's own ``original_max_position_embeddings`` (Phi-3's field)
    the factor is ``max_position_embeddings`` over it, else the scaling's ``factor`` (the original
    length then ``max_position_embeddings``); the long factors where the scaled length passes the
    original one, else the short ones; the attention factor, unless given, sqrt(1 + ln(factor) /
    ln(original)). transformers 5 takes the short factors for rows shorter than the scaling's
    original length (and reads that length from the scaling alone): both lists become the one 4.47
    uses, and the factors are written out. A scaling 4.47 cannot build (no factor) is left as it is."""
    import math

    original = top_original if top_original is not None else max_positions
    factor = max_positions / top_original if top_original is not None else scaling.get("factor")
    if not is_finite_number(factor) or original < 2:
        return
    scaled = max_positions if top_original is not None else max_positions * factor
    chosen = scaling.get("long_factor" if scaled > original else "short_factor")
    attention = scaling.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    scaling.update(short_factor=chosen, long_factor=chosen, factor=factor, attention_factor=attention,
                   original_max_position_embeddings=original)


def _semantic_intermediate(state: dict, sig_cfg: dict, where, base: ModelSpec | None, root: Path) -> int:
    """The semantic layers' MLP width, from the weights; a checkpoint with no semantic layer (a
    SigLIP of depth 1 less its deleted last layer: the official code runs it, the patch embedding
    and position table feeding the fusion directly) has none to read, and the width is unused."""
    if _count(state, r"und_trans\.layers\.(\d+)\.") == 0:
        return int(_typed(sig_cfg, "intermediate_size", "int", where) or (base.semantic_intermediate if base else 1))
    return _shape(state, "und_trans.layers.0.mlp.fc1.weight", root)[0]


def _given(value: Any, default: Any) -> Any:
    """``value`` unless absent (None): a stated 0 is a value, not a fallback's cue."""
    return default if value is None else value


def stored_head_differs(state: dict) -> bool:
    """Whether the weights hold an ``lm_head`` other than the token embedding. The official loader
    (diffusers' ``from_pretrained``) sets every stored tensor as it is, so such a head is the one
    the official model uses, whatever the LLM config's ``tie_word_embeddings`` says (a fine-tune
    whose head drifted from the embedding); tying it would drop it. Tensors sharing one storage
    (a tied model's ``.bin``) are the same without reading them."""
    import torch

    head, embed = state.get("showo.lm_head.weight"), state.get("showo.model.embed_tokens.weight")
    if head is None or embed is None or head.shape != embed.shape:
        return False  # absent (tied, stored once), or a shape the fit check names
    if (head.dtype == embed.dtype and head.stride() == embed.stride() and head.storage_offset() == embed.storage_offset()
            and head.untyped_storage().data_ptr() == embed.untyped_storage().data_ptr()):
        return False
    return head.dtype != embed.dtype or not torch.equal(head, embed)


def restore_tied_embedding(state: dict) -> None:
    """Put a tied embedding stored only under the head's name back under its own (in place).
    The official ``save_pretrained(safe_serialization=True)`` fails on the tied pair ("tensors share
    memory") and points to safetensors' ``save_model``, which keeps one name of a shared tensor, the
    first in sorted order: ``showo.lm_head.weight``. Only a tied pair loses its embedding so."""
    if "showo.model.embed_tokens.weight" not in state and "showo.lm_head.weight" in state:
        state["showo.model.embed_tokens.weight"] = state.pop("showo.lm_head.weight")


def spec_from_official(files: ModelFiles, state: dict) -> ModelSpec:
    """A full spec from the official config.json, the LLM/SigLIP configs and the weights' shapes."""
    cfg, root = files.config, files.root
    llm_cfg = read_json(files.llm_config) if files.llm_config else {}
    if _typed(llm_cfg, "tie_word_embeddings", "bool", files.llm_config) is not False:
        restore_tied_embedding(state)
    embed = _shape(state, "showo.model.embed_tokens.weight", root)
    hidden = embed[1]
    und = _shape(state, "image_embedder_und.proj.weight", root)
    grid, grid_w = int(cfg["image_latent_height"]), int(cfg["image_latent_width"])  # (check_official_config's)
    patch = und[2]
    # the official constructor builds its patch embeddings and fusion, and resizes the LLM's token
    # table, from these config.json fields (checked by check_official_config): weights of other
    # sizes are not the model it builds, and its loader fails on them
    for key, held, what in (("patch_size", patch, "patch embedding is {} wide"),
                            ("image_latent_dim", und[1], "patch embedding takes {} latent channels"),
                            ("clip_latent_dim", und[0], "semantic patch embedding is {} wide"),
                            ("hidden_size", hidden, "token embedding is {} wide"),
                            ("llm_vocab_size", embed[0], "token embedding has {} rows")):
        stated = cfg.get(key)
        if stated is not None and stated != held:
            raise ModelError(f"'{root / 'config.json'}': {key} is {stated} but the weights' {what.format(held)}: "
                             "not the model the official code builds from this config")
    resolution = grid * patch * 8
    named = _registry_by_name(files.name, root, hidden)
    base = named or spec_for_hidden_size(hidden, resolution)
    sig_cfg = read_json(files.siglip_config) if files.siglip_config else {}
    sig_cfg = _typed(sig_cfg, "vision_config", "dict", files.siglip_config) or sig_cfg
    if not llm_cfg and base is None:
        raise ModelError(f"cannot tell the LLM's head count for '{root}': put the Qwen2 config.json "
                         f"at llm_model_path ('{short(str(cfg.get('llm_model_path')), 200)}')")
    for key in ("num_attention_heads", "num_key_value_heads", "head_dim", "num_hidden_layers", "hidden_size",
                "max_position_embeddings"):  # the sizes of a model config, as our own spec's: below MAX_MODEL_SIZE
        value = llm_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_MODEL_SIZE):
            raise ModelError(f"'{files.llm_config}': {key} must be a positive integer below {MAX_MODEL_SIZE}, "
                             f"got {str(value)[:20]}")
    if llm_cfg.get("num_attention_heads") is None and base is None:  # absent or null
        raise ModelError(f"'{files.llm_config}' does not say num_attention_heads")
    heads = int(llm_cfg.get("num_attention_heads") or base.num_heads)
    if not llm_cfg.get("head_dim") and heads > hidden:  # (each head would be 0 wide)
        raise ModelError(f"'{files.llm_config or root / 'config.json'}': num_attention_heads is {heads}, more than the "
                         f"weights' hidden size {hidden}: not the LLM these weights were trained with")
    head_dim = int(llm_cfg.get("head_dim") or hidden // heads)
    kv_dim = _shape(state, "showo.model.layers.0.self_attn.k_proj.weight", root)[0]
    clip_dim = und[0]
    if not sig_cfg and (base is None or base.clip_latent_dim != clip_dim):
        raise ModelError(f"cannot tell the semantic layers' head count for '{root}': put the SigLIP "
                         f"config.json at clip_pretrained_model_path ('{short(str(cfg.get('clip_pretrained_model_path')), 200)}')")
    head_layers = _declared_depth(cfg.get("num_diffusion_layers"), 0, state, DEPTHS[2][1])
    head_hidden = _shape(state, "diffusion_head_b.linear.weight", root)[1]
    if head_layers:
        q_norm = _shape(state, "diffusion_head_a.0.self_attn.q_norm.weight", root)[0]
        head_widths = dict(
            head_dim_flow=q_norm,
            head_heads=_shape(state, "diffusion_head_a.0.self_attn.q_proj.weight", root)[0] // q_norm,
            head_kv_heads=_shape(state, "diffusion_head_a.0.self_attn.k_proj.weight", root)[0] // q_norm,
            head_intermediate=_shape(state, "diffusion_head_a.0.mlp.gate_proj.weight", root)[0])
    else:  # no block (the official constructor builds none for num_diffusion_layers 0): no widths to read,
        # and none used; one head as wide as the head keeps the spec consistent
        head_widths = dict(head_dim_flow=head_hidden, head_heads=1, head_kv_heads=1, head_intermediate=head_hidden)
    tied = _typed(llm_cfg, "tie_word_embeddings", "bool", files.llm_config)
    if tied is None:
        tied = base.tie_word_embeddings if base else ("showo.lm_head.weight" not in state)
    tied = tied and not stored_head_differs(state)
    rope_theta = _typed(llm_cfg, "rope_theta", "number", files.llm_config) or _typed(
        _typed(llm_cfg, "rope_parameters", "dict", files.llm_config) or {}, "rope_theta", "number", files.llm_config)
    tasks = base.tasks if base else (IMAGE_UND, T2I)
    if "video-und" in files.name.lower() or "video-und" in str(root).lower():
        tasks = tuple(dict.fromkeys((*tasks, VIDEO_UND)))
    pos_rows = _shape(state, "position_embedding.weight", root)[0]
    visual = grid * grid_w + 1
    max_positions = int(_typed(llm_cfg, "max_position_embeddings", "int", files.llm_config) or 32768)
    changes = dict(
        name=files.name, hidden_size=hidden, vocab_size=embed[0],
        num_layers=_declared_depth(llm_cfg.get("num_hidden_layers"), 0, state, DEPTHS[0][1]),
        num_heads=heads, head_dim=head_dim, num_kv_heads=kv_dim // head_dim,
        intermediate_size=_shape(state, "showo.model.layers.0.mlp.gate_proj.weight", root)[0],
        # a Qwen2 config without it gets transformers' Qwen2Config default, as in the official code
        rope_theta=float(rope_theta or (QWEN2_DEFAULT_ROPE_THETA if llm_cfg else base.rope_theta if base else 1e6)),
        # (an epsilon of 0 is the official code's too: `or` took it for absent, and 1e-6 ran instead)
        rms_norm_eps=float(_given(_typed(llm_cfg, "rms_norm_eps", "eps", files.llm_config),
                                  base.rms_norm_eps if base else 1e-6)),
        tie_word_embeddings=bool(tied),
        max_position_embeddings=max_positions,
        clip_latent_dim=clip_dim, latent_channels=und[1], patch_size=patch,
        semantic_layers=_declared_depth(_typed(sig_cfg, "num_hidden_layers", "int", files.siglip_config), 1, state,
                                        DEPTHS[1][1]),
        semantic_heads=int(_typed(sig_cfg, "num_attention_heads", "int", files.siglip_config)
                           or (SIGLIP_DEFAULT_HEADS if sig_cfg else base.semantic_heads if base else 16)),
        semantic_intermediate=_semantic_intermediate(state, sig_cfg, files.siglip_config, base, root),
        semantic_eps=float(_given(_typed(sig_cfg, "layer_norm_eps", "eps", files.siglip_config), 1e-6)),
        semantic_act=_typed(sig_cfg, "hidden_act", "str", files.siglip_config) or "gelu_pytorch_tanh",
        hidden_act=_typed(llm_cfg, "hidden_act", "str", files.llm_config) or "silu",
        rope_scaling=_llm_rope_scaling(llm_cfg, files.llm_config, max_positions),
        position_embedding_rows=pos_rows,
        head_hidden=head_hidden, head_layers=head_layers, **head_widths,
        image_latent_grid=grid, image_latent_grid_width=grid_w if grid_w != grid else None, tasks=tasks,
    )
    if named is None:
        # the sequence budget the official code uses: the configured max_seq_len (default 1024),
        # else the official model of this width (and resolution)'s; a larger configured grid keeps
        # that model's text budget (the official 1024 px demo: 4096 + 1 + 4 + 251 = 4352). Of no
        # official width, the official demos' own rule: 1024 rows and at least the HQ demos' 251
        # prompt tokens (their yaml: 1024 at 432 px, 1280 at 512, 4352 at 1024)
        configured = cfg.get("max_seq_len")
        if configured is not None and (isinstance(configured, bool) or not isinstance(configured, int)):
            raise ModelError(f"'{root / 'config.json'}': max_seq_len must be a whole number, got {_shown(configured)}")
        max_seq = configured if configured is not None else (base.max_seq_len if base is not None else 1024)
        if not 1 <= max_seq <= MAX_SEQ_LEN_LIMIT:
            raise ModelError(f"'{root / 'config.json'}': max_seq_len must be 1 to {MAX_SEQ_LEN_LIMIT}, got {max_seq}")
        text = 16 if configured is not None else (base or REGISTRY["1.5B-HQ"]).text_budget
        changes.update(resolution=resolution, resolutions=(resolution,), video_resolution=resolution,
                       max_seq_len=max(max_seq, visual + 4 + text))
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
        where, version = files.root / "config.json", raw.get("format_version", FORMAT_VERSION)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ModelError(f"'{where}': format_version must be a whole number, got {_shown(version)}")
        if version > FORMAT_VERSION:  # another layout: read as this one's, it loaded silently
            raise ModelError(f"'{where}' was written by a newer showo2 (format_version {version}; this one "
                             f"reads {FORMAT_VERSION}): upgrade showo2")
        check_spec_fields(raw["spec"], where)
        try:
            return ModelSpec.from_dict(raw["spec"])
        except (UsageError, TypeError, ValueError) as e:
            newer = " (written by a newer showo2? upgrade showo2)" if str(e).startswith("unknown model spec") else ""
            raise ModelError(f"'{where}': {e}{newer}") from e
    try:
        return spec_from_official(files, state)
    except (UsageError, ValueError, ZeroDivisionError) as e:  # sizes that make no model
        raise ModelError(f"'{files.root / 'config.json'}': {e}") from e


__all__ = ["DEPTHS", "check_depths", "check_official_config", "check_spec_fields", "spec_from_files", "spec_from_official"]
