"""A network's weights placed one group at a time: a quantized load (``--quantize``) and a head
loaded on first use (:class:`HeadLoader`).

A group is one transformer layer (of the LLM, of the semantic layers), one flow-head block, the
``lm_head``, or another part of the network that holds no list of layers (the embedding, a
projector). Each group in turn is read (:class:`~showo2_cli.tensor_reader.TensorReader`: memory of its
own), converted to the load's dtype, given the LoRA adapters merged on load
(:func:`~showo2_cli.lora.merge_recorded`: adapters merge before quantizing), moved to its device
and quantized (:func:`~showo2_cli.acceleration.quantize_network`); its unquantized copy is let go
before the next group is read. So no more than about one layer's unquantized weights exist
beyond the quantized model at any time, in CPU memory and on the device alike (the 7B in bf16
used to be placed whole on the GPU, about 17 GB, before it was quantized). Each step is the
one a load of the whole network takes, tensor by tensor, so the weights are the same bits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError
from .runtime import cpu_by_default
from .weights import check_fit, read_state_dict

#: A tied ``lm_head`` and the embedding whose tensor it is (``Showo2Model.tie_lm_head``).
TIED_HEAD, TIED_EMBEDDING = "showo.lm_head", "showo.model.embed_tokens"


def _names(holder: nn.Module) -> set[str]:
    return {name for name, _ in holder.named_modules()}


def _holds_list(module: nn.Module) -> bool:
    return any(isinstance(m, nn.ModuleList) for m in module.modules())


def groups(module: nn.Module, name: str) -> Iterator[tuple[str, bool]]:
    """``(name, whole)`` of the groups of ``module`` (named ``name`` in its network), in order: a
    module holding no list of layers is one group (``whole``); one that does is split into its
    children, its own tensors (if any) a group of their own (not ``whole``)."""
    if not _holds_list(module):
        yield name, True
        return
    if _own_keys(module):
        yield name, False
    for child_name, child in module.named_children():
        yield from groups(child, f"{name}.{child_name}")


def _own_keys(module: nn.Module) -> list[str]:
    """The names of the module's own parameters and persistent buffers (not its children's)."""
    return [n for n, p in module._parameters.items() if p is not None] + [
        n for n, b in module._buffers.items() if b is not None and n not in module._non_persistent_buffers_set]


@torch.no_grad()
def place(holder: nn.Module, names: list[str], read: Callable[[str, torch.dtype], torch.Tensor], dtype: torch.dtype,
          device, adapters: list = (), quantize: str = "none") -> None:
    """Fill the modules ``names`` of ``holder`` (a network, or a module holding a network's modules
    under their names; their tensors on 'meta', fit-checked) group by group: each tensor ``read``
    by its full name in ``dtype`` (:class:`~showo2_cli.tensor_reader.TensorReader`), the recorded LoRA ``adapters`` merged, moved to
    ``device`` and quantized (``quantize``: ``none``, ``int8wo``, ``nf4``). A left-out head
    (:class:`~showo2_cli.modeling.parts.NotLoaded`) and a tied ``lm_head`` (the embedding's tensor)
    are not groups (a tied ``lm_head``'s adapters merge into that tensor with the embedding's, as
    merging into the whole network does)."""
    from .acceleration import quantize_network, quantized_size
    from .lora import merge_recorded
    from .modeling.parts import NotLoaded

    tied = bool(getattr(getattr(holder, "spec", None), "tie_word_embeddings", False))
    tied_head = None  # (a tied lm_head: its adapters merge into the embedding's tensor, as on a whole load)
    if tied and adapters and TIED_HEAD in _names(holder) and TIED_EMBEDDING in _names(holder):
        tied_head = holder.get_submodule(TIED_HEAD)
    read_adapters: dict = {}  # each adapter read once
    todo = [g for top in names for g in groups(holder.get_submodule(top), top)]
    if quantize != "none":  # the largest to quantize first: quantizing takes several times the bytes of what
        # it quantizes at once (a layer, or acceleration.QUANTIZE_CHUNK weights of a larger one), best while little else is held
        todo.sort(key=lambda g: -quantized_size(holder, g[0]) if g[1] else 0)
    for group, whole in todo:
        module = holder.get_submodule(group)
        if isinstance(module, NotLoaded) or (tied and group == TIED_HEAD):
            continue
        if not whole:  # (tensors of a module holding layers: moved as read, no adapter targets them)
            module.load_state_dict({k: read(f"{group}.{k}", dtype).to(device) for k in _own_keys(module)},
                                   strict=False, assign=True)
            continue
        module.load_state_dict({k: read(f"{group}.{k}", dtype) for k in module.state_dict()},
                               strict=True, assign=True)
        if adapters:  # (peft walks only the group: it alone, under its name, in a holder of its own)
            within, alone = [group], attach(nn.Module(), group, module)
            if tied_head is not None and group == TIED_EMBEDDING:  # the tied lm_head is this tensor
                tied_head.weight = module.weight
                within.append(TIED_HEAD)
                attach(alone, TIED_HEAD, tied_head)
            merge_recorded(alone, adapters, within, read_adapters)
        module.to(device=device)
        if quantize != "none":
            quantize_network(holder, quantize, within=group)
            getattr(read, "let_go", lambda: None)()  # (a pickle's pages of the group, read: handed back)


def place_from_files(holder: nn.Module, names: list[str], weights, state: dict, dtype: torch.dtype, device,
                     adapters: list, quantize: str) -> None:
    """:func:`place` the modules ``names`` of ``holder`` from the weight files ``weights``
    (``state``: what :func:`~showo2_cli.weights.read_state_dict` read of them, memory-mapped): a
    quantized load through a :class:`~showo2_cli.tensor_reader.TensorReader` (each group read with memory
    of its own, converted, merged, moved, quantized and let go in turn); any other assigned from
    ``state``, as an unquantized load is (a tensor converted read by the reader, in chunks)."""
    from .acceleration import release_weight_file
    from .tensor_reader import TensorReader

    if quantize == "none":
        with TensorReader(weights, state, mapped=True) as read:
            place(holder, names, read, dtype, device, adapters)
        return
    with TensorReader(weights, state) as read:
        place(holder, names, read, dtype, device, adapters, quantize)
    if not read.own_memory:  # a pickle's tensors, mapped: what was not converted or moved gets its own memory
        release_weight_file(holder)
    _trim_heap()


def _trim_heap() -> None:
    """Give the C heap's free blocks back to the system (glibc's ``malloc_trim``; elsewhere nothing):
    the groups read and let go leave free blocks that glibc keeps (an 8-layer 1.5B-wide int8wo load:
    RSS 1.87 GB after it, 1.71 GB trimmed, what the load holding the file's pages had before)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def attach(holder: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put ``module`` into ``holder`` under its dotted ``name`` (plain modules made for the parts
    of the name missing); returns ``holder``."""
    parent, _, child = name.rpartition(".")
    owner = holder
    for step in parent.split(".") if parent else ():
        if not hasattr(owner, step):
            owner.add_module(step, nn.Module())
        owner = getattr(owner, step)
    owner.add_module(child, module)
    return holder


# ---- a head left out on load, loaded on its first use -------------------------------------------

class HeadLoader:
    """Loads a head of the network left out on load (``load(heads=)``) on its first use, as loading
    it then would have: the same tensors from the same files (checked unchanged since, by
    :func:`~showo2_cli.weights.file_stamp`, adapters' included), converted to the load's dtype,
    with the LoRA adapters merged on load merged into it (:func:`~showo2_cli.lora.merge_recorded`),
    then moved to the network's present device and dtype. All or nothing: every tensor is checked
    before any is placed."""

    def __init__(self, weights, dtype: torch.dtype, device, where: str):
        import threading

        from .weights import file_stamp

        self.weights = [Path(p) for p in weights]
        self.stamps = [file_stamp(p) for p in self.weights]
        self.adapters: list = []  # LoRA adapters merged on load: (folder, layers of the heads left out, weight)
        self.file_stamps = list(self.stamps)
        self.dtype, self.device, self.where = dtype, torch.device(device), where
        self.runtime = None  # the RuntimeOptions applied to the network (acceleration.apply)
        self.lock = threading.Lock()  # two threads' first calls load a head once

    @property
    def files(self) -> list[Path]:
        """The files a head is read from: the weights, and the adapters recorded for the heads."""
        from .lora import adapter_files

        return self.weights + [p for f, names, *_ in self.adapters if names for p in adapter_files(f)]

    def record_adapters(self) -> None:
        """Stamp the adapters' files as they are now (``load`` calls it after merging them)."""
        from .weights import file_stamp

        self.file_stamps = self.stamps + [file_stamp(p) for p in self.files[len(self.weights):]]

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: a lock is not copied, a new one is made
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        import threading

        self.__dict__.update(state)
        self.lock = threading.Lock()

    @cpu_by_default  # as load: a caller's default device ("cuda", "meta") made peft's LoRA layers there
    @torch.inference_mode(False)  # a caller's inference mode would make the weights inference tensors
    def __call__(self, network, heads: tuple[str, ...], judged: bool = False) -> None:
        from .footprint import in_gb, network_bytes
        from .modeling.bookkeeping import compiled_parts
        from .modeling.parts import NotLoaded
        from .modeling.showo2 import HEADS
        from .runtime import check_memory
        from .weights import file_stamp

        with self.lock:
            names = [n for h in heads for n in HEADS[h] if isinstance(network.get_submodule(n), NotLoaded)]
            if not names:
                return
            for i, (path, stamp) in enumerate(zip(self.files, self.file_stamps, strict=True)):
                try:
                    same = file_stamp(path) == stamp
                except OSError:
                    same = False
                if not same:
                    what = "LoRA adapter file" if i >= len(self.weights) else "weights file"
                    raise ModelError(f"{path}: the {what} changed or went away since the model was loaded; "
                                     "load the model again")
            if not judged:  # (a job judged them with its own limit: footprint.weights_gb)
                runtime = self.runtime
                quantize = runtime.quantize if runtime is not None else "none"
                limit = getattr(runtime, "max_memory_gb", None)  # the model's limit, as its jobs' (0: none)
                # the network's once the heads are in (not the heads still left out after: counted when they load)
                weights = in_gb(network_bytes(network, self.dtype, quantize, (*network.loaded_heads(), *heads)))
                check_memory(0.0, f"loading the network's {' and '.join(heads)}", limit, self.device,
                             "free some memory first", weights)  # (before anything is read)
            state = read_state_dict(self.weights)
            holder = torch.nn.Module()  # the head's modules under their names in the network
            holder.spec = network.spec
            for name in names:
                module = copy.deepcopy(network.get_submodule(name).meta_module)  # (a failure leaves the stand-in whole)
                prefix = name + "."
                part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                check_fit(module.state_dict(), part, self.where, what=f"the network's {name}")
                module.train(network.training)  # before quantizing, as load's .eval() came before it
                attach(holder, name, module)
            runtime = self.runtime
            quantize = runtime.quantize if runtime is not None else "none"
            # as on load: quantized, each group read with memory of its own, merged (on the CPU in the
            # load's dtype), moved and quantized in turn; else assigned from the mapped file, as a load's
            place_from_files(holder, names, self.weights, state, self.dtype, self.device, self.adapters, quantize)
            del state
            if network.part_compiler is not None:  # compiled as the network was (--compile, torch.compile)
                for part in compiled_parts(holder):
                    network.part_compiler(part)
            here = network.image_embedder_gen.proj.weight  # where and how the network is now
            if here.device != self.device:
                holder.to(device=here.device)
            if here.dtype != self.dtype:
                holder.to(dtype=here.dtype)
            for name in names:
                parent, _, child = name.rpartition(".")
                owner = network.get_submodule(parent) if parent else network
                setattr(owner, child, holder.get_submodule(name))
            network.head_attention()  # (the flow head's blocks: the backend set on the network, --attn)
