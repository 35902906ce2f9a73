"""Hostile inputs, round fourteen (probe BS): tonight's new surfaces as a hostile adapter or data set
would use them. A legacy ``.bin`` whose pickle claimed more bytes than its file had torch allocate
them; a tensor of zero strides read 16 stored floats as 10^12 values. Each test fails on the code
before its fix."""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from showo2_cli.errors import ModelError

KEY = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def _legacy_bytes(state: dict, numel: int | None = None) -> bytes:
    """``state`` as the legacy (non-zip) ``torch.save`` writes it; ``numel``: the storage size its
    pickle claims for the first storage (the data after the pickle stays what it was)."""
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if numel is None:
        return data
    first = next(iter(state.values())).numel()  # pickled as BININT1 after the location 'cpu' (memo 6)
    old = b"cpuq\x06K" + bytes([first]) + b"N"
    assert data.count(old) == 1
    return data.replace(old, b"cpuq\x06\x8a\x08" + struct.pack("<q", numel) + b"N")


def _zip_bytes(path: Path, obj, records: dict[str, bytes]) -> None:
    """A torch zip archive of ``obj`` (whose storages and tensors are the stand-ins below), with
    ``records`` as its storages' data, written as ``torch.save`` writes one."""

    class Storage:
        def __init__(self, key, numel):
            self.key, self.numel = key, numel

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return ("storage", torch.FloatStorage, o.key, "cpu", o.numel) if isinstance(o, Storage) else None

    def tensor(key, numel, offset, size, stride):
        class T:
            def __reduce__(self):
                return (torch._utils._rebuild_tensor_v2,
                        (Storage(key, numel), offset, size, stride, False, collections.OrderedDict()))
        return T()

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({k: tensor(*v) for k, v in obj.items()})
    w = torch._C.PyTorchFileWriter(str(path))
    for name, data in [("data.pkl", buf.getvalue()), ("byteorder", b"little"),
                       *((f"data/{k}", v) for k, v in records.items()), ("version", b"3\n")]:
        w.write_record(name, data, len(data))
    w.write_end_of_file()


def _adapter(folder: Path, weights: bytes | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if weights is not None:
        (folder / "adapter_model.bin").write_bytes(weights)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2,
                                                             "target_modules": ["q_proj"]}))
    return folder


def test_a_legacy_pickle_claiming_more_than_its_file_holds_is_refused_before_allocating(tmp_path):
    """A legacy (non-zip) ``.bin`` names each storage's size in its pickle, and torch allocates that
    size before reading the data: a 486-byte adapter claiming 10^12 floats asked for 4 TB ("out of
    memory", exit 6, advising --size; on a machine with the memory, the allocation was made). The
    claims are read first, calling nothing of the file, and checked against its size (one reader
    for adapters and model weights)."""
    from showo2_cli.weights import read_state_dict

    lying = tmp_path / "lying.bin"
    lying.write_bytes(_legacy_bytes({KEY: torch.zeros(2, 8)}, numel=10**12))
    with pytest.raises(ModelError, match=r"its tensors claim 4,000,000,000,000 bytes but the file holds 486 "):
        read_state_dict(lying)
    # a true legacy file (two tensors viewing one storage) reads as it did
    honest = tmp_path / "honest.bin"
    base = torch.arange(6.0)
    honest.write_bytes(_legacy_bytes({"a": base.view(2, 3), "b": base[3:]}))
    state = read_state_dict(honest)
    assert state["a"].tolist() == [[0, 1, 2], [3, 4, 5]] and state["b"].tolist() == [3, 4, 5]


def test_a_tensor_larger_than_its_stored_bytes_is_refused(tmp_path, capsys):
    """Strides of 0 make 16 stored floats a (10^6, 10^6) tensor: the adapter loaded, and its NaN
    check allocated 10^12 values ("out of memory", exit 6). A tensor is refused where it has more
    values than its storage's bytes hold; one that shares its storage, or overlaps within it, reads."""
    from showo2_cli.cli import main
    from showo2_cli.weights import read_state_dict

    data = struct.pack("<16f", *range(16))
    path = tmp_path / "zero.bin"
    _zip_bytes(path, {KEY: ("0", 16, 0, (10**6, 10**6), (0, 0))}, {"0": data})
    with pytest.raises(ModelError, match=r"claims \(1000000, 1000000\) \(1,000,000,000,000 values\) from 64 stored "
                                         r"bytes \(strides \(0, 0\)\): not dense weights"):
        read_state_dict(path)
    folder = _adapter(tmp_path / "ad")
    (folder / "adapter_model.bin").write_bytes(path.read_bytes())
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "--lora", str(folder), "-o", str(out), "--steps", "2", "--quiet"]) == 4
    err = capsys.readouterr().err.strip()  # (exit 6 before: "out of memory (lower --size ...)")
    assert len(err.splitlines()) == 1 and "not dense weights" in err and not out.exists()
    shared = tmp_path / "shared.bin"
    _zip_bytes(shared, {"a": ("0", 16, 0, (2, 8), (8, 1)), "b": ("0", 16, 4, (4, 3), (1, 1))}, {"0": data})
    state = read_state_dict(shared)
    assert state["a"].flatten().tolist() == list(range(16)) and state["b"][3].tolist() == [7, 8, 9]


def test_a_zip_archive_naming_a_tensor_twice_is_refused(tmp_path):
    """A ``.bin`` archive with a second ``data/0`` entry appended (NaN in place of ones): torch read
    the first copy and loaded it, Python's zipfile (and unzip) read the last, so the file meant two
    adapters at once. torch.save writes each entry once: such an archive is refused, naming it."""
    import warnings
    import zipfile

    from showo2_cli.weights import read_state_dict

    path = tmp_path / "twice.bin"
    torch.save({KEY: torch.ones(2, 8)}, path)
    entry = next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("data/0"))
    assert read_state_dict(path)[KEY].tolist() == [[1.0] * 8] * 2
    with warnings.catch_warnings(), zipfile.ZipFile(path, "a", compression=zipfile.ZIP_STORED) as archive:
        warnings.simplefilter("ignore")  # ("Duplicate name")
        archive.writestr(entry, struct.pack("<16f", *[float("nan")] * 16))
    with pytest.raises(ModelError, match=rf"its zip archive holds {entry} twice, with nothing to tell which copy"):
        read_state_dict(path)
