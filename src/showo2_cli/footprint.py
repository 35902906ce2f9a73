"""The weights a job runs, in bytes: what the memory guard (:func:`showo2_cli.runtime.check_memory`)
adds to a job's working memory, so the limit counts the same whether a head or a VAE half is loaded
now or on first use, and whichever entry point runs the job."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (torch: imported where used, so a command's early checks stay cheap)
    import torch

#: Bytes a parameter of a quantized linear layer keeps (``--quantize``): int8wo one byte (and a
#: scale per row), nf4 half a byte and a float32 scale per block of 64.
QUANTIZED_BYTES = {"int8wo": 1.0, "nf4": 0.5 + 4 / 64}
#: The parts each kind of job runs: the network's heads (``modeling.showo2.HEADS``; the rest of the
#: network runs in every job of the network) and the VAE's halves (``modeling.vae.VAE_PARTS``).
GENERATION_PARTS = (("flow_head",), ("decoder",))
I2V_PARTS = (("flow_head",), ("encoder", "decoder"))
UNDERSTANDING_PARTS = (("lm_head",), ("encoder",))  # an answer about an image or a video
TEXT_PARTS = (("lm_head",), ())  # an answer about text alone (a chat question, a request without an image)
#: A one-frame video from an image: its only latent frame is the image's, so no head runs.
STILL_PARTS = ((), ("encoder", "decoder"))


def generation_parts(from_image: bool, frames: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The parts a generation job runs: :data:`GENERATION_PARTS`, :data:`I2V_PARTS` from an
    image, :data:`STILL_PARTS` for one frame from an image (nothing is sampled)."""
    if not from_image:
        return GENERATION_PARTS
    return STILL_PARTS if frames == 1 else I2V_PARTS


def parameter_bytes(module: torch.nn.Module, prefix: str, dtype: torch.dtype, quantize: str, wanted) -> list:
    """(name, bytes, loaded) of each parameter of ``module`` and of the parts left out in it (a
    ``NotLoaded`` stand-in, counted from the module it stands for), in ``dtype``; a quantized
    linear layer's weight (``wanted(module, name)``) at :data:`QUANTIZED_BYTES`."""
    from .modeling.parts import NotLoaded

    found, seen = [], set()

    def walk(mod, name, loaded):
        if isinstance(mod, NotLoaded):
            return walk(mod.meta_module, name, False)
        quantized = quantize in QUANTIZED_BYTES and wanted is not None and wanted(mod, name)
        for leaf, p in mod.named_parameters(recurse=False):
            if id(p) in seen:  # a tied lm_head is the embedding: counted once
                continue
            seen.add(id(p))
            shape = getattr(getattr(p, "quant_state", None), "shape", None)  # bitsandbytes' packed 4-bit weight
            numel = math.prod(shape) if shape is not None else p.numel()
            per = QUANTIZED_BYTES[quantize] if quantized and leaf == "weight" else dtype.itemsize
            found.append((f"{name}.{leaf}" if name else leaf, numel * per, loaded))
        for child, sub in mod.named_children():
            walk(sub, f"{name}.{child}" if name else child, loaded)

    walk(module, prefix, True)
    return found


def network_bytes(net: torch.nn.Module, dtype: torch.dtype, quantize: str = "none",
                  heads: tuple[str, ...] | None = None) -> list:
    """:func:`parameter_bytes` of the network without the heads not in ``heads`` (None: all of
    them), its linear layers that ``quantize`` converts (acceleration's ``QUANTIZED_PREFIXES``,
    not a tied ``lm_head``) at that method's bytes."""
    from .acceleration import quantized_filter
    from .modeling.showo2 import HEADS

    net = getattr(net, "_orig_mod", net)  # compiled
    wanted = quantized_filter(net)
    skip = tuple(n + "." for h, ns in HEADS.items() if heads is not None and h not in heads for n in ns)
    return [(n, b, ok) for n, b, ok in parameter_bytes(net, "", dtype, quantize, wanted)
            if not (n + ".").startswith(skip)]


def in_gb(parts: list) -> tuple[float, float]:
    """(all, loaded now) of :func:`parameter_bytes`' entries, in GB."""
    return sum(b for _n, b, _ok in parts) / 1e9, sum(b for _n, b, ok in parts if ok) / 1e9


def weights_gb(model, heads: tuple[str, ...] = (), vae_parts: tuple[str, ...] = (),
               network: bool = True) -> tuple[float, float]:
    """The weights a job runs and how much of them is loaded now, in GB: the network (``network``)
    without the heads it does not run (``heads``: those it runs) and the VAE's ``vae_parts``, in
    the load's dtype (the linear layers ``quantize`` converts at its bytes). Whether a part is
    loaded now (``heads=()`` at load, a VAE half) or where offload keeps it does not change the
    first number, which a memory limit counts: one verdict for an eager and a lazy load."""
    parts = network_bytes(model.network, model.dtype, model.quantize, heads) if network else []
    return in_gb(parts + vae_bytes(model.vae, vae_parts))


def vae_bytes(vae, parts: tuple[str, ...]) -> list:
    """:func:`parameter_bytes` of the VAE's ``parts`` (``encoder``, ``decoder``); none without a VAE."""
    from .modeling.vae import VAE_PARTS

    if not parts or vae is None:
        return []
    keep = tuple(n + "." for p in parts for n in VAE_PARTS[p])
    return [(n, b, ok) for n, b, ok in parameter_bytes(vae.model, "", vae.dtype, "none", None) if n.startswith(keep)]


def files_weights_gb(spec, dtype: torch.dtype, quantize: str, vae_sizes, heads: tuple[str, ...],
                     vae_parts: tuple[str, ...]) -> tuple[float, float]:
    """:func:`weights_gb` of a model before it loads (none of it loaded): the network of ``spec``
    built on 'meta', the VAE's parts counted from ``vae_sizes``, the safetensors header of the VAE
    the load reads (the model's own, ``--vae`` or ``$SHOWO2_VAE``:
    :func:`~showo2_cli.modeling.vae_files.header_sizes`; None, for a pickled file or no VAE, counts
    nothing here: the check after the load does)."""
    import torch

    from .modeling.showo2 import Showo2Model
    from .modeling.vae import VAE_PARTS

    with torch.device("meta"):
        net = Showo2Model(spec)
    total = in_gb(network_bytes(net, dtype, quantize, heads))[0]
    if vae_sizes is not None:
        counts = vae_sizes[1]
        total += sum(counts.get(n, 0) for p in vae_parts for n in VAE_PARTS[p]) * dtype.itemsize / 1e9
    return total, 0.0


#: The parts of the network, by the prefixes of their weights' names (``info``'s counts, and what
#: ``--quantize`` converts: acceleration's ``QUANTIZED_PREFIXES``).
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
        key = k if v.device.type == "meta" else _storage_key(v)
        if key in seen:
            continue
        seen.add(key)
        for group, prefixes in PARAMETER_GROUPS.items():
            if k.startswith(prefixes):
                counts[group] += v.numel()
    counts["total"] = sum(counts.values())
    return counts


def _storage_key(v: torch.Tensor) -> tuple:
    """What two names of one shared tensor have in common: its storage and view, or, for a wrapper
    tensor without a storage of its own (torchao's int8 weights, ``--quantize int8wo``), the object."""
    try:
        return v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)
    except RuntimeError:  # "Attempted to access the data pointer on an invalid python storage"
        return ("object", id(v))
