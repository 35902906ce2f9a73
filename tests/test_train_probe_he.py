"""Training interrupted and resumed as fine-tuners' tools do it (probe HE)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.control import worker_init
from showo2_cli.training.data import StepSampler, loader
from test_train import _env, metrics, tiny_config, write_toml


class _Pids:
    """A dataset whose items say which process read them (a loader worker's pid)."""

    def __getitem__(self, key):
        time.sleep(0.02)
        return key, os.getpid()


def test_a_sigterm_to_the_loader_workers_leaves_the_data_flowing():
    """A SIGTERM sent to a run's whole process group (GNU `timeout`, Slurm's `scancel`, `kill --
    -PGID`, a supervisor's stop) reaches its loader workers too (`run.num_workers`): they died of
    it, and the run stopped with "internal error: RuntimeError: DataLoader worker (pid N) is killed
    by signal: Terminated" instead of saving where it was. The stop is the training process's
    business (it saves and exits 130); a worker goes on until the loader shuts it down."""
    data = loader(_Pids(), StepSampler({"t2i": 1}, 0, 40, 0, 1), num_workers=1, worker_init_fn=worker_init)
    it = iter(data)
    (_, worker), = next(it)
    assert worker != os.getpid()
    os.kill(worker, signal.SIGTERM)
    time.sleep(0.3)
    rest = [batch[0][0] for batch in it]  # (the old sources: RuntimeError, the worker killed)
    assert rest == [("t2i", n) for n in range(1, 40)]


@pytest.mark.slow
def test_a_sigterm_to_the_process_group_saves_where_the_run_was(tmp_path):
    """`showo2 train` with loader workers, stopped by a SIGTERM to its process group: exit 130 and a
    checkpoint at the step it stopped, as a SIGTERM to the training process alone gives."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 100000, "run.num_workers": 2})
    cfg = write_toml(tmp_path / "c.toml", raw)
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.training", str(cfg), "--quiet"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run = tmp_path / "run"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len(metrics(run)) >= 3:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "internal error" not in err
    latest = ckpt.latest_checkpoint(run)
    assert latest is not None and int(latest.name.split("-")[1]) >= 3
    assert int(latest.name.split("-")[1]) == metrics(run)[-1]["step"]


def test_a_crash_while_pruning_leaves_no_visible_half_checkpoint(tmp_path, monkeypatch):
    """`run.keep_last` pruned an old checkpoint with `rmtree` in place: a kill while it ran (a 1.5B
    checkpoint's files take a while to unlink) left `checkpoint-000001/` with some of its files,
    a folder of a checkpoint's name that loads as none. The folder is moved aside to a hidden name
    first, which the next start removes as any staging leftover."""
    import shutil

    def write(dst):
        for name in ("config.json", "model.safetensors", ckpt.STATE_FILE):
            (dst / name).write_text(name)

    for step in (1, 2):
        ckpt.write_checkpoint(tmp_path, step, write, keep_last=0)
    real = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # the process dies after one file is gone
        victim = sorted(p for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())[0]
        victim.unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.write_checkpoint(tmp_path, 3, write, keep_last=2)
    monkeypatch.setattr(shutil, "rmtree", real)
    for _, folder in ckpt.list_checkpoints(tmp_path):  # every visible checkpoint is whole
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", ckpt.STATE_FILE]
    assert ckpt.latest_checkpoint(tmp_path).name == "checkpoint-000003"
    ckpt.clean_partials(tmp_path)  # (the next start)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000002", "checkpoint-000003", "latest"]


@pytest.mark.slow
def test_a_run_folder_without_its_latest_pointer_resumes_its_newest_checkpoint(tmp_path):
    """A run folder whose `latest` is gone (deleted, or its checkpoints copied without it, as
    Hugging Face's Trainer needs none) started again from step 0, silently: its metrics emptied,
    `latest` then naming the new step-2 checkpoint (what `--model RUN` loads) and the run's own
    checkpoints overwritten or pruned as the new one went on. It resumes the newest checkpoint
    folder, with a note; `--no-resume` refuses the folder as it does one with a pointer."""
    from showo2_cli.errors import OutputError
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.trainer import train

    raw = tiny_config(tmp_path, **{"optim.max_steps": 4, "run.save_every": 2})
    train(parse_config(raw, source="c"))
    run = tmp_path / "run"
    (run / "latest").unlink()
    with pytest.raises(OutputError, match="already holds checkpoints"):
        train(parse_config(raw, source="c"), resume=False)
    events = []
    more = tiny_config(tmp_path, **{"optim.max_steps": 5, "run.save_every": 2})
    result = train(parse_config(more, source="c"), progress=events.append)
    assert result.resumed_from == run / "checkpoint-000004" and result.step == 5
    assert any("no 'latest'" in e.get("message", "") for e in events if e["event"] == "notice")
    assert [m["step"] for m in metrics(run)] == [1, 2, 3, 4, 5]


_HOLDER = """
import os, sys, time
from pathlib import Path
from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.control import worker_init
from showo2_cli.training.data import StepSampler, loader

class Pids:  # (items larger than a pipe holds, as a batch of pixels is)
    def __getitem__(self, key):
        return os.getpid(), b"x" * 2**20

ckpt.hold_folder(Path(sys.argv[1]))
it = iter(loader(Pids(), StepSampler({"t2i": 1}, 0, 10**6, 0, 1), 1, worker_init_fn=worker_init))
print(next(it)[0][0], flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_run_s_loader_workers_do_not_hold_its_folder(tmp_path):
    """A run killed with SIGKILL (the OOM killer's way) left its loader workers running (torch's
    workers wait for ever to flush what they read) holding the folder's lock, inherited at the
    fork: the resume was refused with "is in use by another showo2 train run (pid N)", N the dead
    run. A worker closes its copy of the lock, and a SIGTERM ends an orphaned one."""
    from showo2_cli.errors import OutputError

    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], env=_env(), stdout=subprocess.PIPE,
                            text=True)
    worker = int(proc.stdout.readline())
    try:
        proc.kill()
        proc.wait(timeout=60)
        with pytest.raises(OSError):  # (the old sources' worker is still there too)
            os.waitpid(worker, os.WNOHANG)  # not our child: the worker is an orphan now
        key = None
        for _ in range(50):  # (the worker may need a moment to see its parent gone)
            try:
                key = ckpt.hold_folder(tmp_path)
                break
            except OutputError:
                time.sleep(0.1)
        assert key is not None, "the dead run's loader worker still holds the folder"
        ckpt.release_folder(key)
        os.kill(worker, signal.SIGTERM)
        for _ in range(50):
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("an orphaned loader worker ignores SIGTERM")
    finally:
        try:
            os.kill(worker, signal.SIGKILL)
        except ProcessLookupError:
            pass
