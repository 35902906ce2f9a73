"""LoRA adapters after loading, with diffusers' names: ``pipe.load_lora_weights(...)`` and
``pipe.unload_lora_weights()`` (the mixin :class:`LoraLoaderMixin` of
:class:`~showo2_cli.pipeline.Showo2Pipeline`).

An adapter is merged into the weights as ``from_pretrained(lora=)`` merges it (this project runs
merged adapters only: no LoRA layer is left in the network), so loading one after
``from_pretrained`` gives, bit for bit, what giving it to ``from_pretrained`` gives: the layers it
adapts are copied to the CPU, merged there by the same peft merge as on load
(:func:`showo2_cli.lora.merge_recorded`), and copied back; a head not loaded yet records the
adapter and merges it when it loads (``placement.HeadLoader``), as on load.

``unload_lora_weights`` restores the weights as they were before the first ``load_lora_weights``
bit for bit: not by subtracting (floating point does not give the base back) but from the copies
of the adapted layers' weights kept in CPU memory by the first merge into each (so an adapter over
every linear layer keeps a second copy of those weights until unloaded); a head loaded since is
left out again and loads anew on its next use. Adapters given to ``from_pretrained(lora=)`` are part
of the loaded model and stay.

diffusers' ``fuse_lora`` / ``unfuse_lora`` are not provided: every adapter here is fused already
(``load_lora_weights`` is diffusers' load then ``fuse_lora``), and unfusing by subtraction is what
``unload_lora_weights`` avoids. Called, ``fuse_lora()`` does nothing (at ``lora_scale=1.0``), nor
does ``enable_lora()`` (merged adapters are always on); ``unfuse_lora``, ``set_adapters``,
``disable_lora`` and ``delete_adapters`` are ValueErrors naming what to call instead. Refused, as
diffusers refuses to fuse into them: quantized weights (``int8wo``/``nf4``: the merge would round
into the quantization grid, and unloading could not restore them), CPU offload (accelerate's hooks
hold the weights) and compiled networks.
"""

from __future__ import annotations

import math
import os

import torch

from .errors import ModelError, UsageError, short
from .options import check_lora_weight
from .pipelines.arguments import lora_names, python_names, real_number
from .runtime import cpu_by_default, one_call_at_a_time

#: why diffusers' live-adapter calls are not offered (the start of their errors)
_MERGED = "LoRA adapters are merged into the weights when loaded here (no live adapter layers)"

#: the adapter errors of lora/hub (``--lora: 'x' does not exist``) as load_lora_weights' caller reads them
LORA_NAMES = lora_names("load_lora_weights")


class LoraLoaderMixin:
    """``load_lora_weights`` / ``unload_lora_weights`` for a pipeline holding a loaded model in
    ``self.model`` (:class:`~showo2_cli.loading.Showo2`)."""

    @one_call_at_a_time
    @cpu_by_default  # as load: a caller's default device ("cuda", "meta") made peft's LoRA layers there
    @torch.inference_mode(False)  # a caller's inference mode would make the merged weights inference tensors
    def load_lora_weights(self, pretrained_model_name_or_path_or_dict: str | os.PathLike, adapter_name: str | None = None,
                          *, weight: float = 1.0, revision: str | None = None, local_files_only: bool = False,
                          cache_dir: str | os.PathLike | None = None, token: bool | str | None = None) -> str:
        """Merge the LoRA adapter of a folder (peft's layout: ``adapter_model.safetensors``, or
        ``adapter_model.bin``, and ``adapter_config.json``), a ``showo2 train`` checkpoint or run,
        or a Hugging Face repo id (``owner/name``, ``@revision`` or ``revision=`` pins one;
        downloaded into the cache unless cached, ``local_files_only`` or ``HF_HUB_OFFLINE``;
        ``cache_dir`` and ``token`` as in :meth:`from_pretrained`) into the weights, scaled by
        ``weight`` (diffusers' ``set_adapters(..., adapter_weights=)``; 1.0: the adapter's own
        alpha/r; -100 to 100), as
        ``from_pretrained(lora=[(path, weight)])`` and ``--lora PATH --lora-weight WEIGHT`` merge it.
        ``adapter_name`` (default ``default_0``, ``default_1``, ...) must be new. The adapter is read
        and checked against the model's layers before any weight changes. Returns the adapter's name."""
        from .hub import with_revision
        from .hub_auth import hub_access
        from .lora import adapted_layers, as_given, fetch_adapter

        ref = pretrained_model_name_or_path_or_dict
        if not isinstance(ref, (str, os.PathLike)):
            raise TypeError(f"load_lora_weights takes an adapter folder or a Hugging Face repo id, got "
                            f"{type(ref).__name__} (a state dict is not taken: save it with peft first)")
        if weight is None or not math.isfinite(real_number(weight, "weight")):  # (numpy's numbers too)
            raise TypeError(f"weight must be a finite number, got {short(repr(weight))}")
        weight = check_lora_weight(float(weight), "weight")  # (bounded as --lora-weight)
        names = [entry["name"] for entry in self._lora_loaded]
        if adapter_name is None:
            adapter_name = next(f"default_{i}" for i in range(len(names) + 1) if f"default_{i}" not in names)
        if not isinstance(adapter_name, str) or not adapter_name.strip():
            raise ValueError(f"adapter_name must be a non-empty string, got {adapter_name!r}")
        if adapter_name in names:
            raise ValueError(f"adapter name {adapter_name!r} is already in use (loaded: {', '.join(names)}); "
                             "pass another adapter_name, or unload_lora_weights() first")
        network = self._lora_network("load a LoRA adapter into")
        ref = with_revision(ref, revision)
        with python_names(LORA_NAMES), hub_access(cache_dir, token):  # (lora's messages name --lora)
            fetched = fetch_adapter(ref, local_files_only)
            folder, layers = adapted_layers(self.model.spec, fetched)  # (read and checked: nothing changed yet)
        stand_ins = _stand_ins(network)
        later = [n for n in layers if any(n == p or n.startswith(p + ".") for p in stand_ins)]
        now = [n for n in layers if n not in later]
        loader = network.head_loader
        if later and loader is None:
            raise ModelError("this network has heads left out without a loader to load them; load the model again")
        state = self.model.weights_state  # (shared by the pipelines over these weights)
        saved = state["lora_saved"]
        if saved is None:
            saved = {"originals": {}, "recorded": len(loader.adapters) if loader is not None else 0,
                     "adapters": len(self.model.adapters), "left_out": _left_out_heads(network)}
        _merge_on_cpu(network, folder, now, weight, saved["originals"])
        if later:  # merged when the head loads, as on load
            loader.adapters.append((folder, later, float(weight)))
            loader.record_adapters()
        state["lora_saved"] = saved
        shown = as_given(ref, fetched, folder, weight)
        self.model.adapters.append(shown)
        self._lora_loaded.append({"name": adapter_name, "path": as_given(ref, fetched, folder), "weight": weight})
        return adapter_name

    @one_call_at_a_time
    @torch.inference_mode(False)
    def unload_lora_weights(self) -> None:
        """Take out every adapter :meth:`load_lora_weights` merged: the weights are those from
        before its first call again, bit for bit (see the module's notes); nothing to do when none
        was loaded."""
        state = self.model.weights_state
        saved = state["lora_saved"]
        if saved is None:
            return
        network = self._lora_network("unload LoRA adapters from")
        from .modeling.showo2 import HEADS

        with torch.no_grad():
            for name, original in saved["originals"].items():
                if not any(name == p or name.startswith(p + ".") for p in _stand_ins(network)):
                    network.get_parameter(name).copy_(original)
        reload = [h for h in saved["left_out"] if h in network.loaded_heads()]
        if reload:  # loaded since, with the adapters merged in: left out again, to load anew on first use
            network.leave_out(tuple(h for h in HEADS if h not in reload))
        loader = network.head_loader
        if loader is not None:
            del loader.adapters[saved["recorded"]:]
            loader.record_adapters()
        del self.model.adapters[saved["adapters"]:]
        state["lora_saved"] = None
        self._lora_loaded.clear()

    # diffusers' calls for live (unmerged) adapters: an error that says what to call here (they
    # were AttributeErrors, which a diffusers LoRA script met on its second line)
    def fuse_lora(self, components=None, lora_scale: float = 1.0, safe_fusing: bool = False,
                  adapter_names: list[str] | None = None) -> None:
        """Nothing to do at ``lora_scale=1.0``: :meth:`load_lora_weights` has fused its adapter
        already, at its ``weight``. Another scale is a ValueError naming that ``weight``."""
        if real_number(lora_scale, "lora_scale") != 1.0:
            raise UsageError(_MERGED + f"; to fuse at {lora_scale:g}, unload_lora_weights() and load it again "
                             f"with load_lora_weights(path, weight={lora_scale:g})")

    def unfuse_lora(self, components=None) -> None:
        """Not offered: a ValueError naming :meth:`unload_lora_weights`, which restores the weights."""
        raise UsageError(_MERGED + "; unload_lora_weights() takes them out (restoring the weights bit for bit)")

    def set_adapters(self, adapter_names, adapter_weights=None) -> None:
        """Not offered: a ValueError naming ``load_lora_weights(weight=)``."""
        raise UsageError(_MERGED + ", at the weight given then: unload_lora_weights() and load them again "
                         "with load_lora_weights(path, weight=...)")

    def disable_lora(self) -> None:
        """Not offered: a ValueError naming :meth:`unload_lora_weights`."""
        raise UsageError(_MERGED + "; unload_lora_weights() takes them out")

    def enable_lora(self) -> None:
        """Nothing to do: merged adapters are always on."""

    def delete_adapters(self, adapter_names) -> None:
        """Not offered: a ValueError naming :meth:`unload_lora_weights` (which takes out every adapter)."""
        raise UsageError(_MERGED + "; unload_lora_weights() takes them all out (then load the ones to keep again)")

    def get_list_adapters(self) -> list[str]:
        """The names of the adapters :meth:`load_lora_weights` merged, in order."""
        return [entry["name"] for entry in self._lora_loaded]

    @property
    def _lora_loaded(self) -> list[dict]:
        return self.model.weights_state["lora_entries"]

    def _lora_network(self, doing: str):
        """The network, where merging into it and restoring it can be exact; else a UsageError."""
        if self.model.offload != "none":
            raise UsageError(f"cannot {doing} a pipeline with {self.model.offload} CPU offload (accelerate's hooks "
                             f"hold the weights); do it before enable_{self.model.offload}_cpu_offload()")
        if self.model.quantize != "none":
            raise UsageError(f"cannot {doing} {self.model.quantize}-quantized weights (the merge would not be exact, "
                             "nor restorable); pass the adapter as from_pretrained(lora=...) instead")
        network = self.model.network
        loader = getattr(getattr(network, "_orig_mod", network), "head_loader", None)
        runtime = getattr(loader, "runtime", None)
        if hasattr(network, "_orig_mod") or getattr(runtime, "compile", False) or any(
                getattr(m, "_compiled_call_impl", None) is not None for m in network.modules()):
            raise UsageError(f"cannot {doing} a compiled network; pass the adapter as from_pretrained(lora=...), "
                             "or load it before compiling")
        return network


def _stand_ins(network) -> list[str]:
    from .modeling.parts import NotLoaded

    return [n for n, m in network.named_modules() if isinstance(m, NotLoaded)]


def _left_out_heads(network) -> tuple[str, ...]:
    from .modeling.showo2 import HEADS

    return tuple(h for h in HEADS if h not in network.loaded_heads())


@torch.no_grad()
def _merge_on_cpu(network, folder: str, names: list[str], weight: float, originals: dict) -> None:
    """Merge the adapter of ``folder`` into the layers ``names`` of ``network`` as the load merges
    it (on the CPU, in the weights' dtype, through :func:`~showo2_cli.lora.merge_recorded`), keeping
    each weight's first value in ``originals``. All or nothing: the network changes only after
    every layer merged."""
    from .lora import merge_recorded
    from .placement import attach

    if not names:
        return
    holder = torch.nn.Module()  # the layers under their names in the network, their weights on the CPU
    holder.spec = network.spec
    for name in names:
        layer = network.get_submodule(name)
        copy = torch.nn.Linear(layer.in_features, layer.out_features, bias=False, device="meta")
        copy.weight = torch.nn.Parameter(layer.weight.detach().to("cpu", copy=True), requires_grad=False)
        attach(holder, name, copy)
    merge_recorded(holder, [(folder, names, weight)], names)
    for name in names:
        key = name + ".weight"
        if key not in originals:
            originals[key] = network.get_parameter(key).detach().to("cpu", copy=True)
    for name in names:
        network.get_submodule(name).weight.copy_(holder.get_submodule(name).weight)
