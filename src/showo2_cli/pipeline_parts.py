"""The parts of :class:`~showo2_cli.pipeline.Showo2Pipeline` as diffusers names them (the mixin
:class:`PartsMixin`): ``network`` / ``transformer``, ``vae``, ``tokenizer`` and ``scheduler``,
assignable where diffusers' components are and checked as they are assigned; ``config``,
``components``; the progress bars (``set_progress_bar_config``, ``progress_bar``)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from .errors import ModelError
from .pipelines.arguments import pipeline_config


def compile_as_wrapped(network, value) -> None:
    """``pipe.network = torch.compile(network, ...)``: the wrapper's compile applies to ``forward``, which
    Show-o2 never calls (sampling and captions call the network's methods, which the wrapper hands to
    the module as they are), so its compiler compiles the parts the network runs instead
    (``Showo2Model.compile_parts``: the LLM's forward and each flow-head block, in place); the plain
    network assigned back is uncompiled again, as in diffusers."""
    from .modeling.bookkeeping import PartCompiler

    context = getattr(value, "dynamo_ctx", None) if value is not network else None
    current = network.part_compiler
    if context is not None and (current is None or current.context is not context):
        network.compile_parts(PartCompiler(context=context))
    elif value is network and current is not None and current.context is not None:
        network.compile_parts(None)  # (a compile from --compile or .compile() stays)


class PartsMixin:
    """A pipeline's components and progress bars; the pipeline holds ``model`` (the loaded
    :class:`~showo2_cli.loading.Showo2`), ``_loaded_parts``, ``sampler``, ``default_shift`` and
    ``_progress_bar_config``."""

    # ---- components -------------------------------------------------------------------------
    @property
    def network(self):
        """The Show-o2 network (LLM, dual path, flow head); diffusers' name for it is ``transformer``.
        Assignable, as diffusers' components are: ``pipe.network = torch.compile(pipe.network, ...)``
        compiles the parts the pipeline runs with the wrapper's arguments (:func:`compile_as_wrapped`)."""
        return self.model.network

    @network.setter
    def network(self, value) -> None:
        from .modeling.showo2 import Showo2Model

        inner = getattr(value, "_orig_mod", value) if isinstance(value, torch.nn.Module) else value
        if hasattr(value, "_torchdynamo_orig_callable") and not isinstance(value, torch.nn.Module):
            raise TypeError("torch.compile gave a function, not a network: the network it was given was compiled "
                            "already (torch.compile of its wrapper compiles the wrapper's forward); compile the "
                            "plain network again instead: pipe.transformer = torch.compile(pipe.transformer._orig_mod, ...)")
        if not isinstance(inner, Showo2Model):  # (torch.compile's wrapper keeps the module in _orig_mod)
            raise TypeError(f"the network must be a Show-o2 network (or torch.compile of one), got "
                            f"{type(value).__name__}")
        if inner is not getattr(self.model.network, "_orig_mod", self.model.network) and \
                inner.spec != self.spec:  # another network must be one of the same model
            raise ValueError("the network is of another model than this pipeline's (its spec differs)")
        compile_as_wrapped(inner, value)
        self.model.network = value
        self.model.network_given = self._given("network", inner)

    transformer = network

    @property
    def vae(self):
        """The Wan2.1 VAE (:class:`~showo2_cli.modeling.vae.WanVAE`). Assignable: a ``WanVAE``, or a
        diffusers ``AutoencoderKLWan`` (wrapped, its config's latent statistics used)."""
        return self.model.require_vae()

    @vae.setter
    def vae(self, value) -> None:
        from .modeling.vae import WanVAE, autoencoder_class

        if isinstance(value, autoencoder_class()):
            try:
                value = WanVAE(value)
            except ModelError as e:  # its config's latent statistics do not fit it: a bad argument
                raise ValueError(str(e)) from None
        if not isinstance(value, WanVAE):
            raise TypeError(f"the VAE must be a WanVAE or a diffusers AutoencoderKLWan, got {type(value).__name__}")
        if value.z_dim != self.spec.latent_channels:
            raise ValueError(f"the VAE has {value.z_dim} latent channels; this model's flow head makes "
                             f"{self.spec.latent_channels}")
        wrong = self.spec.vae_mismatch(value)
        if wrong:
            raise ValueError(f"the VAE does not fit this model: its spec says {wrong}")
        self.model.vae = value
        self.model.vae_given = self._given("vae", value)

    def _given(self, part: str, value) -> str | None:  # a part's record: as loaded, or assigned
        loaded, recorded = self._loaded_parts[part]
        return recorded if value is loaded else f"assigned in Python (pipe.{part} = ...)"

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def spec(self):
        return self.model.spec

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def config(self):
        """diffusers' ``pipe.config`` (a ``FrozenDict``): ``_class_name``, ``_name_or_path``, and each
        component's ``(library, class name)``."""
        return pipeline_config(self)

    @property
    def name_or_path(self) -> str:
        """The name the model was loaded by (diffusers' ``pipe.name_or_path``)."""
        return self.config["_name_or_path"]

    @property
    def components(self) -> dict[str, Any]:
        """What the constructor takes, by name: ``Showo2Pipeline(**pipe.components)`` is a second
        pipeline over the same weights. ``model`` is the loaded model (its spec, files and records),
        then its parts as this pipeline uses them (``transformer`` is ``network``'s diffusers name)
        and its ``scheduler``."""
        return {"model": self.model, "network": self.model.network, "transformer": self.model.network,
                "vae": self.model.vae, "tokenizer": self.model.tokenizer, "scheduler": self.scheduler}

    # ---- schedulers and progress bars (diffusers' attributes) -------------------------------
    @property
    def scheduler(self):
        """A diffusers scheduler standing for the sampler used by default, with the model's time
        shift (its ``config`` serves ``OtherScheduler.from_config(pipe.scheduler.config)``);
        assign one to change the sampler."""
        from .sampling import scheduler_for

        shift = self.default_shift if self.default_shift is not None else self.spec.shift
        return scheduler_for(self.sampler, self.spec.steps, shift)

    @scheduler.setter
    def scheduler(self, value) -> None:
        """``FlowMatchEulerDiscreteScheduler`` selects the official Euler sampler (the same updates,
        so ``pipe.scheduler = type(s).from_config(s.config)`` changes nothing), ``FlowMatchHeun...``
        Heun, ``UniPCMultistepScheduler`` / ``DPMSolverMultistepScheduler`` (with flow sigmas) the
        multistep solvers. A shift given explicitly (``shift=`` / ``flow_shift=``) replaces the
        model's; any other setting that differs from what the sampler does is refused, not ignored."""
        from .sampling import sampler_of_scheduler

        name, shift = sampler_of_scheduler(value, self.spec.steps, self.spec.shift)
        self.sampler = name
        self.default_shift = shift

    def set_progress_bar_config(self, **kwargs) -> None:
        """tqdm options of the progress bar every call shows (``disable=True`` hides it)."""
        self._progress_bar_config = dict(kwargs)

    def progress_bar(self, iterable=None, total=None):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, **self._progress_bar_config)

    @contextmanager
    def _progress(self, given):
        """The caller's ``progress(phase, done, total)``, else a tqdm bar over the denoising steps."""
        if given is not None:
            if not callable(given):
                raise TypeError(f"progress must be a callable progress(phase, done, total), got {type(given).__name__}")
            yield given
            return
        if self._progress_bar_config.get("disable"):
            yield None
            return
        bars: dict = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase != "denoising":
                return
            bar = bars.get(phase)
            if bar is None:
                bar = bars[phase] = self.progress_bar(total=total)
            bar.update(done - bar.n)

        try:
            yield report
        finally:
            for bar in bars.values():
                bar.close()
