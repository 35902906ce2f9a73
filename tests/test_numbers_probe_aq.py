"""Edge values of the numeric options (probe AQ): each valid value samples what it says, each
invalid one is one line naming the option, the same through the CLI, the Python API and the server."""

from __future__ import annotations

import math
import re

import pytest
import torch

from showo2_cli import sampling
from showo2_cli.errors import UsageError
from showo2_cli.options import CaptionOptions, GenerateOptions, TextSampling, check_number, check_seed
from showo2_cli.sampling import sample, time_grid


def _straight_path():
    """A velocity field whose exact solution from ``x0`` is ``x1`` (a straight line)."""
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(1, 4, 2, 2, generator=g), torch.randn(1, 4, 2, 2, generator=g)
    return x0, x1, (lambda x, t: x1 - x0)


# (sampler, --steps, --shift) that --check-free values made fail after the model had loaded:
# diffusers looked the first (integer) timestep up, found it twice and ran one step past the end
@pytest.mark.parametrize("method, steps, shift", [("dpm++", 50, 100.0), ("dpm++", 3, 1e4), ("unipc", 3, 1e4),
                                                  ("flow-euler", 40, 1e6), ("dpm++", 1001, 3.0)])
def test_diffusers_samplers_take_steps_whose_timesteps_repeat(method, steps, shift):
    x0, x1, velocity = _straight_path()
    out = sample(velocity, x0.clone(), time_grid(steps, shift), method=method, shift=shift)
    sampling.check_schedule(method, steps, shift)  # (these are sound)
    assert torch.isfinite(out).all()
    # euler-like flow-euler lands on x1; the multistep solvers start at diffusers' sigma_max < 1
    assert (out - x1).abs().max() < (1e-4 if method == "flow-euler" else 0.05)


@pytest.mark.parametrize("shift", [1e-300, 1e-46, 5e-324])
@pytest.mark.parametrize("method", ["euler", "heun", "flow-euler"])
def test_a_shift_too_small_for_float32_is_a_one_step_grid_not_nan(method, shift):
    grid = time_grid(4, shift)
    assert grid.tolist() == [0.0, 1.0, 1.0, 1.0]  # the limit of t = s / (s + k - k s) as k -> 0
    x0, x1, velocity = _straight_path()
    out = sample(velocity, x0.clone(), grid, method=method, shift=shift)
    assert (out - x1).abs().max() < 1e-5


def test_the_grid_is_unchanged_for_ordinary_shifts():
    for steps, shift in ((50, 3.0), (2, 3.0), (30, 1.0), (7, 0.5)):
        s = torch.linspace(0, 1, steps, dtype=torch.float32)
        assert torch.equal(time_grid(steps, shift), s / (s + shift - shift * s))


@pytest.mark.parametrize("method, steps, shift", [("unipc", 50, 1e6), ("unipc", 10000, 100.0), ("unipc", 2, 1e-30),
                                                  ("dpm++", 50, 1e-300), ("dpm++", 1000, 1e6)])
def test_a_multistep_schedule_whose_noise_levels_collide_is_refused(method, steps, shift):
    x0, x1, velocity = _straight_path()
    if steps <= 1000:  # what it did: NaN latents (a black image), or the noise left as it was
        out = sample(velocity, x0.clone(), time_grid(steps, shift), method=method, shift=shift)
        assert not torch.isfinite(out).all() or (out - x1).abs().max() > 0.5
    with pytest.raises(UsageError, match=re.escape(f"--sampler {method} cannot sample --steps {steps} at --shift")):
        sampling.check_schedule(method, steps, shift)


def test_cli_refuses_a_colliding_schedule_before_the_weights_load(monkeypatch, tmp_path, capsys):
    from showo2_cli.cli import generate as G
    from showo2_cli.cli import main

    def no_load(*a, **k):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(G, "load_model", no_load)
    out = tmp_path / "x.png"
    code = main(["t2i", "a", "--sampler", "unipc", "--steps", "50", "--shift", "1e6", "-o", str(out), "--size", "16"])
    err = capsys.readouterr().err
    assert code == 2 and "--sampler unipc cannot sample --steps 50 at --shift 1e+06" in err
    assert len(err.strip().splitlines()[-1:]) == 1 and not out.exists()


def test_pipeline_refuses_a_colliding_schedule_with_its_argument_names(tiny_pipe):
    with pytest.raises(UsageError, match="sampler unipc cannot sample num_inference_steps 50 at shift 1e"):
        tiny_pipe("a", num_inference_steps=50, sampler="unipc", shift=1e6, height=16, width=16, seed=1)


# ---- one verdict a value -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2^1024"])
def test_a_python_int_too_large_for_a_float_is_a_usage_error(value):
    """``math.isfinite(10**400)`` raises OverflowError: it escaped as one."""
    with pytest.raises(UsageError, match=r"--guidance must be a finite number >= 0 and <= 100, got"):
        GenerateOptions(guidance=value).validate()
    with pytest.raises(UsageError, match="--temperature must be"):
        TextSampling(temperature=value).validate()
    with pytest.raises(UsageError, match="--top-p must be"):
        CaptionOptions(top_p=value).validate()
    check_number("x", 10**20, 0, 10**30)  # a large int in range is a number in range


@pytest.mark.parametrize("value", [4.0, 4.5, "4", math.nan, True])
def test_a_seed_that_is_no_whole_number_is_named_so(value):
    with pytest.raises(UsageError, match=r"--seed must be a whole number between 0 and 2\^63-1, got"):
        check_seed(value)
    with pytest.raises(UsageError, match=r"must be a whole number"):
        GenerateOptions(seed=value).validate()


@pytest.mark.parametrize("value", [-1, 2**63, 2**64 - 1])
def test_a_whole_seed_out_of_range_keeps_its_message(value):
    with pytest.raises(UsageError, match=r"^--seed must be between 0 and 2\^63-1, got"):
        check_seed(value)
