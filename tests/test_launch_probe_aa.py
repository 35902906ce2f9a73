"""Generation under `accelerate launch` (probe AA): one drawn seed for the whole run, the whole
run's outputs checked by every process, an error every process finds alike said once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import showo2_cli
from showo2_cli import cli as cli_module
from showo2_cli import runtime
from showo2_cli.cli import main

SRC = str(Path(showo2_cli.__path__[0]).parent)  # the sources under test


def _launch(monkeypatch, rank: int) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.delenv("SHOWO2_MODEL", raising=False)


def test_a_drawn_seed_is_process_0s_in_every_process(tmp_path, capsys, monkeypatch):
    """Each process drew its own seed and printed it (`seed 537772640`, `seed 69175513`): no one
    --seed repeated the run. Now the agreed seed (process 0's) names every output's seed + k.
    (The processes run one after the other here: process 0 checks after process 1 wrote, and
    lists what process 1 handed over: probe AE.)"""
    monkeypatch.chdir(tmp_path)
    for rank in (1, 0):
        if not rank:
            for f in tmp_path.glob("x-*"):
                f.rename(tmp_path / ("kept-" + f.name))
        _launch(monkeypatch, rank)
        _Group.rank = rank
        monkeypatch.setattr(runtime, "launch_group", _group, raising=False)
        assert main(["t2i", "--prompts-file", str(_prompts(tmp_path, 3)), "-o", "x.png", "--steps", "2"]) == 0
        out, err = capsys.readouterr()
        assert out.split() == (["x-000.png", "x-001.png", "x-002.png"] if rank == 0 else [])
        assert [line for line in err.splitlines() if line.startswith("seed")] == (["seed 1234"] if rank == 0 else [])
    sidecars = ["x-000.json", "x-001.json", "kept-x-002.json"]
    assert [json.loads((tmp_path / f).read_text())["seed"] for f in sidecars] == [1234, 1235, 1236]
    assert _Group.barriers == 2  # each process's outputs checked before any process wrote


class _Group:
    """Process 0 drew 1234; each process's checks done; process 1's outputs handed to process 0."""
    barriers = 0
    rank = 0
    handed = None

    def __init__(self):
        self.calls = 0

    def shared(self, value):
        self.calls += 1
        return 1234 if self.calls == 1 else value  # the seed, then the run's verdict (none failed)

    def barrier(self):
        assert not list(Path.cwd().glob("x-*.png"))  # no process has written yet
        _Group.barriers += 1

    def gathered(self, value):
        if self.rank:
            _Group.handed = value
            return None
        return [value, _Group.handed]


@contextlib.contextmanager
def _group():
    yield _Group()


def test_every_process_checks_the_whole_runs_outputs(tmp_path, capsys, monkeypatch):
    """Process 1 checked only its own outputs: with process 0's `x-000.png` there, process 1 wrote
    `x-001.png` while process 0 failed (and the user read 'terminated' from it when the launcher
    ended it first). Now both fail alike before loading, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x-000.png").write_bytes(b"mine")
    _launch(monkeypatch, 1)
    monkeypatch.setattr(cli_module, "_MAIN_GRACE_S", 0.0, raising=False)  # no launcher ends it: it says it
    assert main(["t2i", "--prompts-file", str(_prompts(tmp_path, 2)), "-o", "x.png", "--seed", "3"]) == 5
    assert capsys.readouterr() == ("", "showo2: error: 'x-000.png' exists; pass --overwrite to replace it\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.txt", "x-000.png"]
    assert (tmp_path / "x-000.png").read_bytes() == b"mine"


@pytest.mark.parametrize("args, code", [(["t2i", "a", "--steps", "0"], 2),
                                        (["t2i", "--prompts-file", "missing.txt"], 3)])
def test_an_error_every_process_finds_is_said_by_process_0(tmp_path, capsys, monkeypatch, args, code):
    """An identical usage error was printed once per process. Now process 1 waits for the launcher
    to end it (it does once process 0 has failed and said it) and says nothing; with no launcher
    to end it, it says it after the wait. The exit code is the same either way."""
    monkeypatch.chdir(tmp_path)
    real_sleep = time.sleep
    _launch(monkeypatch, 0)
    assert main(args) == code
    said = capsys.readouterr().err
    assert said.startswith("showo2: error: ") and said.count("\n") == 1

    _launch(monkeypatch, 1)
    waits = []

    def ended_by_launcher(seconds):  # the launcher's SIGTERM, as process 0 exits
        waits.append(seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        real_sleep(2)

    monkeypatch.setattr(time, "sleep", ended_by_launcher)
    assert main(args) == code
    assert capsys.readouterr() == ("", "") and waits == [5.0]

    monkeypatch.setattr(time, "sleep", lambda seconds: waits.append(seconds))  # nothing comes
    assert main(args) == code
    assert capsys.readouterr() == ("", said) and waits == [5.0, 5.0]


@pytest.mark.parametrize("args", [["t2i", "-", "-o", "x.png"], ["t2v", "--prompts-file", "-", "-o", "x.mp4"]])
def test_prompts_from_stdin_are_refused_under_a_launch(tmp_path, capsys, monkeypatch, args):
    """The launcher gives stdin to process 0 alone: process 1 failed with 'prompts file stdin holds
    no prompt' and process 0 said 'terminated'. Now every process refuses it alike, before reading."""
    import io

    monkeypatch.chdir(tmp_path)
    _launch(monkeypatch, 0)
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nb\n"))
    assert main([*args, "--seed", "1"]) == 2
    assert capsys.readouterr() == ("", "showo2: error: prompts from stdin reach only the first of several "
                                       "processes: use --prompts-file FILE under a launch\n")
    assert list(tmp_path.iterdir()) == []


def _prompts(folder: Path, n: int) -> Path:
    path = folder / "p.txt"
    path.write_text("".join(f"prompt {i}\n" for i in range(n)))
    return path


@pytest.mark.slow
def test_two_launched_processes_make_one_run(tmp_path):
    """`accelerate launch` (gloo on CPU) without --seed: one seed printed, seed + k in every
    sidecar; the same command again (outputs exist) says its error once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOWO2_")}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=SRC)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "showo2_cli.cli",
           "t2i", "--prompts-file", str(_prompts(tmp_path, 3)), "-o", "x.png", "--steps", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seeds = [line for line in proc.stderr.splitlines() if line.startswith("seed ")]
    assert len(seeds) == 1, proc.stderr[-2000:]
    seed = int(seeds[0].split()[1])
    assert [json.loads((tmp_path / f"x-{i:03d}.json").read_text())["seed"] for i in range(3)] == \
        [seed, seed + 1, seed + 2]
    assert proc.stdout.split() == ["x-000.png", "x-001.png", "x-002.png"]  # one list, in order (probe AE)

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert again.returncode != 0
    errors = [line for line in again.stderr.splitlines() if line.startswith("showo2: error")]
    assert errors == ["showo2: error: 'x-000.png' exists; pass --overwrite to replace it"], again.stderr[-2000:]
