"""Probe G: follow-ups left by earlier probes (the steps range, recorded parameters that pass back
as options, written formats, VAE tiling, interrupted runs)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("steps", [0, 1, 10001])
def test_num_inference_steps_names_the_one_range(tiny_pipe, steps):
    # 0 said "must be at least 1", yet 1 was refused too ("between 2 and 10000")
    with pytest.raises(ValueError, match=rf"^num_inference_steps must be between 2 and 10000, got {steps}$"):
        tiny_pipe("a", num_inference_steps=steps, seed=1)


def test_generation_writes_every_video_format_decode_writes(tmp_path):
    """t2v/i2v refused .mkv and .mov though the video writer (and decode) writes them with the
    recorded parameters inside; generation now takes every written format that holds them."""
    import numpy as np

    from showo2_cli import media as M
    from showo2_cli.errors import UsageError
    from showo2_cli.saving import output_extension

    frames = np.zeros((5, 16, 16, 3), np.uint8)
    for ext in M.VIDEO_WRITE_EXTS:
        assert output_extension("t2v", f"x{ext}") == ext == output_extension("i2v", f"x{ext.upper()}").lower()
        M.write_video(tmp_path / f"v{ext}", frames, 8.0, metadata={"seed": 3})
        assert M.read_metadata(tmp_path / f"v{ext}")["seed"] == 3  # the record is inside
    for ext in M.RECORDING_IMAGE_EXTS:
        assert output_extension("t2i", f"x{ext}") == ext
    with pytest.raises(UsageError, match=r"extension .\.bmp.; use \.png, \.jpg, \.jpeg, \.webp for t2i"):
        output_extension("t2i", "x.bmp")  # no metadata in a BMP: the parameters would be lost


def test_a_tile_alone_smaller_than_the_default_stride_says_what_to_pass(tiny_pipe):
    # enable_tiling(tile_sample_min_height=128) failed naming a stride of 192 the caller never gave
    from showo2_cli.errors import UsageError

    vae = tiny_pipe.vae
    before = (vae.tile, vae.tiling)
    with pytest.raises(UsageError) as e:
        vae.enable_tiling(tile_sample_min_height=128)
    assert str(e.value) == ("tile_sample_stride_height (192, the current one: an unset stride keeps its value) must "
                            "not exceed tile_sample_min_height (128): the tiles would leave gaps; pass "
                            "tile_sample_stride_height=96 (or any multiple of 8 up to 128)")
    assert (vae.tile, vae.tiling) == before  # nothing changed
    with pytest.raises(UsageError, match=r"^tile_sample_stride_width \(72\) must not exceed .*width=48 "):
        vae.enable_tiling(tile_sample_min_width=64, tile_sample_stride_width=72)


def test_decode_in_tiles_records_the_tiles(tiny_model_dir, tmp_path, capsys):
    """`decode --vae-tiling on` blends tile seams (other pixels than a whole decode) but recorded
    nothing of it, as generation and encode do (`vae_tiles`)."""
    import json

    import torch

    from showo2_cli import media as M
    from showo2_cli.cli import main
    from showo2_cli.pipelines.latents import save_latents

    z = torch.randn(16, 1, 34, 34, generator=torch.Generator().manual_seed(0))  # 272 px: more than a 256 px tile
    save_latents(tmp_path / "z.safetensors", z, {"format": "showo2-latents", "version": 1, "kind": "image"})
    outs = {}
    for mode in ("on", "off"):
        out = tmp_path / f"{mode}.png"
        assert main(["decode", str(tmp_path / "z.safetensors"), "-o", str(out), "--model", str(tiny_model_dir),
                     "--vae-tiling", mode, "--json"]) == 0
        outs[mode] = (json.loads(capsys.readouterr().out), M.read_metadata(out))
    assert outs["on"][0]["vae_tiles"] == outs["on"][1]["vae_tiles"] == [256, 256, 192, 192]
    assert "vae_tiles" not in outs["off"][0] and "vae_tiles" not in outs["off"][1]


@pytest.mark.parametrize("json_mode", [False, True])
def test_an_interrupted_run_lists_the_outputs_it_wrote(tiny_model_dir, tmp_path, capsys, monkeypatch, json_mode):
    """Ctrl-C after two of four outputs kept them on disk but listed none: the caller could not
    tell what was written. They are listed on stdout (in --json's one object) before exit 130."""
    import json

    from showo2_cli import saving
    from showo2_cli.cli import main

    real, calls = saving.save_results, []

    def save_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(saving, "save_results", save_then_interrupt)
    args = ["t2i", "a", "-n", "4", "--batch-size", "1", "--steps", "2", "--seed", "5", "--model", str(tiny_model_dir),
            "-o", str(tmp_path / "x.png")] + (["--json"] if json_mode else [])
    assert main(args) == 130
    out, err = capsys.readouterr()
    written = [str(tmp_path / "x-000.png"), str(tmp_path / "x-001.png")]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["x-000.png", "x-001.png"]
    assert err.endswith("showo2: error: interrupted\n"), err
    if json_mode:
        report = json.loads(out)
        assert [r["output"] for r in report["outputs"]] == written and report["seed"] == 5
        assert report["error"]["exit_code"] == 130
    else:
        assert out.splitlines() == written


#: recorded keys that are facts about the output, not options of the run that made it
FACTS = {"showo2_version", "kind", "output", "prompt_tokens", "prompt_tokens_used", "negative_prompt_tokens",
         "steps_done", "noise_row"}
AS_OPTION = {"seed": "--seed", "steps": "--steps", "guidance": "--guidance", "shift": "--shift",
             "sampler": "--sampler", "vae": "--vae", "quantize": "--quantize", "dtype": "--dtype",
             "negative_prompt": "--negative-prompt", "frames": "--frames", "fps": "--fps", "noise": "--noise"}


def record_to_args(record: dict) -> list[str]:
    """An output's recorded parameters as the command line that makes it again (README: outputs are
    re-created from their records); a key with no way back fails."""
    args = [record["kind"]] + ([record["image"]] if "image" in record else []) + [record["prompt"]]
    for key, value in record.items():
        if key in AS_OPTION:
            args += [AS_OPTION[key], str(value)]
        elif key == "model":
            args += ["--model", value + (f"@{record['model_revision']}" if "model_revision" in record else "")]
        elif key == "lora":
            args += [a for path in value for a in ("--lora", path)]
        elif key == "vae_tiles":
            assert value == [256, 256, 192, 192], "only the default tiles have an option"
            args += ["--vae-tiling", "on"]
        else:
            assert key in FACTS | {"prompt", "image", "width", "height", "model_revision"}, f"{key} has no option"
    return args + ["--size", f"{record['width']}x{record['height']}"]


def test_a_record_passes_back_as_options(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A bf16 output recorded "dtype": "bfloat16", which --dtype refuses: the record is now what
    the options take (bf16), and passing every recorded key back makes the same image."""
    import json

    import numpy as np

    from showo2_cli import media as M
    from showo2_cli.cli import main

    (tmp_path / "m").symlink_to(tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["t2i", "a red ball", "--model", "./m", "--dtype", "bf16", "--vae-tiling", "on", "--size", "272x256",
                 "--steps", "3", "--seed", "4", "--sampler", "heun", "--shift", "2.5", "--guidance", "3",
                 "--negative-prompt", "blue", "-o", str(tmp_path / "a.png"), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["outputs"][0]
    assert first["dtype"] == "bf16" and first["model"] == "./m"  # as typed: no folder names of the machine
    assert main([*record_to_args(first), "-o", str(tmp_path / "b.png"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["outputs"][0]
    assert {**again, "output": ""} == {**first, "output": ""}
    assert np.array_equal(np.asarray(M.read_image(tmp_path / "a.png")), np.asarray(M.read_image(tmp_path / "b.png")))
