"""What the last probes left alone (probe AN): planning many outputs with one listing per folder,
a bounded wait for a launch's rendezvous, the run lock closed, one force-download step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _count_file_calls(mp) -> list[int]:
    """Counts the file-system calls made through ``os`` (pathlib asks through these) while ``mp``
    (a MonkeyPatch context) lasts."""
    count = [0]
    for name in ("stat", "lstat", "access", "scandir", "listdir", "pathconf"):
        real = getattr(os, name)

        def counted(*args, _real=real, **kwargs):
            count[0] += 1
            return _real(*args, **kwargs)

        mp.setattr(os, name, counted)
    return count


def test_planning_many_outputs_asks_each_folder_once_not_each_name(tmp_path, monkeypatch):
    """A prompts file of a million lines was planned with about 14 stat calls per output (minutes
    before the first output); each folder is now checked once and listed once, whatever the count."""
    from showo2_cli.saving import plan_outputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "a-1.png").write_bytes(b"x")  # a default name taken: the next free one is chosen
    prompts = [f"p{i}" for i in range(1000)]
    for output in ("out/x.png", None):
        with pytest.MonkeyPatch.context() as mp:
            calls = _count_file_calls(mp)
            plans = plan_outputs("t2i", output, prompts, list(range(1000)), 1, seed=1, save_latents=True)
        assert len(plans) == 1000 and len({p.path for p in plans}) == 1000
        assert calls[0] < 60, calls[0]  # was about 15,000 (3 files an output)
    assert str(plans[0].path) == "p0-1.png" and plans[0].latents == Path("p0-1.latents.safetensors")
    many = plan_outputs("t2i", None, ["a"] * 3, [0, 1, 2], 1, seed=None)
    assert [str(p.path) for p in many] == ["a-noise0.png", "a-noise1.png", "a-noise2.png"]
    taken = plan_outputs("t2i", None, ["a"], [0], 1, seed=1)  # a-1.png exists: its -1 is free
    assert [str(p.path) for p in taken] == ["a-1-1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-1.png", "out"]  # nothing written


def test_planning_by_listing_keeps_every_check_of_the_one_checker(tmp_path, monkeypatch):
    """Every name after a folder's first is judged from the listing: what check_output_path
    refuses there (a file present, a folder, a link, a name too long) is still refused with its
    words, and --overwrite still replaces plain files (not folders)."""
    from showo2_cli.errors import OutputError, OutputExists
    from showo2_cli.saving import plan_outputs

    out = tmp_path / "o"
    out.mkdir()
    prompts, idx = ["a", "b", "c", "d"], [0, 1, 2, 3]
    (out / "x-002.png").write_bytes(b"old")
    with pytest.raises(OutputExists, match=r"x-002.png' exists; pass --overwrite to replace it"):
        plan_outputs("t2i", out / "x.png", prompts, idx, 1, seed=1)
    assert len(plan_outputs("t2i", out / "x.png", prompts, idx, 1, seed=1, overwrite=True)) == 4
    (out / "x-003.json").mkdir()
    with pytest.raises(OutputError, match=r"x-003.json'?: it is a directory"):
        plan_outputs("t2i", out / "x.png", prompts, idx, 1, seed=1, overwrite=True)
    (out / "x-003.json").rmdir()
    (out / "x-001.png").symlink_to(tmp_path / "nowhere.png")  # a broken link is something there
    with pytest.raises(OutputExists, match=r"x-001.png' exists"):
        plan_outputs("t2i", out / "x.png", prompts, idx, 1, seed=1)
    (out / "x-001.png").unlink()
    os.mkfifo(out / "x-003.png")
    with pytest.raises(OutputError, match=r"x-003.png'? ?: it exists and is not a regular file"):
        plan_outputs("t2i", out / "x.png", prompts, idx, 1, seed=1, overwrite=True)
    (out / "x-003.png").unlink()
    stem = "s" * 240  # x-000.png and .json fit in 255 bytes, .latents.safetensors does not
    with pytest.raises(OutputError, match=r"the file name is (too long|longer than 255 bytes)"):
        plan_outputs("t2i", out / f"{stem}.png", prompts, idx, 1, seed=1, save_latents=True)
    assert sorted(p.name for p in out.iterdir()) == ["x-002.png"]


def test_another_case_of_a_present_name_is_asked_of_the_file_system(tmp_path, monkeypatch):
    """A case-insensitive file system (macOS, Windows) takes X-001.PNG for a present x-001.png:
    a name present in the listing in another case or Unicode form is asked of the file system."""
    from showo2_cli import media as M

    (tmp_path / "x-001.png").write_bytes(b"x")
    (tmp_path / "caf\u0065\u0301.png").write_bytes(b"x")  # NFD, as macOS stores it
    folders = M.OutputFolders(overwrite=False)
    asked = []
    folders.check(tmp_path / "first.png")
    real = M.outputs.check_output_path
    monkeypatch.setattr(M.outputs, "check_output_path", lambda p, *a, **k: asked.append(Path(p).name) or real(p, *a, **k))
    for name in ("X-001.PNG", "caf\u00e9.png", "other.png"):
        folders.check(tmp_path / name)
    assert asked == ["X-001.PNG", "caf\u00e9.png"]
    assert folders.present(tmp_path / "x-001.png") and not folders.present(tmp_path / "X-001.PNG")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_in_thread(seconds: float = 90):
    """``launch_group()`` entered in a thread: what it raised (or "joined"), None while it still waits."""
    import threading

    from showo2_cli.runtime import launch_group

    box: list = [None]

    def enter():
        try:
            with launch_group():
                box[0] = "joined"
        except BaseException as e:  # noqa: BLE001 (the test judges it)
            box[0] = e

    t = threading.Thread(target=enter, daemon=True)  # the old code's week-long wait is left behind
    t.start()
    t.join(seconds)
    return box[0]


@pytest.mark.parametrize("rank", [1, 0])
def test_a_launch_nobody_joins_ends_after_the_rendezvous_wait_naming_the_address(monkeypatch, rank):
    """WORLD_SIZE/RANK/MASTER_ADDR set by hand with nothing listening (or nobody coming) waited for
    the launch's week-long collective timeout; the rendezvous now has its own wait
    (SHOWO2_RENDEZVOUS_SECONDS, default 600 s) and ends in one line naming the address."""
    from showo2_cli import processes
    from showo2_cli.errors import UsageError

    port = _free_port()
    for k, v in {"WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                 "SHOWO2_RENDEZVOUS_SECONDS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    error = _join_in_thread()
    assert isinstance(error, UsageError), error
    where = f"127.0.0.1:{port}"
    said = (f"no launch answered at {where} (MASTER_ADDR:MASTER_PORT) within 1 s" if rank else
            f"the launch's other 1 process(es) did not join at {where} within 1 s")
    assert str(error).startswith(f"process {rank} of 2: {said} (SHOWO2_RENDEZVOUS_SECONDS sets the wait)"), error
    assert "\n" not in str(error) and processes.RENDEZVOUS_WAIT == 600
    import torch.distributed as dist

    assert not dist.is_initialized()


def test_the_rendezvous_wait_is_checked_and_a_taken_port_is_said(monkeypatch):
    import socket

    from showo2_cli.errors import UsageError

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for k, v in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                     "SHOWO2_RENDEZVOUS_SECONDS": "5"}.items():
            monkeypatch.setenv(k, v)
        error = _join_in_thread()
    assert isinstance(error, UsageError) and f"cannot listen at 127.0.0.1:{port} for the launch: the port is in use" \
        in str(error), error
    for bad in ("0", "-3", "nan", "soon"):
        monkeypatch.setenv("SHOWO2_RENDEZVOUS_SECONDS", bad)
        error = _join_in_thread()
        assert isinstance(error, UsageError) and str(error) == \
            f"SHOWO2_RENDEZVOUS_SECONDS must be a number of seconds > 0, got {bad!r}", error


def _free_to_lock(folder: Path) -> bool:
    """Whether a new open of the folder's lock file gets the lock (flock: one holder per open file)."""
    import fcntl

    from showo2_cli.training.trainer import LOCK_FILE

    with open(folder / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True


@pytest.mark.slow  # two training setups: model, VAE, accelerate
def test_pre_encoding_releases_the_run_lock_however_it_ends(tmp_path, monkeypatch):
    """`train --pre-encode` took the output folder's lock and never closed it: the file stayed open
    (a ResourceWarning at exit) and the folder held until the process ended."""
    from showo2_cli.training import checkpoint as ckpt
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.trainer import Run
    from test_train import tiny_config

    raw = tiny_config(tmp_path)
    raw["data"] = [{**raw["data"][0], "size": 2, "cache": str(tmp_path / "cache")}]
    del raw["batch"]["mmu"]
    summary = Run(parse_config(raw, source="c")).pre_encode()
    assert summary["encoded"] == 2 and summary["items"] == 2
    assert _free_to_lock(tmp_path / "run") and not ckpt._HELD

    def fails(*args, **kwargs):
        assert not _free_to_lock(tmp_path / "run")  # held while it runs
        raise KeyboardInterrupt

    real_setup = Run.setup

    def setup_then_fail(self):
        real_setup(self)
        monkeypatch.setattr(self.objective, "pre_encode", fails)

    monkeypatch.setattr(Run, "setup", setup_then_fail)
    with pytest.raises(KeyboardInterrupt):
        Run(parse_config(raw, source="c")).pre_encode()
    assert _free_to_lock(tmp_path / "run") and not ckpt._HELD


def test_one_hub_step_before_a_load_and_heads_left_out_once(monkeypatch):
    """from_pretrained and load each held the 'force_download on a Hub name: pull again' step; it
    is loading.fetch now (from_pretrained's with its progress and the pull of missing pieces).
    load() left the heads out twice without a LoRA: once now."""
    from showo2_cli import hub, loading
    from showo2_cli.errors import ModelError
    from showo2_cli.modeling.showo2 import Showo2Model
    from showo2_cli.pipeline import Showo2Pipeline

    pulls = []

    def pull(name, progress=None, *, force_download=False, **kwargs):
        pulls.append((name, progress, force_download))
        raise ModelError("pulled")

    monkeypatch.setattr(hub, "pull", pull)

    def progress(*args):
        return None

    with pytest.raises(ModelError, match="pulled"):
        Showo2Pipeline.from_pretrained("1.5B", force_download=True, progress=progress)
    with pytest.raises(ModelError, match="pulled"):
        loading.load("1.5B", force_download=True)
    assert pulls == [("1.5B", progress, True), ("1.5B", None, True)]
    for call in (lambda: loading.load("1.5B", force_download=True, local_files_only=True),
                 lambda: Showo2Pipeline.from_pretrained("1.5B", force_download=True, local_files_only=True)):
        with pytest.raises(ValueError, match="force_download=True needs the Hub, local_files_only=True forbids it"):
            call()
    loading.fetch("demo", force_download=True, when_needed=True)  # the bundled demo: nothing to pull
    assert len(pulls) == 2

    left = []
    real = Showo2Model.leave_out
    monkeypatch.setattr(Showo2Model, "leave_out", lambda self, heads: left.append(tuple(heads)) or real(self, heads))
    model = loading.load("demo", heads=("lm_head",))
    assert left == [("lm_head",)]
    assert type(model.network.showo.lm_head).__name__ != "NotLoaded" and \
        sum(type(m).__name__ == "NotLoaded" for m in model.network.modules()) >= 1
