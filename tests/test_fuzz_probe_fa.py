"""Probe FA: mutation fuzzing of every reader (benchmarks/fuzz_readers.py); the defects it found,
each built here, and a small fixed set of its mutants that must all come out clean."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_a_video_stream_whose_codec_ffmpeg_does_not_know_is_an_input_error(tmp_path):
    """An mp4 whose sample entry's codec tag is corrupt (``avc1`` -> ``zzzz``, as a fuzzed byte
    does): PyAV opens it with a video stream whose ``codec_context`` is None, and ``read_media``
    (so ``api.caption``, ``api.encode``, ``showo2 i2v``) raised ``AttributeError: 'NoneType' object
    has no attribute 'width'``; the CLI's check before loading said it as an input error quoting
    that Python message. Now one input error says what it is, from both."""
    from conftest import write_h264
    from showo2_cli.errors import InputError
    from showo2_cli.media import read_media
    from showo2_cli.media.probe import check_video

    good = write_h264(tmp_path / "clip.mp4", np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(5)]))
    assert read_media(good).frames.shape[0] == 5
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(good.read_bytes().replace(b"avc1", b"zzzz"))
    message = rf"cannot read video '{bad}': its video stream's codec is unknown \(corrupt, or none FFmpeg decodes\)"
    with pytest.raises(InputError, match=message):
        read_media(bad)
    with pytest.raises(InputError, match=message):
        check_video(bad)


@pytest.mark.parametrize("kind", ["[", "{"])
def test_a_metadata_jsonl_whose_first_record_nests_too_deeply_is_an_input_error(tmp_path, kind):
    """A training folder's ``metadata.jsonl`` whose first record nests 100,000 levels (its
    ``file_name`` a fuzzed value): the check of its caption field read the first line with
    ``json.loads`` catching only ``ValueError``, and ``build_index`` raised ``RecursionError``
    (``showo2 train``: an internal error). It is now left to the record reader, which says it."""
    from showo2_cli.errors import InputError
    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    folder = tmp_path / "photos"
    folder.mkdir()
    deep = '{"a":' * 100_000 + "0" + "}" * 100_000 if kind == "{" else "[" * 100_000 + "0" + "]" * 100_000
    (folder / "metadata.jsonl").write_text('{"file_name": ' + deep + ', "text": "x"}\n'
                                           + json.dumps({"file_name": "1.png", "text": "one"}) + "\n")
    records = Records(*build_index(DataSource(kind="pairs", path=str(folder)), tmp_path / "index"))
    assert len(records) == 2
    assert records[1] == {"file_name": "1.png", "text": "one"}
    with pytest.raises(InputError, match="record 0 holds JSON nested too deeply"):
        records[0]


def _fuzzer():
    spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "benchmarks" / "fuzz_readers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_mutator_is_deterministic_and_mutates():
    import random

    fz = _fuzzer()
    data = bytes(range(256)) * 4
    a = [fz.mutate(data, "bytes", random.Random(f"3:{i}")) for i in range(20)]
    assert a == [fz.mutate(data, "bytes", random.Random(f"3:{i}")) for i in range(20)]
    assert sum(m != data for m in a) >= 18
    doc = json.dumps({"prompt": "a cat", "n": [1, 2]}).encode()
    mutants = [fz.mutate(doc, "json", random.Random(f"4:{i}")) for i in range(40)]
    assert sum(m != doc for m in mutants) >= 36
    assert any(m.count(b"[") > 1000 or m.count(b"{") > 1000 for m in mutants)  # deep nesting made


def test_a_fixed_set_of_mutants_comes_out_clean(tmp_path):
    """The fuzzer's first mutants of seed 0 of the readers needing no model (two of which found the
    defects above) all give a result or the project's own one-line error: no other exception, hang,
    memory growth or leftover."""
    fz = _fuzzer()
    for reader, count in (("image", 20), ("video", 6), ("prompts", 18), ("metadata", 12)):
        outcomes = fz.run(reader, count, 0, timeout=20, work=tmp_path / reader)
        assert sum(outcomes.values()) == count
        assert not [k for k in outcomes if k[1].startswith("defect")], fz.table(reader, outcomes)
        assert any(k[1] == "ok" for k in outcomes) and any(k[1].startswith("error:") for k in outcomes), reader
