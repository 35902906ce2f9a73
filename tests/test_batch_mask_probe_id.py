"""Probe ID: a training forward whose rows share one layout (every generation forward of a batch
split by role) builds and keeps one omni-mask row that attention broadcasts over the batch, not
one per row, with the same losses, gradient norms and weights."""

from __future__ import annotations

import json

import pytest
import torch

from showo2_cli.modeling.attention import batch_mask, omni_attention_mask


def _brute_force(slots: list[list[tuple[int, int]]], length: int) -> torch.Tensor:
    """The omni rule written out position by position (spec §5.3)."""
    out = torch.zeros(len(slots), 1, length, length, dtype=torch.bool)
    for b, blocks in enumerate(slots):
        for q in range(length):
            for k in range(length):
                same = any(o <= q < o + n and o <= k < o + n for o, n in blocks)
                out[b, 0, q, k] = k <= q or same
    return out


def test_the_omni_mask_is_the_rule_with_several_blocks_and_empty_slots():
    slots = [[(2, 4), (8, 3), (0, 0)], [(0, 0), (0, 0), (0, 0)], [(1, 13), (0, 0), (0, 0)], [(5, 1), (7, 6), (14, 2)]]
    got = omni_attention_mask(torch.tensor(slots), 16)
    assert got.dtype == torch.bool and got.shape == (4, 1, 16, 16)
    assert torch.equal(got, _brute_force(slots, 16))


def test_batch_mask_is_one_row_when_every_row_has_the_same_blocks():
    same = torch.tensor([[[3, 6]]] * 5)
    one = batch_mask(same, 12)
    assert one.shape == (1, 1, 12, 12)
    assert torch.equal(one.expand(5, -1, -1, -1), omni_attention_mask(same, 12))
    mixed = torch.tensor([[[3, 6]], [[3, 6]], [[2, 6]]])
    assert torch.equal(batch_mask(mixed, 12), omni_attention_mask(mixed, 12))  # (3, 1, 12, 12)
    assert batch_mask(same[:1], 12).shape == (1, 1, 12, 12)


def _train(tmp_path, name: str) -> tuple[list[dict], dict, dict]:
    """One optimizer step of a tiny run (a t2i forward of 3 rows whose captions differ in
    length, so their blocks start at different positions, and an mmu forward of 3 rows whose images
    all start after ``[bos] [boi]``); returns the metrics lines, the batch sizes of the float
    ``L x L`` masks autograd kept in each role's forwards, and the final weights."""
    import showo2_cli.training.recipe as recipe
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.trainer import Run
    from test_train import tiny_config

    kept: dict[str, set[int]] = {}

    def counted(self, batch, totals=None):
        sizes = kept.setdefault("+".join(sorted(set(batch.roles))), set())

        def pack(t):
            if t.dim() == 4 and t.shape[1] == 1 and t.shape[-1] == t.shape[-2] > 1 and t.is_floating_point():
                sizes.add(t.shape[0])
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            return forward(self, batch, totals)

    forward = recipe.Showo2Loss.forward
    raw = tiny_config(tmp_path / name, **{"optim.max_steps": 1, "batch.t2i": 3, "batch.mmu": 3})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe.Showo2Loss, "forward", counted)
        run = Run(parse_config(raw, source=name))
        run.run()
    lines = [json.loads(x) for x in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
    weights = {k: v.clone() for k, v in run.objective.network.state_dict().items()}
    return lines, kept, weights


def test_a_training_step_keeps_one_mask_row_for_rows_of_one_layout(tmp_path, monkeypatch):
    """Before, the mmu forward built and kept a (3, 1, L, L) float mask (one row per row, all the
    same); now (1, 1, L, L). The t2i rows' blocks differ: theirs stays (3, 1, L, L). The run's
    losses, grad norms and weights are the same bits."""
    lines, kept, weights = _train(tmp_path, "new")
    import showo2_cli.training.recipe as recipe

    monkeypatch.setattr(recipe, "batch_mask", omni_attention_mask)  # a row per row, as before
    old_lines, old_kept, old_weights = _train(tmp_path, "old")
    drop = ("steps_per_s", "seconds", "peak_rss_mb")
    assert [{k: v for k, v in x.items() if k not in drop} for x in lines] == \
           [{k: v for k, v in x.items() if k not in drop} for x in old_lines]
    assert len(lines) == 1 and all(x["grad_norm"] > 0 for x in lines)
    assert weights.keys() == old_weights.keys()
    assert all(torch.equal(weights[k], old_weights[k]) for k in weights)
    # (a forward with no generation row also runs the flow head on its first row, under mask[:1])
    assert old_kept == {"t2i": {3}, "mmu": {1, 3}}, old_kept
    assert kept == {"t2i": {3}, "mmu": {1}}, kept
