"""Probe JE: the defects structure-aware fuzzing (``benchmarks/fuzz_structured.py``) found, each
with the smallest input that shows it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from showo2_cli import media as M


def _frames(n: int) -> list[Image.Image]:
    return [Image.fromarray(np.full((16, 24, 3), 40 * i + 20, np.uint8)) for i in range(n)]


def test_apng_default_image_is_not_a_frame(tmp_path):
    """An APNG whose default image is not part of the animation (its IDAT before the first fcTL, as
    the APNG spec allows and Pillow's ``default_image=True`` writes) was refused as "truncated or
    corrupt (the file lists 5 frames and holds 4)": Pillow counts the default image as frame 0. Its
    animation is its 4 frames, as browsers play it."""
    default, *anim = _frames(5)
    p = tmp_path / "a.png"
    default.save(p, save_all=True, append_images=anim, duration=125, default_image=True)
    assert M.probe_kind(p) == "video"
    M.check_video(p)
    media = M.read_media(p)
    assert media.kind == "video" and media.frames.shape[0] == 4
    assert [int(f[0, 0, 0]) for f in media.frames] == [60, 100, 140, 180]  # not the default image's 20
    assert media.fps == pytest.approx(8.0)  # 125 ms a frame


# ---------------------------------------------------------------- the structure-aware fuzzer's codecs


def _fuzzer():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("fuzz_structured", root / "fuzz_structured.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_structures_are_written_back_byte_for_byte(tmp_path):
    """Each codec's parse then write gives the file back unchanged (so a mutant differs from its
    seed only where it was mutated), and a structured mutant fixes the sizes and checksums: a PNG
    whose IHDR width was changed passes Pillow's CRC check and declares the new width."""
    import struct

    f = _fuzzer()
    seeds = {r: f.seeds(r, (tmp_path / r, (tmp_path / r).mkdir())[0]) for r in ("png", "jpeg", "gif", "mp4")}
    codecs = {"png": (f.png_parse, f.png_write), "jpeg": (f.jpeg_parse, f.jpeg_write), "mp4": (f.mp4_parse, f.mp4_write),
              "gif": (lambda d: f.gif_parse(d), lambda parts: f.gif_write(*parts))}
    for reader, found in seeds.items():
        parse, write = codecs[reader]
        for s in found:
            data = s.path.read_bytes()
            assert write(parse(data)) == data, s.label
    chunks = f.png_parse(seeds["png"][0].path.read_bytes())
    chunks[0][1] = struct.pack(">I", 77) + chunks[0][1][4:]
    (tmp_path / "w.png").write_bytes(f.png_write(chunks))
    with Image.open(tmp_path / "w.png") as im:
        assert im.width == 77
        im.verify()  # every chunk's CRC


def test_webm_positions_follow_the_elements_they_name(tmp_path):
    """EBML elements written back with 8-byte sizes move: the SeekHead's and the Cues' positions
    are set to where they went, so FFmpeg reads the file as before."""
    f = _fuzzer()
    webm = f._video(tmp_path / "a.webm", "libvpx")
    tree = f.ebml_parse(webm.read_bytes())
    f.ebml_fix_positions(tree)
    moved = tmp_path / "b.webm"
    moved.write_bytes(f.ebml_write(tree))
    assert moved.stat().st_size > webm.stat().st_size
    a, b = M.read_media(webm, num_frames=3), M.read_media(moved, num_frames=3)
    assert b.frames.shape == a.frames.shape and np.array_equal(a.frames, b.frames)


def test_mp4_chunk_offsets_move_with_the_mdat(tmp_path):
    """Probe KG: a box grown before the mdat (a moov first, as faststart files have it), or the moov
    moved before the mdat, moves the samples; the chunk offsets (stco) move with them, as a muxer
    writes them, so the mutant reads as its seed did (they pointed where the samples were, and FFmpeg
    read other bytes as the frames, or refused the file)."""
    f = _fuzzer()
    fast = f._video(tmp_path / "fast.mp4", "libx264", faststart=True)
    last = f._video(tmp_path / "last.mp4", "libx264")
    want = M.read_media(fast, num_frames=4).frames
    grown = f.mp4_parse(fast.read_bytes())
    assert [b.kind for b in grown][:2] == [b"ftyp", b"moov"]
    grown[1].children.append(f.Box(b"free", body=b"\0" * 1000))  # the moov 1008 bytes longer
    swapped = f.mp4_parse(last.read_bytes())
    kinds = [b.kind for b in swapped]
    i, j = kinds.index(b"mdat"), kinds.index(b"moov")
    swapped[i], swapped[j] = swapped[j], swapped[i]  # qt-faststart's move
    for name, boxes in (("grown.mp4", grown), ("swapped.mp4", swapped)):
        (tmp_path / name).write_bytes(f.mp4_write(boxes))
        got = M.read_media(tmp_path / name, num_frames=4).frames
        assert got.shape == want.shape and np.array_equal(got, want), name


def test_safetensors_mutations_take_a_metadata_value_an_earlier_one_set():
    """Probe KG: two metadata mutations in one mutant, the first having set a value to 1 or None:
    the second raised TypeError ("object of type 'int' has no len()") and ended the fuzzing run."""
    import json
    import random
    import struct

    f = _fuzzer()
    header = {"__metadata__": {"showo2": json.dumps({"kind": "image", "size": [64, 64]})},
              "latents": {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]}}
    text = json.dumps(header).encode()
    data = struct.pack("<Q", len(text)) + text + b"\0" * 8
    for i in (3647, 5483, 7979, 8504, 10919, 13356, *range(200)):  # (the first six: such mutants, of 20,000)
        out = f.mutate_safetensors(data, random.Random(f"kg:{i}"))
        assert struct.unpack("<Q", out[:8])[0] <= len(out) - 8


def test_png_mutations_take_an_ihdr_cut_short():
    """Probe KG: an IHDR shorter than its width and height (an earlier mutation's, or a seed's) raised
    struct.error in the mutator and ended the apng runs (after 1,200 and 600 mutants)."""
    import random
    import struct
    import zlib

    f = _fuzzer()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = f.PNG_SIG + chunk(b"IHDR", b"\x00\x00\x00\x08") + chunk(b"IEND", b"")
    for i in (2, 6, 25):  # (mutants that change the IHDR's height: of the first 60)
        assert f.mutate_png(data, random.Random(f"kg:{i}")).startswith(f.PNG_SIG)
