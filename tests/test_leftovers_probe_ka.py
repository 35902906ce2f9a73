"""Probe KA: the small leftovers of the last session's probes (JJ, JC, JE, JK)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest

FIRST_LOADS = """
import sys
import threading
from pathlib import Path

import showo2_cli

demo = Path(showo2_cli.__file__).parent / "assets" / "demo"


def tokenizer():
    from showo2_cli.tokenizer import load_tokenizer

    load_tokenizer(demo)


def scheduler():
    from showo2_cli.sampling import scheduler_for

    scheduler_for("unipc", 4, 3.0)


def vae_module():
    import showo2_cli.modeling.vae  # noqa: F401


work = {"tokenizer": [tokenizer] * 4, "diffusers": [scheduler, scheduler, vae_module, vae_module]}[sys.argv[1]]
start, failed = threading.Barrier(len(work)), []


def first(job):
    start.wait()
    try:
        job()
    except Exception as e:
        failed.append(str(e))


threads = [threading.Thread(target=first, args=(job,)) for job in work]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(failed), failed[:1])
"""


@pytest.mark.slow
@pytest.mark.parametrize("work", ["tokenizer", "diffusers"])
def test_first_imports_in_several_threads_at_once_all_succeed(work):
    """Probe JJ: three threads each making their first ``load_tokenizer`` call at once (nothing of
    transformers imported yet), 2 of the 3 failed: "cannot import name 'AutoTokenizer' from
    'transformers'", its lazy module imported in several threads at once. diffusers' the same: a
    sampler's scheduler made while another thread imported the VAE's module, "cannot import name
    'FlowMatchEulerDiscreteScheduler' from 'diffusers'". The project's imports of both now go one
    thread at a time (``quiet_imports``): in a fresh process, every thread's first use succeeds."""
    run = subprocess.run([sys.executable, "-c", FIRST_LOADS, work], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "0 []", run.stdout


def test_two_threads_import_blocks_take_turns_and_leave_the_loggers_as_they_were():
    """Two threads in ``quiet_imports`` at once (two first loads): each saved the noisy loggers'
    levels and put them back when it left, so the one that came in second saved the block's ERROR
    and, leaving last, left torchao's warnings hidden for good. The blocks now take turns."""
    from showo2_cli.runtime import IMPORT_NOISE, quiet_imports

    logger = logging.getLogger(IMPORT_NOISE[0])
    before = logger.level
    logger.setLevel(logging.WARNING)
    a_in, b_in, a_out, overlapped = threading.Event(), threading.Event(), threading.Event(), []

    def first():
        with quiet_imports():
            a_in.set()
            overlapped.append(b_in.wait(0.5))  # the second came in meanwhile
        a_out.set()

    def second():
        a_in.wait(60)
        with quiet_imports():
            b_in.set()
            a_out.wait(60)  # (leaves after the first, where both are in at once)

    try:
        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert overlapped == [False]
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(before)


def _cli(args, capsys):
    from showo2_cli.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dtype_records_use_the_name_the_option_resolves_to(tmp_path, capsys):
    """Probe JC: ``convert --dtype Float16 --json`` recorded "Float16" as typed and ``init --dtype
    bfloat16`` "bfloat16", where generated files record ``bf16``: three spellings of one option. Each now
    records the canonical name, the one ``check_dtype`` resolves the option to."""
    from showo2_cli.options import check_dtype

    assert [check_dtype(d) for d in ("Float16", "BFLOAT16", "fp32", "Auto")] == ["fp16", "bf16", "fp32", "auto"]
    assert check_dtype("KEEP", extra=("keep",)) == "keep"
    code, out, err = _cli(["init", "--spec", "tiny", "-o", tmp_path / "m", "--dtype", "BFloat16", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["dtype"] == "bf16"


def test_convert_records_the_canonical_dtype_and_takes_keep_in_any_case(tmp_path, capsys):
    """``convert --dtype Float16 --json`` recorded "Float16"; ``--dtype KEEP`` passed the check and then
    failed: "unknown dtype 'KEEP'; use one of fp32, bf16, fp16" (exit 2)."""
    code, _, err = _cli(["init", "--spec", "tiny", "-o", tmp_path / "m", "--json"], capsys)
    assert code == 0, err
    for typed, recorded in (("Float16", "fp16"), ("KEEP", "keep")):
        code, out, err = _cli(["convert", tmp_path / "m", "-o", tmp_path / typed, "--dtype", typed, "--json"], capsys)
        assert code == 0, err
        assert json.loads(out)["dtype"] == recorded


def test_the_chat_help_shows_both_sizes_t2i_takes():
    """Probe JC: the chat's ``/help`` showed ``/t2i ... [--size N]`` where ``/t2i`` takes ``t2i``'s own
    ``--size``, N or WIDTHxHEIGHT (read by ``media.parse_size``, as ``showo2 t2i`` reads it)."""
    from showo2_cli import media as M
    from showo2_cli.cli.chat import COMMANDS, parse_t2i

    usage = next(key for key in COMMANDS if key.startswith("/t2i "))
    assert "[--size N|WIDTHxHEIGHT]" in usage
    prompt, params = parse_t2i("a red circle --size 64x32")
    assert prompt == "a red circle" and M.parse_size(params["size"], 16) == (32, 64)  # (height, width)
    assert M.parse_size(parse_t2i("a red circle --size 64")[1]["size"], 16) == (64, 64)


def test_an_in_memory_apng_is_refused_with_its_animation_frame_count(tmp_path):
    """Probe JE: an APNG whose default image is no frame of its animation, given where an image goes,
    was "an animated image of 5 frames" (Pillow's count, the default image in it) where read as a video
    it is 4 frames; and its advice, ``image.seek(k)``, gave an image refused the same way."""
    from PIL import Image

    from showo2_cli.media import image_input, read_media

    colours = ["red", "lime", "blue", "yellow", "cyan"]
    still = [Image.new("RGB", (16, 16), c) for c in colours]
    still[0].save(tmp_path / "a.png", save_all=True, append_images=still[1:], default_image=True, duration=125)
    assert read_media(tmp_path / "a.png").frames.shape[0] == 4
    with Image.open(tmp_path / "a.png") as im:
        with pytest.raises(ValueError, match=r"animated image of 4 frames: .*image\.seek\(k\), then image\.copy\(\)"):
            image_input(im)
        im.seek(2)
        assert np.asarray(image_input(im.copy()))[0, 0].tolist() == [0, 0, 255]


@pytest.mark.parametrize("entry", ["", "."])
def test_a_shard_index_naming_no_file_is_refused_naming_its_entry(tmp_path, entry):
    """Probe JK: a shard index naming "" was read as naming the folder itself: "weight file 'FOLDER' is
    not a regular file". The index's check now refuses it, naming the entry (as it refuses ".")."""
    from showo2_cli.errors import ModelError
    from showo2_cli.hub_files import find_weights

    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {"a.weight": "model.safetensors", "b.weight": entry}}))
    with pytest.raises(ModelError, match=rf"cannot read the shard index '.*': shard names must be file names in the "
                                         rf"folder, got '{re.escape(entry)}'$"):
        find_weights(tmp_path)
