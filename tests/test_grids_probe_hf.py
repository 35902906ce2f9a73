"""Probe HF: custom sigma and timestep grids (``pipe(..., sigmas=)``, ``timesteps=``; ``--sigmas``),
as diffusers' ``retrieve_timesteps`` and flow schedulers take them. The pipeline refused both
("not implemented"); now they sample, are checked, and are recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import enliven
from showo2_cli import sampling
from showo2_cli.errors import UsageError
from showo2_cli.options import GenerateOptions
from showo2_cli.sequences import generation_layout

SHIFT = 3.0


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model with a flow head that moves the latents (its official init makes v = 0)."""
    from showo2_cli.loading import load

    loaded = load(tiny_model_dir)
    enliven(loaded.network)
    return loaded


@pytest.fixture(scope="module")
def pipe(model):
    from showo2_cli import Showo2Pipeline

    pipe = Showo2Pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default_sigmas(steps: int) -> list[float]:
    """The official grid of ``steps`` points as diffusers' unshifted sigmas (``1 - s``, exact in float64)."""
    return (1 - torch.linspace(0, 1, steps, dtype=torch.float32).double())[:-1].tolist()


CALL = dict(height=32, width=32, output_type="latent", guidance_scale=4.0)
KINDS = {"t2i": {}, "t2v": {"num_frames": 5}, "i2v": {"num_frames": 5, "image": np.full((32, 32, 3), 90, np.uint8)}}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampler", ["euler", "flow-euler"])
def test_the_default_grid_given_as_sigmas_is_the_default_call_bit_for_bit(pipe, kind, sampler):
    steps = 5
    call = dict(CALL, **KINDS[kind], sampler=sampler, seed=7)
    default = pipe("a red circle", num_inference_steps=steps, **call)
    for sigmas in (default_sigmas(steps), np.array(default_sigmas(steps)), torch.tensor(default_sigmas(steps))):
        given = pipe("a red circle", sigmas=sigmas, **call)
        out = given.frames if kind != "t2i" else given.images
        assert torch.equal(out, default.frames if kind != "t2i" else default.images)
        assert given.results[0].params["steps"] == steps and pipe.num_timesteps == steps - 1
    moved = pipe("a red circle", sigmas=[1.0, 0.6, 0.3, 0.1], **call)  # another grid: another result
    assert not torch.equal(moved.results[0].latents, default.results[0].latents)


@pytest.mark.parametrize("steps", [5, 30, 50])
def test_fluxs_linspace_is_the_default_grid_to_float32_rounding(steps):
    """``np.linspace(1, 1/N, N)`` (FluxPipeline's default sigmas) against the official grid, whose
    float32 ``torch.linspace`` is one unit in the last place off ``i/N`` for most N."""
    flux = sampling.sampling_grid(steps, SHIFT, sigmas=np.linspace(1.0, 1 / (steps - 1), steps - 1).tolist())
    assert (flux - sampling.time_grid(steps, SHIFT)).abs().max() <= 1.2e-7


def test_unipc_takes_its_default_sigmas_bit_for_bit(pipe):
    steps = 5
    call = dict(CALL, sampler="unipc", seed=3)
    default = pipe("a cat", num_inference_steps=steps, **call)
    given = pipe("a cat", sigmas=np.linspace(1, 1 / 1000, steps)[:-1], **call)  # UniPC's own, before the shift
    assert torch.equal(given.images, default.images)


def tiny_layout(model, batch: int = 1):
    spec = model.spec
    visual = 1 + spec.tokens_per_frame(32, 32)
    return generation_layout([[97, 98, 99]] * batch, visual, model.tokens, visual + 4 + spec.text_budget,
                             negatives=[[]] * batch)


def hand_euler(velocity, x, times):
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        x = x + (t1 - t0) * velocity(x, t0).float()
    return x


def test_a_custom_grid_samples_what_a_hand_run_loop_over_it_gives(model):
    """Euler over the grid diffusers makes of the sigmas (FlowMatchEulerDiscreteScheduler(shift=3)
    shifts them) and of the timesteps (used as given), and UniPC over its own steps."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    layout = tiny_layout(model)
    noise = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    velocity = sampling.guided_velocity_fn(model.network, layout, 4.0, cache_prefix=True)
    sigmas = [1.0, 0.7, 0.45, 0.2]
    ref = FlowMatchEulerDiscreteScheduler(shift=SHIFT)
    ref.set_timesteps(sigmas=sigmas)
    times = [1 - float(s) for s in ref.sigmas]  # diffusers' shifted levels (float32), the final 0 appended
    got = sampling.generate_latents(model.network, layout, noise, 4.0, 5, SHIFT, cache_prefix=True, sigmas=sigmas)
    want = hand_euler(velocity, noise, times)
    assert (want - noise).abs().max() > 0.05  # it moved
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    plain = sampling.generate_latents(model.network, layout, noise, 4.0, 5, SHIFT, cache_prefix=True)
    assert (plain - got).abs().max() > 1e-3

    timesteps = [980.0, 700.0, 300.0]
    ref.set_timesteps(timesteps=timesteps)  # (diffusers warns: its sigmas would be shifted, not its timesteps)
    times = [1 - float(t) / 1000 for t in ref.timesteps] + [1.0]
    got = sampling.generate_latents(model.network, layout, noise, 4.0, 4, SHIFT, cache_prefix=True,
                                    timesteps=timesteps)
    assert torch.allclose(got, hand_euler(velocity, noise, times), atol=1e-5, rtol=0)

    uni = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=SHIFT,
                                  final_sigmas_type="zero")
    uni.set_timesteps(sigmas=np.array(sigmas))
    x = noise.clone()
    for ts in uni.timesteps:
        x = uni.step(-velocity(x, 1 - float(ts) / 1000).float(), ts, x, return_dict=False)[0].float()
    got = sampling.generate_latents(model.network, layout, noise, 4.0, 5, SHIFT, method="unipc", cache_prefix=True,
                                    sigmas=sigmas)
    assert torch.allclose(got, x, atol=1e-5, rtol=0)


def test_the_pipeline_samples_at_the_grids_times(pipe):
    seen = []

    def keep(p, i, t, kw):
        seen.append(t)
        return {}

    pipe("a", sigmas=[0.9, 0.5], shift=1.0, seed=1, callback_on_step_end=keep, **CALL)
    assert seen == pytest.approx([0.1, 0.5], abs=1e-6)  # shift 1: the levels as given
    seen.clear()
    pipe("a", timesteps=[800, 250], seed=1, callback_on_step_end=keep, **CALL)
    assert seen == pytest.approx([0.2, 0.75], abs=1e-6)  # timesteps: never shifted


def test_the_record_repeats_the_run(pipe, tmp_path):
    from showo2_cli import api

    first = pipe("a red circle", sigmas=[1.0, 0.8, 0.35], shift=2.0, seed=11, **CALL)
    params = first.results[0].params
    assert params["sigmas"] == [1.0, 0.8, 0.35] and params["steps"] == 4 and params["shift"] == 2.0
    plans = api.plan_outputs("t2i", tmp_path / "out.png", ["a red circle"], [0], 1, seed=11)
    api.save_results(first.results, plans, "t2i")  # the files `showo2 t2i` writes
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["sigmas"] == [1.0, 0.8, 0.35]
    again = pipe(sidecar["prompt"], sigmas=sidecar["sigmas"], shift=sidecar["shift"], seed=sidecar["seed"],
                 num_inference_steps=sidecar["steps"], **CALL)
    assert torch.equal(again.images, first.images)
    stamped = pipe("a red circle", timesteps=np.array([900.0, 400.0]), seed=11, **CALL).results[0].params
    assert stamped["timesteps"] == [900.0, 400.0] and "sigmas" not in stamped
    assert "sigmas" not in pipe("a red circle", num_inference_steps=3, seed=11, **CALL).results[0].params


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sigmas": [1.0, 0.5], "timesteps": [1000, 500]}, r"^pass --sigmas or --timesteps, not both"),
    ({"sigmas": [0.5, 1.0]}, r"^--sigmas must fall strictly"),
    ({"sigmas": [1.0, 0.5, 0.5]}, r"^--sigmas must fall strictly"),
    ({"sigmas": [1.0, float("nan")]}, r"^--sigmas are noise levels in \(0, 1\] .*got nan$"),
    ({"sigmas": [float("inf")]}, r"got inf$"),
    ({"sigmas": [1.5, 0.5]}, r"got 1.5$"),
    ({"sigmas": [1.0, 0.0]}, r"got 0.0$"),
    ({"sigmas": [1.0, -0.5]}, r"got -0.5$"),
    ({"sigmas": [1.0, True]}, r"got True$"),
    ({"sigmas": [1.0, "0.5"]}, r"got '0.5'$"),
    ({"sigmas": []}, r"^--sigmas must hold 1 to 9999 values"),
    ({"sigmas": "1,0.5"}, r"^--sigmas must be a list of numbers"),
    ({"sigmas": np.ones((2, 2))}, r"^--sigmas must be a list of numbers"),
    ({"timesteps": [2000.0, 500.0]}, r"^--timesteps are diffusers timesteps in \(0, 1000\]"),
    ({"sigmas": [1.0, 0.5], "steps": 5}, r"^--steps 5 counts grid points \(4 model calls\) but --sigmas holds 2: "
                                         r"leave --steps out, or give 3$"),
    ({"sigmas": [1.0, 0.5], "method": "heun"}, r"^--sampler heun takes no custom sigmas \(diffusers' "
                                               r"FlowMatchHeunDiscreteScheduler .*: euler, flow-euler, unipc$"),
    ({"sigmas": [1.0, 0.5], "method": "dpm++"}, r"^--sampler dpm\+\+ takes no custom sigmas"),
    ({"timesteps": [999, 500], "method": "dpm++"}, r"^--sampler dpm\+\+ takes no custom timesteps"),
    ({"timesteps": [999, 500], "method": "unipc"}, r"^--sampler unipc takes no custom timesteps .*: euler, flow-euler$"),
])
def test_hostile_grids_are_refused_before_any_model(kwargs, message):
    with pytest.raises(UsageError, match=message):
        GenerateOptions(**kwargs).validate()


def test_the_pipeline_names_its_own_arguments(pipe):
    from diffusers import FlowMatchHeunDiscreteScheduler

    with pytest.raises(UsageError, match=r"^num_inference_steps 4 counts grid points \(3 model calls\) but sigmas "
                                         r"holds 2: leave num_inference_steps out, or give 3$"):
        pipe("a", sigmas=[1.0, 0.5], num_inference_steps=4, **CALL)
    heun = type(pipe).from_pipe(pipe, scheduler=FlowMatchHeunDiscreteScheduler())
    with pytest.raises(UsageError, match=r"^sampler heun takes no custom sigmas"):
        heun("a", sigmas=[1.0, 0.5], **CALL)


def test_points_that_meet_in_float32_are_refused():
    """Strictly falling as given, but equal once in float32 (and shifted): two steps from one point."""
    with pytest.raises(UsageError, match=r"^--timesteps give times that are not distinct in float32"):
        sampling.check_schedule("euler", 3, SHIFT, timesteps=[500.00001, 500.0])
    with pytest.raises(UsageError, match=r"^--sampler unipc cannot sample these --sigmas at --shift 100000"):
        sampling.check_schedule("unipc", 4, 1e5, sigmas=[1.0, 0.9999999, 0.5])
    sampling.check_schedule("euler", 4, SHIFT, sigmas=[1.0, 0.9999999, 0.5])  # distinct at 3: taken


def test_the_command_line_takes_sigmas_and_records_them(tiny_model_dir, tmp_path, capsys):
    from showo2_cli.cli import main

    out = tmp_path / "a.png"
    code = main(["t2i", "a cat", "--model", str(tiny_model_dir), "--size", "32", "--sigmas", "1,0.6,0.2",
                 "--seed", "5", "-o", str(out)])
    assert code == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sigmas"] == [1.0, 0.6, 0.2] and record["steps"] == 4
    capsys.readouterr()
    bad = tmp_path / "b.png"
    for args, message in ((["--sigmas", "1,x"], "--sigmas must be numbers separated by commas"),
                          (["--sigmas", "1,0.5", "--sampler", "heun"], "--sampler heun takes no custom sigmas")):
        assert main(["t2i", "a cat", "--model", str(tiny_model_dir), *args, "-o", str(bad)]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and not bad.exists()


def test_the_chats_t2i_takes_them_as_t2i_does(model, tmp_path):
    """The chat's /t2i reads t2i's own option definitions from a list of names: the new two were
    refused there as "the model and where it runs are set when the chat starts"."""
    import io

    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession

    screen = io.StringIO()
    session = ChatSession(Conversation(model), out=screen, err=screen)
    out = tmp_path / "c.png"
    assert session.handle(f"/t2i a cat -o {out} --size 32 --seed 2 --sigmas 1,0.6,0.2")
    assert json.loads(out.with_suffix(".json").read_text())["sigmas"] == [1.0, 0.6, 0.2], screen.getvalue()
    assert session.handle(f"/t2i a cat -o {tmp_path / 'd.png'} --timesteps 900,300 --sampler unipc")
    assert "--sampler unipc takes no custom timesteps" in screen.getvalue() and not (tmp_path / "d.png").exists()


def test_which_sampler_takes_which_grid_is_what_diffusers_schedulers_take():
    """As ``retrieve_timesteps`` judges a scheduler: by its ``set_timesteps``' arguments; DPM-Solver++
    names ``timesteps`` but fails on them with flow sigmas, so it is refused too."""
    import inspect

    import diffusers

    from showo2_cli.grids import CUSTOM_GRIDS
    from showo2_cli.options import SAMPLERS

    assert set(CUSTOM_GRIDS) == set(SAMPLERS)
    for sampler, (name, takes) in CUSTOM_GRIDS.items():
        named = set(inspect.signature(getattr(diffusers, name).set_timesteps).parameters)
        assert set(takes) <= named & {"sigmas", "timesteps"}, sampler
    dpm = sampling.diffusers_scheduler("dpm++", sampling.time_grid(5), SHIFT)
    with pytest.raises(TypeError):
        dpm.set_timesteps(timesteps=[999, 750, 500, 250])
