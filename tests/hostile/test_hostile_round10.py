"""Hostile inputs, round ten: bounded reads and sizes checked before allocation. A training config
that is a FIFO waited for ever and one that is ``/dev/zero`` (or a 1 GB sparse file) was read
whole; a training state that is a FIFO hung ``--resume``; a safetensors header naming a tensor
twice loaded one of them silently; a tokenizer.json of 113 MiB of merges took 48 s and 3.4 GB.
Each test fails on the code before its fix."""

from __future__ import annotations

import errno
import json
import os
import struct
import threading
import time
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import InputError, ModelError, UsageError


class _Feeder(threading.Thread):
    """Writes ``data`` into the FIFO at ``path`` once a reader opens it, for up to ``within`` seconds
    or until stopped (so a reader that opens it gets an answer: the test fails, not hangs)."""

    def __init__(self, path: Path, data: bytes, within: float = 10.0):
        super().__init__(daemon=True)
        self.path, self.data, self.within, self.done = path, data, within, threading.Event()
        self.start()

    def stop(self) -> None:
        self.done.set()
        self.join()

    def run(self):
        path, data = self.path, self.data
        deadline = time.monotonic() + self.within
        while time.monotonic() < deadline and not self.done.is_set():
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                    return
                time.sleep(0.05)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, data)
            finally:
                os.close(fd)
            return


def _raised_within(seconds: float, call) -> BaseException | None:
    """What ``call()`` raised, run in a thread: a call still blocked after ``seconds`` fails the test
    (the code before the fix waited on a FIFO for ever)."""
    out: list = []

    def run():
        try:
            call()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert out, f"still blocked after {seconds} s"
    return out[0]


def test_read_limited_refuses_special_oversized_and_growing_files(tmp_path):
    from showo2_cli.media import read_limited

    ok = tmp_path / "ok.txt"
    ok.write_bytes(b"abc")
    assert read_limited(ok, 3, "prompts file") == b"abc"
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(2**30)  # sparse: nothing to read but its size
    cases = {"fifo": "not a regular file", "zero": "not a regular file", "loop": "symbolic links",
             "big": "larger than 1 KiB", "missing": "no such file", ".": "is a directory"}
    for name, why in cases.items():
        with pytest.raises(ModelError, match=f"cannot read config '.*{name if name != '.' else ''}': .*{why}"):
            read_limited(tmp_path / name, 1024, "config", ModelError)
    # a file whose size says little but whose reading goes on (as one that grows while being read):
    # /proc files say 0 bytes and hold kilobytes
    maps = Path("/proc/self/maps")
    if maps.is_file() and maps.stat().st_size == 0:
        with pytest.raises(InputError, match="larger than 16 bytes"):
            read_limited(maps, 16, "caption")


def test_training_config_is_read_bounded(tmp_path):
    """A FIFO config waited for a writer for ever; /dev/zero was read until memory ran out; a 1 GB
    sparse config took 12.8 s and 2.1 GB before "not valid TOML"."""
    from showo2_cli.training.config import read_raw

    big = tmp_path / "big.toml"
    with open(big, "wb") as fh:
        fh.truncate(2**30)
    with pytest.raises(UsageError, match="larger than 16 MiB"):
        read_raw(big)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    feeder = _Feeder(fifo, b"[run]\n")  # what an old reader would get: a valid config
    error = _raised_within(10, lambda: read_raw(fifo))
    feeder.stop()
    assert isinstance(error, UsageError) and "cannot read config" in str(error) and "not a regular file" in str(error)
    (tmp_path / "ok.toml").write_text("[run]\nseed = 3\n")
    assert read_raw(tmp_path / "ok.toml") == {"run": {"seed": 3}}


def test_a_training_state_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    from showo2_cli.training import checkpoint as ckpt

    state = tmp_path / ckpt.STATE_FILE
    os.mkfifo(state)
    feeder = _Feeder(state, b"\x80\x02}q\x00.")  # an empty dict: what an old reader got
    error = _raised_within(10, lambda: ckpt.read_state(tmp_path, "stage1", 1))
    feeder.stop()
    assert isinstance(error, ModelError) and "trainer_state.pt': not a regular file" in str(error)


def _safetensors(path: Path, header: bytes, body: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return path


def test_a_safetensors_header_naming_a_tensor_twice_is_refused(tmp_path):
    """The safetensors library takes such a header (the format forbids it) and keeps one of the
    two tensors silently: which weights or latents were meant cannot be told."""
    from showo2_cli.pipelines.latents import load_latents
    from showo2_cli.saving import load_noise
    from showo2_cli.weights import read_state_dict

    body = torch.arange(48, dtype=torch.float32).numpy().tobytes()
    twice = (b'{"latents": {"dtype": "F32", "shape": [16, 1, 1, 1], "data_offsets": [0, 64]}, '
             b'"latents": {"dtype": "F32", "shape": [16, 1, 1, 2], "data_offsets": [0, 128]}}')
    dup = _safetensors(tmp_path / "dup.safetensors", twice, body[:128])  # loaded as the second, silently
    with pytest.raises(ModelError, match="header names 'latents' twice"):
        read_state_dict(dup)
    with pytest.raises(InputError, match="header names 'latents' twice"):
        load_latents(dup)
    with pytest.raises(InputError, match="header names 'latents' twice"):
        load_noise(dup)
    # a field of one tensor given twice is as ambiguous
    field = b'{"w": {"dtype": "F32", "shape": [4], "shape": [2], "data_offsets": [0, 16]}}'
    with pytest.raises(ModelError, match="header names 'shape' twice"):
        read_state_dict(_safetensors(tmp_path / "field.safetensors", field, body[:16]))
    # the same header without the repeat loads
    once = b'{"latents": {"dtype": "F32", "shape": [16, 1, 1, 2], "data_offsets": [0, 128]}}'
    z, _meta = load_latents(_safetensors(tmp_path / "once.safetensors", once, body[:128]))
    assert z.shape == (16, 1, 1, 2) and z.flatten()[-1].item() == 31.0


def test_model_configs_and_prompts_keep_their_bounds(tmp_path):
    """read_json and the prompts file now share the one bounded reader: same limits, same kinds."""
    from showo2_cli.saving import read_prompts
    from showo2_cli.weights import read_json

    os.mkfifo(tmp_path / "config.json")
    with pytest.raises(ModelError, match="not a regular file"):
        read_json(tmp_path / "config.json")
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(16 * 2**20 + 1)
    with pytest.raises(ModelError, match="larger than 16 MiB"):
        read_json(big)
    (tmp_path / "ok.json").write_text(json.dumps({"a": 1}))
    assert read_json(tmp_path / "ok.json") == {"a": 1}
    prompts = tmp_path / "p.txt"
    with open(prompts, "wb") as fh:
        fh.truncate(64 * 2**20 + 1)
    with pytest.raises(InputError, match="larger than 64 MiB"):
        read_prompts(prompts_file=prompts)


def test_tokenizer_files_are_held_to_what_a_qwen_tokenizer_has(tmp_path, tiny_model_dir):
    """A 113 MiB tokenizer.json of 8 million merges (under the 128 MiB allowed then) took 48 s and
    over 3.4 GB in the tokenizers library, which died with a Rust abort under a 4 GB limit. Files
    are held to a few times Qwen2.5's own (tokenizer.json 7 MB, merges.txt 1.7 MB) before any is read."""
    import shutil

    from showo2_cli.tokenizer import load_tokenizer

    for name, size, limit in (("tokenizer.json", 33 * 2**20, 32), ("merges.txt", 9 * 2**20, 8),
                              ("vocab.json", 17 * 2**20, 16)):
        folder = tmp_path / name
        shutil.copytree(tiny_model_dir, folder)
        with open(folder / name, "ab") as fh:
            fh.truncate(size)  # sparse
        with pytest.raises(ModelError, match=f"{name} is {size >> 20} MiB, more than {limit} MiB"):
            load_tokenizer(folder)


def test_a_jsonl_line_of_gigabytes_is_indexed_without_being_held(tmp_path):
    """Indexing a JSONL read each line whole: one line of 2 GB (a sparse file) took 69 s and 2.6 GB
    before "out of memory" under a 4 GB limit. Lines are read in pieces; the long one is an item
    refused when it is read, the others train."""
    import tracemalloc

    import numpy as np

    from showo2_cli.training.records import MAX_RECORD_BYTES, Records, _scan_lines

    first = b'{"path": "a.png", "prompt": "one"}\n'
    last = b'{"path": "b.png", "prompt": "two"}'  # no newline at the end
    data = tmp_path / "d.jsonl"
    long = 64 * 2**20
    with open(data, "wb") as fh:
        fh.write(first)
        fh.truncate(len(first) + long)  # a line of 64 MiB of NULs, written as a hole
        fh.seek(0, 2)
        fh.write(b"\n  \n" + last)
    tracemalloc.start()
    try:
        _scan_lines(data, tmp_path / "d.u64")
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"held {peak >> 20} MiB while indexing"
    offsets = np.fromfile(tmp_path / "d.u64", dtype="<u8").tolist()
    assert offsets == [0, len(first), len(first) + long + 4]  # the blank line is no record
    records = Records(data, tmp_path / "d.u64")
    assert records[0]["prompt"] == "one" and records[2]["prompt"] == "two"
    assert long > MAX_RECORD_BYTES
    with pytest.raises(InputError, match="record 1 is over 8 MiB"):
        records[1]


def test_decode_names_a_fifo_or_device_for_what_it_is(tmp_path, capsys):
    """`decode FIFO` and `decode /dev/zero` said "latents file ... is empty" (their size is 0): the
    one input-file check (`media.check_input_file`) now says what they are."""
    from showo2_cli.cli import main

    fifo = tmp_path / "z.safetensors"
    os.mkfifo(fifo)
    for given in (fifo, Path("/dev/zero")):
        assert main(["decode", str(given), "-o", str(tmp_path / "o.png")]) == 3
        err = capsys.readouterr().err
        assert f"cannot read latents file '{given}': not a regular file" in err and err.count("\n") == 1
    assert not (tmp_path / "o.png").exists()


def test_a_safetensors_header_of_a_million_tensors_is_refused_before_parsing(tmp_path):
    """A 67 MB header of a million empty tensors (under the library's 100 MB bound) took over 200 s
    and 1.2 GB in `read_state_dict` before anything was said; more tensors than any model has are
    counted in the header's bytes and refused at once."""
    from showo2_cli.weights import MAX_TENSORS, read_state_dict

    n = MAX_TENSORS + 1
    header = ("{" + ",".join(f'"t{i}": {{"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}'
                             for i in range(n)) + "}").encode()
    path = _safetensors(tmp_path / "many.safetensors", header, b"")
    with pytest.raises(ModelError, match=f"its header lists {n} tensors, more than the {MAX_TENSORS}"):
        read_state_dict(path)
