"""eval_loss on the training loss's scale, beside each term's held-out mean (probe EN).

A held-out eval_loss was the item-weighted mean of one-role batches' losses: t2i batches' flow
loss and mmu batches' NTP loss, never summed as a step's loss is (3.04 where training logged 6.37).
It is now the training loss's combination (loss.ntp x eval_ntp + loss.flow x eval_flow) of the
terms' means over all the held-out tokens and flow elements, logged beside them."""

from __future__ import annotations

import pytest

from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import train
from test_train import metrics, tiny_config

HELD_T2I = {"kind": "shapes", "role": "t2i", "resolution": 64, "size": 3, "split": "eval"}
HELD_MMU = {"kind": "shapes", "role": "mmu", "format": "pretraining", "resolution": 64, "size": 3, "split": "eval"}


def evals(run_dir):
    return [m for m in metrics(run_dir) if "eval_loss" in m]


def test_eval_loss_combines_the_held_out_terms_as_the_training_loss_does(tmp_path, monkeypatch, capsys):
    from showo2_cli.training import command, evaluation
    from showo2_cli.training.trainer import Run

    raw = tiny_config(tmp_path, **{"optim.max_steps": 2, "run.eval_every": 2, "loss.ntp": 0.2,
                                   "batch.mmu": 2})
    raw["data"] += [dict(HELD_T2I), dict(HELD_MMU)]
    cfg = parse_config(raw, source="c")
    events = []
    train(cfg, stop_after=1, progress=events.append)  # stopped after step 1, then resumed
    train(cfg, progress=events.append)
    lines = evals(tmp_path / "run")
    assert [m["step"] for m in lines] == [0, 2]
    for m in lines:
        assert set(m) == {"step", "eval_loss", "eval_ntp", "eval_flow"}
        assert m["eval_loss"] == pytest.approx(0.2 * m["eval_ntp"] + 1.0 * m["eval_flow"], rel=1e-12)
        assert 3.0 < m["eval_ntp"] < 8.0 and 0.5 < m["eval_flow"] < 2.0  # byte-level CE; unit-variance flow
    trained = [m for m in metrics(tmp_path / "run") if "loss" in m]
    assert all(m["loss"] == pytest.approx(0.2 * m["ntp"] + m["flow"], rel=1e-5) for m in trained)
    # the old mean of one-role batches' losses: (3 x flow + 3 x 0.2 ntp) / 6, another scale
    old = (lines[0]["eval_flow"] + 0.2 * lines[0]["eval_ntp"]) / 2
    assert abs(lines[0]["eval_loss"] - old) > 0.5

    shown = [e for e in events if e["event"] == "eval"]
    assert [{k: v for k, v in e.items() if k != "event"} for e in shown] == lines
    command._Renderer(quiet=False, json_mode=False)(shown[-1])
    err = capsys.readouterr().err
    assert f"step 2: eval_loss {lines[1]['eval_loss']:.4f}  eval_ntp {lines[1]['eval_ntp']:.4f}  " \
           f"eval_flow {lines[1]['eval_flow']:.4f}" in err

    run = Run(cfg)
    try:
        run.setup()  # resumes checkpoint-000002: one process, then two sharing the batches out
        assert [len(b) for b in evaluation.eval_batches(run)] == [2, 1, 2, 1]
        one = evaluation.eval_metrics(run)
        plain = evaluation.eval_totals
        two = plain(run, 0, 2) + plain(run, 1, 2)
        monkeypatch.setattr(evaluation, "eval_totals", lambda run, rank, world: two)
        for got in (one, evaluation.eval_metrics(run)):
            assert got.keys() == lines[1].keys() - {"step"}
            assert all(got[k] == pytest.approx(lines[1][k], rel=1e-12) for k in got)
    finally:
        ckpt.release_folder(run._lock)


def test_without_held_out_data_and_with_one_role(tmp_path):
    """The fixed batch of training items (both roles) gets its terms too; a run whose held-out data
    has one role logs that term alone, and eval_loss is its weighted mean (no NTP term to add)."""
    raw = tiny_config(tmp_path / "fixed", **{"optim.max_steps": 1, "run.eval_every": 1, "loss.ntp": 0.2})
    train(parse_config(raw, source="c"))
    lines = evals(tmp_path / "fixed" / "run")
    assert len(lines) == 2 and all(set(m) == {"step", "eval_loss", "eval_ntp", "eval_flow"} for m in lines)
    assert all(m["eval_loss"] == pytest.approx(0.2 * m["eval_ntp"] + m["eval_flow"], rel=1e-12) for m in lines)

    raw = tiny_config(tmp_path / "t2i", **{"optim.max_steps": 1, "run.eval_every": 1, "loss.flow": 2.0})
    raw["data"], raw["batch"] = [raw["data"][0], dict(HELD_T2I)], {"t2i": 2}
    train(parse_config(raw, source="c"))
    lines = evals(tmp_path / "t2i" / "run")
    assert len(lines) == 2 and all(set(m) == {"step", "eval_loss", "eval_flow"} for m in lines)
    assert all(m["eval_loss"] == pytest.approx(2.0 * m["eval_flow"], rel=1e-12) for m in lines)
    trained = [m for m in metrics(tmp_path / "t2i" / "run") if "loss" in m]
    assert trained[0]["ntp"] == 0.0 and trained[0]["loss"] == pytest.approx(2.0 * trained[0]["flow"], rel=1e-6)
