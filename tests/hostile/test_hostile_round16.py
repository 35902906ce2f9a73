"""Hostile inputs, round sixteen (probe DA): the code added since round fifteen (the memory guard
before a load reading ``--vae``'s header, held-out eval sources, ``messages.py``'s content parts)
and the readers users' files reach. Each test fails on the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

DEMO_VAE = Path(__file__).parents[2] / "src/showo2_cli/assets/demo/vae/diffusion_pytorch_model.safetensors"


def test_a_vae_header_whose_conv_in_claims_a_huge_base_dim_is_the_loads_error_not_out_of_memory(tmp_path, capsys):
    """The check before a load takes the VAE's base_dim from its header's ``encoder.conv_in.weight``
    shape; a broken file whose (empty) conv_in claims 10^9 output channels made ``t2i`` say the job
    "needs about 409600.0 GB ... lower --size or --batch-size", exit 6 (a limit to raise), where the
    load refuses the file (exit 4). The header's base_dim is judged as the load judges it."""
    from safetensors.torch import load_file, save_file

    from showo2_cli.cli import main

    sd = load_file(str(DEMO_VAE))
    sd["encoder.conv_in.weight"] = torch.zeros(10**9, 0, 3, 3, 3)  # no bytes: the header alone lies
    save_file(sd, str(tmp_path / "vae.safetensors"))
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "-o", str(out), "--vae", str(tmp_path / "vae.safetensors")]) == 4
    err = capsys.readouterr().err
    assert "base_dim = 1000000000 is outside 1..1024" in err and "GB" not in err
    assert list(tmp_path.iterdir()) == [tmp_path / "vae.safetensors"]


@pytest.mark.parametrize("base_dim", ["1e308", "1e999", "1000000000"])
def test_a_pickled_vaes_config_with_an_absurd_base_dim_does_not_stop_a_job_the_load_runs(tmp_path, base_dim, capsys):
    """For a pickled VAE (no header) the check before a load guessed its base_dim from the folder's
    config.json: ``"base_dim": 1e308`` was an internal error (OverflowError, exit 1) and 10^9 a job
    "needing 409600 GB" (exit 6), though the load takes base_dim from the weights' shapes and runs
    it. A config's base_dim outside what a VAE can have is no figure to guess by."""
    from safetensors.torch import load_file

    from showo2_cli.cli import main

    folder = tmp_path / "vae"
    folder.mkdir()
    torch.save(load_file(str(DEMO_VAE)), folder / "Wan2.1_VAE.pth")
    (folder / "config.json").write_text(f'{{"base_dim": {base_dim}}}')
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "-o", str(out), "--vae", str(folder), "--steps", "2"]) == 0, \
        capsys.readouterr().err
    assert out.is_file()


def test_a_lone_surrogate_in_a_records_text_is_passed_over_not_the_end_of_the_run(tmp_path):
    """JSON's ``"\\ud83d"`` escape (an emoji cut in half by a tool that counts UTF-16 units, as
    JavaScript's ``slice`` does; ``JSON.stringify`` writes it so) reads as a lone surrogate: a caption
    or a conversation turn holding one ended the run with "internal error: TypeError: TextEncodeInput
    must be Union[...]" (exit 1) when the tokenizer met it. It is an input error naming the record,
    the item passed over as any unreadable one."""
    from PIL import Image

    from showo2_cli.errors import InputError
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import TrainingData, make_sources
    from test_train import tiny_config

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "pairs.jsonl").write_text('{"path": "red.png", "prompt": "a red \\ud83d square"}\n'
                                          '{"path": "red.png", "prompt": "a red square"}\n')
    turns = [{"from": "human", "value": "what \\udc00?"}, {"from": "gpt", "value": "red"}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"image": "red.png", "conversations": turns}).replace("\\\\", "\\")
                                         + "\n")
    cfg = parse_config(tiny_config(tmp_path, data=[
        {"kind": "pairs", "role": "t2i", "path": str(tmp_path / "pairs.jsonl"), "resolution": 32},
        {"kind": "llava", "role": "mmu", "path": str(tmp_path / "chat.jsonl"), "resolution": 32}],
        batch={"t2i": 1, "mmu": 1}), source="c.toml")
    pairs, chat = make_sources(cfg, get_spec("tiny"), tmp_path / "index")
    data = TrainingData(cfg, [pairs, chat])
    with pytest.raises(InputError, match=r"pairs.jsonl' record 0's text is not valid UTF-8 text: a lone surrogate "
                                         r"U\+D83D at character 7"):
        data.load(pairs, 0)
    assert data.load(pairs, 1).text == "a red square"
    with pytest.raises(InputError, match=r"chat.jsonl' record 0's text .* a lone surrogate U\+DC00"):
        data.load(chat, 0)


def _gif(frames: int, screen: int, at: int) -> bytes:
    """A GIF of ``frames`` one-pixel frames placed at (at, at) on a ``screen`` x ``screen`` logical screen."""
    image = bytes([0x21, 0xF9, 4, 0, 10, 0, 0, 0, 0x2C]) + at.to_bytes(2, "little") * 2 + b"\x01\x00\x01\x00\x00" \
        + b"\x02\x02\x44\x01\x00"  # LZW: clear, pixel 0, end
    return b"GIF89a" + screen.to_bytes(2, "little") * 2 + b"\xf0\x00\x00" + b"\x00\x00\x00\xff\xff\xff" \
        + b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00" * (frames > 1) + image * frames + b"\x3b"


@pytest.mark.parametrize("frames, max_pixels", [(1, None), (3, None), (3, 4 * 10**9)])
def test_a_gif_placing_its_frames_far_outside_its_screen_is_corrupt_not_a_limit_to_raise(tmp_path, frames, max_pixels,
                                                                                        monkeypatch, capsys):
    """Pillow grows a GIF's canvas to hold a frame wherever the file places it (browsers clip frames
    to the logical screen): a 100-byte GIF of a 16x16 screen placing its frame at 60000,60000 was
    "too large: 3,600,960,064 pixels is more than the limit ... (set SHOWO2_MAX_PIXELS to raise
    it)", exit 6, and with the limit raised "too large to decode: more than 0 frames on a
    60001x60001 canvas (at most 0 at that size)". The file is corrupt: exit 3, nothing allocated."""
    from showo2_cli.cli import main

    if max_pixels:
        monkeypatch.setenv("SHOWO2_MAX_PIXELS", str(max_pixels))
    path = tmp_path / "far.gif"
    path.write_bytes(_gif(frames, 16, 60000))
    assert main(["caption", str(path)]) == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "far.gif': truncated or corrupt (its frames reach " in err, err
    assert err.endswith("outside its logical screen of 16x16)"), err
    path.write_bytes(_gif(frames, 16, 4))  # inside its screen: read
    if frames == 1:
        from showo2_cli.media import read_image

        assert read_image(path).size == (16, 16)


def test_held_out_items_beyond_what_each_evaluation_can_cover_are_refused_before_training(tmp_path, monkeypatch):
    """eval_loss lists every item of the held-out sources at each evaluation: a ``split = "eval"``
    shapes source of ``size = 1e30`` was accepted and the run's first evaluation (step 0) filled the
    memory listing them (1.4 GB in a minute, never ending). A size over 10^6 is a config error; a
    held-out records file of more items is refused at that first evaluation, before a step runs."""
    from types import SimpleNamespace

    from showo2_cli.errors import InputError
    from showo2_cli.specs import get_spec
    from showo2_cli.training import evaluation
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import make_sources
    from showo2_cli.training.schema import ConfigError
    from test_train import tiny_config

    def config(source: dict) -> dict:
        raw = tiny_config(tmp_path, **{"optim.max_steps": 2, "run.eval_every": 1})
        raw["data"].append({"role": "t2i", "resolution": 32, "split": "eval", **source})
        return raw

    with pytest.raises(ConfigError, match=r"data\[2\]\.size: must be at most 1e\+06 \(eval_loss covers every "
                                          r"held-out item at each evaluation\), got 10{30}"):
        parse_config(config({"kind": "shapes", "size": 10**30}), source="c.toml")
    parse_config(config({"kind": "shapes", "size": 10**6}), source="c.toml")

    from PIL import Image

    Image.new("RGB", (32, 32), (255, 0, 0)).save(tmp_path / "red.png")
    (tmp_path / "held.jsonl").write_text('{"path": "red.png", "prompt": "red"}\n' * 3)
    monkeypatch.setattr(evaluation, "MAX_EVAL_ITEMS", 2)  # (a file of 10^6 records takes long to write)
    cfg = parse_config(config({"kind": "pairs", "path": str(tmp_path / "held.jsonl")}), source="c.toml")
    sources = make_sources(cfg, get_spec("tiny"), tmp_path / "index")
    run = SimpleNamespace(cfg=cfg, sources=sources, caches={})
    with pytest.raises(InputError, match="c.toml: eval_loss would cover 3 held-out items at each evaluation, more "
                                         "than 2: hold out a sample of them"):
        evaluation.eval_batches(run)
    monkeypatch.setattr(evaluation, "MAX_EVAL_ITEMS", 3)
    assert [len(b) for b in evaluation.eval_batches(run)] == [2, 1]  # batch.t2i = 2


def test_a_held_out_source_of_a_role_no_source_trains_is_told_so_not_sent_in_a_circle(tmp_path):
    """A held-out t2v source in a run training t2i and mmu was told "'t2v' has batch size 0: set
    batch.t2v (a held-out source is evaluated in batches of that size)", and with batch.t2v set
    "batch.t2v: is 1 but no [[data]] source has role = "t2v" to train on": each message asked for
    what the other refused. The first says what is wrong."""
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.schema import ConfigError
    from test_train import tiny_config

    raw = tiny_config(tmp_path)
    raw["data"].append({"kind": "shapes", "role": "t2v", "resolution": 64, "size": 2, "split": "eval"})
    with pytest.raises(ConfigError, match=r"data\[2\]\.role: 't2v' is held out but no \[\[data\]\] source trains it"):
        parse_config(raw, source="c.toml")


@pytest.mark.parametrize("value", [3e38, 1e20])
def test_starting_noise_of_absurd_magnitude_is_the_users_file_not_the_models_nan(tmp_path, value, capsys):
    """``--noise`` is a standard normal draw (or latents): a file of 3e38 overflowed the sampler and
    was said to be the model's fault ("sampling gave latents that are NaN or infinite: the model's
    weights hold NaN or infinity", exit 4); one of 1e20 made a picture of noise, exit 0. The file is
    refused (exit 3) before the model loads, nothing written."""
    from safetensors.torch import save_file

    from showo2_cli.cli import main

    save_file({"noise": torch.full((16, 8, 8), value)}, str(tmp_path / "noise.safetensors"))
    out = tmp_path / "x.png"
    assert main(["t2i", "a red circle", "-o", str(out), "--noise", str(tmp_path / "noise.safetensors")]) == 3
    assert f"--noise holds a value of magnitude {value:.3g}: starting noise is a standard normal draw" in \
        capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("value", [3e38, 1e20])
def test_latents_of_absurd_magnitude_are_refused_not_decoded_to_a_black_picture(tmp_path, value, capsys):
    """A latents file of 3e38 (finite in float32) decoded to an all-black PNG and one of 1e20 to a
    grey one, exit 0. A VAE's latents are a few units: refused (exit 3), nothing written."""
    from safetensors.torch import save_file

    from showo2_cli.cli import main

    save_file({"latents": torch.full((16, 1, 8, 8), value)}, str(tmp_path / "x.latents.safetensors"))
    out = tmp_path / "x.png"
    assert main(["decode", str(tmp_path / "x.latents.safetensors"), "-o", str(out)]) == 3
    assert f"latents hold a value of magnitude {value:.3g}: a VAE's latents are a few units" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name", ["d.jsonl", "d.json"])
def test_a_utf16_records_file_cut_inside_its_last_character_is_said_so(tmp_path, name):
    """A UTF-16 records file of an odd number of bytes (a download or copy cut short) was "not
    UTF-16 text (byte 0 of a chunk)": no byte 0 was wrong, and no chunk is the user's."""
    from showo2_cli.errors import InputError
    from showo2_cli.training.records import build_index
    from showo2_cli.training.schema import DataSource

    record = {"path": "a.png", "prompt": "a red circle"}
    text = json.dumps(record) + "\n" if name.endswith("l") else json.dumps([record])
    path = tmp_path / name
    path.write_bytes(text.encode("utf-16-le") + b"x")
    with pytest.raises(InputError, match=rf"'{path}' is not UTF-16 text: it ends inside a character \(cut short\?\)"):
        build_index(DataSource(kind="pairs", role="t2i", path=str(path)), tmp_path / "index")
    assert not list((tmp_path / "index").glob("*.jsonl"))  # no half-written index


@pytest.mark.parametrize("held_out", [False, True])
def test_eval_loss_names_the_items_it_passes_over_as_what_they_are(held_out, monkeypatch):
    """Without a held-out source eval_loss is the loss of one fixed batch of training items, but an
    unreadable one among them was said to be a "held-out item"."""
    from types import SimpleNamespace

    from showo2_cli.training import evaluation

    said = []
    split = "eval" if held_out else "train"
    objective = SimpleNamespace(log_keys=("flow",), loss_weights=lambda: {"flow": 1.0})
    run = SimpleNamespace(world=1, rank=0, eval_skips_said=False, notice=said.append, objective=objective,
                          sources=[SimpleNamespace(spec=SimpleNamespace(split=split))])
    # (items, passed over, flow x items, items)
    monkeypatch.setattr(evaluation, "eval_totals", lambda run, rank, world: torch.tensor([2.0, 1.0, 3.0, 2.0],
                                                                                          dtype=torch.float64))
    assert evaluation.eval_metrics(run) == {"eval_loss": 1.5, "eval_flow": 1.5}
    items = "held-out item(s)" if held_out else "item(s) of its fixed batch"
    assert said == [f"eval_loss passes over 1 {items} that could not be read"]
