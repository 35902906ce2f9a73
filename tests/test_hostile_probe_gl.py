"""Probe GL: today's new surfaces under fuzzing and hostile input (round twenty-four)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from showo2_cli.errors import UsageError


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


@pytest.mark.parametrize("temperature", ["0.5", "abc", [0.5]])
@pytest.mark.parametrize("do_sample", [None, True, False])
def test_caption_temperature_of_another_type_is_the_usage_error(pipe, temperature, do_sample):
    """``pipe.caption(image, temperature="0.5")`` raised Python's ``TypeError: '>=' not supported
    between instances of 'str' and 'float'`` (the greedy-notice check ran before the options were
    checked); now the options' own one line, under the Python name."""
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(UsageError, match=r"^temperature must be a number") as refused:
        pipe.caption(image, "what?", max_new_tokens=2, temperature=temperature, do_sample=do_sample)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("temperature, words", [
    (True, "temperature must be a number"), (float("inf"), "temperature must be a finite number"),
    (10**400, "temperature must be a finite number"),
], ids=["bool", "inf", "10**400"])
def test_caption_do_sample_false_with_a_temperature_that_is_no_number_names_the_number(pipe, temperature, words):
    """``do_sample=False, temperature=True`` was refused as ``temperature=1 samples`` (a bool read as
    1), ``temperature=inf`` as a contradiction, and ``10**400`` raised OverflowError formatting it:
    each is the temperature check's own line now."""
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(UsageError, match=words):
        pipe.caption(image, "what?", max_new_tokens=2, temperature=temperature, do_sample=False)


def test_caption_numpy_do_sample_and_temperature_are_their_python_values(pipe):
    """``do_sample=np.True_`` (a mask's element, a config read by numpy) was a TypeError, and
    ``do_sample=False, temperature=np.float32(0.5)`` sampled without a word (the contradiction
    check saw no number): numpy scalars are their Python values, as the options' other fields."""
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="do_sample=False decodes greedily"):
        pipe.caption(image, "what?", max_new_tokens=2, temperature=np.float32(0.5), do_sample=False)
    with pytest.raises(ValueError, match="do_sample=True needs temperature > 0"):
        pipe.caption(image, "what?", max_new_tokens=2, temperature=np.float64(0), do_sample=np.True_)
    sampled = pipe.caption(image, "what?", max_new_tokens=2, do_sample=np.True_, seed=3)
    assert sampled == pipe.caption(image, "what?", max_new_tokens=2, do_sample=True, seed=3)


@pytest.mark.parametrize("height, width", [(3, 1000), (1000, 3)])
def test_an_official_grid_whose_images_are_over_the_side_limit_is_refused_at_load(tmp_path, capsys, height, width):
    """config.json ``image_latent_height`` 1000 was refused (a resolution of 16000 pixels), but
    ``image_latent_width`` 1000 loaded: ``showo2 info`` showed ``16000x48px`` and ``showo2 t2i`` with
    no ``--size`` failed after loading with ``--size must be positive multiples of 16 up to 4096, got
    16000x48``, an option never given. Either side over the limit is the model's error now."""
    import json
    import shutil
    from pathlib import Path

    from showo2_cli.cli import main

    variant = Path(__file__).resolve().parent / "data" / "parity_sets" / "variant-g"
    folder = tmp_path / "official"
    shutil.copytree(variant / "model", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(image_latent_height=height, image_latent_width=width)
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["info", str(folder), "--vae", str(variant / "vae" / "wan21_vae.safetensors")]) == 4
    err = capsys.readouterr().err
    assert "16000 pixels" in err and "over 4096" in err and "--size" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.fixture(scope="module")
def url():
    pytest.importorskip("fastapi")
    from conftest import serving
    from showo2_cli.loading import load

    with serving(load("demo")) as base:
        yield base


@pytest.mark.parametrize("value", [0, False, "", {}, []])
def test_images_response_format_of_no_value_but_null_is_refused(url, value):
    """``response_format`` 0, false, "", {} or [] made a b64_json answer (read by its truth), where
    any other value but "b64_json" is a 400: each is the 400 now; null is the default."""
    httpx = pytest.importorskip("httpx")
    body = {"prompt": "a cat", "size": "64x64", "steps": 2, "response_format": value}
    r = httpx.post(url + "/v1/images/generations", json=body, timeout=60)
    assert r.status_code == 400, r.text[:200]
    assert r.json()["error"]["param"] == "response_format"


@pytest.mark.parametrize("size, shown", [("64", "got '64'"), (np.array([64, 64]), "got [64 64] (ndarray)")])
def test_a_size_of_another_type_names_its_type(size, shown):
    """``EncodeOptions(size="64")`` was refused as "size must be an integer or (height, width), got
    64", which reads as a contradiction (probe GC's rule for the options, not yet in ``size_hw``)."""
    from showo2_cli.options import EncodeOptions

    with pytest.raises(UsageError, match=re.escape(f"must be an integer or (height, width), {shown}") + "$"):
        EncodeOptions(size=size).validate()
