"""Training as fine-tuners run it, end to end (probe EE): stops and resumes, metrics lines."""

from __future__ import annotations

import os
import signal

from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import train
from test_train import metrics, tiny_config


def test_a_stop_right_after_a_periodic_save_counts_its_steps_in_one_line(tmp_path):
    """A stop signal seen just after the periodic checkpoint at step 4 writes a line for the steps
    since the last one (step 4), after that checkpoint saved them as its unlogged window: the
    resumed run's next line (step 6) averaged steps 4-6, step 4 in two lines. It now averages the
    steps since the line before (5 and 6), as the README says."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 6, "run.log_every": 3, "run.save_every": 4})
    events = []

    def stop_at_4(event):
        events.append(event)
        if event["event"] == "step" and event["step"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    result = train(parse_config(raw, source="c"), progress=stop_at_4)
    assert result.interrupted and result.step == 4 and result.checkpoint.name == "checkpoint-000004"
    train(parse_config(raw, source="c"), progress=events.append)
    losses = {e["step"]: e["loss"] for e in events if e["event"] == "step"}
    lines = [(m["step"], m["loss"]) for m in metrics(tmp_path / "run")]
    assert [s for s, _ in lines] == [3, 4, 6]
    assert abs(lines[0][1] - (losses[1] + losses[2] + losses[3]) / 3) < 1e-6
    assert abs(lines[1][1] - losses[4]) < 1e-6
    assert abs(lines[2][1] - (losses[5] + losses[6]) / 2) < 1e-6


def test_a_lora_run_resumed_with_another_rank_or_targets_names_the_field(tmp_path, tiny_model_dir):
    """A LoRA run resumed with another ``lora.rank`` (or ``target_modules``) in its config stopped
    with "LoRA adapter ... does not fit this model: size mismatch for ...lora_A.default.weight",
    an exit 4 that blamed the model; it names the field and the checkpoint's rank (exit 2)."""
    import pytest

    from showo2_cli.errors import UsageError
    from test_lora import lora_config

    raw = lora_config(tmp_path, tiny_model_dir, **{"optim.max_steps": 1})
    train(parse_config(raw, source="c.toml"))
    run = tmp_path / "run"
    with pytest.raises(UsageError, match=rf"^c.toml: lora.rank: 8, the checkpoint '{run / 'checkpoint-000001'}' "
                                         r"holds a rank-4 adapter; resume it with rank = 4 \(or start a new"):
        train(parse_config({**raw, "lora": {"rank": 8, "alpha": 8}, "optim": {"max_steps": 2}}, source="c.toml"))
    with pytest.raises(UsageError, match=r"^c.toml: lora.target_modules: the checkpoint's adapter does not fit the "
                                         r"\[lora\] section \(.*\); resume it with its target_modules"):
        train(parse_config({**raw, "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj"]},
                            "optim": {"max_steps": 2}}, source="c.toml"))
