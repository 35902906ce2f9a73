"""Generation under `accelerate launch` (probe AE): the run's outputs shared out evenly in
contiguous shares, each made as one process makes it; one list (one `--json` object) and each
notice once, from process 0; a failure on one process reported once, by process 0."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import showo2_cli
from showo2_cli import api, runtime, saving
from showo2_cli.cli import main
from showo2_cli.cli.common import STATE, live_stderr
from showo2_cli.errors import UsageError
from showo2_cli.options import GenerateOptions
from showo2_cli.processes import process_share

SRC = str(Path(showo2_cli.__path__[0]).parent)  # the sources under test


@pytest.mark.parametrize("total, batch, world, shares", [
    (8, 4, 2, [(0, 4), (4, 8)]),  # one prompt, -n 8: 4 and 4 (it ran on process 0 alone), whole batches
    (9, 4, 2, [(0, 4), (4, 9)]),  # whole batches while no share passes ceil(9/2) = 5
    (3, 4, 2, [(0, 2), (2, 3)]),  # fewer outputs than a batch: by output
    (1, 4, 2, [(0, 1), (1, 1)]),
    (5, 1, 2, [(0, 3), (3, 5)]),  # video's batch of 1
    (10, 4, 3, [(0, 4), (4, 8), (8, 10)]),
    (16, 4, 3, [(0, 6), (6, 11), (11, 16)]),  # whole batches would give one process 8
])
def test_shares_are_contiguous_even_and_cut_at_batches_when_that_stays_even(total, batch, world, shares):
    got = [process_share(total, batch, r, world) for r in range(world)]
    assert [(s.start, s.stop) for s in got] == shares
    for total, batch, world in [(t, b, w) for t in range(0, 40) for b in (1, 2, 3, 4, 8) for w in (2, 3, 4, 8)]:
        got = [process_share(total, batch, r, world) for r in range(world)]
        assert [j for s in got for j in s] == list(range(total))  # every output once, in run order
        assert max(len(s) for s in got) == -(-total // world)  # as even as a split by output


def test_a_share_of_the_outputs_is_made_as_the_whole_run_makes_it():
    """`outputs=` makes part of a run: the same seeds, noise rows and, for a share of whole
    batches, the same bits as the whole run's outputs."""
    model = api.load("demo")
    opts = GenerateOptions(size=(32, 32), steps=2, seed=40, num_per_prompt=2, batch_size=2)
    prompts = ["a red circle on a white background", "a blue square"]
    whole = api.text_to_image(model, prompts, opts)
    part = api.text_to_image(model, prompts, opts, outputs=api.process_share(4, 2, 1, 2))  # the second batch
    assert [(g.prompt_index, g.seed) for g in part] == [(1, 42), (1, 43)]
    for mine, ref in zip(part, whole[2:], strict=True):
        assert torch.equal(mine.latents, ref.latents) and np.array_equal(mine.frames, ref.frames)
    grid = 32 // model.spec.vae_spatial
    noise = torch.randn(4, model.spec.latent_channels, grid, grid, generator=torch.Generator().manual_seed(0))
    noised = GenerateOptions(**{**opts.__dict__, "noise": noise})
    assert [g.params["noise_row"] for g in api.text_to_image(model, prompts, noised, outputs=[3])] == [3]
    with pytest.raises(UsageError, match="distinct positions among the run's 4 output"):
        api.text_to_image(model, prompts, opts, outputs=range(3, 5))
    with pytest.raises(TypeError, match="outputs must be a range"):
        api.text_to_image(model, prompts, opts, outputs=3)


class _Group:
    """A launch of two processes run one after the other in this process: process 1 first (what
    it hands over is kept), then process 0, which receives it."""

    def __init__(self, rank: int, handed=None, verdict=None):
        self.rank, self.handed, self.verdict = rank, handed, verdict

    def shared(self, value):  # with --seed given, only the verdict is shared
        return value if self.rank == 0 else self.verdict

    def barrier(self):
        pass

    def gathered(self, value):
        if self.rank:
            self.handed = value
            return None
        return [value, self.handed]


def _as_process(monkeypatch, group: _Group) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(group.rank))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("SHOWO2_MODEL", raising=False)
    monkeypatch.setattr(runtime, "launch_group", lambda: contextlib.nullcontext(group))


LONG = "a red circle on a white background " * 12  # more than the demo's text budget (27 tokens)


@pytest.mark.parametrize("json_mode", [False, True], ids=["plain", "json"])
def test_one_list_in_run_order_and_each_notice_once(tmp_path, capsys, monkeypatch, json_mode):
    """Each process listed its own outputs (with --json, its own object) and said every notice.
    Now process 1 prints nothing and says nothing; process 0 lists the whole run in its order (one
    object) and says the notices process 1 kept that it did not say itself (process 1's prompt,
    cut to the text budget), each once."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.txt").write_text(f"a red circle\n{LONG}\n")
    args = ["t2i", "--prompts-file", "p.txt", "-n", "2", "-o", "x.png", "--steps", "2", "--size", "32",
            "--seed", "9", *(["--json"] if json_mode else [])]
    second = _Group(1)
    _as_process(monkeypatch, second)
    assert main(args) == 0
    assert capsys.readouterr() == ("", "")
    made = ["x-002.json", "x-002.png", "x-003.json", "x-003.png"]
    assert sorted(p.name for p in tmp_path.glob("x-*")) == made
    assert second.handed["failure"] is None and len(second.handed["records"]) == 2
    for name in made:  # process 0 checks the whole run's names: as if process 1 wrote later
        (tmp_path / name).rename(tmp_path / ("kept-" + name))

    _as_process(monkeypatch, _Group(0, second.handed))
    assert main(args) == 0
    out, err = capsys.readouterr()
    listed = [o["output"] for o in json.loads(out)["outputs"]] if json_mode else out.split()
    assert listed == ["x-000.png", "x-001.png", "x-002.png", "x-003.png"]
    if json_mode:
        assert out.count("\n") == 1 and json.loads(out)["world_size"] == 2 and err == ""
    else:
        assert err.splitlines() == ["using the bundled demo model (set SHOWO2_MODEL or pass --model for another)",
                                    "seed 9", "prompt 1 has 84 tokens; the model's sequence holds 27, so the "
                                    "rest was not used"]
    seeds = [json.loads((tmp_path / f).read_text())["seed"]
             for f in ("x-000.json", "x-001.json", "kept-x-002.json", "kept-x-003.json")]
    assert seeds == [9, 10, 11, 12]


def test_a_failure_on_one_process_is_said_once_by_process_0(tmp_path, capsys, monkeypatch):
    """Process 1's full disk: it said its error and the launcher ended process 0 mid-run
    ('terminated', a second error line). Now process 1 says nothing, waits for the launcher to end
    it (after process 0 has reported) and exits with its code; process 0 finishes its share, lists
    what the run wrote, then process 1's one line."""
    monkeypatch.chdir(tmp_path)
    args = ["t2v", "a red circle", "-n", "3", "-o", "x.gif", "--frames", "1", "--steps", "2", "--size", "32",
            "--seed", "9"]
    second = _Group(1, verdict=("cannot write the output (No space left on device)", 5, "output"))
    _as_process(monkeypatch, second)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    waits = []

    def ended_by_launcher(seconds):  # the launcher's SIGTERM, once process 0 has reported and exited
        waits.append(seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        real_sleep(2)

    real_sleep = time.sleep
    with monkeypatch.context() as m:
        m.setattr(saving, "_save_one", full)
        m.setattr(time, "sleep", ended_by_launcher)
        assert main(args) == 5
    assert capsys.readouterr() == ("", "") and waits == [5.0]  # it did not exit before process 0 reported
    assert second.handed["failure"] == ("cannot write the output (No space left on device)", 5, "output")
    assert list(tmp_path.iterdir()) == []  # nothing of output 2, not a part

    _as_process(monkeypatch, _Group(0, second.handed))
    assert main(args) == 5
    assert capsys.readouterr() == ("x-000.gif\nx-001.gif\n",
                                   "using the bundled demo model (set SHOWO2_MODEL or pass --model for another)\n"
                                   "seed 9\nshowo2: error: cannot write the output (No space left on device)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x-000.gif", "x-000.json", "x-001.gif", "x-001.json"]


def test_a_process_killed_before_handing_over_is_one_line(tmp_path, capsys, monkeypatch):
    """Process 1 killed (SIGKILL) while process 0 waited for it: gloo's 'Connection closed by
    peer' was an internal error, and the outputs process 0 had written were not listed."""
    monkeypatch.chdir(tmp_path)

    class Killed(_Group):
        def gathered(self, value):
            raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:18643")

    _as_process(monkeypatch, Killed(0))
    assert main(["t2i", "a red circle", "-o", "x.png", "--steps", "2", "--size", "32", "--seed", "9", "-n", "2"]) == 1
    out, err = capsys.readouterr()
    assert out == "x-000.png\n"
    assert err.splitlines()[-1] == ("showo2: error: another process of the launch ended before it handed over its "
                                    "outputs (the launcher's report names it)")


def test_only_the_main_process_shows_live_progress(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    STATE.update(json=False, quiet=False, held=None)
    try:
        assert live_stderr()
        STATE["held"] = []  # process 1 of a launch's one run
        assert not live_stderr()
    finally:
        STATE["held"] = None


@pytest.mark.slow
def test_two_launched_processes_fail_once(tmp_path):
    """`accelerate launch` (gloo on CPU), a full disk on process 1: one error line (process 0's),
    the outputs process 0 wrote listed, nothing of process 1's output left, exit code 5 in both."""
    script = tmp_path / "full_disk_on_1.py"
    script.write_text("import errno, os, sys\nfrom showo2_cli import saving\nfrom showo2_cli.cli import main\n"
                      "def full(*a, **k):\n    raise OSError(errno.ENOSPC, 'No space left on device')\n"
                      "if os.environ['RANK'] == '1':\n    saving._save_one = full\nsys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOWO2_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
           "t2v", "a red circle", "-n", "3", "-o", "x.gif", "--frames", "1", "--steps", "2", "--size", "32",
           "--save-latents"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert proc.stdout == "x-000.gif\nx-001.gif\n", proc.stderr[-2000:]
    said = [line for line in proc.stderr.splitlines() if line.startswith(("showo2:", "using", "seed"))]
    assert said[0].startswith("using the bundled demo model") and said[1].startswith("seed ")
    assert said[2:] == ["showo2: error: cannot write the output (No space left on device)"], proc.stderr[-2000:]
    assert proc.stderr.count("exitcode  : 5") == 2, proc.stderr[-2000:]  # the launcher's summary: both exited 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "full_disk_on_1.py", "x-000.gif", "x-000.json", "x-000.latents.safetensors",
        "x-001.gif", "x-001.json", "x-001.latents.safetensors"]
