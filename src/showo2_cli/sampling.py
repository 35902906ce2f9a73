"""Flow-matching sampling as small pure functions (spec §7).

Convention: t = 0 is pure noise, t = 1 is data; ``x_t = t*x1 + (1-t)*x0`` and the model predicts
the velocity ``x1 - x0``. The grid has ``steps`` points including both ends, shifted towards the
noise end by ``t / (t + s - s*t)``; ``steps`` points mean ``steps - 1`` model calls and the model
is never evaluated at t = 1. The state is kept in float32 whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def time_grid(steps: int, shift: float = 3.0) -> torch.Tensor:
    """The official shifted grid: ``s = linspace(0, 1, steps)`` (float32), ``t = s / (s + k - k*s)``."""
    if steps < 2:
        raise ValueError("a sampling grid needs at least 2 points")
    s = torch.linspace(0, 1, steps, dtype=torch.float32)
    return s / (s + shift - shift * s)


def guided(v_cond: torch.Tensor, v_uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance: ``v_u + g*(v_c - v_u)``."""
    return v_uncond + guidance * (v_cond - v_uncond)


def uses_uncond(guidance: float) -> bool:
    """The official sampler runs an unconditional branch only for guidance != 0 (and 1 is a no-op)."""
    return guidance not in (0.0, 1.0)


def sample(velocity: Velocity, x0: torch.Tensor, grid: torch.Tensor, method: str = "euler",
           callback: Callable[[int, int, torch.Tensor], None] | None = None,
           trajectory: list | None = None) -> torch.Tensor:
    """Integrate ``dx/dt = velocity(x, t)`` over ``grid`` from ``x0`` (noise) and return the final state.

    ``method`` is "euler" (the official fixed-grid Euler, one call per step) or "heun" (second
    order, two calls per step except the last). ``callback(step, total, x)`` is called after each
    step; ``trajectory``, when given, receives the state at every grid point.
    """
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown sampler method '{method}'")
    x = x0.float()
    if trajectory is not None:
        trajectory.append(x.clone())
    total = len(grid) - 1
    for i in range(total):
        t0, t1 = float(grid[i]), float(grid[i + 1])
        dt = grid[i + 1] - grid[i]
        v = velocity(x, t0).float()
        if method == "heun" and i < total - 1:
            x_pred = x + dt * v
            v2 = velocity(x_pred, t1).float()
            x = x + dt * 0.5 * (v + v2)
        else:
            x = x + dt * v
        if trajectory is not None:
            trajectory.append(x.clone())
        if callback is not None:
            callback(i + 1, total, x)
    return x
