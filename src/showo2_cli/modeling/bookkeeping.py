"""The Show-o2 network's bookkeeping (the mixin :class:`BookkeepingMixin` of
:class:`~showo2_cli.modeling.showo2.Showo2Model`): where it runs (``dtype``, ``device``, the
offload's ``execution_device``), its heads (:data:`HEADS`: left out on load, loaded on first use),
its rebuilt buffers and tied ``lm_head``, gradient checkpointing, and the training-from-scratch
initialisation. None of the network's computation: that stays in :mod:`~showo2_cli.modeling.showo2`.
"""

from __future__ import annotations

import torch
from torch import nn

from .parts import NotLoaded

#: The heads that read the LLM's final states, by name, and their modules: the language head (text:
#: captions, chat) and the flow head (velocities: generation). A command that runs one can leave the
#: other out (``Showo2Model.leave_out``, ``loading.load(heads=)``).
HEADS = {"lm_head": ("showo.lm_head",), "flow_head": ("diff_proj", "diffusion_head_a", "diffusion_head_b")}


class PartCompiler:
    """Compiles one part of the network in place (its ``_compiled_call_impl``, as ``nn.Module.compile``):
    with ``torch.compile``'s ``args`` and ``kwargs``, or with ``context``, the compiler a
    ``torch.compile(network, ...)`` wrapper holds (its dynamo context, which compiles a callable as
    ``torch.compile`` with the wrapper's own arguments does)."""

    def __init__(self, args: tuple = (), kwargs: dict | None = None, context=None):
        self.args, self.kwargs, self.context = tuple(args), dict(kwargs or {}), context

    def __call__(self, module: nn.Module) -> None:
        if self.context is not None:
            module._compiled_call_impl = self.context(module._call_impl)
        else:
            nn.Module.compile(module, *self.args, **self.kwargs)


def compiled_parts(holder: nn.Module) -> list[nn.Module]:
    """The parts of ``holder`` (the network, or a head's modules under their names in it) that a
    compile compiles: the LLM's forward and each flow-head block, those that are loaded."""
    llm = getattr(getattr(holder, "showo", None), "model", None)  # (a holder of the lm_head alone has none)
    parts = [llm] if llm is not None else []
    head = getattr(holder, "diffusion_head_a", None)
    if head is not None and not isinstance(head, NotLoaded):
        parts += [*head, holder.diffusion_head_b]
    return parts


class BookkeepingMixin:
    """The network's state around its computation; the network holds ``spec``, ``showo``
    (Qwen2.5), ``und_trans``, ``image_embedder_gen``, ``head_rotary`` and the flow head's modules."""

    #: Where an offloaded network runs (set by ``runtime.enable_offload``); None = where its weights are.
    execution_device: torch.device | None = None
    #: Loads a head left out on load from the weights' files, on first use (``placement.HeadLoader``,
    #: set by ``loading.load``); None: a head left out stays out (calling it is a ModelError).
    head_loader = None
    #: What compiled the network (:meth:`compile`), so that a head loaded later is compiled alike; None: not compiled.
    part_compiler: PartCompiler | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.image_embedder_gen.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        if self.execution_device is not None:
            return self.execution_device
        return self.image_embedder_gen.proj.weight.device

    def compile(self, *args, **kwargs) -> None:
        """``nn.Module.compile``'s call, applied where the network runs: the network has no ``forward``
        (sampling and captions call its methods), so ``torch.compile``'s arguments go to the LLM's
        forward and each flow-head block, in place, and to a flow head loaded later (``--compile``)."""
        self.compile_parts(PartCompiler(args, kwargs))

    def compile_parts(self, compiler: PartCompiler | None) -> None:
        """Compile the network's parts (:func:`compiled_parts`) with ``compiler``, now and for a head
        loaded later; None undoes a compile (the parts run as they are again)."""
        for part in compiled_parts(self):
            if compiler is None:
                part._compiled_call_impl = None
            else:
                compiler(part)
        self.part_compiler = compiler

    def __setstate__(self, state: dict) -> None:
        """A copy (``copy.deepcopy``, pickle) compiled as its original: ``nn.Module`` drops the compiled
        calls from a copy's state, and the parts are compiled again here (compiling itself waits for the first call)."""
        super().__setstate__(state)
        if self.part_compiler is not None:
            self.compile_parts(self.part_compiler)

    def set_gradient_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward instead of keeping them (training only): every
        Qwen2.5 decoder layer and SigLIP layer (transformers' own checkpointing) and every flow-head
        block (``torch.utils.checkpoint``), all non-reentrant."""
        from functools import partial

        from torch.utils.checkpoint import checkpoint

        func = partial(checkpoint, use_reentrant=False)
        for module in [*self.showo.modules(), *self.und_trans.modules()]:
            if hasattr(module, "gradient_checkpointing"):
                module._gradient_checkpointing_func = func
                module.gradient_checkpointing = enable
        self.head_checkpointing = enable

    def reset_buffers(self, device=None) -> None:
        """Rebuild the non-persistent buffers (RoPE tables), e.g. after building on 'meta', on
        ``device`` (by default the network's), and tie a tied ``lm_head`` to the embedding."""
        device = self.device if device is None else device
        llm = self.showo.model
        llm.rotary_emb = type(llm.rotary_emb)(self.showo.config).to(device)
        self.head_rotary.reset_buffers(device)
        self.tie_lm_head()

    def tie_lm_head(self) -> None:
        """A tied ``lm_head`` takes the token embedding's tensor (after the embedding was assigned)."""
        if self.spec.tie_word_embeddings:
            self.showo.lm_head.weight = self.showo.model.embed_tokens.weight

    def left_out_modules(self, heads: tuple[str, ...]) -> list[str]:
        """Names of the modules of the :data:`HEADS` not in ``heads`` (a tied ``lm_head`` is the
        token embedding, which every command runs: never left out)."""
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        unknown = [h for h in heads if h not in HEADS]
        if unknown:
            raise ValueError(f"unknown head {unknown[0]!r}: the heads are {', '.join(HEADS)}")
        return [name for head, names in HEADS.items() if head not in heads
                and not (head == "lm_head" and self.spec.tie_word_embeddings) for name in names]

    def leave_out(self, heads: tuple[str, ...]) -> list[str]:
        """Replace the modules of the heads not in ``heads`` by :class:`NotLoaded` stand-ins (their
        weights go to 'meta', so moving, quantizing, hooking or compiling the network never meets
        them): a command that never runs a head does not hold it. Returns the names replaced."""
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        names = self.left_out_modules(heads)
        for name in names:
            parent, _, child = name.rpartition(".")
            owner = self.get_submodule(parent) if parent else self
            module = getattr(owner, child)
            if isinstance(module, NotLoaded):
                continue
            head = next(h for h, ns in HEADS.items() if name in ns)
            message = (f"the network's {head} is not loaded (the model was loaded with heads={heads!r}: "
                       "load it with every head)")
            setattr(owner, child, NotLoaded(head, module.to("meta"), message))
        return names

    def loaded_heads(self) -> tuple[str, ...]:
        """The :data:`HEADS` whose weights are loaded."""
        return tuple(h for h, ns in HEADS.items() if not any(isinstance(self.get_submodule(n), NotLoaded) for n in ns))

    def load_heads(self, *heads: str, judged: bool = False) -> None:
        """Load the named heads (all when none is named) left out on load, as loading them then
        would have (``placement.HeadLoader``), and keep them; the methods that run a head call it.
        ``judged``: a job whose memory check counted the heads' weights loads them (the loader
        does not judge them again against the model's limit, which the job's own may replace)."""
        self.left_out_modules(heads)  # (checks the names)
        missing = tuple(h for h in (heads or HEADS) if h not in self.loaded_heads())
        if missing and self.head_loader is not None:  # (without one, calling the head says it is not loaded)
            self.head_loader(self, missing, judged=judged)

    def init_weights(self, seed: int | None = None) -> None:
        """Training-from-scratch initialisation, following the official choices (spec §6.3)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None

        def normal_(p, std):
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * std)

        for name, p in self.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                normal_(p, 0.02 if name.startswith(("showo.", "time_embed.")) else fan_in**-0.5)
            elif name.endswith("bias"):
                with torch.no_grad():
                    p.zero_()
        for block in self.diffusion_head_a:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.diffusion_head_b.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.diffusion_head_b.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.diffusion_head_b.linear.weight)
        nn.init.zeros_(self.diffusion_head_b.linear.bias)
        for mod in self.modules():
            if hasattr(mod, "eps") and hasattr(mod, "weight") and mod.weight is not None and mod.weight.dim() == 1:
                nn.init.ones_(mod.weight)
            if isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
        if self.spec.tie_word_embeddings:
            self.showo.lm_head.weight = self.showo.model.embed_tokens.weight
