"""Hostile inputs, round fourteen (probe BS): tonight's new surfaces as a hostile adapter or data set
would use them. A legacy ``.bin`` whose pickle claimed more bytes than its file had torch allocate
them; a tensor of zero strides read 16 stored floats as 10^12 values; an imagefolder's
``metadata.jsonl`` read files outside its folder; a conversation naming several pictures trained
with its first; a converted records file's errors named the index, not the user's file. Each test
fails on the code before its fix."""

from __future__ import annotations

import collections
import io
import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from PIL import Image

from showo2_cli.errors import InputError, ModelError

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
    held = lying.stat().st_size  # (486 bytes under Python 3.11.7's pickle, 476 under 3.11.2's)
    with pytest.raises(ModelError, match=rf"its tensors claim 4,000,000,000,000 bytes but the file holds {held} "):
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


def _imagefolder(tmp_path: Path, records: list[dict]):
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "pairs", "role": "t2i", "path": str(data),
                                                    "resolution": 32}], batch={"t2i": 1}), source="c.toml")
    return make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]


def test_an_imagefolder_reads_no_file_outside_its_folder(tmp_path):
    """A data folder's ``metadata.jsonl`` (or ``.csv``) names its files relative to the folder, and
    Hugging Face ``datasets`` reads only the files found in the folder (a record is matched to a file
    by its relative name; ``../x`` or ``/x`` matches none). Here such names were read: a hostile
    data set's ``../secret.png``, ``/abs/secret.png`` or ``caption_file`` ``../../etc/hostname``
    trained on files the user never gave. They are refused (the item is passed over, said why); a
    name within the folder, and a link the folder holds, read as before."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(secret)
    (tmp_path / "secret.txt").write_text("a secret")
    (tmp_path / "data" / "sub").mkdir(parents=True)
    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "data" / "sub" / "red.png")
    (tmp_path / "data" / "linked.png").symlink_to(secret)
    records = [{"file_name": "../secret.png", "text": "a"}, {"file_name": str(secret), "text": "b"},
               {"file_name": "sub/../../secret.png", "text": "c"}, {"file_name": "..\\secret.png", "text": "d"},
               {"file_name": "sub/red.png", "caption_file": "../secret.txt"},
               {"file_name": "sub/red.png", "caption_file": str(tmp_path / "secret.txt")},
               {"file_name": "sub/./red.png", "text": "red"}, {"file_name": "linked.png", "text": "linked"}]
    source = _imagefolder(tmp_path, records)
    for i in range(6):
        with pytest.raises(InputError, match=rf"record {i} (file_name|caption_file) '.*' is outside the data folder"):
            source.get(i)
    assert [(s.text, s.pixels[0, 16, 16].tolist()) for s in map(source.get, (6, 7))] == [
        ("red", [255, 0, 0]), ("linked", [9, 9, 9])]


def test_a_conversation_naming_several_pictures_is_passed_over_not_trained_on_the_first(tmp_path):
    """LLaMA-Factory's ``images`` list (and LLaVA records with one) may name several pictures, one
    for each ``<image>`` of the text: the conversation trained with the first picture alone, the
    words about the others kept, silently. Show-o2 trains one picture a conversation: such a record
    is refused (the item passed over, said why); a list of one reads as before."""
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    for name, rgb in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        Image.new("RGB", (32, 32), rgb).save(tmp_path / f"{name}.png")
    turns = [{"role": "user", "content": "<image><image>Which is red?"}, {"role": "assistant", "content": "The first."}]
    rows = [{"messages": turns, "images": ["a.png", "b.png"]},
            {"messages": turns, "images": ["a.png"] * 10_000},
            {"messages": turns[:1] + [{"role": "assistant", "content": "red"}], "images": ["a.png"]}]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config(tiny_config(tmp_path, data=[{"kind": "llava", "role": "mmu", "path": str(tmp_path / "chat.jsonl"),
                                                    "resolution": 32}], batch={"mmu": 1}), source="c.toml")
    source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
    for i, n in ((0, 2), (1, 10_000)):
        with pytest.raises(InputError, match=rf"record {i} names {n} images: a conversation trains with one image"):
            source.get(i)
    sample = source.get(2)
    assert sample.turns[0][1] == "red" and sample.pixels[0, 16, 16].tolist() == [255, 0, 0]


def test_a_converted_records_file_is_named_in_its_errors_not_its_index(tmp_path):
    """A ``.json`` array or a ``.csv`` is converted to an index JSONL under the run's folder; an
    element that is not an object, or one over the 8 MiB a record may have (a CSV row of a million
    columns), was said of ``'.../index/2ded787efd41dddf3eea.jsonl' record 0``, a file the user never
    made. The user's file is named, in the loader's workers too."""
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from test_train import tiny_config

    array, folder = tmp_path / "chat.json", tmp_path / "data"
    array.write_text('[1, {"conversations": []}]')
    folder.mkdir()  # a metadata.csv row of 90 fields named in 100 KB each (and its captions' text): a 9 MB record
    names = [f"c{i}" + "n" * 100_000 for i in range(90)]
    (folder / "metadata.csv").write_text(",".join(["file_name", "text", *names]) + "\nx.png,a caption" + ",y" * 90 + "\n")
    for kind, path, shown, why in (("llava", array, array, "is not a JSON object"),
                                   ("pairs", folder, folder, "is over 8 MiB")):
        cfg = parse_config(tiny_config(tmp_path, data=[{"kind": kind, "role": "t2i" if kind == "pairs" else "mmu",
                                                        "path": str(path), "resolution": 32}],
                                       batch={"t2i" if kind == "pairs" else "mmu": 1}), source="c.toml")
        source = make_sources(cfg, get_spec("tiny"), tmp_path / "index")[0]
        for records in (source.records, pickle.loads(pickle.dumps(source.records))):  # (as a worker has it)
            with pytest.raises(InputError, match=rf"^'{shown}' record 0 {why}"):
                records[0]
