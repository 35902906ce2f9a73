"""Hostile inputs, round six, mostly training runs: found by probing `showo2 train` with tampered optimizer
states, huge texts, a second run on the same folder, signals after a save and out-of-range
config values. Each was a saved NaN checkpoint, a memory blow-up, a corrupted run or a silently
wrong sample before its fix; each test fails on the code before it."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from showo2_cli.errors import InputError, ModelError, OutputError, UsageError  # noqa: E402
from showo2_cli.training import checkpoint as ckpt  # noqa: E402
from showo2_cli.training.config import parse_config  # noqa: E402
from showo2_cli.training.trainer import LOCK_FILE, train  # noqa: E402
from test_train import tiny_config  # noqa: E402


def test_non_finite_weights_after_the_last_update_are_never_saved(tmp_path):
    """A corrupt optimizer state (NaN moments) made the last step's update NaN; the loss is checked
    before each update, so the run saved 227,776 NaN weights as its final checkpoint and exited 0.
    Since probe IH the resume refuses such a state before any step (it was caught at step 3)."""
    cfg = tiny_config(tmp_path, **{"optim.max_steps": 3})
    train(parse_config(cfg, source="c"), stop_after=2)
    run = tmp_path / "run"
    state_file = run / "checkpoint-000002" / ckpt.STATE_FILE
    state = torch.load(state_file, weights_only=True)
    for moments in state["optimizer"]["state"].values():
        moments["exp_avg"].fill_(float("nan"))
    torch.save(state, state_file)
    with pytest.raises(ModelError, match="optimizer state does not fit this model.*not finite"):
        train(parse_config(cfg, source="c"))
    assert ckpt.latest_checkpoint(run).name == "checkpoint-000002" and not (run / "checkpoint-000003").exists()


def test_weights_made_non_finite_by_the_last_update_are_never_saved(tmp_path, monkeypatch):
    """The guard the test above met before probe IH's resume check: the loss is checked before each
    update, so non-finite weights from the run's last update (here an update that writes NaN into
    one weight after the real AdamW step) are seen before the save and nothing is written."""
    real_step = torch.optim.AdamW.step

    def step_then_nan(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        if self.state and max(int(s["step"]) for s in self.state.values()) >= 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_nan)
    cfg = tiny_config(tmp_path, **{"optim.max_steps": 3})
    with pytest.raises(UsageError, match="weights became non-finite at step 3.*no checkpoint"):
        train(parse_config(cfg, source="c"))
    assert not (tmp_path / "run" / "checkpoint-000003").exists()


@pytest.mark.parametrize("change, field", [({"optim.lr": 1e30}, "optim.lr"),
                                           ({"data.0.resolution": 1048576}, "data[0].resolution"),
                                           ({"data.0.weight": 1e308}, "data[0].weight")])
def test_values_that_overflow_are_config_errors(tmp_path, change, field):
    """lr 1e30 saved 1e30 weights (1e39: an internal error); a resolution of 2^20 failed as a bare
    'out of memory' after allocating; a weight of 1e308 made the mixing sum inf."""
    cfg = tiny_config(tmp_path)
    for key, value in change.items():
        section, *rest = key.split(".")
        node = cfg[section][int(rest[0])] if rest[0].isdigit() else cfg[section]
        node[rest[-1]] = value
    with pytest.raises(UsageError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_config(cfg, source="c")


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    """Two runs on one output_dir both exited 0, interleaving metrics and pruning each other's
    checkpoints (latest once named a deleted folder)."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with open(run / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        with pytest.raises(OutputError, match="in use by another showo2 train run .pid 4242."):
            train(parse_config(tiny_config(tmp_path, **{"optim.max_steps": 1}), source="c"))
    assert train(parse_config(tiny_config(tmp_path, **{"optim.max_steps": 1}), source="c")).step == 1


def test_a_stop_right_after_a_periodic_save_does_not_save_it_again(tmp_path):
    """SIGTERM while checkpoint 1 was written: the final save wrote checkpoint 1 a second time
    (replacing the folder latest names, and doubling the time to exit)."""
    events = []

    def progress(event):
        events.append(event)
        if event["event"] == "checkpoint":
            os.kill(os.getpid(), signal.SIGTERM)  # the run's handler notes it; the loop stops after the save

    cfg = tiny_config(tmp_path, **{"optim.max_steps": 5, "run.save_every": 1})
    result = train(parse_config(cfg, source="c"), progress=progress)
    saves = [e for e in events if e["event"] == "checkpoint"]
    assert result.interrupted and result.step == 1 and len(saves) == 1
    assert Path(result.checkpoint).name == "checkpoint-000001"


def test_huge_records_are_refused_and_long_texts_cost_only_their_tokens(tmp_path):
    """A 400 MB JSONL line was parsed whole (killed at 22 GB); a 60 MB answer in a JSON array took
    12 GB; every text was tokenized in full before being cut to its token budget."""
    from showo2_cli.hub import bundled_demo_path
    from showo2_cli.tokenizer import encode_prefix, encode_text, load_tokenizer
    from showo2_cli.training.records import MAX_RECORD_BYTES, Records, build_index, iter_json_array
    from showo2_cli.training.schema import DataSource

    lines = tmp_path / "d.jsonl"
    lines.write_text(json.dumps({"path": "a.png", "prompt": "x" * (MAX_RECORD_BYTES + 10)}) + "\n"
                     + json.dumps({"path": "b.png", "prompt": "a cat"}) + "\n")
    records = Records(*build_index(DataSource(kind="pairs", role="t2i", path=str(lines)), tmp_path / "index"))
    with pytest.raises(InputError, match="record 0 is over 8 MiB"):
        records[0]
    assert records[1]["prompt"] == "a cat"
    array = tmp_path / "d.json"
    array.write_text(json.dumps([{"conversations": [{"value": "y" * (MAX_RECORD_BYTES + 10)}]}]))
    with pytest.raises(InputError, match="element over 8 MiB"):
        list(iter_json_array(array))

    tok = load_tokenizer(bundled_demo_path())  # a byte-level BPE, as Qwen2.5's
    text = " ".join(f"word{i} and, some: punctuation!" for i in range(3000))
    for limit in (1, 7, 512):
        assert encode_prefix(tok, text, limit) == encode_text(tok, text)[:limit]


def test_a_caption_field_of_another_type_is_refused(tmp_path):
    """`"prompt": ["a list"]` trained as an empty caption (the unconditional row), silently."""
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(tmp_path / "a.png")
    lines = tmp_path / "d.jsonl"
    lines.write_text(json.dumps({"path": "a.png", "prompt": ["a list"]}) + "\n")
    cfg = tiny_config(tmp_path, **{"optim.max_steps": 1})
    cfg["data"][0] = {"kind": "pairs", "role": "t2i", "path": str(lines), "resolution": 64}
    with pytest.raises(InputError, match="prompt must be text, got list"):
        train(parse_config(cfg, source="c"))


# ---- found by a documentation walk-through ------------------------------------------------------

def test_a_reader_that_goes_away_mid_stream_exits_141(media_dir, monkeypatch, capsys):
    """`showo2 caption img -q a -q b | head -c1` exited 1 with nothing said: typer caught the
    broken pipe itself and exited 1, so the documented 141 was never reached."""
    from showo2_cli.cli import main

    class Gone:
        encoding = "utf-8"

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def isatty(self):
            return False

    image = sorted(media_dir.glob("*.jpg"))[0]
    monkeypatch.setattr(sys, "stdout", Gone())
    code = main(["caption", str(image), "-q", "What is it?", "-q", "What colour?", "--max-new-tokens", "3"])
    monkeypatch.undo()
    assert code == 141 and "error" not in capsys.readouterr().err


def test_a_bad_memory_variable_fails_before_loading_and_small_sizes_read_right(monkeypatch):
    """SHOWO2_MAX_MEMORY_GB=abc failed only after the model loaded (8 s); a tiny limit said
    "needs about 0.0 GB, more than the 0.0 GB allowed"."""
    from showo2_cli.errors import ResourceError
    from showo2_cli.options import RuntimeOptions
    from showo2_cli.runtime import check_memory

    monkeypatch.setenv("SHOWO2_MAX_MEMORY_GB", "abc")
    with pytest.raises(UsageError, match="SHOWO2_MAX_MEMORY_GB must be a number of GB"):
        RuntimeOptions().validate()
    monkeypatch.delenv("SHOWO2_MAX_MEMORY_GB")
    with pytest.raises(ResourceError, match=r"needs about 1\.5 MB, more than the 1\.0 KB allowed by --max-memory"):
        check_memory(0.0015, "a job", option=0.000001)


def test_a_folder_listing_follows_files_added_and_removed(tmp_path):
    """The listing of a pairs folder was keyed by its path alone: images added before a resume
    were never used, and deleting one failed the run on 'no such file'."""
    import time

    from PIL import Image

    from showo2_cli.training.records import Records, build_index
    from showo2_cli.training.schema import DataSource

    media = tmp_path / "media"
    media.mkdir()
    Image.new("RGB", (32, 32), "red").save(media / "a.png")
    source = DataSource(kind="pairs", role="t2i", path=str(media))

    def listed():
        records = Records(*build_index(source, tmp_path / "index"))
        return sorted(Path(records[i]["path"]).name for i in range(len(records)))

    assert listed() == ["a.png"]
    time.sleep(0.01)  # a later modification time for the folder
    for name in ("b.png", "c.png"):
        Image.new("RGB", (32, 32), "blue").save(media / name)
    assert listed() == ["a.png", "b.png", "c.png"]
    (media / "a.png").unlink()
    assert listed() == ["b.png", "c.png"]
    assert len(list((tmp_path / "index").glob("*.listing.jsonl"))) == 1  # earlier listings removed


def test_a_training_state_that_would_run_code_is_refused_by_name(tmp_path):
    """A trainer_state.pt carrying code got a truncated PyTorch text ("...weights_only argument in
    torch.load fr)"); it is refused for safety as a weight file is, naming what it calls."""
    from showo2_cli.errors import ModelError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cfg = tiny_config(tmp_path, **{"optim.max_steps": 2})
    train(parse_config(cfg, source="c"), stop_after=1)
    state = tmp_path / "run" / "checkpoint-000001" / ckpt.STATE_FILE
    torch.save({"format": 1, "step": 1, "optimizer": Payload()}, state)
    with pytest.raises(ModelError, match=r"refusing to load .*trainer_state.pt' for safety.*references posix\.system"):
        train(parse_config(cfg, source="c"))
    assert not marker.exists()


def test_a_run_that_fails_at_its_first_loss_leaves_no_folder_and_yaml_text_numbers_are_explained(tmp_path):
    """A loss that became inf at step 1 left the new run folder (with train_config.json) behind;
    YAML's `lr: 1e-4` (text under YAML 1.1) was "must be a number, got '1e-4'" with no reason."""
    config = parse_config(tiny_config(tmp_path, **{"optim.max_steps": 2}), source="c")
    config.loss.ntp = 3e38  # past the config's own cap (probe CE), set as a Python caller could
    with pytest.raises(UsageError, match="the loss became inf at step 1"):
        train(config)
    assert not (tmp_path / "run").exists()
    with pytest.raises(UsageError, match="YAML reads 1e-4 as text; write 1.0e-4"):
        parse_config(tiny_config(tmp_path, **{"optim.lr": "1e-4"}), source="c")
