"""A module of a network that a command does not run, left unloaded (:class:`NotLoaded`): a half
of the Wan VAE (``load_vae(parts=)``) or a head of Show-o2 (``Showo2Model.leave_out``)."""

from __future__ import annotations

from torch import nn

from ..errors import ModelError


class NotLoaded(nn.Module):
    """Stands in for a module that is not loaded (a part of the VAE, see ``vae.VAE_PARTS``, or a
    head of the network, see ``Showo2Model.leave_out``): no weights, so moving, counting or hooking
    its owner never meets it. It keeps the module on 'meta' (not a submodule), which a later load
    fills; ``numel`` is what it holds when loaded. ``message``: what calling it says (by default,
    how the VAE loads the part)."""

    def __init__(self, part: str, module: nn.Module, message: str | None = None) -> None:
        super().__init__()
        self.part = part
        object.__setattr__(self, "meta_module", module)  # not registered: .to() and state_dict() skip it
        self.numel = sum(p.numel() for p in module.parameters())
        self.message = message or f"the VAE's {part} is not loaded (WanVAE.load_parts('{part}') loads it)"

    def forward(self, *args, **kwargs):
        raise ModelError(self.message)

    def __iter__(self):  # a ModuleList left out (the flow head's blocks) is not run by iterating it either
        raise ModelError(self.message)

    def extra_repr(self) -> str:
        return f"{self.part}, {self.numel} parameters"
