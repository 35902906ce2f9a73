"""Custom time grids, as diffusers users pass them (``pipe(..., sigmas=[...])``, ``timesteps=``):
what they mean here and their checks, torch-free (the options validate them before any model loads).

diffusers' flow convention is sigma = 1 - t (1 is noise, 0 is data). As ``retrieve_timesteps``
and the schedulers' ``set_timesteps`` take them:

* ``sigmas`` is one noise level per model call, from the noisiest, without the final 0 (which
  is appended); they go through the time shift, as ``FlowMatchEulerDiscreteScheduler`` and
  ``UniPCMultistepScheduler(use_flow_sigmas=True)`` shift them (``shift * s / (1 + (shift - 1) * s)``,
  the official grid's shift): ``1 - torch.linspace(0, 1, steps)[:-1]`` (float32, as float64) is the
  default grid bit for bit, Flux's ``np.linspace(1, 1/N, N)`` to float32 rounding (torch's
  float32 linspace is off the exact ``i/N`` by one unit in the last place for most N). Pass
  ``shift=1`` for noise levels used as they are (to float32 rounding).
* ``timesteps`` are model times in diffusers' scale (sigma * 1000), used as given, unshifted,
  as ``FlowMatchEulerDiscreteScheduler`` feeds them to the model (it steps over shifted sigmas
  derived from them, and warns that the two then disagree; here the steps go where the model is
  evaluated).

Which sampler takes which is diffusers': a scheduler whose ``set_timesteps`` has no such
argument refuses it (``FlowMatchHeunDiscreteScheduler`` takes neither; ``DPMSolverMultistepScheduler``
has no ``sigmas``, and its ``timesteps`` fail with flow sigmas in diffusers itself).
"""

from __future__ import annotations

import math
import numbers

from .errors import UsageError, given, short

#: diffusers' training timesteps of a flow-matching scheduler: ``timesteps = sigmas * TRAIN_TIMESTEPS``
TRAIN_TIMESTEPS = 1000

#: the sampler -> (the diffusers scheduler standing for it, the custom grids it takes)
CUSTOM_GRIDS = {
    "euler": ("FlowMatchEulerDiscreteScheduler", ("sigmas", "timesteps")),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", ("sigmas", "timesteps")),
    "heun": ("FlowMatchHeunDiscreteScheduler", ()),
    "unipc": ("UniPCMultistepScheduler", ("sigmas",)),
    "dpm++": ("DPMSolverMultistepScheduler", ()),
}


def grid_list(value):
    """A grid given as a numpy array or a torch tensor (``np.linspace(...)``), a list or a tuple as a
    list of plain Python numbers (the record is JSON): each real number as a float (numpy's, torch's 0-d
    ones, a ``Fraction``), an int kept; anything else as it is, for :func:`check_grid` to refuse
    (a complex, a string, None; a tensor whose values cannot be read, on the meta device or sparse)."""
    if hasattr(value, "tolist") and getattr(value, "ndim", None) == 1:
        try:
            value = value.tolist()
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _plain(v):
    """One value of a grid as a Python int or float where it is a real number (a bool is not one)."""
    if getattr(v, "ndim", None) == 0 and hasattr(v, "item"):  # numpy's scalars, 0-d arrays and tensors
        try:
            v = v.item()
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            return v
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or type(v) is int:
        return v
    try:
        return int(v) if isinstance(v, numbers.Integral) else float(v)
    except (OverflowError, TypeError, ValueError):
        return v


def parse_grid(text: str | None, option: str) -> list[float] | None:
    """A grid given on the command line: numbers separated by commas (``1.0,0.75,0.5``)."""
    if text is None:
        return None
    try:
        return [float(part) for part in str(text).split(",")]
    except ValueError:
        raise UsageError(f"{option} must be numbers separated by commas (1.0,0.75,0.5), got {short(text)}") from None


def check_grid(sigmas, timesteps, steps: int | None, method: str) -> None:
    """Refuse (:class:`UsageError`) a custom grid that cannot be sampled: both kinds given, a sampler
    whose diffusers scheduler takes no such grid, ``steps`` that disagree with its length, a
    value that is not a finite number in range, values not strictly falling."""
    if sigmas is None and timesteps is None:
        return
    if sigmas is not None and timesteps is not None:
        raise UsageError("pass --sigmas or --timesteps, not both (diffusers' retrieve_timesteps refuses both too)")
    option, values = ("--sigmas", sigmas) if sigmas is not None else ("--timesteps", timesteps)
    # (a sampler or steps of a wrong type are refused by their own checks, after this one)
    scheduler, takes = CUSTOM_GRIDS.get(method, (None, ())) if isinstance(method, str) else (None, ())
    if scheduler is not None and option[2:] not in takes:
        instead = ", ".join(m for m, (_, kinds) in CUSTOM_GRIDS.items() if option[2:] in kinds)
        raise UsageError(f"--sampler {method} takes no custom {option[2:]} (diffusers' {scheduler} cannot set "
                         f"them for a flow-matching model); the samplers that do: {instead}")
    if isinstance(values, (str, bytes)) or not isinstance(values, list):
        raise UsageError(f"{option} must be a list of numbers, got {short(values)}")
    from .options import STEPS_RANGE  # (options imports this module)

    if not 1 <= len(values) <= STEPS_RANGE[1] - 1:
        raise UsageError(f"{option} must hold 1 to {STEPS_RANGE[1] - 1} values (one per model call), got "
                         f"{len(values)}")
    high, unit = (1.0, "noise levels") if sigmas is not None else (float(TRAIN_TIMESTEPS), "diffusers timesteps")
    for v in values:
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not 0 < v <= high or not math.isfinite(v):
            raise UsageError(f"{option} are {unit} in (0, {high:g}] (the final 0 is appended), got {given(v)}")
    if any(a <= b for a, b in zip(values[:-1], values[1:], strict=True)):
        raise UsageError(f"{option} must fall strictly, from the noisiest (one model call each), got "
                         f"{short(values, 80)}")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps != len(values) + 1:
        raise UsageError(f"--steps {steps} counts grid points ({steps - 1} model calls) but {option} holds "
                         f"{len(values)}: leave --steps out, or give {len(values) + 1}")


def grid_steps(sigmas, timesteps) -> int | None:
    """The grid points (``--steps``) a custom grid makes: one per value and the final 0."""
    values = sigmas if sigmas is not None else timesteps
    return None if values is None else len(values) + 1


def grid_times(sigmas, timesteps) -> list[float] | None:
    """A custom grid as Show-o2 times before the shift, ``1 - sigma`` (computed in float64, so
    ``1 - s`` of a float32 ``s`` gives ``s`` back), the final 1 (data) included; for
    ``timesteps`` they are final (unshifted). None: no custom grid."""
    if sigmas is not None:
        return [1.0 - float(v) for v in sigmas] + [1.0]
    if timesteps is not None:
        return [1.0 - float(v) / TRAIN_TIMESTEPS for v in timesteps] + [1.0]
    return None
