"""Import and drive the OFFICIAL Show-o2 code (showlab/Show-o, folder ``show-o2/``) from a folder
outside this project, for side-by-side benchmarks and for making parity cases.

Nothing of the official code is vendored: the caller passes its path (``--official``), and this
module only adds the small shims the official code needs to run on CPU with tiny or mid-size
random weights and no hub access:

* ``timm.layers.helpers.to_2tuple`` (the one timm function it imports) when timm is absent;
* ``SiglipModel.from_pretrained(folder)`` builds the model from the folder's config.json (the
  semantic layers' weights are inside the Show-o2 state dict, so nothing is lost);
* the flow head's size, hard-coded in ``DiffusionHeadConfig`` (2048/64/8192, 32 heads, 8 KV
  heads), is replaced by the given one when it differs (the parity fixtures' own patch).

The official code targets transformers 4.47 / diffusers 0.31; run this module's users with those
on ``sys.path`` first (``--site DIR``, e.g. a ``pip install --target DIR transformers==4.47.0
diffusers==0.31.0 tokenizers==0.21.4 huggingface_hub==0.36.2 einops torchdiffeq scipy``), the
project's own torch underneath. Works in this project's own environment only where the official
code runs on the installed transformers.
"""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# the four sizes of the flow head the official code hard-codes for the released models
OFFICIAL_HEAD = dict(hidden=2048, head_dim=64, intermediate=8192, heads=32, kv_heads=8)


@dataclass
class Geometry:
    """An official-format model's sizes (what config.json, llm/ and siglip/ record, plus the head)."""

    vocab: int = 32768
    hidden: int = 896
    intermediate: int = 4864
    layers: int = 8
    heads: int = 14
    kv_heads: int = 2
    rope_theta: float = 1e6
    clip_dim: int = 768
    clip_layers: int = 6  # semantic layers kept (SigLIP depth minus the deleted last layer)
    clip_heads: int = 12
    clip_intermediate: int = 3072
    grid: int = 27  # image tokens per side (27 -> 432 px, a 54x54 latent)
    head_hidden: int = 1024
    head_dim: int = 64
    head_intermediate: int = 4096
    head_heads: int = 16
    head_kv_heads: int = 4
    head_layers: int = 4

    @property
    def llm_head_dim(self) -> int:
        return self.hidden // self.heads


def import_official(official: str | Path, site: str | Path | None = None):
    """Put the official code (and an optional site dir with its library versions) first on sys.path
    and return its ``models`` package (plus ``transport``), with the shims installed."""
    official = Path(official).resolve()
    if not (official / "models" / "modeling_showo2_qwen2_5.py").is_file():
        raise SystemExit(f"error: '{official}' is not the official show-o2 folder (no models/modeling_showo2_qwen2_5.py)")
    for p in (str(official), str(Path(site).resolve()) if site else None):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    import diffusers  # noqa: F401  (first, so their optional-package probes never see the shim below)
    import transformers  # noqa: F401

    try:
        import timm.layers.helpers  # noqa: F401
    except ImportError:
        def to_2tuple(x):
            return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

        for name in ("timm", "timm.layers", "timm.layers.helpers"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["timm.layers.helpers"].to_2tuple = to_2tuple
    import models  # the official package
    import models.modeling_showo2_qwen2_5 as m
    import transport  # noqa: F401

    siglip_cls = m.SiglipModel

    def from_config_folder(path, *args, **kwargs):
        from models.modeling_siglip import SiglipConfig

        return siglip_cls(SiglipConfig.from_pretrained(path))

    siglip_cls.from_pretrained = staticmethod(from_config_folder)
    return models


def set_flow_head(geometry: Geometry) -> None:
    """Make the official constructor build the flow head at ``geometry``'s size."""
    import models.modeling_showo2_qwen2_5 as m
    from models.modules import DiffusionHeadConfig

    base = getattr(DiffusionHeadConfig, "_official_base", DiffusionHeadConfig)
    g = geometry

    class SizedHeadConfig(base):
        _official_base = base

        def __init__(self, *args, **kwargs):
            super().__init__(hidden_size=g.head_hidden, head_dim=g.head_dim, intermediate_size=g.head_intermediate)
            self.num_attention_heads = g.head_heads
            self.num_key_value_heads = g.head_kv_heads

    m.DiffusionHeadConfig = SizedHeadConfig


def write_configs(folder: Path, g: Geometry) -> dict:
    """``llm/config.json``, ``siglip/config.json`` and the official model kwargs (absolute paths)."""
    (folder / "llm").mkdir(parents=True, exist_ok=True)
    (folder / "siglip").mkdir(parents=True, exist_ok=True)
    llm = {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "attention_dropout": 0.0,
        "hidden_act": "silu", "hidden_size": g.hidden, "intermediate_size": g.intermediate,
        "initializer_range": 0.02, "max_position_embeddings": 32768, "max_window_layers": g.layers,
        "num_attention_heads": g.heads, "num_hidden_layers": g.layers, "num_key_value_heads": g.kv_heads,
        "rms_norm_eps": 1e-6, "rope_scaling": None, "rope_theta": g.rope_theta, "sliding_window": None,
        "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True, "use_sliding_window": False,
        "vocab_size": g.vocab,
    }
    siglip = {
        "architectures": ["SiglipModel"], "model_type": "siglip", "initializer_factor": 1.0,
        "text_config": {"model_type": "siglip_text_model", "hidden_size": 32, "intermediate_size": 64,
                        "max_position_embeddings": 16, "num_attention_heads": 2, "num_hidden_layers": 1,
                        "vocab_size": 64},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": g.clip_dim,
                          "intermediate_size": g.clip_intermediate, "num_attention_heads": g.clip_heads,
                          "num_hidden_layers": g.clip_layers + 1, "image_size": 14 * g.grid, "patch_size": 14},
    }
    (folder / "llm" / "config.json").write_text(json.dumps(llm, indent=1))
    (folder / "siglip" / "config.json").write_text(json.dumps(siglip, indent=1))
    return dict(
        llm_vocab_size=g.vocab, llm_model_path=str(folder / "llm"), load_from_showo=True, image_latent_dim=16,
        image_latent_height=g.grid, image_latent_width=g.grid, video_latent_height=g.grid,
        video_latent_width=g.grid, patch_size=2, hidden_size=g.hidden, clip_latent_dim=g.clip_dim,
        num_diffusion_layers=g.head_layers, add_time_embeds=True, add_qk_norm=True,
        clip_pretrained_model_path=str(folder / "siglip"),
    )


def build_official(kwargs: dict, g: Geometry):
    """The official ``Showo2Qwen2_5`` at geometry ``g`` (weights as the official constructor leaves them)."""
    from models import Showo2Qwen2_5

    set_flow_head(g)
    return Showo2Qwen2_5(**kwargs).eval()


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int, init_gain: float = 1.0, llm_gain: float = 1.5,
              embed_std: float = 0.05) -> None:
    """Redraw every parameter (the official init zeroes the adaLN and output layers, which would
    make every velocity 0): matrices N(0, gain/sqrt(fan_in)) with gain ``llm_gain`` (1.5) inside the
    LLM and ``init_gain`` (1.0) elsewhere, the token table N(0, ``embed_std`` (0.05)), norm weights
    1 + 0.1 N, biases 0.05 N (the parity fixtures' recipe; the defaults are the public set's, which
    its meta.json records)."""
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    for name, p in model.named_parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        if name.endswith("embed_tokens.weight"):
            p.copy_(torch.randn(p.shape, generator=gen) * embed_std)
        elif p.dim() >= 2:
            gain = llm_gain if name.startswith("showo.") else init_gain
            p.copy_(torch.randn(p.shape, generator=gen) * (gain / math.sqrt(p[0].numel())))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))


def save_official(model, kwargs: dict, folder: Path, g: Geometry) -> None:
    """``config.json`` (the official field set, sibling-relative paths) + ``pytorch_model.bin``
    (``torch.save`` of the state dict, the tied embedding stored once), as ``save_pretrained`` does."""
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    config = {k: v for k, v in dict(model.config).items() if not k.startswith("_") or k in ("_class_name",)}
    config.update({"_class_name": "Showo2Qwen2_5", "_diffusers_version": "0.31.0", "llm_model_path": "llm",
                   "clip_pretrained_model_path": "siglip"})
    config = {k: config[k] for k in sorted(config) if k in OFFICIAL_CONFIG_FIELDS}
    (folder / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))
    (folder / "geometry.json").write_text(json.dumps(asdict(g), indent=1))


OFFICIAL_CONFIG_FIELDS = (
    "_class_name", "_diffusers_version", "add_qk_norm", "add_time_embeds", "clip_latent_dim",
    "clip_pretrained_model_path", "hidden_size", "image_latent_dim", "image_latent_height", "image_latent_width",
    "llm_model_path", "llm_vocab_size", "load_from_showo", "num_diffusion_layers", "patch_size",
    "video_latent_height", "video_latent_width",
)


def load_official(folder: Path):
    """Build the official model for a folder written by :func:`save_official` and load its .bin."""
    folder = Path(folder)
    g = Geometry(**json.loads((folder / "geometry.json").read_text()))
    kwargs = write_configs(folder, g)
    model = build_official(kwargs, g)
    state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    del state
    return model.eval(), g


def load_official_pretrained(folder: Path):
    """The official scripts' load (``Showo2Qwen2_5.from_pretrained(path, use_safetensors=False)``,
    diffusers' low-memory path where accelerate is installed) of a folder written by
    :func:`save_official`; its config's ``llm``/``siglip`` paths are relative, so it runs from the folder."""
    import os

    from models import Showo2Qwen2_5

    folder = Path(folder).resolve()
    g = Geometry(**json.loads((folder / "geometry.json").read_text()))
    set_flow_head(g)
    here = os.getcwd()
    os.chdir(folder)
    try:
        model = Showo2Qwen2_5.from_pretrained(str(folder), use_safetensors=False)
    finally:
        os.chdir(here)
    return model.eval(), g


def gen_token_rows(prompt_ids: list[int], num_image_tokens: int, max_seq_len: int, ids: dict, video: bool = False):
    """The official t2i (or, ``video``, t2v: bov / eov / vid_pad) rows via ``models.misc.prepare_gen_input``
    (a pass-through tokenizer)."""
    from models.misc import prepare_gen_input

    def tokenizer(prompt, add_special_tokens=False):
        return {"input_ids": list(prompt)}

    max_text_len = max_seq_len - num_image_tokens - 4
    begin, end, visual_pad = ("bov", "eov", "vid_pad") if video else ("boi", "eoi", "img_pad")
    return prepare_gen_input([prompt_ids], tokenizer, num_image_tokens, ids["bos"], ids["eos"], ids[begin],
                             ids[end], ids["pad"], ids[visual_pad], max_text_len, "cpu")


def official_sample(model, z, text_tokens, modality_positions, max_seq_len, guidance, steps, shift=3.0,
                    on_call=None, first_frame_as_cond=False):
    """``inference_t2i.py``'s sampling: the naive omni mask, torchdiffeq Euler on the shifted grid;
    ``z`` is the doubled (cond, uncond) noise. ``on_call(t)`` is called after every model call.
    ``first_frame_as_cond``: image to video as the model class's forward does it (spec §8.4: the
    clean first-frame latent in ``z``, its velocity zeroed; no official script drives it)."""
    from models import omni_attn_mask_naive
    from transport import Sampler, create_transport

    mask = omni_attn_mask_naive(text_tokens.size(0), max_seq_len, modality_positions, "cpu").to(torch.float32)
    transport = create_transport(path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None,
                                 sample_eps=None, snr_type="lognorm", do_shift=True,
                                 seq_len=int(modality_positions[0, 0, 1]))
    sampler = Sampler(transport)
    fn = sampler.sample_ode(sampling_method="euler", num_steps=steps, atol=1e-6, rtol=1e-3, reverse=False,
                            time_shifting_factor=shift)

    def model_fn(*args, **kwargs):
        out = model.t2i_generate(*args, **kwargs)
        if on_call is not None:
            on_call()
        return out

    return fn(z, model_fn, text_tokens=text_tokens, attention_mask=mask, modality_positions=modality_positions,
              output_hidden_states=True, max_seq_len=max_seq_len, guidance_scale=guidance,
              first_frame_as_cond=first_frame_as_cond)[-1]


def special_ids(vocab: int) -> dict:
    """Special-token ids for a random model of ``vocab`` rows: the real Qwen2.5 ids' offsets from
    the end of the vocabulary (the real table has 151669 rows: bos 151644 ... eov 151668)."""
    real = dict(bos=151644, eos=151645, boi=151652, eoi=151653, img_pad=151655, vid_pad=151656, pad=151665,
                img=151666, bov=151667, eov=151668)
    return {k: vocab - (151669 - v) for k, v in real.items()}
