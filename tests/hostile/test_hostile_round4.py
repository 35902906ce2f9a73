"""Hostile inputs, round four: generation outputs under interruption, noise shared by several
processes, prompts files with unusual line breaks, default names taken by a sidecar, and
signals in the program's first and last second.

Each case was found by probing the released tool; each test fails on the code before its fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from showo2_cli import api
from showo2_cli import media as M
from showo2_cli import saving as O
from showo2_cli.cli import main
from showo2_cli.errors import InputError, UsageError
from showo2_cli.media import outputs
from showo2_cli.options import GenerateOptions

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _write_set(folder, value: int, overwrite: bool, fail_in_sidecar: BaseException | None = None):
    """An output's three files, as save_results writes them: image, latents, sidecar."""
    with M.output_group():
        M.write_image(folder / "o.png", np.full((8, 8, 3), value, np.uint8), overwrite=overwrite)
        with M.atomic_output(folder / "o.latents.safetensors", overwrite=overwrite) as tmp:
            save_file({"latents": torch.full((1,), float(value))}, str(tmp))
        with M.atomic_output(folder / "o.json", overwrite=overwrite) as tmp:
            if fail_in_sidecar is not None:
                raise fail_in_sidecar
            tmp.write_text(json.dumps({"value": value}))


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk gone")])
def test_an_interrupted_overwrite_keeps_the_old_output_whole(tmp_path, exc):
    """--overwrite: the image was renamed over the old one first; an interruption while the
    latents or sidecar were written then removed the new image, and the old one was gone."""
    _write_set(tmp_path, 10, overwrite=False)
    before = {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)}
    with pytest.raises((KeyboardInterrupt, M.OutputError)):
        _write_set(tmp_path, 200, overwrite=True, fail_in_sidecar=exc)
    assert {n: (tmp_path / n).read_bytes() for n in _files(tmp_path)} == before  # old set whole, no temporaries


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt during the test, even in a test run that ignores SIGINT
    (started as a background job)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_a_signal_during_the_renames_waits_until_the_set_is_in_place(tmp_path, monkeypatch, ctrl_c):
    """Ctrl-C arriving between two renames of one output is acted on once all of them are done."""
    real = outputs._commit
    sent = []

    def commit(tmp, target, overwrite):
        real(tmp, target, overwrite)
        if not sent:
            sent.append(target)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(outputs, "_commit", commit)
    with pytest.raises(KeyboardInterrupt):
        _write_set(tmp_path, 7, overwrite=False)
    assert _files(tmp_path) == ["o.json", "o.latents.safetensors", "o.png"]
    assert json.loads((tmp_path / "o.json").read_text()) == {"value": 7}


def test_a_signal_during_the_probe_leaves_no_temporary_file(tmp_path, monkeypatch, ctrl_c):
    """The early writability check creates and removes a hidden file: a Ctrl-C between the two
    left it behind."""
    real = outputs._make_temp

    def make(target):
        tmp = real(target)
        os.kill(os.getpid(), signal.SIGINT)
        return tmp

    monkeypatch.setattr(outputs, "_make_temp", make)
    with pytest.raises(KeyboardInterrupt):
        M.check_output_path(tmp_path / "o.png", probe=True)
    with pytest.raises(KeyboardInterrupt):
        with M.atomic_output(tmp_path / "p.png") as tmp:
            tmp.write_bytes(b"x")
    assert _files(tmp_path) == []


def test_noise_rows_follow_the_outputs_of_the_whole_prompts_file(tmp_path):
    """Two processes splitting a prompts file with one --noise file: each took rows 0.. of it (or
    refused a file with a row per output of the whole run)."""
    model = api.load("demo")
    prompts = ["a red circle on a white background", "a blue square on a white background"]
    opts = GenerateOptions(size=(32, 32), steps=3, seed=1, num_per_prompt=2, batch_size=4)
    grid = 32 // model.spec.vae_spatial
    noise = torch.randn(4, model.spec.latent_channels, grid, grid, generator=torch.Generator().manual_seed(0))
    whole = api.text_to_image(model, prompts, GenerateOptions(**{**opts.__dict__, "noise": noise}))
    for rank in (0, 1):  # WORLD_SIZE=2: each process has one prompt, global outputs 2*rank, 2*rank+1
        part = api.text_to_image(model, prompts[rank::2], GenerateOptions(**{**opts.__dict__, "noise": noise}),
                                 indices=[rank])
        assert [g.params["noise_row"] for g in part] == [2 * rank, 2 * rank + 1]
        for mine, ref in zip(part, whole[2 * rank:2 * rank + 2], strict=True):
            assert torch.allclose(mine.latents, ref.latents, atol=1e-3)  # batches of other sizes: rounding only
    with pytest.raises(InputError, match="one per output of the whole prompts file"):
        api.text_to_image(model, prompts[1:], GenerateOptions(**{**opts.__dict__, "noise": noise[:3]}), indices=[1])


def test_the_noise_file_is_recorded_with_the_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = 32 // api.load("demo").spec.vae_spatial
    save_file({"noise": torch.randn(2, 16, grid, grid)}, str(tmp_path / "n.safetensors"))
    code = main(["t2i", "a red circle", "-n", "2", "--size", "32", "--steps", "3", "-o", "o.png",
                 "--noise", "n.safetensors", "-m", "demo", "--json"])
    assert code == 0, capsys.readouterr().err
    for k in (0, 1):
        side = json.loads((tmp_path / f"o-00{k}.json").read_text())
        assert side["noise"] == "n.safetensors" and side["noise_row"] == k
        assert M.read_png_metadata(tmp_path / f"o-00{k}.png")["noise_row"] == k
        assert side["seed"] is None  # a seed was recorded that made nothing
    capsys.readouterr()
    code = main(["t2i", "a red circle", "-n", "2", "--size", "32", "--steps", "3", "--seed", "5", "--noise",
                 "n.safetensors", "-m", "demo"])  # no -o: the default name cannot be a seed's
    out = capsys.readouterr()
    assert code == 0 and "--seed has no effect" in out.err and "seed 5" not in out.err
    assert out.out.split() == ["a-red-circle-noise0.png", "a-red-circle-noise1.png"]
    assert json.loads((tmp_path / "a-red-circle-noise1.json").read_text())["seed"] is None


def test_prompts_are_lines_ended_by_newlines_only(tmp_path):
    """splitlines() also split at form feed, NEL and U+2028 (7 prompts from 4 lines, line numbers
    off by the extra breaks), and a byte-order mark stayed in the first prompt."""
    f = tmp_path / "p.txt"
    f.write_bytes("\ufeffa red circle\r\na blue\x0csquare\nline three\x85still three\nfour\u2028four\n".encode())
    assert O.read_prompts(prompts_file=f) == ["a red circle", "a blue\x0csquare", "line three\x85still three",
                                              "four\u2028four"]
    f.write_text("a\u2028b\n" + "x" * 10_001 + "\n")
    with pytest.raises(InputError, match="line 2:"):
        O.read_prompts(prompts_file=f)


def test_default_names_skip_names_whose_sidecar_or_latents_are_taken(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-red-circle-5.json").write_text("{}")
    plans = O.plan_outputs("t2i", None, ["a red circle"], [0], 1, 5)
    assert str(plans[0].path) == "a-red-circle-5-1.png"
    (tmp_path / "a-red-circle-5-1.latents.safetensors").write_bytes(b"x")
    plans = O.plan_outputs("t2i", None, ["a red circle"], [0], 1, 5, save_latents=True)
    assert str(plans[0].path) == "a-red-circle-5-2.png"
    # a name made free must not be another output's own name
    (tmp_path / "a-3.png").write_bytes(b"x")
    plans = O.plan_outputs("t2i", None, ["a 3", "b", "a"], [0, 1, 2], 1, 1)
    names = [str(p.path) for p in plans]
    assert len(set(names)) == 3 and "a-3.png" not in names


def _program(tmp_path, body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_while_the_command_line_imports_is_one_line_and_130(tmp_path):
    """A Ctrl-C in the first second (the command line's imports) printed an import traceback and
    killed the process by the signal."""
    proc = _program(tmp_path, """
        import builtins, sys
        real = builtins.__import__
        def importing(name, *a, **k):
            if name == "cli" or name.endswith(".cli"):
                raise KeyboardInterrupt
            return real(name, *a, **k)
        builtins.__import__ = importing
        from showo2_cli.launch import main
        sys.argv = ["showo2", "--version"]
        main()
    """)
    assert (proc.returncode, proc.stderr) == (130, "showo2: error: interrupted\n")


def test_ctrl_c_during_the_shutdown_ends_it_with_the_chosen_code(tmp_path):
    """A second Ctrl-C while the first one's clean-up ran (libraries' exit handlers) gave an
    'Exception ignored in atexit callback' traceback and death by SIGINT."""
    proc = _program(tmp_path, """
        import atexit, os, signal, time
        from showo2_cli.launch import exit_with
        def slow_library_exit():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        atexit.register(slow_library_exit)
        exit_with(130)
    """)
    assert proc.returncode == 130 and "Traceback" not in proc.stderr and "Exception" not in proc.stderr


# ---- training configs and data (found by probing `showo2 train`) --------------------------------

def _tiny_config():
    from conftest import REPO

    return REPO / "examples" / "train_tiny.toml"


@pytest.mark.parametrize("overrides, field", [
    ({"run.num_workers": 100_000}, "run.num_workers"),  # a fork storm of data workers
    ({"seed.x": 1}, "'seed' is not a table"),  # an internal TypeError
    ({"data.0.kind": "x"}, "'data' is not a table"),
    ({"optim.lr": 10 ** 400}, "optim.lr"),  # OverflowError converting to float
    ({"output_dir": "a\x00b"}, "NUL"),  # ValueError: embedded null byte
    ({"model.vae_init_logvar": 1e308}, "vae_init_logvar"),  # overflow once the VAE was built
    ({"model.spec.head_rope_scaling": 5}, "head_rope_scaling"),  # AttributeError while building
    ({"model.spec.head_rope_scaling": {"rope_type": "bogus"}}, "head_rope_scaling"),  # KeyError
    ({"model.spec.name": 5}, "'name' must be text"),  # trained, then the checkpoint could not load
    ({"model.spec.resolutions": []}, "'resolutions'"),
    ({"run.sample_steps": 10 ** 9}, "run.sample_steps"),  # passed --check, then blamed --steps
])
def test_configs_the_check_used_to_pass_or_crash_on(overrides, field):
    from showo2_cli.training.config import load_config

    if not _tiny_config().is_file():
        pytest.skip("no example config")
    with pytest.raises(UsageError, match=field.replace("(", r"\(")):
        load_config(_tiny_config(), overrides=overrides)


def test_data_paths_that_are_not_files_or_folders_are_refused(tmp_path):
    from showo2_cli.training.config import load_config

    if not _tiny_config().is_file():
        pytest.skip("no example config")
    (tmp_path / "z.jsonl").symlink_to("/dev/zero")
    with pytest.raises(UsageError, match="not a regular file or a folder"):
        load_config(_tiny_config(), overrides={"data": [{"kind": "pairs", "role": "t2i", "path": str(tmp_path / "z.jsonl")}]})
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UsageError, match="cache.*not a folder"):
        load_config(_tiny_config(), overrides={"data": [{"kind": "shapes", "role": "t2i", "cache": str(tmp_path / "afile")}]})


def test_caption_files_are_read_only_when_they_are_regular_and_small(tmp_path):
    """A FIFO caption file hung training beyond Ctrl-C; /dev/zero grew without bound."""
    from showo2_cli.training.captions import MAX_CAPTION_BYTES, read_caption_file

    os.mkfifo(tmp_path / "fifo.txt")
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    (tmp_path / "big.txt").write_bytes(b"a" * (MAX_CAPTION_BYTES + 1))
    (tmp_path / "ok.txt").write_text(" a red circle \n")
    for name in ("fifo.txt", "zero.txt", "big.txt"):
        with pytest.raises(InputError):
            read_caption_file(tmp_path / name, "caption_file")
    assert read_caption_file(tmp_path / "ok.txt", "c") == "a red circle"
    assert read_caption_file(tmp_path / "missing.txt", "c") == ""


def test_records_nested_too_deep_or_not_utf8_are_input_errors(tmp_path):
    from showo2_cli.training.records import iter_json_array

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "bytes.json").write_bytes(b'[{"image": "img\xff.png"}]')
    for name in ("deep.json", "bytes.json"):
        with pytest.raises(InputError):
            list(iter_json_array(tmp_path / name))


def test_a_spec_too_large_to_train_is_refused_before_it_is_built(tmp_path, monkeypatch):
    from showo2_cli.errors import ResourceError
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import load_config
    from showo2_cli.training.showo2_objective import check_training_memory

    if not _tiny_config().is_file():
        pytest.skip("no example config")
    cfg = load_config(_tiny_config(), overrides={"output_dir": str(tmp_path / "run")})
    spec = get_spec("tiny").replace(num_layers=5_000_000)
    with pytest.raises(ResourceError, match="model.spec"):
        check_training_memory(spec, cfg)
    check_training_memory(get_spec("tiny"), cfg)


def test_an_output_folder_name_too_long_is_exit_5(tmp_path, monkeypatch, capsys):
    """`init -o` and `train -o` with a 300-byte name were internal errors (OSError 36)."""
    monkeypatch.chdir(tmp_path)
    assert main(["init", "-o", "y" * 300]) == 5
    assert main(["train", str(_tiny_config()), "-o", "z" * 300, "--max-steps", "1"]) == 5
    err = capsys.readouterr().err
    assert "internal error" not in err and err.count("showo2: error: cannot") == 2


def test_temporary_files_a_crash_left_in_a_run_folder_are_cleaned(tmp_path):
    from showo2_cli.training.checkpoint import clean_partials

    left = [".metrics.jsonl.ab12.tmp.jsonl", ".train_config.json.cd34.tmp.json", ".latest.ef56.tmp"]
    for name in left + ["metrics.jsonl", ".data-index"]:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in clean_partials(tmp_path)) == sorted(left)
    assert _files(tmp_path) == [".data-index", "metrics.jsonl"]


def test_a_run_folder_loads_as_its_latest_checkpoint(tiny_model_dir, tmp_path):
    """The README's `--model runs/x` (the run folder for its latest) was refused: no config.json."""
    import shutil

    from showo2_cli.loading import find_files

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "checkpoint-000007")
    (run / "checkpoint-000007" / "trainer_state.pt").write_bytes(b"x")
    (run / "latest").write_text("checkpoint-000007\n")
    assert find_files(run).root == run / "checkpoint-000007"
    assert api.load(run).spec.name == "tiny"


def test_damaged_fields_of_a_training_state_name_the_file(tmp_path):
    """An elapsed time of "x", a step of 2**62 (exit 0, "step 4611686018427387904/3"), a random
    state of the wrong size or type were internal errors or nonsense on resume."""
    from showo2_cli.errors import ModelError
    from showo2_cli.training import checkpoint as ckpt

    folder = tmp_path / "checkpoint-000002"
    folder.mkdir()
    good = {"format": 1, "mode": "stage1", "step": 2, "optimizer": {"state": {}, "param_groups": []},
            "elapsed": 3.5, "rng": {"torch": torch.get_rng_state()}}
    for change in ({"elapsed": "x"}, {"elapsed": [1]}, {"step": 2 ** 62}, {"rng": {"torch": torch.zeros(3, dtype=torch.uint8)}},
                   {"rng": {"torch": torch.get_rng_state().float()}}, {"rng": [1]}):
        torch.save({**good, **change}, folder / ckpt.STATE_FILE)
        with pytest.raises(ModelError, match="trainer_state.pt"):
            ckpt.read_state(folder, "stage1", 1)
    torch.save(good, folder / ckpt.STATE_FILE)
    assert ckpt.read_state(folder, "stage1", 1)["elapsed"] == 3.5


def test_resuming_with_damaged_optimizer_moments_or_metrics(tmp_path, capsys):
    """Optimizer moments of the wrong shape slipped past load_state_dict (a RuntimeError at the first
    step); a metrics.jsonl line with a null or huge step, or bytes that are not UTF-8, crashed."""
    from showo2_cli.training import checkpoint as ckpt

    run = tmp_path / "run"
    args = ["train", str(_tiny_config()), "-o", str(run), "--set", "run.eval_every=0", "--set", "run.sample_every=0"]
    assert main(args + ["--max-steps", "2"]) == 0, capsys.readouterr().err
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": null}\n{"step": 1e400}\n\xff\xfe\n[[[[\n')
    assert main(args + ["--max-steps", "3"]) == 0, capsys.readouterr().err
    latest = ckpt.latest_checkpoint(run)
    state = torch.load(latest / ckpt.STATE_FILE, weights_only=True)
    for moments in state["optimizer"]["state"].values():
        moments["exp_avg"] = torch.zeros(7)
    torch.save(state, latest / ckpt.STATE_FILE)
    assert main(args + ["--max-steps", "4"]) == 4
    assert "optimizer state does not fit" in capsys.readouterr().err


def test_resuming_with_another_spec_or_with_lora_says_what_it_does(tmp_path, capsys):
    """A changed model.spec was silently ignored on resume; [lora] on a full run's resume blamed a
    --lora option nobody gave."""
    run = tmp_path / "run"
    args = ["train", str(_tiny_config()), "-o", str(run), "--set", "run.eval_every=0", "--set", "run.sample_every=0"]
    assert main(args + ["--max-steps", "1"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(args + ["--max-steps", "2", "--set", "model.spec.num_layers=3"]) == 0
    assert "model.spec differs from the checkpoint's" in capsys.readouterr().err
    assert main(args + ["--max-steps", "3", "--set", "lora.rank=4"]) == 2
    err = capsys.readouterr().err
    assert "lora.rank" in err and "--lora" not in err


@pytest.mark.parametrize("change", [{"shift": -3.0}, {"vae_spatial": 1_000_000}, {"und_mask_mode": "bogus"},
                                    {"steps": 1}, {"head_rope_scaling": {"rope_type": "llama3", "factor": "x"}}])
def test_model_spec_defaults_outside_what_the_options_take(tiny_model_dir, tmp_path, capsys, change):
    """`info` passed these; `t2i` then blamed --shift or --size, `caption` exited 2 on the mask mode."""
    from hostile_corpus import model_with_spec

    folder = model_with_spec(tiny_model_dir, tmp_path / "m", change)
    assert main(["info", str(folder)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and next(iter(change)) in err[0], err
