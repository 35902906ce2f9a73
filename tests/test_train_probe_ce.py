"""Training's leftovers as fine-tuners meet them (probe CE): a stop signal after the last step, the
EMA weights stored once, what eval_loss means, absurd numbers in a config."""

from __future__ import annotations

import os
import signal

import torch

from showo2_cli.training import checkpoint as ckpt
from test_train import metrics, tiny_config, write_toml


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
