"""diffusers' memory toggles on :class:`~showo2_cli.pipeline.Showo2Pipeline` (the mixin
:class:`MemoryTogglesMixin`): VAE tiling and slicing forward to the VAE; attention slicing and
xformers are not offered and say what to use instead (the attention backend, CPU offload, tiles)."""

from __future__ import annotations

from .errors import UsageError


class MemoryTogglesMixin:
    """``enable_vae_tiling()`` and the other calls diffusers users make to save memory."""

    def enable_vae_tiling(self) -> None:
        """Encode/decode in tiles (diffusers' ``pipe.enable_vae_tiling()``; ``--vae-tiling on``)."""
        self._vae().enable_tiling()

    def disable_vae_tiling(self) -> None:
        """Never tile (``--vae-tiling off``); a freshly loaded pipeline tiles only what would not fit."""
        self._vae().disable_tiling()

    def enable_vae_slicing(self) -> None:
        """Decode one output at a time: forwards to ``vae.enable_slicing()``."""
        self._vae().enable_slicing()

    def disable_vae_slicing(self) -> None:
        """Decode a batch at once again: forwards to ``vae.disable_slicing()``."""
        self._vae().disable_slicing()

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Not offered (diffusers' memory habit): a UsageError that says what to use instead."""
        raise UsageError("attention slicing is not offered: every layer runs its attention in one call of the "
                         "backend RuntimeOptions(attn=...) picks (sdpa by default); to save memory use "
                         "enable_model_cpu_offload(), enable_vae_tiling() or a smaller batch_size")

    def enable_xformers_memory_efficient_attention(self, attention_op=None) -> None:
        """Not offered: a UsageError naming the attention backends there are."""
        raise UsageError("xformers attention is not offered: pick the attention backend with "
                         "from_pretrained(..., runtime=RuntimeOptions(attn='sdpa'|'eager'|'flex'))")

    def disable_attention_slicing(self) -> None:
        """Nothing to undo: attention is never sliced (diffusers' counterpart call is harmless here)."""

    def disable_xformers_memory_efficient_attention(self) -> None:
        """Nothing to undo: xformers is never used."""

    def _vae(self):
        if self.vae is None:
            raise UsageError("this pipeline was loaded without a VAE")
        return self.vae
