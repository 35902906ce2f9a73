"""What a training run writes, used downstream (probe AR): a LoRA checkpoint loaded by peft itself,
the run folder of another run, a resumed run with another learning rate, model folders of a newer
format."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch
from safetensors.torch import load_file

from showo2_cli.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import LOCK_FILE, train
from test_hub_pipeline import hub  # noqa: F401  (the fixture: a local Hub)
from test_lora import lora_config


def test_a_lora_checkpoint_loads_with_peft_itself_as_it_merges_with_lora(tmp_path, tiny_model_dir):
    """peft's PeftModel.from_pretrained looks the adapter's tensors up under its own key names
    (``base_model.model.<module>.lora_A.weight``): the bare names showo2 wrote matched nothing and
    peft kept a zero adapter, with a warning only (the model answered as the base)."""
    from peft import PeftModel

    from showo2_cli.loading import load

    ck = train(parse_config(lora_config(tmp_path, tiny_model_dir, **{"optim.max_steps": 2}), source="a")).checkpoint
    saved = load_file(str(ck / ADAPTER_WEIGHTS))
    assert saved and all(k.startswith("base_model.model.showo.model.layers.") for k in saved)
    config = json.loads((ck / ADAPTER_CONFIG).read_text())
    # as peft saves it, and the same bytes in every process (peft keeps the targets in a set)
    assert config["inference_mode"] is True and config["target_modules"] == sorted(config["target_modules"])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # peft's "Found missing adapter keys" is a warning
        peft_model = PeftModel.from_pretrained(load(tiny_model_dir).network, str(ck))
    adapted = {k: v for k, v in peft_model.state_dict().items() if ".lora_B." in k}
    assert len(adapted) == len([k for k in saved if ".lora_B." in k])
    assert all(float(v.abs().max()) > 0 for v in adapted.values())  # the trained B, not peft's zeros
    by_peft = peft_model.merge_and_unload().state_dict()
    by_showo2 = load(tiny_model_dir, lora=ck).network.state_dict()
    base = load(tiny_model_dir).network.state_dict()
    assert by_peft.keys() == by_showo2.keys()
    assert all(torch.equal(by_peft[k], by_showo2[k]) for k in base)
    assert any(not torch.equal(by_showo2[k], base[k]) for k in base)


def _files(folder) -> dict:
    """Every file's modification time (the lock that a run takes while it lasts aside)."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))
            if p.name != LOCK_FILE}


def test_a_run_folder_of_another_model_is_refused_and_left_as_it_was(tmp_path, tiny_model_dir):
    """A config starting from another model pointed at a run folder resumed that run: it trained the
    folder's weights (not the config's model), wrote checkpoints into it and pruned its old ones."""
    from showo2_cli.errors import OutputError
    from test_train import tiny_config

    def fine_tune(init: str, steps: int) -> dict:  # a full fine-tune of the tiny model folder
        return lora_config(tmp_path, tiny_model_dir, **{"model.init": init, "lora.rank": 0, "optim.max_steps": steps,
                                                        "run.save_every": 1, "run.keep_last": 1})

    train(parse_config(fine_tune(str(tiny_model_dir), 1), source="a.toml"))
    run = tmp_path / "run"
    before = _files(run)
    other = tiny_config(tmp_path, **{"optim.max_steps": 4})  # the tiny spec from scratch, same output_dir
    with pytest.raises(OutputError) as err:
        train(parse_config(other, source="b.toml"))
    message = str(err.value)
    assert "holds another run" in message and "model.init_spec 'tiny'" in message and str(tiny_model_dir) in message
    assert _files(run) == before
    # the same model under another spelling of its path resumes
    again = fine_tune(str(tiny_model_dir / ".." / tiny_model_dir.name), 2)
    assert train(parse_config(again, source="a.toml")).step == 2


def test_a_resume_with_another_learning_rate_uses_it_and_says_so(tmp_path):
    """The checkpoint's optimizer state brought its learning rate (and weight decay) back: a resume
    with --set optim.lr=... trained on at the old rate, without a word."""
    from test_train import metrics, tiny_config

    changes = {"optim.max_steps": 4, "optim.schedule": "constant", "optim.warmup_steps": 0}
    raw = tiny_config(tmp_path, **changes)
    train(parse_config(raw, source="a.toml"), stop_after=2)
    raw["optim"]["lr"] = 2e-4
    events = []
    train(parse_config(raw, source="a.toml"), progress=events.append)
    assert [m["lr"] for m in metrics(tmp_path / "run")] == [1e-3, 1e-3, 2e-4, 2e-4]
    notes = [e["message"] for e in events if e["event"] == "notice"]
    assert len(notes) == 1 and "lr of group 'default' 0.0002 (the checkpoint's: 0.001)" in notes[0], notes


@pytest.mark.parametrize("change, message", [
    ({"format_version": 2}, "was written by a newer showo2 (format_version 2; this one reads 1): upgrade showo2"),
    ({"format_version": "1"}, "format_version must be a whole number"),
    ({"spec.future_knob": 3}, "unknown model spec field(s): future_knob (written by a newer showo2? upgrade showo2)"),
])
def test_a_model_folder_of_a_newer_format_is_refused_in_one_line(tmp_path, tiny_model_dir, capsys, change, message):
    """config.json's showo2.format_version was written and never read: a folder of a later layout
    loaded as this one's, silently."""
    import shutil

    from showo2_cli.cli import main
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load

    folder = tmp_path / "newer"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    key, value = next(iter(change.items()))
    section = config["showo2"]["spec"] if key.startswith("spec.") else config["showo2"]
    section[key.removeprefix("spec.")] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=re.escape(message)):
        load(folder)
    assert main(["info", str(folder)]) == 4
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_the_ema_model_shares_the_checkpoints_vae_and_loads_alone(tmp_path):
    """A checkpoint of an [ema] run wrote the frozen VAE twice (vae/ and ema/vae/): with the real
    Wan2.1 VAE in float32, 0.5 GB more on the disk at every save for the same bytes."""
    import shutil

    from showo2_cli.loading import load
    from test_train import tiny_config

    raw = tiny_config(tmp_path, **{"optim.max_steps": 1, "ema": {"decay": 0.9}})
    ck = train(parse_config(raw, source="a.toml")).checkpoint
    vae_files = sorted(p.relative_to(ck / "vae") for p in (ck / "vae").rglob("*") if p.is_file())
    assert vae_files == sorted(p.relative_to(ck / "ema" / "vae") for p in (ck / "ema" / "vae").rglob("*") if p.is_file())
    assert all((ck / "vae" / f).samefile(ck / "ema" / "vae" / f) for f in vae_files)  # on the disk once
    alone = tmp_path / "elsewhere" / "ema"
    shutil.copytree(ck / "ema", alone)
    shutil.rmtree(tmp_path / "run")  # the copy needs nothing of the run
    ema, vae = load(alone), load(alone).vae.state_dict()
    assert ema.spec.name == "tiny" and vae and all(torch.isfinite(v).all() for v in vae.values())


def test_a_lora_checkpoint_given_as_a_model_says_how_to_load_it(tmp_path, capsys, hub):  # noqa: F811
    """`--model runs/lora` (a LoRA run's checkpoint) said only "not a Show-o2 model folder: it has
    no config.json"; an adapter repo on the Hub, and `--lora user/repo`, said as little."""
    from showo2_cli.cli import main

    adapter = tmp_path / "run" / "checkpoint-000004"
    adapter.mkdir(parents=True)
    (adapter / ADAPTER_CONFIG).write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "demo"}))
    (adapter / ADAPTER_WEIGHTS).write_bytes(b"\0" * 16)
    assert main(["info", str(adapter)]) == 4
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"(it is a LoRA adapter: give its base model and the adapter, --model demo --lora {adapter})")
    assert "\n" not in err

    hub.add("me/style-lora", {ADAPTER_CONFIG: (adapter / ADAPTER_CONFIG).read_bytes(), ADAPTER_WEIGHTS: b"\0" * 16})
    assert main(["pull", "me/style-lora"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.endswith("(it is a LoRA adapter: give it as --lora me/style-lora with its base model)"), err
    # --lora takes the repo id (probe BB): downloaded, then read and refused (its config names no layers)
    assert main(["t2i", "a red circle", "--model", "demo", "--lora", "me/style-lora", "-o", str(tmp_path / "x.png")]) == 4
    err = capsys.readouterr().err.strip()
    assert "--lora" in err and "models--me--style-lora" in err and "only plain LoRA adapters" in err, err
    assert "\n" not in err
    assert not (tmp_path / "x.png").exists()


def test_a_vae_training_run_folder_is_a_vae_for_every_command(tmp_path, tiny_model_dir):
    """`--vae runs/tiny-vae` (the run folder of examples/train_tiny_vae.toml) was "no VAE found",
    while `--model`, `--lora`, a config's `model.vae` and `package.py --vae` take a run folder for its
    latest checkpoint."""
    from showo2_cli.loading import load
    from showo2_cli.modeling.vae_files import load_vae
    from showo2_cli.training import checkpoint as ckpt

    run = tmp_path / "vae-run"
    vae = load_vae(tiny_model_dir / "vae")
    for step in (2, 4):  # what a `mode = "vae"` run writes: checkpoint-N/{vae/, trainer_state.pt}, latest
        with torch.no_grad():
            for p in vae.parameters():
                p.add_(0.01)
        vae.save_pretrained(run / ckpt.checkpoint_name(step) / "vae")
        (run / ckpt.checkpoint_name(step) / ckpt.STATE_FILE).write_bytes(b"")
    ckpt.write_pointer(run, ckpt.checkpoint_name(4))
    want = vae.state_dict()
    got = load(tiny_model_dir, vae=run).vae.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_a_lora_run_on_a_run_folder_resumes_on_the_base_it_was_trained_on(tmp_path):
    """`model.init = "runs/base"` (a run folder) stands for its latest checkpoint: the adapter named
    the run folder, and a resumed LoRA run rebuilt its base from it, so once the base run had gone on
    the adapter continued on other weights than it was trained on (not the uninterrupted run's)."""
    from test_train import tiny_config

    base = tmp_path / "base" / "run"
    train(parse_config(tiny_config(tmp_path / "base", **{"optim.max_steps": 1}), source="base.toml"))

    def lora(name):
        raw = tiny_config(tmp_path / name, **{"optim.max_steps": 2, "lora": {"rank": 2, "alpha": 4}})
        raw["model"] = {"init": str(base)}
        return parse_config(raw, source=f"{name}.toml")

    straight = train(lora("a")).checkpoint
    assert json.loads((straight / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == \
        str(base / "checkpoint-000001")
    train(lora("b"), stop_after=1)
    train(parse_config(tiny_config(tmp_path / "base", **{"optim.max_steps": 2}), source="base.toml"))
    assert (base / "latest").read_text().strip() == "checkpoint-000002"  # the base run went on
    events = []
    resumed = train(lora("b"), progress=events.append).checkpoint
    a, b = load_file(str(straight / ADAPTER_WEIGHTS)), load_file(str(resumed / ADAPTER_WEIGHTS))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any("resumes on the checkpoint it was trained on, checkpoint-000001" in e.get("message", "")
               for e in events)
