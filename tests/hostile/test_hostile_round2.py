"""Hostile inputs, round two: bounded work before trusting a file, special files, full disks,
signals, closed pipes, pathological but legal values and terminal safety.

Each case is a real subprocess with a timeout (a hang fails the test instead of blocking it).
Classes (issue "Hardening, round two"): 1 sizes from files, 2 special files, 3 full disks,
4 late failures, 5 signals, 6 standard streams, 7 pathological values, 8 terminal safety.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_corpus import base_env

pytestmark = pytest.mark.slow
TIMEOUT = 60


def showo2(args, tmp_path, timeout=TIMEOUT, **kw):
    env = base_env(tmp_path / "hf")
    return subprocess.run([sys.executable, "-m", "showo2_cli.cli", *[str(a) for a in args]], capture_output=True,
                          timeout=timeout, env=env, cwd=tmp_path, **kw)


def one_line_error(proc, code, *needles):
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == code, (proc.returncode, err[-600:])
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("showo2: error: "), err[-600:]
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---- 1. sizes taken from files are checked before anything is allocated ------------------------

def test_absurd_layer_count_in_config_fails_at_once(tiny_model_dir, tmp_path):
    m = copy_model(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((m / "config.json").read_text())
    cfg["showo2"]["spec"]["num_layers"] = 5_000_000
    (m / "config.json").write_text(json.dumps(cfg))
    start = time.perf_counter()
    proc = showo2(["info", m], tmp_path)
    one_line_error(proc, 4, "num_layers")
    assert time.perf_counter() - start < 30


def test_absurd_vae_block_count_fails_at_once(tiny_model_dir, tmp_path):
    m = copy_model(tiny_model_dir, tmp_path / "m")
    cfg = json.loads((m / "vae" / "config.json").read_text())
    cfg["num_res_blocks"] = 10_000_000
    (m / "vae" / "config.json").write_text(json.dumps(cfg))
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "in.png")
    proc = showo2(["encode", tmp_path / "in.png", "-m", m, "-o", "z.safetensors"], tmp_path)
    one_line_error(proc, 4, "num_res_blocks")


def test_noise_header_declaring_a_huge_tensor_is_judged_from_the_header(tiny_model_dir, tmp_path):
    header = json.dumps({"noise": {"dtype": "F32", "shape": [1 << 20, 1 << 20, 16], "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "noise.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    proc = showo2(["t2i", "a cat", "-m", tiny_model_dir, "--noise", path, "-o", "o.png", "--steps", "2"], tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr.decode()
    assert not (tmp_path / "o.png").exists()


def test_latents_header_declaring_a_huge_tensor_is_judged_from_the_header(tiny_model_dir, tmp_path):
    header = json.dumps({"latents": {"dtype": "F32", "shape": [16, 4096, 4096, 4096], "data_offsets": [0, 16]}})
    path = tmp_path / "z.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16)
    start = time.perf_counter()
    proc = showo2(["decode", path, "-o", "o.png", "-m", tiny_model_dir], tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr.decode(), proc.stderr.decode()[-300:]
    assert time.perf_counter() - start < 30 and not (tmp_path / "o.png").exists()


def test_caption_frames_has_a_memory_guard(tiny_model_dir, tmp_path, media_dir):
    proc = showo2(["caption", media_dir / "video1.mp4", "-m", tiny_model_dir, "--frames", "512", "--max-memory",
                   "0.01"], tmp_path)
    one_line_error(proc, 6, "needs about", "--frames")


# ---- 2. special files never hang ----------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("which", ["config.json", "model.safetensors"])
def test_a_fifo_in_a_model_folder_is_refused_not_read(tiny_model_dir, tmp_path, which):
    m = copy_model(tiny_model_dir, tmp_path / "m")
    (m / which).unlink()
    os.mkfifo(m / which)
    proc = showo2(["info", m], tmp_path, timeout=30)
    one_line_error(proc, 4, which)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_as_prompts_file_or_noise_is_refused(tiny_model_dir, tmp_path):
    os.mkfifo(tmp_path / "p.txt")
    one_line_error(showo2(["t2i", "--prompts-file", "p.txt", "-m", tiny_model_dir], tmp_path, timeout=30), 3,
                   "p.txt")
    os.mkfifo(tmp_path / "n.safetensors")
    one_line_error(showo2(["t2i", "x", "--noise", "n.safetensors", "-m", tiny_model_dir], tmp_path, timeout=30), 3,
                   "n.safetensors")


def test_decode_never_opens_the_vae_named_in_the_latents_file(tiny_model_dir, tmp_path):
    import torch
    from safetensors.torch import save_file

    marker = tmp_path / "opened"
    os.mkfifo(tmp_path / "vae.pth") if hasattr(os, "mkfifo") else (tmp_path / "vae.pth").write_bytes(b"x")
    meta = {"format": "showo2-latents", "version": 1, "kind": "image", "frames": 1, "vae": str(tmp_path / "vae.pth")}
    save_file({"latents": torch.zeros(16, 1, 8, 8)}, str(tmp_path / "z.safetensors"),
              metadata={"showo2": json.dumps(meta)})
    proc = showo2(["decode", "z.safetensors", "-o", "o.png", "-m", tiny_model_dir], tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()[-400:]
    assert (tmp_path / "o.png").exists() and not marker.exists()


# ---- 3. full disks (a file-size limit stands in: writes fail with an OS error) ----------------

def _limit_file_size():
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
@pytest.mark.parametrize("command", ["init", "encode"])
def test_a_full_disk_is_exit_5_with_nothing_partial(tiny_model_dir, tmp_path, media_dir, command):
    out = tmp_path / "out"
    out.mkdir()
    args = (["init", "-o", out / "model", "--spec", "tiny"] if command == "init" else
            ["encode", media_dir / "video1.mp4", "-m", tiny_model_dir, "-o", out / "z.safetensors", "--frames", "5"])
    proc = showo2(args, tmp_path, preexec_fn=_limit_file_size)
    one_line_error(proc, 5, "cannot write")
    assert list(out.iterdir()) == []  # no temporary or partial file left


# ---- 5. signals -----------------------------------------------------------------------------------

def test_sigterm_during_init_leaves_nothing(tmp_path):
    env = base_env(tmp_path / "hf")
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.cli", "init", "-o", str(tmp_path / "big"), "--spec",
                             "1.5B", "--dtype", "bf16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=tmp_path)
    time.sleep(6)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (143, 0), err.decode()[-400:]
    if proc.returncode == 143:
        assert "terminated" in err.decode() and "Traceback" not in err.decode()
        assert not (tmp_path / "big").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".big")]  # no hidden temporary folder


# ---- 6. closed and broken standard streams ----------------------------------------------------------

def test_a_reader_that_goes_away_is_a_quiet_exit(tmp_path):
    env = base_env(tmp_path / "hf")
    cmd = f"{sys.executable} -m showo2_cli.cli models | head -c1 > /dev/null; echo ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert proc.stdout.strip() in ("0", "141"), proc
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_closed_stdout_and_stdin(tiny_model_dir, tmp_path):
    env = base_env(tmp_path / "hf")
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m showo2_cli.cli models >&-"], capture_output=True,
                          text=True, env=env, timeout=TIMEOUT)
    # the list of models is the whole result: a closed stdout is the output error (probe GK), in one line
    assert "Traceback" not in proc.stderr and proc.returncode == 5, proc.stderr
    assert proc.stderr.startswith("showo2: error: standard output is closed (>&-)"), proc.stderr
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -m showo2_cli.cli t2i --prompts-file - -m "
                                         f"{tiny_model_dir} -o o.png <&-"], capture_output=True, text=True, env=env,
                          timeout=TIMEOUT, cwd=tmp_path)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr


# ---- 7. pathological but legal values -------------------------------------------------------------

def test_deeply_nested_json_config(tiny_model_dir, tmp_path):
    m = copy_model(tiny_model_dir, tmp_path / "m")
    (m / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    one_line_error(showo2(["info", m], tmp_path), 4, "config.json")


@pytest.mark.parametrize("extra, needle", [(["--shift", "1e308"], "--shift"), (["--fps", "0.001"], "--fps"),
                                           (["--seed", str(2**70)], "--seed")])
def test_extreme_numbers_are_usage_errors(tiny_model_dir, tmp_path, extra, needle):
    one_line_error(showo2(["t2v", "x", "-m", tiny_model_dir, "-o", "v.gif", *extra], tmp_path), 2, needle)


def test_huge_seed_in_a_train_config(tmp_path):
    (tmp_path / "t.toml").write_text(f'seed = {2**64}\n[model]\ninit_spec = "tiny"\n[[data]]\nkind = "shapes"\n'
                                     'role = "t2i"\n[batch]\nt2i = 1\n')
    one_line_error(showo2(["train", "t.toml", "--check"], tmp_path), 2, "seed")


def test_a_long_utf8_file_name_is_written(tiny_model_dir, tmp_path):
    name = "\U0001f600" * 60 + ".png"  # 244 bytes: legal, but 100 characters of it would not be
    proc = showo2(["t2i", "a cat", "-m", tiny_model_dir, "--steps", "2", "-o", name, "--seed", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()[-400:]
    assert (tmp_path / name).exists()


# ---- 8. terminal safety ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["\x1b[31mred\x07", "a\x0bb\x0cc", "line\u2028break"])
def test_control_characters_in_names_are_escaped(tmp_path, bad):
    proc = showo2(["caption", f"{bad}.png", "-m", "demo"], tmp_path)
    line = one_line_error(proc, 3)
    assert not any(c in line for c in "\x1b\x07\x0b\x0c\u2028")
