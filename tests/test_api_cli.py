"""The Python API writes exactly what the command line writes, and the options are checked once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from showo2_cli import api
from showo2_cli import media as M
from showo2_cli.cli import main
from showo2_cli.errors import UsageError
from showo2_cli.options import CaptionOptions, GenerateOptions, video_frames


def _same_outputs(a, b, ignore=("showo2_version",)):
    ra = json.loads(a.with_suffix(".json").read_text())
    rb = json.loads(b.with_suffix(".json").read_text())
    ra.pop("output"), rb.pop("output")
    ra.pop("latents", None), rb.pop("latents", None)
    for k in ignore:
        ra.pop(k, None), rb.pop(k, None)
    assert ra == rb
    assert np.array_equal(np.asarray(M.read_image(a)), np.asarray(M.read_image(b)))
    assert M.read_png_metadata(a) == M.read_png_metadata(b)


def test_api_and_cli_write_identical_outputs(tiny_model_dir, tmp_path, capsys):
    prompts = ["a red circle", "a blue square"]
    cli_out = tmp_path / "cli" / "img.png"
    cli_out.parent.mkdir()
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    code = main(["t2i", "--prompts-file", str(tmp_path / "p.txt"), "--model", str(tiny_model_dir), "-n", "2",
                 "--steps", "3", "--seed", "11", "-o", str(cli_out), "--save-latents", "--quiet"])
    capsys.readouterr()
    assert code == 0

    model = api.load(tiny_model_dir)
    api_out = tmp_path / "api" / "img.png"
    api_out.parent.mkdir()
    read = api.read_prompts(None, tmp_path / "p.txt")
    assert read == prompts
    opts = GenerateOptions(steps=3, seed=11, num_per_prompt=2)
    plans = api.plan_outputs("t2i", api_out, read, [0, 1], 2, seed=11, save_latents=True)
    results = api.text_to_image(model, read, opts)
    records = api.save_results(results, plans, "t2i")
    assert [r["output"] for r in records] == [str(p.path) for p in plans]
    names = sorted(p.name for p in cli_out.parent.iterdir())
    assert names == sorted(p.name for p in api_out.parent.iterdir())
    assert len(names) == 12  # 4 images, 4 sidecars, 4 latents files
    for plan in plans:
        _same_outputs(cli_out.parent / plan.path.name, plan.path)
        za, ma = api.load_latents(cli_out.parent / plan.latents.name)
        zb, mb = api.load_latents(plan.latents)
        assert np.array_equal(za.numpy(), zb.numpy())
        ma.pop("showo2_version", None), mb.pop("showo2_version", None)
        assert ma == mb


def test_outputs_are_checked_before_any_work(tiny_model_dir, tmp_path, capsys):
    """An existing latents file refuses the run before generating: no image, no sidecar."""
    out = tmp_path / "x.png"
    (tmp_path / "x.latents.safetensors").write_bytes(b"keep")
    code = main(["t2i", "a cat", "--model", str(tiny_model_dir), "--steps", "2", "-o", str(out), "--save-latents"])
    err = capsys.readouterr().err
    assert code == 5 and "exists" in err
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert (tmp_path / "x.latents.safetensors").read_bytes() == b"keep"


def test_options_validate_once_with_one_message():
    with pytest.raises(UsageError, match="--steps"):
        GenerateOptions(steps=1).validate()
    with pytest.raises(UsageError, match="--sampler"):
        GenerateOptions(method="rk9").validate()
    with pytest.raises(UsageError, match="--shift"):
        GenerateOptions(shift=1e308).validate()
    with pytest.raises(UsageError, match="--mask"):
        CaptionOptions(mask_mode="odd").validate()
    with pytest.raises(UsageError, match="question"):
        CaptionOptions(questions=["  "]).validate()
    with pytest.raises(UsageError, match="--repetition-penalty"):
        CaptionOptions(repetition_penalty=-1.0).validate()
    assert CaptionOptions(repetition_penalty=1.1).sampling().repetition_penalty == 1.1
    assert video_frames(17) == (17, None)
    assert video_frames(10)[0] == 13 and "rounded" in video_frames(10)[1]
    with pytest.raises(UsageError, match="negative prompt of 10001 characters"):
        GenerateOptions(negative_prompt="x" * 10001).validate()
    with pytest.raises(UsageError, match="--negative-prompt must be text"):
        GenerateOptions(negative_prompt=["a", 3]).validate()
    with pytest.raises(UsageError, match="2 negative prompts for 3 prompts"):
        GenerateOptions(negative_prompt=["a", "b"]).negatives_for(3)
    assert GenerateOptions(negative_prompt="n").negatives_for(2) == ["n", "n"]


def test_a_bad_negative_prompt_fails_before_the_model_loads(tmp_path, capsys):
    out = tmp_path / "x.png"
    code = main(["t2i", "a cat", "--model", str(tmp_path / "no-such-model"), "--negative-prompt", "x" * 10001,
                 "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "negative prompt" in err  # not the missing model
    assert not out.exists()


def test_cli_help_lists_groups_and_choices(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for panel in ("Generate", "Understand", "Latents", "Models", "Train"):
        assert panel in out
    assert out.index("t2i") < out.index("info")
    assert main(["t2i", "--help"]) == 0
    out = capsys.readouterr().out
    assert "euler" in out and "heun" in out and "bf16" in out


def test_cli_reference_is_current():
    """docs/cli.md is generated from --help (`python -m showo2_cli.cli.reference > docs/cli.md`)."""
    from conftest import REPO
    from showo2_cli.cli.reference import render

    text = render()
    assert (REPO / "docs" / "cli.md").read_text() == text, "regenerate docs/cli.md"
    # help strings are Rich markup: a bracketed word must be escaped or it vanishes ("run with )")
    assert "run with [lora])" in text and "every [[data]] source" in text and "with )" not in text


def test_latents_files_get_the_mode_of_other_outputs(tmp_path):
    import os
    import stat

    import torch

    from showo2_cli.pipelines.latents import save_latents

    out = save_latents(tmp_path / "z.latents.safetensors", torch.zeros(16, 1, 2, 2), {"kind": "image"})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask


def test_generation_hands_over_each_output_as_its_batch_finishes():
    """``on_result``: outputs arrive one by one in job order (the CLI saves each at once, so a
    long prompts file holds one batch in memory and an interruption keeps what is done)."""
    import numpy as np

    from showo2_cli import api

    model = api.load("demo")
    opts = api.GenerateOptions(seed=5, steps=3, num_per_prompt=2, batch_size=3)
    prompts = ["a red circle", "a blue square"]
    kept = api.text_to_image(model, prompts, opts)
    seen, batches = [], []

    def progress(phase, done, total):
        if phase == "decoding" and done == 0:
            batches.append(len(seen))  # outputs handed over before this batch's decoding

    assert api.text_to_image(model, prompts, opts, progress=progress, on_result=seen.append) == []
    assert [(g.prompt, g.seed) for g in seen] == [(g.prompt, g.seed) for g in kept]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(seen, kept, strict=True))
    assert batches == [0, 3]  # the first batch's three outputs were out before the second ran


def test_scheduler_is_the_sampler_option(tiny_model_dir, tmp_path, capsys):
    """--scheduler (the issue's and diffusers' word) is --sampler: flow-euler, diffusers' Euler
    scheduler on the official grid, writes the image euler writes."""
    outs = {}
    for flag, name in (("--sampler", "euler"), ("--scheduler", "flow-euler")):
        outs[name] = tmp_path / f"{name}.png"
        code = main(["t2i", "a red circle", "--model", str(tiny_model_dir), "--steps", "4", "--seed", "3", flag, name,
                     "-o", str(outs[name]), "--quiet"])
        assert code == 0
    capsys.readouterr()
    assert json.loads(outs["flow-euler"].with_suffix(".json").read_text())["sampler"] == "flow-euler"
    a, b = (np.asarray(M.read_image(p)).astype(int) for p in outs.values())
    assert np.abs(a - b).max() <= 1
