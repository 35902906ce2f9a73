"""A network's weights placed one group at a time: a quantized load (``--quantize``) and a head
loaded on first use (:class:`~showo2_cli.loading.HeadLoader`).

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

from collections.abc import Callable, Iterator

import torch
from torch import nn

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
