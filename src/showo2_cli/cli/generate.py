"""``t2i``, ``t2v``, ``i2v``: parse, build :class:`~showo2_cli.options.GenerateOptions`, plan the
outputs, generate, save (all in the library), render."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import Showo2Error, UsageError, short
from ..grids import parse_grid
from ..options import (
    DEFAULT_FPS,
    DEFAULT_SAMPLER,
    DEFAULT_VIDEO_FRAMES,
    MAX_SIDE,
    STEPS_RANGE,
    GenerateOptions,
    RuntimeOptions,
    check_fps,
    random_seed,
    video_frames,
)
from ..processes import process_rank, process_share
from .common import (
    JsonOpt,
    LoraOpt,
    LoraWeightOpt,
    ModelOpt,
    OverwriteOpt,
    ProgressReporter,
    QuietOpt,
    Sampler,
    VaeOpt,
    adapters,
    emit,
    is_file,
    load_model,
    model_name,
    notice,
    one_voice,
    partial,
    setup,
    value,
    with_runtime_options,
)

SizeOpt = Annotated[str | None, typer.Option("--size", help=f"N or WIDTHxHEIGHT, multiples of 8 x the model's patch size (16 for the released models), at most {MAX_SIDE} (default: the model's resolution).")]
StepsOpt = Annotated[int | None, typer.Option("--steps", min=STEPS_RANGE[0], max=STEPS_RANGE[1], help="Sampling grid points; steps-1 model calls (default: the model's, 50 for the official ones, 30 for the demo).")]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Classifier-free guidance scale, 0 to 100 (default: the model's, 5.0 official, 4.0 demo; 0 = none).")]
ShiftOpt = Annotated[float | None, typer.Option("--shift", help="Time-grid shift towards the noise end, > 0 (default: the model's, 3.0). Below 1 the steps crowd the clean end: at 0.01 the first of 30 steps takes the noise level from 1 to 0.22, poor images with every --sampler.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Base seed, 0 to 2^63-1 (random if absent; printed and recorded; not used with --noise).")]
NumOpt = Annotated[int, typer.Option("--num-images", "-n", min=1, max=1000, help="Outputs per prompt.")]
PromptsFileOpt = Annotated[Path | None, typer.Option("--prompts-file", help="One prompt a line; a .jsonl: one JSON record a line, a .json: an array of them (a record: the prompt, or an object with a prompt, caption or text field); '-' reads stdin (lines).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=1024, help="Outputs generated together.")]
NoiseOpt = Annotated[Path | None, typer.Option("--noise", help="Exact starting noise (.safetensors), to reproduce a run.")]
SaveLatOpt = Annotated[bool, typer.Option("--save-latents", help="Also write <output>.latents.safetensors.")]
SamplerOpt = Annotated[Sampler, typer.Option("--sampler", "--scheduler", help="The ODE solver (euler is the official one; flow-euler, unipc and dpm++ are diffusers' schedulers).")]
FramesOpt = Annotated[int, typer.Option("--frames", help="Frames, 1+4k (others rounded up with a notice).")]
FpsOpt = Annotated[float, typer.Option("--fps", help="Frames per second of the output (0.5 to 240).")]
SigmasOpt = Annotated[str | None, typer.Option("--sigmas", help="A custom time grid as diffusers takes it: noise levels, one per model call, from 1 (noise) down, without the final 0, comma-separated (1.0,0.75,0.5,0.25); shifted by --shift as diffusers' flow schedulers shift them (--shift 1: as given, to float32 rounding); sets --steps to their count + 1; samplers euler, flow-euler, unipc; recorded.")]
TimestepsOpt = Annotated[str | None, typer.Option("--timesteps", help="A custom time grid in diffusers' timesteps (noise level x 1000, from 1000 down; comma-separated: 999,750,500,250), used as given (not shifted); samplers euler, flow-euler; recorded.")]
NegativeOpt = Annotated[str, typer.Option("--negative-prompt", help="What guidance steers away from, in place of the official empty prompt (no effect with --guidance 0 or 1).")]
VIDEO_HELP = "out.mp4/.webm/.gif/.mov/.mkv"


def run(kind: str, prompt: str | None, prompts_file: Path | None, output: str | None, opts: GenerateOptions,
        model: str | None, vae: Path | None, runtime: RuntimeOptions, noise: Path | None, save_latents: bool,
        fps: float | None, image: Path | None, size: str | None, overwrite: bool,
        lora: list | None = None) -> int:
    """The one generation command: every check before the model loads, then generate and save.
    Under a launch of several processes, each makes its share of the run's outputs
    (:func:`~showo2_cli.processes.process_share`: the results do not depend on the number of
    processes) and process 0 reports the whole run, once (:func:`_report_once`)."""
    from .. import media as M
    from .. import saving as O
    from ..model_files import sizes_at_hand

    # sizes as the model takes them (its patch_size: its spec's, or an official config.json's) when its
    # config is at hand, else the released 16 px
    spec, multiple = sizes_at_hand(model if model is not None else os.environ.get("SHOWO2_MODEL") or None)
    opts.size = M.parse_size(size, multiple)
    if noise is not None:  # the outputs start from the file's noise: no seed is used or recorded
        if opts.seed is not None:
            notice("--seed has no effect with --noise (the noise file is the starting point)")
        opts.seed = None
    drawn = noise is None and opts.seed is None
    if drawn:
        opts.seed = random_seed()
    opts.validate(spec, multiple)
    check_fps(fps)
    if opts.negative_prompt.strip() and opts.guidance in (0.0, 1.0):
        notice(f"--negative-prompt has no effect with --guidance {opts.guidance:g} (no unconditional branch)")
    if prompt == "-":  # the Unix convention (`echo "a cat" | showo2 t2i -`): stdin, as --prompts-file -
        if prompts_file is not None:
            raise UsageError("PROMPT '-' reads the prompts from stdin: give it or --prompts-file, not both")
        prompt, prompts_file = None, Path("-")
    rank, world = process_rank()
    if world > 1 and prompts_file is not None and str(prompts_file) == "-":
        # the launcher hands stdin to process 0 alone: the others read nothing
        raise UsageError("prompts from stdin reach only the first of several processes: use --prompts-file FILE "
                         "under a launch")
    if prompts_file is not None and str(prompts_file) == "-" and sys.stdin is not None and sys.stdin.isatty():
        notice("reading the prompts from the terminal, one a line; Ctrl-D ends them")  # not a silent hang
    prompts = O.read_prompts(prompt, prompts_file)  # checked prompts (the pipeline checks them again)
    with _launch_group(world) as group:
        if drawn and group is not None:  # one run, one seed: process 0's (output k uses seed + k anywhere)
            opts.seed = int(group.shared(opts.seed))
        try:  # every process plans (and checks) the whole run's outputs: a taken name fails all alike
            plans = O.plan_outputs(kind, output, prompts, list(range(len(prompts))), opts.num_per_prompt, opts.seed,
                                   overwrite, None, save_latents)
            O.check_inputs_kept(plans, {"--prompts-file": prompts_file, "--noise": noise, "image": image})
        except Showo2Error as e:
            e.alike = True
            raise
        if group is not None:
            group.barrier()  # none writes before every process has checked
        share = process_share(len(plans), opts.batch_size, rank, world)
        records: list[dict] = []

        def report(done: list[dict]) -> tuple[dict, str | None]:
            return ({"outputs": done, "seed": opts.seed, "rank": 0 if group else rank, "world_size": world},
                    "\n".join(r["output"] for r in done) if done else None)

        try:
            _make(kind, prompts, plans[share.start:share.stop], share if world > 1 else None, opts, model, vae,
                  noise, fps, image, overwrite, runtime, lora, records)
        except BaseException as e:  # a failure or Ctrl-C after some outputs were written: say which
            if records:
                partial(*report(records))
            if group is None or not isinstance(e, Exception):  # one process (or an interruption: every one has it)
                raise
            failure = e
        else:
            failure = None
        if group is not None:
            return _report_once(group, rank, records, failure, report)
    emit(*report(records))
    return 0


def _launch_group(world: int):
    """The launch's processes joined (:func:`~showo2_cli.runtime.launch_group`); for one process,
    nothing (torch is not imported before the checks)."""
    if world <= 1:
        from contextlib import nullcontext

        return nullcontext()
    from ..runtime import launch_group

    return launch_group()


def _make(kind: str, prompts: list[str], plans: list, share: range | None, opts: GenerateOptions, model, vae,
          noise, fps, image, overwrite: bool, runtime, lora, records: list[dict]) -> None:
    """Load the model and make the outputs of ``share`` (all: None) of the run as ``plans``,
    each saved (and its record added to ``records``) as soon as its batch is done."""
    from .. import media as M
    from .. import saving as O
    from ..footprint import generation_parts

    note = M.fps_note(plans[0].path, fps) if plans and kind != "t2i" else None
    if note:
        notice(note)
    if image is not None:
        M.read_image(image)  # a bad image fails before the model loads
    opts.noise = O.load_noise(noise)
    name = model_name(model)
    if not plans:  # this process's share of a launch is empty: it loads nothing
        return
    check_memory_before_loading(name, kind, opts, min(opts.batch_size, len(plans)), runtime, len(prompts), vae)
    heads, vae_parts = generation_parts(kind == "i2v", opts.frames)  # (i2v of one frame, the image's: no head)
    bundle = load_model(name, runtime, vae=vae, lora=lora, vae_parts=vae_parts,  # t2i/t2v never encode
                        heads=heads)  # nor the language head (an untied one is its own weights)
    if process_rank()[0] == 0:  # one run, one seed (agreed): the main process says it
        notice(f"seed {opts.seed}" if noise is None else f"starting noise from {short(str(noise), 80)}")
    from .. import pipelines as P

    said: set[str] = set()  # a prompt's notes, once for all its outputs

    def save(item) -> None:  # each output is written as soon as its batch is done (an interruption keeps it)
        for note in item.unused_prompt_notes():
            if note not in said:
                said.add(note)
                notice(note)
        records.extend(O.save_results([item], [plans[len(records)]], kind, fps, image, overwrite, noise=noise))

    with ProgressReporter() as bar:
        if kind == "t2i":
            P.text_to_image(bundle, prompts, opts, progress=bar, on_result=save, outputs=share)
        elif kind == "t2v":
            P.text_to_video(bundle, prompts, opts, progress=bar, on_result=save, outputs=share)
        else:
            P.image_to_video(bundle, image, prompts, opts, progress=bar, on_result=save, outputs=share)
    if len(records) != len(plans):
        raise UsageError(f"{len(records)} result(s) but {len(plans)} planned output(s)")


def _report_once(group, rank: int, records: list[dict], failure: Exception | None, report) -> int:
    """One run of a launch's processes, reported once: each hands process 0 what it wrote, the
    notices it kept and how it failed; process 0 says the notices it has not said, then lists the
    whole run's outputs in the one-process order (each process made a contiguous share), or, if a
    process failed, those written and the first failure's one line. Every process exits with its code."""
    import traceback

    from . import describe
    from .common import STATE, held_notices

    if failure is not None and STATE["debug"]:
        traceback.print_exception(failure)
    mine = {"records": records, "notices": held_notices(), "failure": describe(failure) if failure else None}
    if records:
        partial(*report(records))  # what this process wrote, should the others not come
    try:
        everyone = group.gathered(mine)
    except RuntimeError as e:  # gloo's "Connection closed by peer": a process was killed (SIGKILL, OOM killer)
        raise Showo2Error("another process of the launch ended before it handed over its outputs "
                          "(the launcher's report names it)") from e
    verdict = None
    if rank == 0:
        records = [r for part in everyone for r in part["records"]]
        for part in everyone[1:]:
            for line in part["notices"]:
                if line not in STATE["said"]:
                    notice(line)
        verdict = next((part["failure"] for part in everyone if part["failure"]), None)
    verdict = group.shared(verdict)
    if verdict is None:
        if rank == 0:
            emit(*report(records))
        STATE["emitted"] = True  # the run's result is out (process 0 says it)
        return 0
    if rank == 0:
        if records:
            partial(*report(records))
        if failure is not None:
            raise failure
    # the run's first failure, as its process met it: process 0 says it; another process exits
    # with its code once the launcher ends it (as process 0 exits), so process 0's report is whole
    message, code, kind = verdict
    error = Showo2Error(message)
    error.exit_code, error.kind, error.alike = code, kind, True
    raise error


def _before_loading(name: str, runtime, parts: tuple, vae=None) -> tuple | None:
    """What a memory check before the load needs of the model ``name`` (``parts``: the heads and VAE
    halves its job runs, :data:`~showo2_cli.footprint.GENERATION_PARTS`...) with the VAE the load
    will read (``vae``: ``--vae``; else the model's own, then ``$SHOWO2_VAE``): its spec, dtype,
    device, the VAE's base_dim (None: no VAE) and the weights it runs, the loaded check's figures;
    None when its folder does not tell its spec (an official checkpoint: the pipeline checks once
    it is loaded)."""
    from ..model_files import find_files
    from .common import fetch_if_needed

    fetch_if_needed(name, vae)  # the load's own download (notice, progress bars), not a silent one of its own
    files = find_files(name, vae)  # a name that names nothing fails here, before torch is imported
    if files.format != "showo2":
        return None
    from ..errors import ModelError
    from ..model_config import spec_from_files
    from ..runtime import pick_device, pick_dtype
    from ..weights import read_json

    spec = spec_from_files(files, {})
    import torch

    from ..footprint import files_weights_gb
    from ..modeling.vae_files import check_base_dim, header_sizes

    try:
        header = None if files.vae is None else header_sizes(files.vae)
    except ModelError:  # a VAE the load cannot read: its own error says why, not a guess of its size
        return None
    base_dim = None if files.vae is None else 96
    if header is not None and header[0] is not None:  # the weights' shapes decide it, as the load's
        base_dim = header[0]
    elif files.vae is not None and (Path(files.vae) / "config.json").is_file():  # a pickled file's folder
        config = Path(files.vae) / "config.json"
        try:  # (the load takes it from the weights' shapes: a config's 1e308 or 10^9 is no figure to guess by)
            base_dim = check_base_dim(read_json(config).get("base_dim", 96), config)
        except ModelError:
            base_dim = 96
    dev = pick_device(runtime.device)
    dtype = pick_dtype(runtime.dtype, dev)
    weights = files_weights_gb(spec, dtype, runtime.quantize, header, *parts)
    if runtime.offload != "none" and torch.device(dev).type != "cpu":  # offload keeps them in CPU memory: none
        weights = (weights[0], weights[0])  # takes the device's room at load (a limit still counts them all)
    return spec, dtype, dev, base_dim, weights


def check_memory_before_loading(name: str, kind: str, opts: GenerateOptions, batch: int, runtime,
                                prompts: int = 1, vae=None) -> None:
    """Refuse a job that cannot fit, or whose ``--noise`` has the wrong shape for the run's
    ``prompts``, before the weights load, when the model's folder tells its spec (our own format;
    for an official checkpoint the pipeline checks once it is loaded)."""
    from ..footprint import generation_parts

    known = _before_loading(name, runtime, generation_parts(kind == "i2v", opts.frames), vae)
    if known is None:
        return
    from .. import pipelines as P

    spec, dtype, dev, base_dim, weights = known
    video = kind != "t2i"
    if opts.noise is not None:
        from dataclasses import replace

        sized = replace(opts, size=opts.size or spec.default_size(video))
        P.noise_rows(opts.noise, spec, sized, video, opts.frames if video else 1, list(range(prompts)))
    from ..sampling import check_schedule

    resolved = opts.resolved(spec, video)  # (steps, shift: the model's where not given, or the custom grid's)
    check_schedule(opts.method, resolved.steps, resolved.shift, opts.sigmas, opts.timesteps)  # before the load
    P.check_generation_memory(spec, dtype, opts.size or spec.default_size(video),
                              opts.frames if video else 1, video, batch, opts.max_memory_gb, dev, base_dim or 96,
                              runtime.vae_tiling, weights=weights, from_image=kind == "i2v")


def check_caption_before_loading(name: str, kind: str, opts, runtime, vae=None) -> None:
    """``caption``'s check before the load: the encoding of its image or video frames (the loaded
    check of :func:`~showo2_cli.pipelines.understand.check_caption_memory`, the same figures), with
    the weights an answer runs, so a caption that cannot fit is refused before a long load."""
    from ..footprint import UNDERSTANDING_PARTS

    known = _before_loading(name, runtime, UNDERSTANDING_PARTS, vae)
    if known is None:
        return
    from ..pipelines.understand import check_understanding_memory

    spec, dtype, dev, base_dim, weights = known
    if base_dim is None:  # no VAE: the load's own error says so
        return
    video = kind == "video"
    check_understanding_memory(spec, dtype, (opts.frames or spec.und_video_frames) if video else 1,
                               opts.size or spec.resolution, video, opts.max_memory_gb, dev, base_dim, weights,
                               tiling=runtime.vae_tiling)


def grid_options(sigmas: str | None, timesteps: str | None) -> dict:
    """``--sigmas`` / ``--timesteps`` as the options' lists (:func:`showo2_cli.grids.parse_grid`)."""
    return {"sigmas": parse_grid(sigmas, "--sigmas"), "timesteps": parse_grid(timesteps, "--timesteps")}


def _frames(frames: int) -> int:
    rounded, note = video_frames(frames)
    if note:
        notice(note)
    return rounded


@with_runtime_options
def t2i(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; '-' reads the prompts from stdin, one a line (or use --prompts-file).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="out.png/.jpg/.webp; several outputs get -000, -001, ...")] = None,
    model: ModelOpt = None, vae: VaeOpt = None, lora: LoraOpt = None, lora_weight: LoraWeightOpt = None,
    size: SizeOpt = None, steps: StepsOpt = None,
    guidance: GuidanceOpt = None, shift: ShiftOpt = None, seed: SeedOpt = None, num_images: NumOpt = 1,
    prompts_file: PromptsFileOpt = None, batch_size: BatchOpt = 4, noise: NoiseOpt = None,
    save_latents: SaveLatOpt = False, negative_prompt: NegativeOpt = "", sampler: SamplerOpt = DEFAULT_SAMPLER,
    sigmas: SigmasOpt = None, timesteps: TimestepsOpt = None, runtime: RuntimeOptions = None,
    overwrite: OverwriteOpt = False, json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Text to image."""
    setup(json_mode, quiet)
    one_voice()
    opts = GenerateOptions(steps=steps, guidance=guidance, shift=shift, seed=seed, num_per_prompt=num_images,
                           batch_size=batch_size, frames=1, method=value(sampler), max_memory_gb=runtime.max_memory_gb,
                           negative_prompt=negative_prompt, **grid_options(sigmas, timesteps))
    return run("t2i", prompt, prompts_file, output, opts, model, vae, runtime, noise, save_latents, None, None,
        size, overwrite, adapters(lora, lora_weight))


@with_runtime_options
def t2v(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; '-' reads the prompts from stdin, one a line (or use --prompts-file).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help=VIDEO_HELP)] = None,
    frames: FramesOpt = DEFAULT_VIDEO_FRAMES, fps: FpsOpt = DEFAULT_FPS,
    model: ModelOpt = None, vae: VaeOpt = None, lora: LoraOpt = None, lora_weight: LoraWeightOpt = None,
    size: SizeOpt = None, steps: StepsOpt = None,
    guidance: GuidanceOpt = None, shift: ShiftOpt = None, seed: SeedOpt = None, num_images: NumOpt = 1,
    prompts_file: PromptsFileOpt = None, batch_size: BatchOpt = 1, noise: NoiseOpt = None,
    save_latents: SaveLatOpt = False, negative_prompt: NegativeOpt = "", sampler: SamplerOpt = DEFAULT_SAMPLER,
    sigmas: SigmasOpt = None, timesteps: TimestepsOpt = None, runtime: RuntimeOptions = None,
    overwrite: OverwriteOpt = False, json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Text to video (needs a checkpoint trained for video generation, e.g. the bundled demo)."""
    setup(json_mode, quiet)
    one_voice()
    opts = GenerateOptions(steps=steps, guidance=guidance, shift=shift, seed=seed, num_per_prompt=num_images,
                           batch_size=batch_size, frames=_frames(frames), method=value(sampler),
                           max_memory_gb=runtime.max_memory_gb, negative_prompt=negative_prompt,
                           **grid_options(sigmas, timesteps))
    return run("t2v", prompt, prompts_file, output, opts, model, vae, runtime, noise, save_latents, fps, None,
        size, overwrite, adapters(lora, lora_weight))


@with_runtime_options
def i2v(
    image: Annotated[Path, typer.Argument(help="The first frame.")],
    prompt: Annotated[str | None, typer.Argument(help="The prompt; '-' reads the prompts from stdin, one a line (or use --prompts-file).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help=VIDEO_HELP)] = None,
    frames: FramesOpt = DEFAULT_VIDEO_FRAMES, fps: FpsOpt = DEFAULT_FPS,
    model: ModelOpt = None, vae: VaeOpt = None, lora: LoraOpt = None, lora_weight: LoraWeightOpt = None,
    size: SizeOpt = None, steps: StepsOpt = None,
    guidance: GuidanceOpt = None, shift: ShiftOpt = None, seed: SeedOpt = None, num_images: NumOpt = 1,
    prompts_file: PromptsFileOpt = None, batch_size: BatchOpt = 1, noise: NoiseOpt = None,
    save_latents: SaveLatOpt = False, negative_prompt: NegativeOpt = "", sampler: SamplerOpt = DEFAULT_SAMPLER,
    sigmas: SigmasOpt = None, timesteps: TimestepsOpt = None, runtime: RuntimeOptions = None,
    overwrite: OverwriteOpt = False, json_mode: JsonOpt = False, quiet: QuietOpt = False,
):
    """Image to video: the image's latent is the fixed first latent frame."""
    setup(json_mode, quiet)
    one_voice()
    if prompt not in (None, "-") and not is_file(str(image)) and is_file(prompt):  # `i2v "a cat" cat.png`
        raise UsageError(f"the image comes first, then the prompt: showo2 i2v {short(shlex.quote(prompt), 120)} "
                         f"{short(shlex.quote(str(image)), 120)}")
    opts = GenerateOptions(steps=steps, guidance=guidance, shift=shift, seed=seed, num_per_prompt=num_images,
                           batch_size=batch_size, frames=_frames(frames), method=value(sampler),
                           max_memory_gb=runtime.max_memory_gb, negative_prompt=negative_prompt,
                           **grid_options(sigmas, timesteps))
    return run("i2v", prompt, prompts_file, output, opts, model, vae, runtime, noise, save_latents, fps, image,
        size, overwrite, adapters(lora, lora_weight))


__all__ = ["t2i", "t2v", "i2v", "run"]
