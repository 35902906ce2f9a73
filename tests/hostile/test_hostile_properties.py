"""Property-based: random bytes for the media readers and random option values for the CLI never
escape as anything but the documented errors (no traceback, a documented exit code)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hostile_corpus import gif_bytes, image_bytes, noise
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from showo2_cli import media as M
from showo2_cli.cli import main
from showo2_cli.errors import InputError, ResourceError, Showo2Error, UsageError

EXTS = [".png", ".jpg", ".gif", ".webp", ".bmp", ".tif", ".mp4", ".webm", ".mkv", ".mov", ".avi", ".bin", ""]
MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBPVP8 ",
         b"BM", b"II*\x00", b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", b"\x1aE\xdf\xa3", b"RIFF\x00\x00\x00\x00AVI "]
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI_SETTINGS = settings(SETTINGS, max_examples=40)
_counter = itertools.count()


def _small_valid_files() -> list[bytes]:
    out = [image_bytes(noise(12, 16), "PNG"), image_bytes(noise(12, 16), "JPEG"), image_bytes(noise(12, 16), "WEBP"),
           gif_bytes(np.stack([noise(12, 16, s) for s in range(3)]))]
    return out


VALID = _small_valid_files()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hypothesis-media")


def _read_all(path: Path) -> None:
    """Every reader on one file: only our error types may come out."""
    for reader in (M.probe_kind, M.read_media, M.read_image, M.read_video, M.check_video, M.read_metadata):
        try:
            reader(path)
        except (InputError, ResourceError, UsageError) as e:
            assert "\n" not in str(e) and str(e), repr(e)


@SETTINGS
@given(ext=st.sampled_from(EXTS), magic=st.sampled_from(MAGIC), body=st.binary(max_size=3000))
def test_random_bytes_never_escape_the_media_readers(scratch, ext, magic, body):
    path = scratch / f"random-{next(_counter)}{ext}"
    path.write_bytes(magic + body)
    _read_all(path)


@SETTINGS
@given(which=st.integers(0, len(VALID) - 1), ext=st.sampled_from(EXTS), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=8))
def test_damaged_real_files_never_escape_the_media_readers(scratch, which, ext, cut, flips):
    data = bytearray(VALID[which])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    data = bytes(data[: max(1, int(cut * len(data)))])
    path = scratch / f"damaged-{next(_counter)}{ext}"
    path.write_bytes(data)
    _read_all(path)


@SETTINGS
@given(text=st.one_of(st.text(max_size=20), st.integers(-10**6, 10**6).map(str),
                      st.tuples(st.integers(-40, 5000), st.integers(-40, 5000)).map(lambda t: f"{t[0]}x{t[1]}")))
def test_parse_size_gives_a_size_or_a_usage_error(text):
    try:
        h, w = M.parse_size(text)
    except UsageError as e:
        assert "\n" not in str(e)
    else:
        assert 16 <= h <= M.MAX_SIDE and 16 <= w <= M.MAX_SIDE and h % 16 == 0 and w % 16 == 0


def _run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)  # an exception escaping here fails the test
    return code, out.getvalue(), err.getvalue()


def _check_run(code: int, out: str, err: str, json_mode: bool) -> None:
    assert code in (0, 2, 3, 4, 5, 6), (code, err)
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("showo2: error: ") and "Traceback" not in err, err
        if json_mode:
            assert json.loads(out)["error"]["exit_code"] == code
        else:
            assert out == ""


def _num(values, garbage=("", "x", "1e3", "2.5", "nan", str(10**30), "0x10", "-x")):
    return st.one_of(st.sampled_from(list(values)).map(str), st.sampled_from(list(garbage)))


def _float(garbage=("", "x", "1e999", "-inf", "nan", "0x1p3")):
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
                     st.sampled_from(list(garbage)))


GEN_OPTIONS = st.fixed_dictionaries({}, optional={
    "--steps": _num(range(-3, 4)),
    "--guidance": _float(),
    "--shift": _float(),
    "--size": _num([16, 32, 48, 0, -16, 100, 8, 4096, "16x32", "32x16x16", "4096x16", "x", "99999"]),
    "-n": _num(range(-1, 3)),
    "--batch-size": _num(range(-1, 3)),
    "--seed": _num([0, 1, -1, 2**63, 2**64]),
    "--sampler": st.sampled_from(["euler", "heun", "rk4", ""]),
    "--max-memory": _float(),
    "--device": st.sampled_from(["cpu", "auto", "tpu", "cuda:x", ""]),
    "--dtype": st.sampled_from(["fp32", "auto", "fp8", "", "float64"]),
})


@CLI_SETTINGS
@given(options=GEN_OPTIONS, prompt=st.one_of(st.just("a cat"), st.text(max_size=30)), json_mode=st.booleans(),
       video=st.booleans(), frames=_num(range(-2, 6)), fps=_float())
def test_random_generation_options_end_cleanly(tiny_model_dir, tmp_path_factory, options, prompt, json_mode, video,
                                               frames, fps):
    out_dir = tmp_path_factory.mktemp("gen")
    args = ["t2v" if video else "t2i", prompt, "-m", str(tiny_model_dir), "-o", str(out_dir / ("o.gif" if video
            else "o.png")), "--overwrite", "--quiet"]
    if video:
        args += ["--frames", frames, "--fps", fps]
    for k, v in options.items():
        args += [k, v]
    if json_mode:
        args.append("--json")
    code, out, err = _run(args)
    _check_run(code, out, err, json_mode)
    if code == 0:
        assert list(out_dir.glob("o*.gif" if video else "o*.png"))
    else:
        assert not [p for p in out_dir.iterdir()]


CAPTION_OPTIONS = st.fixed_dictionaries({}, optional={
    "--max-new-tokens": _num(range(-1, 3), ("", "x", str(10**9), "1e3")),
    "--temperature": _float(),
    "--top-p": _float(),
    "--top-k": _num(range(-1, 3)),
    "--frames": _num(range(-1, 3), ("", "x", str(10**6))),
    "--mask": st.sampled_from(["official", "training", "other", ""]),
    "-q": st.one_of(st.text(max_size=20), st.just("")),
})


@settings(CLI_SETTINGS, max_examples=15)
@given(options=CAPTION_OPTIONS, json_mode=st.booleans())
def test_random_caption_options_end_cleanly(tiny_model_dir, tmp_path_factory, options, json_mode):
    media = tmp_path_factory.getbasetemp() / "caption-input.png"
    if not media.exists():
        media.write_bytes(image_bytes(noise(20, 20), "PNG"))
    args = ["caption", str(media), "-m", str(tiny_model_dir), "--no-stream", "--quiet"]
    for k, v in options.items():
        args += [k, v]
    if json_mode:
        args.append("--json")
    code, out, err = _run(args)
    _check_run(code, out, err, json_mode)


@CLI_SETTINGS
@given(size=_num([16, 32, 0, 100, -16, "16x48", "1x1", "4096x4096"]), frames=_num(range(-1, 3)),
       seed=_num([0, -1, 2**64]), max_memory=_float(), json_mode=st.booleans())
def test_random_encode_options_end_cleanly(tiny_model_dir, tmp_path_factory, size, frames, seed, max_memory,
                                           json_mode):
    base = tmp_path_factory.getbasetemp()
    media = base / "encode-input.gif"
    if not media.exists():
        media.write_bytes(gif_bytes(np.stack([noise(20, 20, s) for s in range(5)])))
    out = tmp_path_factory.mktemp("enc") / "z.safetensors"
    args = ["encode", str(media), "-o", str(out), "--vae", str(tiny_model_dir / "vae"), "--size", size,
            "--frames", frames, "--sample", "--seed", seed, "--max-memory", max_memory]
    if json_mode:
        args.append("--json")
    code, stdout, err = _run(args)
    _check_run(code, stdout, err, json_mode)
    assert out.exists() == (code == 0)


def test_errors_keep_their_types():
    assert issubclass(ResourceError, Showo2Error) and ResourceError.exit_code == 6
