"""Resolve a model name to files (:mod:`showo2_cli.model_files`), read the official or our own
format, and build the bundle.

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
import time
from pathlib import Path

import torch

from .errors import ModelError, UsageError
from .footprint import PARAMETER_GROUPS, parameter_counts  # (re-exported)
from .hub import WAN_VAE_FILE, WAN_VAE_REPO, bundled_demo_path
from .hub import cached_snapshot as hf_cached_snapshot
from .model_config import FORMAT_VERSION, check_depths, spec_from_files
from .model_files import (  # re-exported: the loading API users know
    ModelFiles,
    check_output_folder,
    find_files,
    missing_message,
)
from .placement import HeadLoader
from .runtime import cpu_by_default, dtype_label, enable_offload, load_placement, torch_dtype
from .sequences import SpecialTokens
from .specs import ModelSpec, get_spec
from .tensor_reader import TensorReader
from .weights import check_fit, read_state_dict, save_tensors

ALL_HEADS = ("lm_head", "flow_head")  # the keys of modeling.showo2.HEADS (that module imports torch's world)
OFFICIAL_FIELDS = (
    "add_qk_norm", "add_time_embeds", "clip_latent_dim", "clip_pretrained_model_path", "hidden_size",
    "image_latent_dim", "image_latent_height", "image_latent_width", "llm_model_path", "llm_vocab_size",
    "load_from_showo", "num_diffusion_layers", "patch_size", "video_latent_height", "video_latent_width",
)
# ---- building the network ---------------------------------------------------------------------

def check_state_dict(model: torch.nn.Module, state: dict, where: str) -> None:
    """Strict key and shape check of Show-o2 weights (a tied embedding may be stored once)."""
    tied = getattr(getattr(model, "spec", None), "tie_word_embeddings", False)
    check_fit(model.state_dict(), state, where, optional={"showo.lm_head.weight"} if tied else ())


def build_network(spec: ModelSpec, state: dict | None, dtype: torch.dtype, where: str = "weights",
                  heads: tuple[str, ...] = ALL_HEADS, placed: bool = False, read=None):
    """The Show-o2 network; with a state dict, built on 'meta' and filled without extra copies.
    ``heads``: the heads built (:data:`~showo2_cli.modeling.showo2.HEADS`); the weights are checked
    whole, a head left out is neither converted nor kept (``Showo2Model.leave_out``). ``placed``:
    the weights are checked and left on 'meta' for :func:`~showo2_cli.placement.place` (the RoPE
    tables built on the CPU). ``read``: a ``TensorReader`` converting a tensor in chunks (else whole)."""
    from .modeling.showo2 import Showo2Model

    if state is None:
        model = Showo2Model(spec)
        model.init_weights(seed=0)
        model.leave_out(heads)
        return model.to(dtype)
    check_depths(spec, state, where)  # before building: a config's sizes are not trusted
    with torch.device("meta"):
        model = Showo2Model(spec)
    check_state_dict(model, state, where)
    left_out = tuple(name + "." for name in model.leave_out(heads))
    if placed:
        model.reset_buffers("cpu")
        return model
    state = {k: (v if v.dtype == dtype else read(k, dtype) if read is not None else v.to(dtype))
             for k, v in state.items() if not k.startswith(left_out)}
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
        self.quantize = "none"  # weight-only quantization applied on load (recorded with generated outputs)
        # what the weights are in place, shared by every bundle over them (shared()): CPU offload
        # (runtime.enable_offload: accelerate's hooks place the weights) and the LoRA adapters merged
        # after the load with what restores them (pipeline_lora)
        self.weights_state: dict = {"offload": "none", "lora_saved": None, "lora_entries": []}
        self.vae_given: str | None = None  # a VAE given to load() in place of the model's (recorded likewise)
        self.network_given: str | None = None  # a network assigned in place of the loaded one (recorded)
        self.max_memory_gb: float | None = None  # RuntimeOptions' memory limit: its jobs' when theirs is None

    @property
    def offload(self) -> str:
        """The CPU offload in use: ``none``, ``model`` or ``sequential``."""
        return self.weights_state["offload"]

    @offload.setter
    def offload(self, mode: str) -> None:
        self.weights_state["offload"] = mode

    def shared(self) -> Showo2:
        """Another bundle over the same parts (a pipeline made from another's ``components``): the
        weights and what they are in place (adapters merged, CPU offload, placement) are shared, so
        a change through either is seen and recorded by both, as diffusers' shared modules are; the
        parts each uses (``network``, ``vae``, assigned in their place) and their records are its own."""
        import copy

        return copy.copy(self)  # (adapters and weights_state: the same objects)

    def memory_limit(self, option: float | None) -> float | None:
        """A job's memory limit (``max_memory_gb`` of its options) or, when it gives none, the one
        the model was loaded with (``RuntimeOptions.max_memory_gb``: ``serve --max-memory``, a chat's
        ``/t2i``); None leaves it to ``$SHOWO2_MAX_MEMORY_GB``, else the memory available."""
        return option if option is not None else self.max_memory_gb

    def record(self) -> dict:
        """What a result records of the load that made it (generated files' metadata, ``t2i --json``,
        ``caption --json``): the model (and its revision), the adapters merged (with their weights),
        ``--vae``, ``--quantize`` and a dtype other than fp32, each where it changes the output."""
        from .options import DTYPES

        params = {"model": self.files.name if self.files else self.spec.name}
        if getattr(self.files, "revision", None):  # "1.5B" names other weights once main moves on
            params["model_revision"] = self.files.revision
        if self.adapters:
            params["lora"] = list(self.adapters)  # merged into the weights on load
        if self.vae_given:  # --vae: another VAE decodes (and encodes) differently
            params["vae"] = self.vae_given
        if self.network_given:  # (pipe.network = ...): not the model's weights
            params["network"] = self.network_given
        if self.quantize != "none":  # it changes the output: a run without it differs
            params["quantize"] = self.quantize
        if self.dtype != torch.float32:  # bf16/fp16 round every layer: an fp32 run of it differs
            name = str(self.dtype).removeprefix("torch.")
            params["dtype"] = DTYPES.get(name, name)  # --dtype's name (bf16), which a re-run passes back
        return params

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    @torch.inference_mode(False)  # moved weights made in a caller's inference mode would be inference tensors
    def to(self, device=None, dtype: torch.dtype | None = None) -> Showo2:
        if dtype is not None and self.quantize != "none" and torch_dtype(dtype) != self.dtype:
            # the quantized layers keep their own dtype (torchao's scales, bitsandbytes' compute dtype):
            # the result would be a mix of both (diffusers and transformers refuse this cast too)
            wanted = torch_dtype(dtype)
            raise UsageError(f"a model quantized on load ({self.quantize}) keeps its dtype {dtype_label(self.dtype)}: "
                             + ("quantization takes fp32, bf16 or fp16 weights, not float64" if wanted == torch.float64
                                else f"load it again in {dtype_label(wanted)} (--dtype, torch_dtype=) to quantize that"))
        # the RoPE tables stay float32, as a load in any dtype builds them (a cast rounded them: bf16
        # after the load gave other images than a bf16 load); `network.to` alone casts them, as torch does
        tables = {n: b for n, b in self.network.named_buffers() if n.endswith("inv_freq") and not b.is_meta}
        self.network.to(device=device, dtype=dtype)
        for name, table in tables.items():
            owner, _, leaf = name.rpartition(".")
            module = self.network.get_submodule(owner)
            module._buffers[leaf] = table.to(module._buffers[leaf].device)
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
        state = self.network.state_dict(keep_vars=True)
        for name, v in list(state.items()):  # bitsandbytes' 4-bit weight (--quantize nf4): two codes a byte,
            shape = getattr(getattr(v, "quant_state", None), "shape", None)  # its state saved beside it
            if shape is not None and name in state:
                state = {k: t for k, t in state.items() if not k.startswith(name + ".")}
                state[name] = torch.empty(shape, device="meta")  # counted as the weight it stands for
        counts = parameter_counts(state, self.spec.tie_word_embeddings)
        from .modeling.parts import NotLoaded

        for name, module in self.network.named_modules():  # a head left out counts (as the VAE's parts)
            if isinstance(module, NotLoaded):
                group = next(g for g, prefixes in PARAMETER_GROUPS.items() if (name + ".").startswith(prefixes))
                counts[group] += module.numel
                counts["total"] += module.numel
        if self.vae is not None:
            counts["vae"] = self.vae.num_parameters()  # loaded or not
        return counts


def require_model(model) -> Showo2:
    """``model`` when it is a loaded :class:`Showo2`; else the TypeError that says what to pass (a
    pipeline or a name in its place failed deep inside with an AttributeError)."""
    if not isinstance(model, Showo2):
        hint = " (a Showo2Pipeline's is pipe.model)" if hasattr(model, "model") else ""
        raise TypeError(f"model must be a loaded Showo2 (api.load), got {type(model).__name__}{hint}")
    return model


def check_adapters(files, lora) -> bool:
    """Read and check the LoRA adapters ``lora`` (folders) before a model's weights are read: their
    files and values, and, where the model's config gives the layers' shapes (a showo2-format
    folder's; an official config needs the weights), their tensors against those shapes. Returns
    whether the shapes were checked (else the caller checks them once the weights give the spec:
    :func:`~showo2_cli.lora.adapted_layers`). ``load`` and ``convert --lora`` alike."""
    from .lora import adapted_layers, read_adapter

    early = spec_from_files(files, {}) if lora and files.format == "showo2" else None
    for ref in lora:
        if early is not None:
            adapted_layers(early, ref)
        else:
            read_adapter(ref)
    return early is not None


@cpu_by_default
@torch.inference_mode(False)  # a caller's inference mode would make the weights inference tensors (as HeadLoader)
def load(name: str | os.PathLike, *, vae: str | os.PathLike | None = None, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None, need: tuple[str, ...] = ("tokenizer", "VAE"),
         runtime=None, lora: str | os.PathLike | list | tuple | None = (), local_files_only: bool = False,
         use_safetensors: bool | None = None, cache_dir: str | os.PathLike | None = None,
         token: bool | str | None = None, force_download: bool = False,
         vae_parts: tuple[str, ...] = ("encoder", "decoder"), heads: tuple[str, ...] | None = ALL_HEADS) -> Showo2:
    """Load a model by name, folder or cached repo id. ``need`` lists the pieces that must exist;
    ``lora`` a LoRA adapter or a list of them (folders or training runs, see :mod:`showo2_cli.lora`)
    merged into the weights in order, each at its strength where given as ``(path, weight)`` (or
    ``{"path", "weight"}``, as outputs record it; :func:`~showo2_cli.lora.given_adapters`);
    ``runtime`` (:class:`~showo2_cli.options.RuntimeOptions`) brings the attention backend,
    quantization, compilation and VAE tiling (:func:`showo2_cli.acceleration.apply`), applied after
    the adapters are merged (a quantized network is placed layer by layer, each layer merged, moved
    and quantized before the next is read: :mod:`showo2_cli.placement`), then its CPU offload
    (:func:`showo2_cli.runtime.enable_offload`);
    its ``max_memory_gb`` is the memory limit of the model's jobs that give none; its ``device`` and
    ``dtype`` (when not ``auto``) place the model unless ``device``/``dtype`` are given (default: the
    CPU in float32; ``"auto"`` the best; arguments that disagree with them are refused: the one
    reading of these values, :func:`showo2_cli.runtime.load_placement`). A repo id that is not cached is downloaded when
    online, unless ``local_files_only``; ``vae`` is a VAE's file or folder, or a repo id whose VAE
    (its ``vae/`` or its root) is fetched so (:func:`showo2_cli.hub_vae.explicit_vae`). ``use_safetensors=True`` (diffusers' switch) refuses a
    model whose weights or VAE file are pickles (``.bin``/``.pth``, which are otherwise read with
    ``torch.load(weights_only=True)``) before anything is read. ``cache_dir``, ``token`` and
    ``force_download`` are huggingface_hub's, for this call (see
    :meth:`~showo2_cli.pipeline.Showo2Pipeline.from_pretrained`; ``force_download`` pulls the
    model again with :func:`showo2_cli.hub.pull`). ``vae_parts``: the halves of
    the VAE loaded now, ``encoder`` (what captions and image-to-video use) and ``decoder`` (what
    generation uses); the VAE file is checked whole, and a part left out loads on first use.
    ``heads``: the network's heads loaded now, ``lm_head`` (text) and ``flow_head`` (generation),
    by default both (``model.network`` is then the whole network, for ``state_dict()``, training or
    ``add_lora``); ``()`` or None: each on its first use. The weights are checked whole; a head left
    out is not converted, moved, quantized or compiled until it is first run, then loaded from the
    same files as loading it now would have (:class:`~showo2_cli.placement.HeadLoader`: ``lora`` adapters, dtype,
    device, quantization and compilation alike; a file changed since is a :class:`ModelError`).
    A tied ``lm_head`` is the embedding: always there."""
    from contextlib import nullcontext

    from .acceleration import apply
    from .hub_auth import hub_access
    from .lora import adapted_layers, as_given, fetch_adapter, given_adapters, merge_adapters
    from .modeling.parts import NotLoaded
    from .modeling.vae_files import check_parts, load_vae
    from .placement import place_from_files
    from .tokenizer import add_showo2_tokens, load_tokenizer

    start = time.perf_counter()
    if runtime is not None:
        runtime.validate()  # a bad option fails before the weights are read
    device, dtype = load_placement(runtime, device, dtype)
    offload = runtime.offload if runtime is not None else "none"
    vae_parts = check_parts(vae_parts)
    files = _find_on_hub(name, vae, local_files_only, cache_dir, token, force_download)
    message = missing_message(files, ("weights", *need))
    if message:
        raise ModelError(message)
    if use_safetensors:
        _require_safetensors(files)
    given = given_adapters(lora)  # (each maybe with its weight)
    typed, weights = [ref for ref, _ in given], [weight for _, weight in given]
    with hub_access(cache_dir, token) if cache_dir is not None or token is not None else nullcontext():
        lora = [fetch_adapter(ref, local_files_only) for ref in typed]  # a repo id: its cached folder
    # every adapter read and checked before the weights are (its tensors' shapes too where the config gives them)
    shapes_checked = check_adapters(files, lora)
    # (the files' stamps before reading; a head loads where the load puts the weights: offloaded, the CPU)
    loader = HeadLoader(files.weights, dtype, device if offload == "none" else "cpu", str(files.root))
    state = read_state_dict(files.weights)
    spec = spec_from_files(files, state)
    for ref in () if shapes_checked else lora:  # an official config: its sizes known now, before the network is built
        adapted_layers(spec, ref)
    # quantized: the network is placed group by group (placement.place), its adapters merged and
    # each layer quantized on its device as it comes, so the whole unquantized network never exists
    quantize = runtime.quantize if runtime is not None else "none"
    converted = quantize == "none" and any(v.dtype != dtype for v in state.values())  # (then read in chunks)
    with TensorReader(files.weights, state, mapped=True) if converted else nullcontext() as read:
        network = build_network(spec, state, dtype, where=str(files.root), heads=() if heads is None else heads,
                                placed=quantize != "none", read=read).eval()
    # LoRA adapters are merged into what is loaded; a head left out (or a network to be placed) is
    # matched and checked on 'meta', and merged when it loads (HeadLoader, placement.place)
    adapters = merge_adapters(network, lora, record=loader.adapters, weights=weights) if lora else []
    recorded = list(loader.adapters)  # (to be placed: every layer; the head loader keeps its heads')
    if quantize != "none":
        out = tuple(n + "." for n, m in network.named_modules() if isinstance(m, NotLoaded))
        loader.adapters[:] = [(f, [n for n in names if (n + ".").startswith(out)], *w) for f, names, *w in recorded]
    adapters = [as_given(t, f, a, w) for t, f, a, w in zip(typed, lora, adapters, weights, strict=True)]
    loader.record_adapters()
    if network.loaded_heads() != ALL_HEADS:
        network.head_loader = loader
    tokenizer = tokens = None
    if files.tokenizer is not None:
        tokenizer = load_tokenizer(files.tokenizer)
        tokens = add_showo2_tokens(tokenizer)
        # more rows than tokens: an embedding resized past the tokenizer (the official constructor
        # resizes to its config's llm_vocab_size, whatever the tokenizer); fewer: ids out of range
        if len(tokenizer) > spec.vocab_size:
            raise ModelError(f"tokenizer in '{files.tokenizer}' has {len(tokenizer)} entries after Show-o2's "
                             f"additions but the model has {spec.vocab_size} rows: wrong tokenizer")
    vae_model = load_vae(files.vae, dtype=dtype, parts=vae_parts) if files.vae is not None else None
    wrong = vae_model is not None and spec.vae_mismatch(vae_model)
    if wrong:  # (a config's vae_temporal 2 made 17 frames of --frames 9, silently)
        raise ModelError(f"the model in '{files.root}' does not fit its VAE '{files.vae}': its config says {wrong}")
    bundle = Showo2(spec, network, tokenizer, tokens, vae_model, files)
    bundle.adapters = adapters
    bundle.quantize = quantize  # (quantized as placed: apply leaves it)
    bundle.vae_given = os.fspath(vae) if vae is not None else None
    bundle.max_memory_gb = runtime.max_memory_gb if runtime is not None else None
    target = device if offload == "none" else "cpu"  # offloaded: kept in CPU memory, run on device
    if quantize == "none":
        bundle.to(device=target)
    else:  # each layer read, merged, moved and quantized in turn
        place_from_files(network, [n for n, _ in network.named_children()], files.weights, state, dtype, target,
                         recorded, quantize)
        network.tie_lm_head()
        if vae_model is not None:
            vae_model.to(device=target)
    del state
    apply(bundle, runtime)
    enable_offload(bundle, offload, device)
    bundle.load_seconds = time.perf_counter() - start
    return bundle


def _find_on_hub(name, vae, local_files_only: bool, cache_dir, token, force_download: bool) -> ModelFiles:
    """:func:`find_files` with the Hub arguments of :func:`load` (none given: the caller's)."""
    from contextlib import nullcontext

    from .hub_auth import hub_access

    given = cache_dir is not None or token is not None
    with hub_access(cache_dir, token) if given else nullcontext():
        fetch(name, force_download, local_files_only, vae=vae)
        return find_files(name, vae=vae, local_files_only=local_files_only)


def fetch(name, force_download: bool = False, local_files_only: bool = False, progress=None,
          when_needed: bool = False, vae=None) -> None:
    """The one Hub step before a load (:func:`load`, ``Showo2Pipeline.from_pretrained``):
    ``force_download`` on a Hub name (a variant, a repo id) pulls it again (the model repo's files
    anew, :func:`showo2_cli.hub.pull`); ``when_needed`` also pulls a Hub name that is not cached or
    lacks a piece (its tokenizer, its VAE), as ``from_pretrained`` does. ``progress`` gets the
    bytes. ``local_files_only`` forbids both (with ``force_download``: a ValueError). ``vae``: the
    load's own VAE (``load(vae=)``), so the Wan2.1 VAE is not fetched for it; a Hub repo id there
    is fetched first (its VAE's files only, ``progress`` too)."""
    from .hub import is_hub_name, needs_download, pull
    from .hub_vae import explicit_vae

    if force_download and local_files_only:
        raise ValueError("force_download=True needs the Hub, local_files_only=True forbids it: pass one")
    if local_files_only:
        return
    if vae is not None:
        explicit_vae(vae, progress)
    if force_download and is_hub_name(name) or when_needed and needs_download(str(name), vae):
        pull(str(name), progress=progress, force_download=force_download, vae=vae)


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
        "image_latent_dim": spec.latent_channels, "image_latent_height": spec.config_grid[0],
        "image_latent_width": spec.config_grid[1], "llm_model_path": spec.llm_repo_id or "",
        "llm_vocab_size": spec.vocab_size, "load_from_showo": True, "num_diffusion_layers": spec.head_layers,
        "patch_size": spec.patch_size, "video_latent_height": spec.config_grid[0],
        "video_latent_width": spec.config_grid[1],
    }


def save_folder(dst: Path, spec: ModelSpec, state: dict[str, torch.Tensor], tokenizer=None, vae=None,
                dtype: torch.dtype | None = None, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write a showo2-format folder atomically: everything goes to a temporary sibling folder,
    which is renamed into place only when complete (a crash never leaves a half-written model)."""
    from .media import atomic_folder

    check_output_folder(dst, overwrite)
    with atomic_folder(Path(dst), overwrite=overwrite) as tmp:  # the one atomic writer: all or nothing
        write_folder(tmp, spec, state, tokenizer, vae, dtype, extra)
    return Path(dst)


def write_folder(folder: Path, spec: ModelSpec, state: dict[str, torch.Tensor], tokenizer=None, vae=None,
                 dtype: torch.dtype | None = None, extra: dict | None = None) -> None:
    """Fill an existing (empty, temporary) folder with a showo2-format model: the body of
    :func:`save_folder`, for writers that publish the folder themselves (checkpoints)."""
    tmp = Path(folder)
    tensors = {}
    for k, v in state.items():
        if spec.tie_word_embeddings and k == "showo.lm_head.weight":
            continue
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    save_tensors(tensors, tmp / "model.safetensors", {"format": "pt", "showo2_format": str(FORMAT_VERSION)})
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
    check_output_folder(dst, overwrite)  # before anything is built
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
                dtype: torch.dtype = torch.float32, device="cpu", parts: tuple[str, ...] = ("encoder", "decoder")):
    """(WanVAE, where it came from): an explicit path, else the named model's, else the default
    model's; ``parts`` as :func:`~showo2_cli.modeling.vae_files.load_vae`'s."""
    from .hub_vae import explicit_vae
    from .modeling.vae_files import load_vae

    if vae is not None:
        return load_vae(explicit_vae(vae), dtype=dtype, device=device, parts=parts), str(vae)
    name = model if model is not None else default_model()[0]
    files = find_files(name)
    if files.vae is None:
        raise ModelError(f"model '{name}' has no VAE: pass --vae PATH")
    return load_vae(files.vae, dtype=dtype, device=device, parts=parts), str(files.vae)
