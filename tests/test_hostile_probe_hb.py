"""Hostile round twenty-five (probe HB): the files users download and hand us (model folders,
adapters, pictures, training checkpoints), crafted by someone who read the code. Each test fails
on the code before its fix."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError


def _legacy_state(numel: int | None = None) -> bytes:
    """A training state as the legacy (non-zip) ``torch.save`` writes it; ``numel``: the size its
    pickle claims for the one storage (16 floats stored)."""
    state = {"format": 1, "mode": "t2i", "step": 3, "optimizer": {}, "t": torch.arange(16.0)}
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if numel is None:
        return data
    found = re.findall(rb"cpuq.K\x10N", data)  # the storage's 16 elements: a BININT1 after the location 'cpu'
    assert len(found) == 1
    return data.replace(found[0], found[0][:5] + b"\x8a\x08" + struct.pack("<q", numel) + b"N")


def test_a_training_state_claiming_more_than_its_file_holds_is_refused_before_allocating(tmp_path, monkeypatch):
    """`train` resuming a run folder a user was sent: its `trainer_state.pt` was handed to `torch.load`
    with none of the weights' checks, and a legacy pickle of 494 bytes claiming 10^10 floats had torch
    allocate 40 GB before reading any ("DefaultCPUAllocator: can't allocate memory: you tried to
    allocate 40000000000 bytes", said as "truncated or corrupt"; on a host with the memory, made).
    The state passes the weights' checks first (`weights.check_pickle`, one mechanism)."""
    from showo2_cli.training import checkpoint as ckpt

    folder = tmp_path / "checkpoint-000003"
    folder.mkdir()
    state = folder / ckpt.STATE_FILE
    state.write_bytes(_legacy_state(numel=10**10))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    with pytest.raises(ModelError, match=rf"cannot read the training state '.*': its tensors claim 40,000,000,000 "
                                         rf"bytes but the file holds {state.stat().st_size} "):
        ckpt.read_state(folder, "t2i", 1)
    assert loads == []  # refused before torch read it
    state.write_bytes(_legacy_state())  # a true legacy state reads as before
    assert ckpt.read_state(folder, "t2i", 1)["t"].tolist() == list(range(16))


def test_a_training_state_with_compressed_entries_is_refused(tmp_path):
    """A checkpoint re-zipped by a tool (deflated entries, which torch.save never writes) was
    inflated by torch.load to whatever size its entries name; the weights' rule refuses it."""
    import zipfile

    from showo2_cli.training import checkpoint as ckpt

    folder = tmp_path / "checkpoint-000003"
    folder.mkdir()
    plain = tmp_path / "plain.pt"
    torch.save({"format": 1, "mode": "t2i", "step": 3, "optimizer": {}, "t": torch.zeros(4096)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(folder / ckpt.STATE_FILE, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(ModelError, match=r"cannot read the training state '.*': its zip entries are compressed"):
        ckpt.read_state(folder, "t2i", 1)


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="no /proc here")
def test_a_caption_linked_to_a_system_made_file_is_refused_not_trained_on(tmp_path):
    """A data folder a user downloads (a tarball keeps links) whose `cat.txt` links to
    `/proc/self/environ`: its size is 0, so the media readers refuse such a file ("empty file"), but
    the small-file reader read it, and the run's environment (a HF_TOKEN, cloud keys) was the
    picture's caption, the answer an `mmu` run teaches the model to give. The one bounded reader
    (`media.read_limited`: captions, configs, prompts, transcripts, schemas) refuses a file of size 0
    that reads as bytes."""
    from PIL import Image

    from showo2_cli.errors import InputError
    from showo2_cli.media import read_limited
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (32, 32), "red").save(data / "cat.png")
    (data / "cat.txt").symlink_to("/proc/self/environ")
    Image.new("RGB", (32, 32), "blue").save(data / "dog.png")
    (data / "dog.txt").write_text("a blue dog")
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "pairs", "role": "mmu", "path": str(data),
                                                    "resolution": 32}], batch={"mmu": 1}), source="c.toml")
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    texts, refused = [], []
    for item in range(source.size()):
        try:
            texts.append(source.get(item).text)
        except InputError as e:
            refused.append(str(e))
    read = len(texts)
    assert read == 1, "the environment was read as a caption"  # (not printed: it is the host's)
    assert texts == ["a blue dog"] and len(refused) == 1 and "cat.txt" in refused[0] and "not a regular file" in refused[0], refused
    with pytest.raises(InputError, match="not a regular file"):
        read_limited("/proc/self/environ", 1 << 20, "prompts file")
    (data / "empty.txt").write_bytes(b"")  # an empty file is still its empty text
    assert read_limited(data / "empty.txt", 10, "caption") == b""


@pytest.mark.parametrize("pointer", ["../../../victim", "ABSOLUTE", "LINKED"])
def test_a_forced_pull_deletes_nothing_outside_the_cache(tmp_path, monkeypatch, pointer):
    """A Hugging Face cache a user was given (a colleague's, a tarball): before `pull --force-download`
    the entries of the snapshot that are no links into `blobs/` are removed, the snapshot found by the
    text of `refs/main`. Of `../../../victim` or an absolute folder, or with the snapshot folder a link
    out of the cache, the files of the pulled names there (`config.json`, `model.safetensors`) were
    deleted. The commit is a commit hash and the snapshot where the cache holds it, or nothing is
    dropped (huggingface_hub's own pointers are checked so)."""
    from showo2_cli.errors import ModelError
    from showo2_cli.hub_download import download_files

    cache, victim = tmp_path / "cache", tmp_path / "victim"
    repo = cache / "models--acme--m"
    for d in (repo / "refs", repo / "snapshots", repo / "blobs", victim):
        d.mkdir(parents=True)
    (victim / "config.json").write_text("{}")
    (victim / "model.safetensors").write_bytes(b"mine")
    commit = "0123456789abcdef0123456789abcdef01234567"
    text = {"ABSOLUTE": str(victim), "LINKED": commit}.get(pointer, pointer)
    (repo / "refs" / "main").write_text(text)
    if pointer == "LINKED":
        (repo / "snapshots" / commit).symlink_to(victim)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # (the download itself is then refused: only the drop runs)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    with pytest.raises(ModelError):
        download_files("acme/m", ["config.json", "model.safetensors"], None, "model", force_download=True)
    assert sorted(p.name for p in victim.iterdir()) == ["config.json", "model.safetensors"]
    assert (victim / "model.safetensors").read_bytes() == b"mine"


def test_a_damaged_ema_state_is_a_model_error_naming_the_file(tmp_path):
    """The `ema` entry of a training state a user resumes was handed to diffusers' `EMAModel` as it
    was: a decay of "x" or 2, a step of "x", a list were "internal error: ValueError: Decay must be
    between 0 and 1" (exit 1), weights of other shapes "internal error: RuntimeError: The size of
    tensor a (3) must match ..." at the first update. Each is the file's one line
    (`checkpoint.restore_ema`); a whole state restores as before."""
    from diffusers.training_utils import EMAModel

    from showo2_cli.training import checkpoint as ckpt

    net = torch.nn.Linear(4, 3)

    class Objective:
        @staticmethod
        def ema_parameters():
            return list(net.parameters())

    folder = tmp_path / "checkpoint-000001"
    good = EMAModel(net.parameters(), decay=0.9).state_dict()
    for change in ({"decay": "x"}, {"decay": 2.0}, {"optimization_step": "x"}, {"power": None},
                   {"shadow_params": [torch.zeros(3)]}, {"shadow_params": [torch.zeros(5, 4), torch.zeros(3)]}):
        with pytest.raises(ModelError, match=r"checkpoint-000001/trainer_state.pt'.*(is damaged|do not fit)"):
            ckpt.restore_ema(EMAModel(net.parameters(), decay=0.9), {**good, **change}, folder, Objective)
    with pytest.raises(ModelError, match="EMA state is not a table"):
        ckpt.restore_ema(EMAModel(net.parameters(), decay=0.9), [1, 2], folder, Objective)
    ema = EMAModel(net.parameters(), decay=0.5)
    ckpt.restore_ema(ema, {**good, "optimization_step": 7}, folder, Objective)
    assert ema.decay == 0.9 and ema.optimization_step == 7


@pytest.mark.slow
def test_resuming_a_run_whose_ema_state_is_damaged_exits_4(tmp_path, capsys):
    """The command line of the test above: `train` resuming a run folder a user was sent."""
    from conftest import REPO
    from showo2_cli.cli import main
    from showo2_cli.training import checkpoint as ckpt

    run = tmp_path / "run"
    args = ["train", str(REPO / "examples" / "train_tiny.toml"), "-o", str(run), "--set", "run.eval_every=0",
            "--set", "run.sample_every=0", "--set", "ema.decay=0.9"]
    assert main(args + ["--max-steps", "1"]) == 0, capsys.readouterr().err
    path = ckpt.latest_checkpoint(run) / ckpt.STATE_FILE
    state = torch.load(path, weights_only=True)
    state["ema"]["decay"] = 2.0
    torch.save(state, path)
    capsys.readouterr()
    assert main(args + ["--max-steps", "2"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "trainer_state.pt' is damaged: its EMA state is refused" in err[0], err


def test_a_header_naming_a_metadata_key_twice_among_many_is_refused_at_once(tmp_path):
    """The check that a safetensors header names nothing twice (every weights, latents, noise and VAE
    file passes it) found the repeated name by searching each name's predecessors: a 4 MB file whose
    `__metadata__` holds 300,000 names, one of them twice, kept `showo2 decode` (or a load) busy for
    hours (40,000 names: 30 s; a million, in 14 MB: a day). It is found in one pass now."""
    import signal

    from showo2_cli.weights import check_safetensors_header

    names = 300_000
    meta = ",".join(f'"k{i}":"v"' for i in range(names))
    header = ('{"__metadata__":{' + meta + ',"k0":"w"},"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}').encode()
    path = tmp_path / "latents.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)

    def alarm(*_):
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)  # (the code before took hours: this fails it, not a timing)
    try:
        with pytest.raises(ModelError, match="its header names 'k0' twice"):
            check_safetensors_header(path, "latents")
    except TimeoutError:
        pytest.fail("still searching the header after 60 s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
