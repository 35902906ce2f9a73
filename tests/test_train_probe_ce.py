"""Training's leftovers as fine-tuners meet them (probe CE): a stop signal after the last step, the
EMA weights stored once, what eval_loss means, absurd numbers in a config."""

from __future__ import annotations

import os
import re
import signal

import pytest
import torch

from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.config import parse_config
from showo2_cli.training.schema import ConfigError
from showo2_cli.training.trainer import train
from test_train import metrics, model_state, tiny_config, write_toml


def test_a_stop_signal_after_the_last_step_leaves_a_complete_run(tmp_path, monkeypatch, capsys):
    """A SIGTERM that landed as the last step finished reported the complete run as interrupted
    ("interrupted at step 3/3", exit 130); one during the final save, or after it, interrupted the
    save or exited 143 ("terminated") though the checkpoint was whole. The run is complete: exit 0,
    its path on stdout, and a note says the signal came after the last step."""
    from showo2_cli.cli import main
    from showo2_cli.training import command

    sent = []
    plain_call = command._Renderer.__call__

    def signalling(self, ev):
        plain_call(self, ev)
        if (ev["event"] == "step" and ev["step"] == 3) or ev["event"] in ("checkpoint", "done"):
            sent.append(ev["event"])
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(command._Renderer, "__call__", signalling)
    config = write_toml(tmp_path / "c.toml", tiny_config(tmp_path, **{"optim.max_steps": 3}))
    code = main(["train", str(config)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sent == ["step", "checkpoint", "done"]
    run = tmp_path / "run"
    assert out.strip() == str(run / "checkpoint-000003")
    assert "the run is complete" in err and "error" not in err
    assert ckpt.latest_checkpoint(run).name == "checkpoint-000003"
    assert torch.load(run / "checkpoint-000003" / ckpt.STATE_FILE, weights_only=True)["step"] == 3
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2, 3]


@pytest.mark.parametrize("change, field", [
    ({"optim.max_steps": 10**9 + 1}, "optim.max_steps"),
    ({"optim.warmup_steps": 10**21}, "optim.warmup_steps"),
    ({"run.log_every": 10**20}, "run.log_every"),
    ({"run.save_every": 10**21}, "run.save_every"),
    ({"ema": {"decay": 0.9, "start_step": 10**23}}, "ema.start_step"),
    ({"optim.eps": 1e30}, "optim.eps"),  # AdamW's updates ~lr*m/1e30: weights that never move
    ({"optim.weight_decay": 1e10}, "optim.weight_decay"),
    ({"loss.ntp": 1e300}, "loss.ntp"),  # the first step's loss inf, after the model had loaded
    ({"lora": {"rank": 4, "alpha": 1e300}}, "lora.alpha"),  # the first loss NaN
])
def test_numbers_no_run_can_mean_are_one_line_before_anything_loads(tmp_path, change, field):
    with pytest.raises(ConfigError, match=rf"{re.escape(field)}: must be at most"):
        parse_config(tiny_config(tmp_path, **change), source="c")
    valid = {k: (10**9 if isinstance(v, int) and v > 10**9 else v) for k, v in change.items()}
    if all(isinstance(v, int) for v in valid.values()):  # the end of the range is taken
        parse_config(tiny_config(tmp_path, **valid), source="c")


def test_max_steps_beyond_any_run_is_refused_on_the_command_line(tmp_path, capsys):
    from showo2_cli.cli import main

    config = write_toml(tmp_path / "c.toml", tiny_config(tmp_path))
    assert main(["train", str(config), "--check", "--max-steps", str(10**24)]) == 2
    assert "--max-steps must be between 1 and 1000000000" in capsys.readouterr().err
    assert main(["train", str(config), "--check", "--max-steps", str(10**9)]) == 0


def test_eval_loss_is_the_held_out_sets_mean_for_any_number_of_processes(tmp_path):
    """eval_loss was the loss of the first training step's batch (training items, a set that grew
    with the number of processes, noise drawn per process). A [[data]] source with split = "eval"
    is held out (never trained on: the training losses are those of the run without it) and
    eval_loss is the mean over all of its items, the same whatever the processes share."""
    from showo2_cli.training.evaluation import eval_batches, eval_totals
    from showo2_cli.training.trainer import Run

    def config(name, held_out):
        raw = tiny_config(tmp_path / name, **{"optim.max_steps": 2, "run.eval_every": 2})
        if held_out:
            raw["data"].append({"kind": "shapes", "role": "t2i", "resolution": 64, "size": 5, "split": "eval"})
        return parse_config(raw, source=name)

    events = []
    train(config("plain", False), progress=events.append)
    assert any("one fixed batch of training items" in e.get("message", "") for e in events)
    train(config("held", True))
    plain, held = metrics(tmp_path / "plain" / "run"), metrics(tmp_path / "held" / "run")
    assert [m["loss"] for m in plain if "loss" in m] == [m["loss"] for m in held if "loss" in m]
    evals = [m["eval_loss"] for m in held if "eval_loss" in m]
    assert len(evals) == 2 and evals != [m["eval_loss"] for m in plain if "eval_loss" in m]

    run = Run(config("held", True))
    try:
        run.setup()  # resumes the held run's checkpoint-000002
        assert [len(b) for b in eval_batches(run)] == [2, 2, 1]  # batch.t2i = 2 over its 5 items
        one = eval_totals(run, 0, 1)
        two = eval_totals(run, 0, 2) + eval_totals(run, 1, 2)
        assert one[0] == two[0] == 5  # (items, passed over, ntp x tokens, tokens, flow x elements, elements)
        assert one[3] == two[3] == 0  # no mmu item held out: no eval_ntp, eval_loss = loss.flow x eval_flow
        assert abs(one[4] / one[5] - evals[1]) < 1e-12 and abs(two[4] / two[5] - evals[1]) < 1e-9
    finally:
        ckpt.release_folder(run._lock)


def test_the_ema_weights_are_stored_once_and_resume_bit_for_bit(tmp_path, tiny_model_dir):
    """trainer_state.pt held a second copy of the EMA weights that ema/ holds (the demo: 11.5 MB of
    its 34.6 MB). They are read back from ema/ on resume, bit for bit (the same final weights as a
    run that never stopped, full and LoRA); a checkpoint with the copy in its state still resumes."""
    import shutil

    from safetensors.torch import load_file

    from showo2_cli.lora import ADAPTER_WEIGHTS
    from showo2_cli.training.trainer import Run
    from test_lora import lora_config

    ema = {"decay": 0.9, "start_step": 1}

    def full(name):
        return parse_config(tiny_config(tmp_path / name, **{"optim.max_steps": 4, "ema": ema}), source=name)

    a = train(full("a")).checkpoint
    state = torch.load(a / ckpt.STATE_FILE, weights_only=True)
    assert "shadow_params" not in state["ema"] and state["ema"]["optimization_step"] == 4
    assert (a / ckpt.STATE_FILE).stat().st_size < 2.2 * (a / "model.safetensors").stat().st_size  # AdamW's 2 moments

    # a checkpoint written before: the EMA weights in the state (and none read from ema/)
    b = train(full("b"), stop_after=2).checkpoint
    run = Run(full("b"))
    try:
        run.setup()
        shadow = [t.clone() for t in run.ema.shadow_params]
    finally:
        ckpt.release_folder(run._lock)
    state = torch.load(b / ckpt.STATE_FILE, weights_only=True)
    state["ema"] = {**{k: v for k, v in state["ema"].items() if k != "shadow_params_in"}, "shadow_params": shadow}
    torch.save(state, b / ckpt.STATE_FILE)
    shutil.rmtree(b / ckpt.EMA_DIR)
    b = train(full("b")).checkpoint
    for folder in ("", ckpt.EMA_DIR):
        ours, straight = model_state(b / folder), model_state(a / folder)
        assert ours.keys() == straight.keys() and all(torch.equal(ours[k], straight[k]) for k in ours)

    def lora(name):
        return parse_config(lora_config(tmp_path, tiny_model_dir, name, **{"optim.max_steps": 4, "ema": ema}), source=name)

    a = train(lora("la")).checkpoint
    train(lora("lb"), stop_after=2)
    b = train(lora("lb")).checkpoint
    for folder in (b, b / ckpt.EMA_DIR):
        ours, straight = load_file(str(folder / ADAPTER_WEIGHTS)), load_file(str(a / folder.relative_to(b) / ADAPTER_WEIGHTS))
        assert ours.keys() == straight.keys() and all(torch.equal(ours[k], straight[k]) for k in ours)


def test_a_small_loss_is_shown_in_its_digits_not_as_zero(capsys):
    """A held-out eval_loss of 1.2e-05 (the demo's, probe CG) printed "eval_loss 0.0000": the log
    lines now keep four decimals where they show something and four significant digits below."""
    from showo2_cli.training.command import _Renderer

    renderer = _Renderer(quiet=False, json_mode=False)
    renderer({"event": "eval", "step": 4, "eval_loss": 1.2e-5})
    renderer({"event": "eval", "step": 8, "eval_loss": 6.85927})
    err = capsys.readouterr().err
    assert "step 4: eval_loss 1.200e-05" in err and "step 8: eval_loss 6.8593" in err
