"""Parity probe CC (round nine): fixture sets whose VAE input the official code takes and showo2 refuses.

The official ``WanVAE_.encode`` reads a video in chunks of 1, 4, 4, ... frames and drops a
trailing partial chunk (``iter_ = 1 + (t - 1) // 4``), and its padded strided convolutions take
any spatial size. ``showo2``'s VAE refuses a frame count other than ``1 + 4k`` and a size that is
not a multiple of 8 with one line (a deliberate choice: ``encode`` rounds a video down to its
first ``1 + 4k`` frames, the same latents as the official encoder's). ``make_parity_set.py``
sets with a 7-, 8- or 2-frame video, or a 20x36 one, failed ``test_parity.py``'s VAE case and
``test_vae.py``'s encode tests with that ``InputError``: the tests assumed the public draw's
5-frame 32x32 video. They now check the refusal and compare the latents of the frames the
official encoder reads (and the decode of the stored latents in every case).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from showo2_cli.errors import InputError
from showo2_cli.modeling.vae_files import load_vae
from test_parity import SET, WORST, check_vae

VARIANT_G = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"


@pytest.fixture(scope="module")
def model():
    return SimpleNamespace(vae=load_vae(VARIANT_G / "vae" / "wan21_vae.safetensors"))


@pytest.fixture()
def data():
    return load_file(str(VARIANT_G / "cases" / "vae.safetensors"))


@contextlib.contextmanager
def own_report():
    """``WORST`` and ``SET`` are the run's parity report (conftest prints it at the end): the
    tests here read their own entries of it, then give it back as it was. They cleared it, so a
    run of ``tests/test_parity*.py`` (this file after ``test_parity.py``) reported variant-g's VAE
    figures alone, with no set name, in place of every case of the set under test."""
    saved, name = dict(WORST), SET[0]
    WORST.clear()
    SET[0] = ""  # the report's keys carry no set name
    try:
        yield WORST
    finally:
        WORST.clear()
        WORST.update(saved)
        SET[0] = name


def test_a_video_of_other_than_1_plus_4k_frames_is_compared_on_the_frames_the_official_encoder_reads(model, data):
    video = data["video_input"]
    assert video.shape[2] == 5
    extra = torch.rand(video.shape[:2] + (2,) + video.shape[3:], generator=torch.Generator().manual_seed(0)) * 2 - 1
    data["video_input"] = torch.cat([video, extra], dim=2)  # 7 frames: the official latents are the 5's
    with pytest.raises(InputError, match="1 \\+ 4k frames"):
        model.vae.encode(data["video_input"])  # what the test called before: the case failed here
    with own_report() as worst:
        check_vae(model, data, {}, {})
        assert worst["vae:video_latent_mean_normalized"] < 1e-4
        assert worst["vae:video_decoded"] < 5e-4


def test_a_size_the_vae_refuses_still_checks_the_decode(model, data):
    video = data["video_input"]
    data["video_input"] = torch.nn.functional.pad(video, (0, 4, 0, 4))  # 36x20: not a multiple of 8
    with own_report() as worst:
        check_vae(model, data, {}, {})
        assert "vae:video_latent_mean_normalized" not in worst  # refused in one line: nothing to compare
        assert worst["vae:video_decoded"] < 5e-4 and "vae:image_latent_mean_normalized" in worst


def test_the_run_report_keeps_the_set_under_test(model, data):
    """The parity report is the run's: these tests' own VAE checks leave its entries as they were."""
    saved, name = dict(WORST), SET[0]
    try:
        WORST.clear()
        WORST["some-set/mmu:prompt_logits"] = 1.5e-6
        SET[0] = "some-set"
        test_a_video_of_other_than_1_plus_4k_frames_is_compared_on_the_frames_the_official_encoder_reads(
            model, load_file(str(VARIANT_G / "cases" / "vae.safetensors")))
        test_a_size_the_vae_refuses_still_checks_the_decode(model, data)
        assert WORST == {"some-set/mmu:prompt_logits": 1.5e-6} and SET[0] == "some-set"
    finally:
        WORST.clear()
        WORST.update(saved)
        SET[0] = name
