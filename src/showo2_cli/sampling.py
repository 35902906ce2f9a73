"""Flow-matching sampling as small pure functions (spec §7).

Convention: t = 0 is pure noise, t = 1 is data; ``x_t = t*x1 + (1-t)*x0`` and the model predicts
the velocity ``x1 - x0``. The grid has ``steps`` points including both ends, shifted towards the
noise end by ``t / (t + s - s*t)``; ``steps`` points mean ``steps - 1`` model calls and the model
is never evaluated at t = 1. The state is kept in float32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .grids import grid_times
from .modeling.attention import omni_attention_mask
from .options import DEFAULT_SAMPLER
from .options import SAMPLERS as OPTION_SAMPLERS
from .runtime import quiet_imports
from .sequences import Layout

Velocity = Callable[[torch.Tensor, float], torch.Tensor]
#: ``callback(step, total, t, x)`` after each step: ``step`` counts from 1, ``t`` is the time the
#: step's model call started from, ``x`` the new state (float32). A tensor it returns replaces the
#: state; raising :class:`StopSampling` ends sampling there, with ``x`` (or the exception's
#: ``latents``) as the result.
StepCallback = Callable[[int, int, float, torch.Tensor], "torch.Tensor | None"]


class StopSampling(Exception):
    """Raised by a step callback to stop early: the sampler returns the state it has reached, or
    ``latents`` when given (what the callback would have returned)."""

    def __init__(self, latents: torch.Tensor | None = None):
        super().__init__("sampling stopped by a step callback")
        self.latents = latents


def _after_step(callback: StepCallback | None, step: int, total: int, t: float,
                x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The state after ``callback`` (replaced or not) and whether it stopped the sampling."""
    if callback is None:
        return x, False
    try:
        replaced, stop = callback(step, total, t, x), False
    except StopSampling as e:
        replaced, stop = e.latents, True
    if replaced is None:
        return x, stop
    if not isinstance(replaced, torch.Tensor) or replaced.shape != x.shape:
        raise ValueError(f"a step callback must return None or latents of shape {tuple(x.shape)}, got "
                         f"{tuple(replaced.shape) if isinstance(replaced, torch.Tensor) else type(replaced).__name__}")
    if not bool(torch.isfinite(replaced).all()):  # else reported at the end as the model's NaN (weights, fp16)
        raise ValueError("a step callback returned latents holding NaN or infinite values")
    return replaced.to(device=x.device, dtype=x.dtype), stop


def time_grid(steps: int, shift: float = 3.0) -> torch.Tensor:
    """The official shifted grid: ``s = linspace(0, 1, steps)`` (float32), ``t = s / (s + k - k*s)``.

    A shift of 0 is no shift (``t = s``), as the official ``ode`` takes it (``if
    time_shifting_factor:``); the formula would give 0/0 at ``s = 0`` and 1 everywhere else.
    The grid starts at t = 0 whatever the shift: a shift too small for float32 (below about
    1e-45, where ``s + k - k*s`` is 0 at ``s = 0``) made that point 0/0, a NaN that sampled a
    black image."""
    if steps < 2:
        raise ValueError("a sampling grid needs at least 2 points")
    return shifted(torch.linspace(0, 1, steps, dtype=torch.float32), shift)


def shifted(s: torch.Tensor, shift: float) -> torch.Tensor:
    """The time shift of the official grid, ``t = s / (s + k - k*s)`` (float32; diffusers' flow
    shift ``k*sigma / (1 + (k-1)*sigma)`` of ``sigma = 1 - s``), 0 kept 0; a shift of 0 is none."""
    if not shift:
        return s
    t = s / (s + shift - shift * s)
    t[s == 0] = 0.0  # (0 / k: the same value for every shift float32 holds)
    return t


def sampling_grid(steps: int, shift: float, sigmas=None, timesteps=None) -> torch.Tensor:
    """The grid a run samples over: the official one of ``steps`` points, or a custom one given as
    diffusers takes it (:mod:`showo2_cli.grids`): ``sigmas`` shifted, ``timesteps`` as given."""
    times = grid_times(sigmas, timesteps)
    if times is None:
        return time_grid(steps, shift)
    t = torch.tensor(times, dtype=torch.float32)
    return shifted(t, shift) if sigmas is not None else t


def guided(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance as the official ``t2i_generate`` applies it: ``v_u + g*(v_c - v_u)``
    for ``g > 0``; for ``g <= 0`` it skips guidance and the conditional rows' velocity is theirs
    alone (at ``g = 0`` the formula would give the UNconditional velocity instead)."""
    if guidance <= 0:
        return v_cond
    return v_uncond + guidance * (v_cond - v_uncond)


def uses_uncond(guidance: float) -> bool:
    """Whether the unconditional rows change the result: the official code guides only for
    guidance > 0 (see :func:`guided`), and 1 is a no-op."""
    return guidance > 0 and guidance != 1.0


def euler_step(velocity: Velocity, x: torch.Tensor, t0: float, t1: float, last: bool) -> torch.Tensor:
    """The official fixed-grid Euler step (one model call)."""
    return x + (t1 - t0) * velocity(x, t0).float()


def heun_step(velocity: Velocity, x: torch.Tensor, t0: float, t1: float, last: bool) -> torch.Tensor:
    """Heun's second-order step (two model calls; Euler on the last step, never evaluating t = 1)."""
    v = velocity(x, t0).float()
    if last:
        return x + (t1 - t0) * v
    v2 = velocity(x + (t1 - t0) * v, t1).float()
    return x + (t1 - t0) * 0.5 * (v + v2)


def diffusers_scheduler(name: str, grid: torch.Tensor, shift: float, sigmas=None):
    """A diffusers flow-matching scheduler over the sampling grid (sigma = 1 - t):

    * ``flow-euler``: ``FlowMatchEulerDiscreteScheduler`` on exactly the official grid (the same
      updates as ``euler``; a test checks it);
    * ``unipc`` / ``dpm++``: multistep solvers (UniPC, DPM-Solver++ 2M) with flow sigmas and the
      same time shift, for fewer steps; ``sigmas``: UniPC's custom noise levels (which it shifts).
    """
    with quiet_imports():
        from diffusers import (
            DPMSolverMultistepScheduler,
            FlowMatchEulerDiscreteScheduler,
            UniPCMultistepScheduler,
        )

    levels = (1.0 - grid.double())[:-1].tolist()  # the last grid point (t = 1, sigma 0) is the end
    if name == "flow-euler":
        sched = FlowMatchEulerDiscreteScheduler(shift=1.0)
        sched.set_timesteps(sigmas=levels)
    elif name == "unipc":
        sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                        final_sigmas_type="zero")
        if sigmas is None:
            sched.set_timesteps(len(levels))
        else:  # (as diffusers' retrieve_timesteps: set_timesteps(sigmas=...), which applies flow_shift)
            import numpy as np

            sched.set_timesteps(sigmas=np.asarray(sigmas, dtype=np.float64))
    elif name == "dpm++":
        sched = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                            flow_shift=shift, algorithm_type="dpmsolver++", solver_order=2,
                                            final_sigmas_type="zero")
        sched.set_timesteps(len(levels))
    else:
        raise ValueError(f"unknown scheduler '{name}'")
    # the steps run in order from the first: diffusers otherwise looks the first timestep up in
    # its (integer) timesteps, and where two are equal (many steps, or a shift far from 1) it
    # started from the second and ran one step past the end (IndexError, AssertionError)
    sched.set_begin_index(0)
    return sched


#: diffusers scheduler classes -> the ``sampler`` they select (``Showo2Pipeline.scheduler = ...``)
SCHEDULER_SAMPLERS = {"FlowMatchEulerDiscreteScheduler": "flow-euler", "FlowMatchHeunDiscreteScheduler": "heun",
                      "UniPCMultistepScheduler": "unipc", "DPMSolverMultistepScheduler": "dpm++"}


def scheduler_for(sampler: str, steps: int, shift: float):
    """A diffusers scheduler standing for ``sampler`` with the time shift ``shift`` (its ``config``
    serves ``OtherScheduler.from_config(scheduler.config)``)."""
    with quiet_imports():
        from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

    if sampler in ("euler", "flow-euler"):
        return FlowMatchEulerDiscreteScheduler(shift=shift)
    if sampler == "heun":
        return FlowMatchHeunDiscreteScheduler(shift=shift)
    return diffusers_scheduler(sampler, time_grid(steps, shift), shift)


def sampler_of_scheduler(value, steps: int, model_shift: float) -> tuple[str, float | None]:
    """The sampler a diffusers scheduler selects, and the shift it gives explicitly (``shift=`` /
    ``flow_shift=``; None: the model's ``model_shift``): ``FlowMatchEulerDiscreteScheduler`` the
    official Euler (the same updates), ``FlowMatchHeun...`` Heun, ``UniPCMultistepScheduler`` /
    ``DPMSolverMultistepScheduler`` (with flow sigmas) the multistep solvers. Any other setting
    that differs from what the sampler does is refused (TypeError/ValueError), not ignored."""
    base = next((c for c in type(value).__mro__ if c.__name__ in SCHEDULER_SAMPLERS), None)  # subclasses too
    name = SCHEDULER_SAMPLERS[base.__name__] if base is not None else None
    if name is None:
        raise TypeError(f"scheduler {type(value).__name__} is not supported: use one of "
                        f"{', '.join(SCHEDULER_SAMPLERS)} (or sampler=...)")
    config = dict(getattr(value, "config", {}) or {})
    key = "flow_shift" if name in ("unipc", "dpm++") else "shift"
    given = key not in set(config.get("_use_default_values") or ())  # diffusers records the defaults
    shift = float(config[key]) if given and config.get(key) is not None else None
    if name in ("unipc", "dpm++") and not (config.get("use_flow_sigmas")
                                           and config.get("prediction_type") == "flow_prediction"):
        raise ValueError(f"{type(value).__name__} must be made with use_flow_sigmas=True and "
                         "prediction_type='flow_prediction' for a flow-matching model")
    s = shift if shift is not None else model_shift
    reference = diffusers_scheduler(name, time_grid(steps, s), s) if name in ("unipc", "dpm++") else base(shift=s)
    name = "euler" if name == "flow-euler" else name  # the official Euler: the same updates
    odd = [k for k, v in config.items() if not k.startswith("_") and k not in (key, "num_train_timesteps")
           and reference.config.get(k, v) != v]
    if odd:
        raise ValueError(f"{type(value).__name__}: {odd[0]}={config[odd[0]]!r} is not supported by this "
                         f"pipeline's {name} sampler (it would be ignored; leave it at "
                         f"{reference.config.get(odd[0])!r})")
    return name, shift


def check_schedule(method: str, steps: int, shift: float, sigmas=None, timesteps=None) -> None:
    """Refuse (a :class:`~showo2_cli.errors.UsageError` naming the options) a diffusers scheduler
    whose noise levels for ``steps`` and ``shift`` are not a strictly falling sequence in (0, 1)
    in float32: UniPC and DPM-Solver++ compute their own flow sigmas from the shift, and where two
    of them are equal (``--sampler unipc --steps 50 --shift 1e6``) or one rounds to 0 or 1 (a shift
    near 0) they divide by zero and sample NaN latents, a black image (or, all 0, leave the noise
    as it is). Checked before any model
    call; the official grid (``euler``, ``heun``, ``flow-euler``) takes every steps and shift. A
    custom grid (``sigmas``, ``timesteps``: :mod:`showo2_cli.grids`) must also keep its points
    distinct in float32 once shifted (a huge shift puts levels near 1 together)."""
    from .errors import UsageError

    given = "--sigmas" if sigmas is not None else "--timesteps" if timesteps is not None else None
    if given is not None:
        grid = sampling_grid(steps, shift, sigmas, timesteps)
        if not bool((grid[:-1] < grid[1:]).all()):
            at = f" at --shift {shift:g}" if sigmas is not None else ""
            raise UsageError(f"{given}{at} give times that are not distinct in float32 (two steps would start "
                             f"from the same point): space the values further apart"
                             + (", or use a shift nearer 1" if sigmas is not None else ""))
    if method not in ("unipc", "dpm++"):
        return
    import warnings

    import numpy as np

    with warnings.catch_warnings(), np.errstate(all="ignore"):  # (numpy's divide-by-zero on stderr)
        warnings.simplefilter("ignore")
        levels = diffusers_scheduler(method, sampling_grid(steps, shift, sigmas, timesteps), shift,
                                     sigmas).sigmas[:-1].double()  # the final 0 aside
    if bool(torch.isfinite(levels).all() and (levels > 0).all() and (levels < 1).all()
            and (levels[:-1] > levels[1:]).all()):
        return
    what = "these --sigmas" if sigmas is not None else f"--steps {steps}"
    raise UsageError(f"--sampler {method} cannot sample {what} at --shift {shift:g}: its noise levels "
                     "are not distinct values between 0 and 1 in float32 (NaN latents, or the noise left as "
                     "it is); use a shift nearer the "
                     "official 3, fewer steps, or --sampler euler")


def sample_scheduled(velocity: Velocity, x0: torch.Tensor, grid: torch.Tensor, name: str, shift: float = 3.0,
                     callback: StepCallback | None = None, trajectory: list | None = None,
                     sigmas=None) -> torch.Tensor:
    """:func:`sample` through a diffusers scheduler. diffusers' flow convention is the reverse of
    Show-o2's (sigma = 1 - t, the model output is ``noise - data``), so the velocity is negated."""
    sched = diffusers_scheduler(name, grid, shift, sigmas)
    train_steps = float(sched.config.num_train_timesteps)

    def advance(x: torch.Tensor, ts, t: float) -> torch.Tensor:
        return sched.step(-velocity(x, t).float(), ts, x, return_dict=False)[0].float()

    steps = [(1.0 - float(ts) / train_steps, ts) for ts in sched.timesteps]
    return _run_steps(x0, [(t, lambda x, ts=ts, t=t: advance(x, ts, t)) for t, ts in steps], callback, trajectory)


def _run_steps(x0: torch.Tensor, steps: list[tuple[float, Callable[[torch.Tensor], torch.Tensor]]],
               callback: StepCallback | None, trajectory: list | None) -> torch.Tensor:
    """The one sampling loop: ``steps`` are ``(t, advance)`` pairs, ``t`` the time a step starts
    from; the callback sees (and may replace or stop) the state after each."""
    x = x0.float()
    if trajectory is not None:
        trajectory.append(x.clone())
    for i, (t, advance) in enumerate(steps):
        x, stop = _after_step(callback, i + 1, len(steps), t, advance(x))
        if trajectory is not None:
            trajectory.append(x.clone())
        if stop:
            break
    return x


#: The samplers; the keys are :data:`showo2_cli.options.SAMPLERS` (validation and ``--help``):
#: a step function of our own, or None for a diffusers scheduler (:func:`diffusers_scheduler`).
SAMPLERS = {"euler": euler_step, "heun": heun_step, "flow-euler": None, "unipc": None, "dpm++": None}
assert set(SAMPLERS) == set(OPTION_SAMPLERS), "options.SAMPLERS and sampling.SAMPLERS must name the same samplers"


def sample(velocity: Velocity, x0: torch.Tensor, grid: torch.Tensor, method: str = DEFAULT_SAMPLER,
           callback: StepCallback | None = None, trajectory: list | None = None,
           shift: float = 3.0, sigmas=None) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` over ``grid`` from ``x0`` (noise) and return the final state.

    ``method`` is a key of :data:`SAMPLERS`. ``callback`` (:data:`StepCallback`) is called after
    each step; ``trajectory``, when given, receives the state at every grid point. ``sigmas``: the
    custom noise levels ``grid`` was made from (:func:`sampling_grid`), which UniPC shifts itself.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler method '{method}'")
    step = SAMPLERS[method]
    if step is None:
        return sample_scheduled(velocity, x0, grid, method, shift, callback=callback, trajectory=trajectory,
                                sigmas=sigmas)
    total = len(grid) - 1
    points = [(float(grid[i]), float(grid[i + 1]), i == total - 1) for i in range(total)]
    return _run_steps(x0, [(t0, lambda x, t0=t0, t1=t1, last=last: step(velocity, x, t0, t1, last))
                           for t0, t1, last in points], callback, trajectory)


# ---- the guided velocity of a Show-o2 network (spec §8.1) -------------------------------------

def select_rows(layout: Layout, rows: list[int]) -> Layout:
    return Layout(layout.input_ids[rows], layout.slots[rows], layout.blocks[rows])


def guided_velocity_fn(network, layout: Layout, guidance: float, trim: bool = True, cache_prefix: bool = False,
                       first_frame_as_cond: bool = False) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """``v(x, t)`` for ``x`` of the conditional rows (B, C, [T,] h, w), guidance applied.

    Conditional and unconditional rows run in one batched forward. ``trim`` drops the positions
    after the visual block (eoi, eos, pads): they cannot influence the velocity, and runs the dual
    path once for a prompt's two rows, which share their latents (the same numbers to a kernel's
    rounding at another batch size); untrimmed, every row runs it as the official batch does, each
    step the official one bit for bit (probe IA). At guidance 0 or 1 the unconditional rows cannot
    change the result (:func:`uses_uncond`): trimmed, they are not run; untrimmed, they are, as
    the official batch runs them at every guidance (and guides at 1 with its formula). ``cache_prefix``
    computes the text before the block once and reuses its keys/values at every step (needs one
    block per row that is the row's time token plus visual tokens, i.e. a generation layout).
    """
    batch = layout.input_ids.shape[0] // 2
    if trim and not uses_uncond(guidance):
        layout = select_rows(layout, list(range(batch)))
    if trim:
        layout = layout.trimmed()
    device = network.device
    ids = layout.input_ids.to(device)
    rows = ids.shape[0]
    if cache_prefix:
        prefix = network.prefix_cache(ids, layout.slots[:, 0, 0])
        mask = None
    else:
        mask = omni_attention_mask(layout.blocks, layout.seq_len, device=device)

    @torch.no_grad()
    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        # the unconditional rows carry the conditional rows' latents. Trimmed (the default, already
        # other op shapes than the official's), the dual path runs once for both and its tokens are
        # shared (``repeats``); untrimmed, every row runs it as the official ``t2i_generate`` batch
        # does: the official step bit for bit (a kernel may round another batch size otherwise)
        repeats, rows_x = rows // x.shape[0], x
        if not trim:
            rows_x, repeats = x.repeat(repeats, *([1] * (x.dim() - 1))), 1
        t_vec = torch.full((rows,), float(t), dtype=torch.float32, device=device)
        if cache_prefix:
            v = network.velocity_with_prefix(prefix, rows_x.to(device), t_vec, first_frame_as_cond=first_frame_as_cond,
                                             repeats=repeats)
        else:
            v = network.velocity(ids, rows_x.to(device), t_vec, layout.blocks, mask, first_frame_as_cond=first_frame_as_cond,
                                 repeats=repeats)
        v = v.to(x.device)
        if rows == x.shape[0]:
            return v
        return guided(v[:batch], v[batch:], guidance)

    return velocity


def still_video(latents: torch.Tensor) -> bool:
    """Whether ``latents`` (B, C, [T,] h, w) are video latents of one frame: under image to
    video, the conditioning frame alone (nothing of it is sampled)."""
    return latents.dim() == 5 and latents.shape[2] == 1


def generate_latents(network, layout: Layout, noise: torch.Tensor, guidance: float, steps: int, shift: float,
                     method: str = DEFAULT_SAMPLER, trim: bool = True, cache_prefix: bool = False,
                     first_frame_as_cond: bool = False, callback=None, trajectory: list | None = None,
                     sigmas=None, timesteps=None) -> torch.Tensor:
    """Integrate from ``noise`` (float32, conditional rows only) to clean latents, over the official
    grid of ``steps`` points or a custom one (``sigmas`` or ``timesteps``: :func:`sampling_grid`).

    A video whose only latent frame is the condition (``first_frame_as_cond`` and one latent
    frame: image to video of one frame) has nothing to sample: the network's velocity of the
    conditioning frame is 0, so it is 0 everywhere, and the network is not run (the steps and
    their callbacks still are)."""
    if first_frame_as_cond and still_video(noise):
        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            return torch.zeros_like(x)
    else:
        velocity = guided_velocity_fn(network, layout, guidance, trim=trim, cache_prefix=cache_prefix,
                                      first_frame_as_cond=first_frame_as_cond)
    return sample(velocity, noise.float(), sampling_grid(steps, shift, sigmas, timesteps), method=method,
                  callback=callback, trajectory=trajectory, shift=shift, sigmas=sigmas)
