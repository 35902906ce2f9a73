"""Probe GC (hostile round twenty-three): what the Python API took that the command line refuses.

``api.encode`` / ``api.encode_file`` never ran ``EncodeOptions.validate()``: a seed the CLI refuses
(-1) was used, 2**64 or 1.5 were torch's ValueError/RuntimeError, ``sample="no"`` drew a sample and
recorded ``"sample": "no"``, and a size of 10**9 a side was a bare MemoryError (10**30: an
OverflowError). ``max_memory_gb="x"`` or ``10**400`` given to ``encode`` / ``decode_file`` were a
TypeError / OverflowError from the memory guard. Flags given as text (``vae_sample="no"``,
``cache_prefix="no"``) were read as true. Each is now the project's UsageError, before any work."""

from __future__ import annotations

import pytest
from PIL import Image

from showo2_cli import api
from showo2_cli.errors import UsageError
from showo2_cli.media import resize_and_pad, resize_center_crop


@pytest.fixture(scope="module")
def vae(tiny_pipe):
    return tiny_pipe.model.vae


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "in.png"
    Image.new("RGB", (40, 24), (200, 40, 10)).save(path)
    return path


_BAD_ENCODE = {
    "a negative seed": (dict(seed=-1, sample=True), r"--seed must be between 0 and 2\^63-1, got -1"),
    "a seed past 2**64": (dict(seed=2**64, sample=True), r"--seed must be between 0 and 2\^63-1"),
    "a fractional seed": (dict(seed=1.5, sample=True), r"--seed must be a whole number"),
    "a seed as text": (dict(seed="3", sample=True), r"--seed must be a whole number"),
    "sample as text": (dict(sample="no"), r"--sample must be True or False, got 'no'"),
    "a side of 10**9": (dict(size=(10**9, 10**9)), r"size must be at most 4096 pixels a side"),
    "a side of 10**30": (dict(size=10**30), r"size must be at most 4096 pixels a side"),
    "frames past the bound": (dict(frames=10**30), r"--frames must be between 1 and 100000"),
}


@pytest.mark.parametrize("name", list(_BAD_ENCODE))
def test_encode_checks_its_options_before_any_work(vae, photo, tmp_path, name):
    options, message = _BAD_ENCODE[name]
    out = tmp_path / "x.safetensors"
    with pytest.raises(UsageError, match=message):
        api.encode(photo, vae, api.EncodeOptions(**{"size": (16, 16), **options}))
    with pytest.raises(UsageError, match=message):
        api.encode_file(photo, vae, out, api.EncodeOptions(**{"size": (16, 16), **options}))
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


@pytest.mark.parametrize("limit", ["x", 10**400, float("nan"), -1, True])
def test_a_memory_limit_that_is_no_number_of_gb_is_a_usage_error(vae, photo, tmp_path, limit):
    with pytest.raises(UsageError, match=r"--max-memory must be a"):
        api.encode(photo, vae, api.EncodeOptions(size=(16, 16)), max_memory_gb=limit)
    latents = api.encode(photo, vae, api.EncodeOptions(size=(16, 16)))
    api.save_latents(tmp_path / "l.safetensors", latents.latents, latents.metadata)
    with pytest.raises(UsageError, match=r"--max-memory must be a"):
        api.decode_file(tmp_path / "l.safetensors", vae, tmp_path / "d.png", max_memory_gb=limit)
    assert not (tmp_path / "d.png").exists()


def test_encode_still_takes_what_it_took(vae, photo):
    """numpy's integers, a square side, a sample with a seed: as before."""
    import numpy as np

    one = api.encode(photo, vae, api.EncodeOptions(size=np.int64(16), sample=True, seed=np.int64(3)))
    two = api.encode(photo, vae, api.EncodeOptions(size=(16, 16), sample=True, seed=3))
    assert one.metadata["sample"] is True and one.metadata["seed"] == 3
    assert (one.latents == two.latents).all()


@pytest.mark.parametrize("make", [
    lambda: api.CaptionOptions(["hi"], vae_sample="no"),
    lambda: api.GenerateOptions(cache_prefix="no"),
    lambda: api.EncodeOptions(sample=1),
], ids=["vae_sample", "cache_prefix", "sample"])
def test_flags_given_as_text_or_numbers_are_refused(make):
    with pytest.raises(UsageError, match=r"must be True or False"):
        make().validate()


@pytest.mark.parametrize("resize", [resize_center_crop, resize_and_pad])
def test_a_resize_past_the_largest_side_is_refused_before_allocating(resize):
    img = Image.new("RGB", (8, 8))
    with pytest.raises(UsageError, match=r"size must be at most 4096 pixels a side, got 1000000000x1000000000"):
        resize(img, (10**9, 10**9))
    assert resize(img, (16, 4096)).size == (4096, 16)


@pytest.mark.parametrize("kind", ["t3i", None, "T2I"])
def test_plan_outputs_and_save_results_name_an_unknown_kind(tmp_path, kind):
    """A kind other than t2i, t2v or i2v was a KeyError from inside."""
    with pytest.raises(UsageError, match=r"kind must be one of t2i, t2v, i2v, got"):
        api.plan_outputs(kind, tmp_path / "x.png", ["a"], [0], 1, seed=1)
    with pytest.raises(UsageError, match=r"kind must be one of t2i, t2v, i2v, got"):
        api.save_results([], [], kind)
    assert list(tmp_path.iterdir()) == []


def _same_bytes_after(paths, run):
    before = {p: p.read_bytes() for p in paths}
    result = run()
    assert {p: p.read_bytes() for p in paths} == before
    return result


def test_an_output_that_is_one_of_the_runs_inputs_is_refused_even_with_overwrite(tmp_path, tiny_model_dir, capsys):
    """`t2i --prompts-file cats.json -o cats.png --overwrite` replaced the prompts file with the
    sidecar; `i2v still.gif -o still.gif --overwrite` replaced the image with the video; a noise
    file named as the run's latents was replaced by them. Each is refused before the model loads."""
    import json

    import torch
    from safetensors.torch import save_file

    from showo2_cli.cli import main

    prompts = tmp_path / "cats.json"
    prompts.write_text(json.dumps(["a cat"]))
    still = tmp_path / "still.gif"
    Image.new("RGB", (32, 32), (9, 9, 200)).save(still)
    noise = tmp_path / "n.latents.safetensors"
    save_file({"noise": torch.zeros(1, 16, 2, 2)}, str(noise))
    model = ["-m", str(tiny_model_dir), "--steps", "2", "--overwrite"]
    runs = {
        "--prompts-file": ["t2i", "--prompts-file", str(prompts), "-o", str(tmp_path / "cats.png"), *model],
        "image": ["i2v", str(still), "a wave", "-o", str(still), "--frames", "5", *model],
        "--noise": ["t2i", "a cat", "--noise", str(noise), "--save-latents", "-o", str(tmp_path / "n.png"), *model],
    }
    for what, args in runs.items():
        code = _same_bytes_after([prompts, still, noise], lambda args=args: main(args))
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"is the input {what} " in err and "write the output elsewhere" in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cats.json", "n.latents.safetensors", "still.gif"]


def test_save_results_refuses_to_write_over_its_image_or_noise(tmp_path, tiny_pipe):
    still = tmp_path / "still.png"
    Image.new("RGB", (16, 16)).save(still)
    made = api.text_to_image(tiny_pipe.model, ["a"], api.GenerateOptions(steps=2, seed=1))
    plans = api.plan_outputs("t2i", still, ["a"], [0], 1, seed=1, overwrite=True)
    with pytest.raises(UsageError, match=r"the output '.*still\.png' is the input image"):
        _same_bytes_after([still], lambda: api.save_results(made, plans, "t2i", image=still, overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["still.png"]


def test_a_loop_of_symbolic_links_is_said_as_such(tmp_path):
    """A loop (a -> b -> a) read "broken symbolic link" alone, as if a target were missing."""
    from showo2_cli.errors import InputError
    from showo2_cli.media import read_media

    (tmp_path / "a.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "b.png").symlink_to(tmp_path / "a.png")
    (tmp_path / "c.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError, match=r"cannot read media file '.*a\.png': broken symbolic link \(a loop: each link leads"):
        read_media(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"cannot read media file '.*c\.png': broken symbolic link$"):
        read_media(tmp_path / "c.png")
    with pytest.raises(InputError, match=r"cannot read noise file '.*a\.png': broken symbolic link \(a loop: each link leads"):
        api.load_noise(tmp_path / "a.png")


def test_a_chat_started_with_stdin_closed_says_so_before_the_model_loads(monkeypatch, capsys, tiny_model_dir):
    """`showo2 chat <&-` (Python's sys.stdin is None) loaded the model, then failed with
    "internal error: TypeError: 'NoneType' object is not iterable" (exit 1)."""
    from showo2_cli.cli import common, main

    loads = []
    monkeypatch.setattr(common, "load_model", lambda *a, **k: loads.append(a) or pytest.fail("loaded"))
    monkeypatch.setattr("sys.stdin", None)
    assert main(["chat", "-m", str(tiny_model_dir)]) == 3
    err = capsys.readouterr().err
    assert err == ("showo2: error: cannot read the questions: standard input is closed (run the chat in a "
                   "terminal, or pipe the questions in)\n"), err
    assert loads == []


@pytest.mark.parametrize("make, message", [
    (lambda: api.GenerateOptions(guidance=__import__("decimal").Decimal("1.5")),
     "--guidance must be a number >= 0 and <= 100, got 1.5 (Decimal)"),
    (lambda: api.TextSampling(temperature=__import__("fractions").Fraction(1, 2)),
     "--temperature must be a number >= 0 and <= 1000, got 1/2 (Fraction)"),
    (lambda: api.GenerateOptions(steps=__import__("decimal").Decimal(4)),
     "--steps must be a whole number between 2 and 10000, got 4 (Decimal)"),
    (lambda: api.EncodeOptions(seed="3"), "--seed must be a whole number between 0 and 2^63-1, got '3'"),
], ids=["Decimal guidance", "Fraction temperature", "Decimal steps", "text seed"])
def test_a_refused_value_that_looks_in_range_names_its_type(make, message):
    """"--guidance must be a number >= 0 and <= 100, got 1.5" (a Decimal) read as a contradiction."""
    with pytest.raises(UsageError) as e:
        make().validate()
    assert str(e.value) == message
