"""Probe HN: training leftovers of probe HE. A step taking more items than the data holds says so at
the start (the items repeat: batches are filled to their size), and ``train_config.json`` records each
invocation of a run (its start step, world size, step total), not the last one's world size alone."""

from __future__ import annotations

import json

from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.config import parse_config
from showo2_cli.training.schedule import repeated_items_notes
from showo2_cli.training.trainer import train
from test_train import tiny_config


def _pairs(tmp_path, n: int):
    from PIL import Image

    for i in range(n):
        Image.new("RGB", (64, 64), (60 * i, 90, 30)).save(tmp_path / f"{i}.png")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"path": f"{i}.png", "caption": f"c{i}"}) + "\n" for i in range(n)))
    return data


def test_a_step_bigger_than_the_data_says_its_items_repeat(tmp_path):
    """Two photos, ``batch.t2i = 4``, ``grad_accumulation = 3``, one epoch: one step of 12 items, each photo
    six times, and nothing said. Now a notice at the start; the step stays whole (Hugging Face's Trainer
    would make a short batch: a step's size, loss scale and noise would depend on the data's size)."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": None, "optim.epochs": 1, "optim.epoch_role": "t2i",
                                   "optim.grad_accumulation": 3, "batch.t2i": 4, "optim.warmup_steps": 0})
    raw["data"] = [{"kind": "pairs", "role": "t2i", "path": str(_pairs(tmp_path, 2)), "resolution": 64}]
    del raw["batch"]["mmu"]
    events = []
    result = train(parse_config(raw, source="c"), progress=events.append)
    said = [e["message"] for e in events if e["event"] == "notice"]
    assert result.step == 1 and said == [
        "a step takes 12 t2i items (batch.t2i = 4 x optim.grad_accumulation = 3), more than the 2 of the data: "
        "each step repeats them, each about 6 times (batches are filled to their size)"]
    lengths = {"t2i": 10, "mmu": None, "vid": 3}.get
    assert repeated_items_notes({"t2i": 2, "mmu": 4, "vid": 0}, lengths, 1, 4) == []  # 8 of 10; endless; unused
    assert repeated_items_notes({"t2i": 2}, lengths, 3, 2)[0].startswith(
        "a step takes 12 t2i items (batch.t2i = 2 x optim.grad_accumulation = 2 x 3 processes), more than the 10")


def test_the_run_record_keeps_each_invocation(tmp_path):
    """A run stopped after 2 steps and resumed: ``train_config.json`` lists both starts (step 0 and 2, each
    with its world size and step total); a fresh start in the folder, or a resume from an earlier checkpoint,
    drops the invocations it undoes. ``check_same_run`` still reads the config's model from it."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 4})
    train(parse_config(raw, source="c"), stop_after=2)
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert [(i["start_step"], i["world_size"], i["max_steps"]) for i in record["invocations"]] == [(0, 1, 4)]
    result = train(parse_config(raw, source="c"))
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert result.step == 4 and record["world_size"] == 1 and record["config"]["model"]["init_spec"] == "tiny"
    assert [(i["start_step"], i["world_size"]) for i in record["invocations"]] == [(0, 1), (2, 1)]
    ckpt.check_same_run(tmp_path / "run", parse_config(raw, source="c").model)  # (the same model: no error)
    info = {"config": {}, "world_size": 2, "max_steps": 9}
    ckpt.write_run_config(tmp_path / "run", info, 1, resumed=True)  # from step 1: the start at 2 is undone
    got = json.loads((tmp_path / "run" / "train_config.json").read_text())["invocations"]
    assert [(i["start_step"], i["world_size"], i["max_steps"]) for i in got] == [(0, 1, 4), (1, 2, 9)]
    ckpt.write_run_config(tmp_path / "run", info, 0, resumed=False)
    assert len(json.loads((tmp_path / "run" / "train_config.json").read_text())["invocations"]) == 1
    (tmp_path / "run" / "train_config.json").write_text("[not a record")
    ckpt.write_run_config(tmp_path / "run", info, 5, resumed=True)  # an unreadable record: the list starts again
    assert len(json.loads((tmp_path / "run" / "train_config.json").read_text())["invocations"]) == 1
