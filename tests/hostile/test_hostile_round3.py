"""Hostile inputs, round three (in process, fast): tiny files that asked for huge work or memory,
truncations that read as shorter videos, cover art read as video, latents and noise whose
values or dtypes slipped past the checks, rates the writers cannot honour.

Each case was found by probing the released tool; each test fails on the code before its fix.
"""

from __future__ import annotations

import struct
import time
import zlib
from fractions import Fraction

import numpy as np
import pytest
import torch
from hostile_corpus import gradient
from PIL import Image
from safetensors.torch import save_file

from showo2_cli import media as M
from showo2_cli.errors import InputError, ResourceError, UsageError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def thin_png(path, width: int, height: int):
    """A valid grey PNG of a few KB for any size (no big array is made)."""
    comp = zlib.compressobj(9)
    row = b"\0" + b"\x80" * width
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b""))
    return path


def canvas_gif(path, frames: int, width: int, height: int):
    """A GIF of ``frames`` 1x1 frames on a ``width x height`` canvas: 23 bytes a frame."""
    out = bytearray(b"GIF89a" + struct.pack("<HH", width, height) + bytes([0xF0, 0, 0, 0, 0, 0, 255, 255, 255]))
    out += b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = b"\x21\xF9\x04\x00\x02\x00\x00\x00" + b"\x2C" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00"
    path.write_bytes(bytes(out) + frame * frames + b"\x3B")
    return path


# ---- images whose resize would be huge ---------------------------------------------------------

def test_a_thin_image_is_cropped_before_it_is_resized(tmp_path):
    """4,000,000 x 1 pixels scaled to a short side of 64 was a 768 GB intermediate image."""
    img = M.read_image(thin_png(tmp_path / "wide.png", 4_000_000, 1))
    start = time.perf_counter()
    out = M.resize_center_crop(img, 64)
    assert out.size == (64, 64) and time.perf_counter() - start < 10
    assert np.abs(np.asarray(out).astype(int) - 0x80).max() <= 1
    tall = M.resize_center_crop(M.read_image(thin_png(tmp_path / "tall.png", 3, 900_000)), (32, 64))
    assert tall.size == (64, 32)


def test_ordinary_images_keep_the_exact_torchvision_resize(media_dir):
    """The crop-first path is only for extreme shapes: a photo is resized whole, then cropped."""
    photo = M.read_image(next(media_dir.glob("*.jpg")))
    for size in (64, 432, (64, 128)):
        th, tw = (size, size) if isinstance(size, int) else size
        w, h = photo.size
        if th / h >= tw / w:
            new_w, new_h = max(tw, int(th * w / h)), th
        else:
            new_w, new_h = tw, max(th, int(tw * h / w))
        whole = photo.resize((new_w, new_h), Image.Resampling.BICUBIC)
        top, left = int(round((new_h - th) / 2)), int(round((new_w - tw) / 2))
        expected = whole.crop((left, top, left + tw, top + th))
        assert np.array_equal(np.asarray(M.resize_center_crop(photo, size)), np.asarray(expected)), size


# ---- GIFs whose frames paint a huge canvas -------------------------------------------------------

def test_gif_frames_are_counted_without_decoding(media_dir, tmp_path):
    from showo2_cli.media.animation import gif_frame_count

    real = media_dir / "waves.gif"
    with Image.open(real) as im:
        assert gif_frame_count(real) == im.n_frames
    assert gif_frame_count(canvas_gif(tmp_path / "a.gif", 5, 8, 8)) == 5
    assert gif_frame_count(canvas_gif(tmp_path / "b.gif", 5000, 8, 8), stop_after=10) == 11
    truncated = tmp_path / "t.gif"
    truncated.write_bytes(canvas_gif(tmp_path / "c.gif", 5, 8, 8).read_bytes()[:-30])
    assert gif_frame_count(truncated) < 5


def test_a_gif_with_a_huge_canvas_and_many_frames_is_refused_at_once(tmp_path):
    """4.6 KB: 200 frames on an 8000x8000 canvas took 52 s to check (20,000 frames: hours)."""
    bomb = canvas_gif(tmp_path / "bomb.gif", 200, 8000, 8000)
    start = time.perf_counter()
    for check in (M.check_video, M.read_video):
        with pytest.raises(ResourceError, match="8000x8000 canvas"):
            check(bomb)
    assert time.perf_counter() - start < 5
    small = M.read_video(canvas_gif(tmp_path / "ok.gif", 20, 64, 48))  # the same shape, a sane size
    assert small.frames.shape == (20, 48, 64, 3)


# ---- truncation and streams that are not video ------------------------------------------------------

@pytest.mark.parametrize("ext", [".mp4", ".mov"])
def test_a_video_cut_at_a_packet_boundary_is_truncated_not_shorter(tmp_path, ext):
    import av

    full = tmp_path / f"full{ext}"
    M.write_video(full, gradient(32, 48, 17), 8)
    with av.open(str(full)) as c:
        ends = sorted({p.pos + p.size for p in c.demux(c.streams.video[0]) if p.size and p.pos is not None})
    data = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    accepted = []
    for end in ends[:-1]:
        if end >= len(data):
            continue
        cut.write_bytes(data[:end])
        try:
            accepted.append((end, M.read_video(cut).frames.shape[0]))
        except (InputError, ResourceError):
            pass
    assert accepted == [] and len(ends) >= 5
    assert M.read_video(full).frames.shape[0] == 17


def test_cover_art_of_an_audio_file_is_not_a_video(tmp_path):
    import av

    # an mp3 with an ID3 APIC frame: FFmpeg shows the picture as an ``attached_pic`` video stream
    jpeg = tmp_path / "art.jpg"
    Image.new("L", (40, 24), 100).save(jpeg)
    body = b"\x00image/jpeg\x00\x03\x00" + jpeg.read_bytes()
    frame = b"APIC" + struct.pack(">I", len(body)) + b"\x00\x00" + body
    size = len(frame)
    syncsafe = bytes([(size >> 21) & 127, (size >> 14) & 127, (size >> 7) & 127, size & 127])
    mpeg_frame = bytes([0xFF, 0xFB, 0x90, 0x64]) + bytes(413)  # silent MPEG-1 layer III frames
    cover = tmp_path / "cover.mp3"
    cover.write_bytes(b"ID3\x03\x00\x00" + syncsafe + frame + mpeg_frame * 20)
    with av.open(str(cover)) as c:
        assert c.streams.video, "FFmpeg should show the cover as a video stream"
    with pytest.raises(InputError, match="no video stream"):
        M.probe_kind(cover)


# ---- latents and noise ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["float8", "float64-overflow", "no-frames", "fps-tiny"])
def test_latents_files_with_bad_values_are_input_errors(tmp_path, case):
    import json

    from showo2_cli.pipelines.latents import load_latents

    meta = None
    if case == "float8":
        z = torch.randn(16, 1, 4, 4).to(torch.float8_e4m3fn)
    elif case == "float64-overflow":  # finite as float64, inf once float32
        z = torch.full((16, 1, 4, 4), 1e300, dtype=torch.float64)
    elif case == "no-frames":
        z = torch.zeros(16, 0, 4, 4)
    else:
        z, meta = torch.zeros(16, 2, 4, 4), {"showo2": json.dumps({"fps": 1e-300})}
    path = tmp_path / f"{case}.safetensors"
    save_file({"latents": z}, str(path), metadata=meta)
    with pytest.raises(InputError, match=path.name):
        load_latents(path)


def test_noise_that_overflows_float32_is_refused(tmp_path):
    from showo2_cli.saving import load_noise

    path = tmp_path / "noise.safetensors"
    save_file({"noise": torch.full((16, 8, 8), 1e300, dtype=torch.float64)}, str(path))
    with pytest.raises(InputError, match="finite"):
        load_noise(path)


# ---- frame rates and counts ------------------------------------------------------------------------

def test_rates_outside_what_the_writers_honour(tmp_path):
    import av

    with pytest.raises(UsageError, match="fps"):
        M.write_video(tmp_path / "slow.gif", gradient(16, 16, 3), 1e-4)
    gap = tmp_path / "gap.mkv"  # 5 frames over 10 hours: an average rate of 0.00014 fps
    with av.open(str(gap), "w") as c:
        s = c.add_stream("mpeg4", rate=Fraction(1))
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for pts, f in zip([0, 1, 2, 3, 36_000_000], gradient(48, 64, 5), strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = pts, Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    video = M.read_video(gap)  # the duration only estimates the size: 5 frames are read, not refused
    assert video.frames.shape[0] == 5 and M.MIN_FPS <= video.fps <= M.MAX_FPS


def test_first_frames_only_are_decoded(media_dir):
    video = M.read_video(media_dir / "video1.mp4", first=5)
    whole = M.read_video(media_dir / "video1.mp4")
    assert video.frames.shape[0] == 5 and np.array_equal(video.frames, whole.frames[:5])
    assert M.read_media(media_dir / "video1.mp4", first=10**6).frames.shape[0] == whole.frames.shape[0]


def test_default_decode_name_of_a_dot_file():
    from showo2_cli.pipelines.latents import _stem

    assert _stem("x.safetensors") == "x" and _stem("x.latents.safetensors") == "x"
    assert _stem(".hidden.safetensors") == ".hidden"


def test_a_notice_is_one_line(capsys):
    from showo2_cli.cli import common

    common.STATE.update(quiet=False, json=False)
    common.notice("the latents were encoded with 'evil\nshowo2: error: forged\x1b[31m'")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err


# ---- model folders --------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["tokenizer_config", "config"])
def test_a_folder_asking_to_run_its_own_code_is_refused_without_a_prompt(tiny_model_dir, tmp_path, monkeypatch,
                                                                         where):
    """transformers asks "Do you wish to run the custom code? [y/N]" on stdout and reads stdin:
    a piped "yes" ran the folder's Python file."""
    import io
    import json
    import shutil

    from showo2_cli.errors import ModelError
    from showo2_cli.tokenizer import load_tokenizer

    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    marker = tmp_path / "RAN"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nclass Evil: pass\n")
    if where == "tokenizer_config":
        path = folder / "tokenizer_config.json"
        cfg = json.loads(path.read_text())
        cfg.update(tokenizer_class="Evil", auto_map={"AutoTokenizer": ["evil.Evil", None]})
    else:  # the official layout's llm/config.json: the tokenizer folder's model config
        path = folder / "config.json"
        cfg = json.loads(path.read_text()) if path.exists() else {}
        cfg.update(model_type="evil", auto_map={"AutoConfig": "evil.Evil", "AutoTokenizer": ["evil.Evil", None]})
        tok = folder / "tokenizer_config.json"
        tok_cfg = json.loads(tok.read_text())
        tok_cfg.pop("tokenizer_class", None)
        tok.write_text(json.dumps(tok_cfg))
    path.write_text(json.dumps(cfg))
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\ny\n"))
    try:
        load_tokenizer(folder)
    except ModelError:
        pass  # refused (or unusable): either way one line, exit 4
    assert not marker.exists()
    assert __import__("sys").stdin.read() == "yes\ny\n"  # stdin never read


@pytest.mark.parametrize("change", [{"rms_norm_eps": -1.0}, {"resolution": 1_000_000}, {"num_kv_heads": 0},
                                    {"head_layers": -2}])
def test_model_configs_with_sizes_that_make_no_model(tiny_model_dir, tmp_path, capsys, change):
    """A negative eps gave a black image with exit 0; a huge resolution was blamed on --size."""
    from hostile_corpus import model_with_spec

    from showo2_cli.cli import main

    folder = model_with_spec(tiny_model_dir, tmp_path / "m", change)
    assert main(["info", str(folder)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("showo2: error: "), err
    assert next(iter(change)) in err[0] or "a resolution of" in err[0], err


def test_official_llm_config_with_no_heads(tmp_path, capsys):
    import json
    import shutil

    from conftest import PARITY_DIR
    from showo2_cli.cli import main

    if not (PARITY_DIR / "model" / "llm" / "config.json").is_file():
        pytest.skip("no parity model")
    folder = tmp_path / "par"
    shutil.copytree(PARITY_DIR / "model", folder)
    path = folder / "llm" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["num_attention_heads"] = 0
    path.write_text(json.dumps(cfg))
    assert main(["info", str(folder)]) == 4
    assert "num_attention_heads" in capsys.readouterr().err


def test_init_refuses_the_current_folder_and_bad_seeds(tmp_path, monkeypatch, capsys):
    from showo2_cli.cli import main

    here = tmp_path / "here"
    here.mkdir()
    (here / "keep.txt").write_text("keep")
    monkeypatch.chdir(here)
    assert main(["init", "-o", ".", "--overwrite"]) == 5
    assert "current folder" in capsys.readouterr().err
    assert sorted(p.name for p in here.iterdir()) == ["keep.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["here"]
    for seed in ("18446744073709551616", "-1"):
        assert main(["init", "-o", str(tmp_path / "m"), "--seed", seed]) == 2
        assert "--seed" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_info_on_a_file_names_the_file(tmp_path, capsys):
    from showo2_cli.cli import main

    (tmp_path / "a-file").write_text("x")
    assert main(["info", str(tmp_path / "a-file")]) == 4
    assert "a-file' is a file" in capsys.readouterr().err


def test_an_allocation_failure_is_exit_6_not_a_bug(monkeypatch, capsys):
    import showo2_cli.cli as cli

    def boom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 256000000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(cli, "app", boom)
    assert cli.main(["info", "demo"]) == 6
    assert "out of memory" in capsys.readouterr().err


def test_out_of_memory_advice_names_only_the_commands_own_options():
    """The advice named --size, --frames and --batch-size for every command (init, info, train...)."""
    from showo2_cli.cli import _memory_advice

    t2i = _memory_advice(["--debug", "t2i", "a cat"])
    assert "--size" in t2i and "--offload" in t2i and "--frames" not in t2i
    assert "--frames" in _memory_advice(["t2v", "waves"])
    assert "--max-new-tokens" in _memory_advice(["caption", "x.png"]) and "--size" not in _memory_advice(["caption"])
    assert _memory_advice(["info", "demo"]) == _memory_advice([]) == ""
    assert _memory_advice(["init", "-o", "m"]) == " (keep the memory guard on: --max-memory)"  # init has it now


# ---- training runs ----------------------------------------------------------------------------------

def test_a_damaged_run_folder_is_a_model_error_naming_the_file(tmp_path):
    """A truncated, empty or foreign trainer_state.pt, or a ``latest`` that is a FIFO or a folder,
    gave internal errors, a false "interrupted" (exit 130) or a hang."""
    import os

    from showo2_cli.errors import ModelError
    from showo2_cli.training import checkpoint as ckpt

    run = tmp_path / "run"
    folder = run / "checkpoint-000002"
    folder.mkdir(parents=True)
    good = {"format": 1, "mode": "stage1", "step": 2, "optimizer": {"state": {}, "param_groups": []}}
    torch.save(good, folder / ckpt.STATE_FILE)
    assert ckpt.read_state(folder, "stage1", 1)["step"] == 2
    raw = (folder / ckpt.STATE_FILE).read_bytes()
    for damage in (b"", raw[: len(raw) // 2], "list", "no-optimizer", "step"):
        if isinstance(damage, bytes):
            (folder / ckpt.STATE_FILE).write_bytes(damage)
        else:
            bad = {"list": [1, 2, 3], "no-optimizer": {k: v for k, v in good.items() if k != "optimizer"},
                   "step": {**good, "step": "many"}}[damage]
            torch.save(bad, folder / ckpt.STATE_FILE)
        with pytest.raises(ModelError, match="trainer_state.pt|not a 'stage1' training checkpoint"):
            ckpt.read_state(folder, "stage1", 1)
    pointer = run / ckpt.LATEST
    os.mkfifo(pointer)
    start = time.perf_counter()
    with pytest.raises(ModelError, match="not a regular file"):
        ckpt.latest_checkpoint(run)
    assert time.perf_counter() - start < 5
    pointer.unlink()
    pointer.mkdir()
    with pytest.raises(ModelError, match="not a regular file"):
        ckpt.latest_checkpoint(run)
    pointer.rmdir()
    pointer.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ModelError, match="latest"):
        ckpt.latest_checkpoint(run)


def test_a_batch_too_large_for_any_step_fails_the_check(tmp_path):
    from conftest import REPO
    from showo2_cli.training.config import load_config
    from showo2_cli.training.schema import MAX_BATCH

    example = REPO / "examples" / "train_tiny.toml"
    if not example.is_file():
        pytest.skip("no example config")
    with pytest.raises(UsageError, match="batch.t2i"):
        load_config(example, overrides={"batch.t2i": MAX_BATCH + 1})


def test_a_run_that_fails_before_it_starts_leaves_no_folder(tmp_path):
    """An empty data folder failed after the model was built and left run/.data-index behind."""
    from showo2_cli.training import train
    from showo2_cli.training.config import parse_config

    (tmp_path / "empty").mkdir()
    raw = {"mode": "showo2", "output_dir": str(tmp_path / "run"), "model": {"init_spec": "tiny", "vae_base_dim": 8},
           "data": [{"kind": "pairs", "role": "t2i", "path": str(tmp_path / "empty")}], "batch": {"t2i": 2},
           "optim": {"max_steps": 2}}
    with pytest.raises(InputError, match="empty"):
        train(parse_config(raw, base_dir=tmp_path))
    assert not (tmp_path / "run").exists()
    (tmp_path / "one.jsonl").write_text("not json\n")  # fails at the first step, naming the file
    with pytest.raises(InputError, match="one.jsonl' record 0 is not valid JSON"):
        train(parse_config({**raw, "data": [{"kind": "pairs", "role": "t2i", "path": str(tmp_path / "one.jsonl")}]},
                           base_dir=tmp_path))
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made is left alone
    with pytest.raises(InputError):
        train(parse_config({**raw, "output_dir": str(tmp_path / "mine")}, base_dir=tmp_path))
    assert (tmp_path / "mine").is_dir()
