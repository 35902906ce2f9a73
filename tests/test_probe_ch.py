"""Round fifteen's merge read together (probe CH): probe CD's records change-detection met probe
CE's held-out eval sources, and CD's NaN error named the command line's --dtype to a server's
client and a Python caller."""

from __future__ import annotations

import json

import pytest

from showo2_cli.errors import InputError


def _record(i: int, image: str) -> dict:
    """A TRL-style vision conversation (content as a list of parts)."""
    user = [{"type": "image"}, {"type": "text", "text": "What colour is it?"}]
    return {"messages": [{"role": "user", "content": user},
                         {"role": "assistant", "content": [{"type": "text", "text": f"Red {i}."}]}],
            "images": [image]}


def _held_out_run(folder, records, on_event=None):
    """A 1-step tiny run whose held-out source (split = "eval") is ``records`` in a llava file."""
    from PIL import Image

    from showo2_cli.training.config import parse_config
    from showo2_cli.training.trainer import train
    from test_train import tiny_config

    folder.mkdir()
    Image.new("RGB", (32, 32), (255, 0, 0)).save(folder / "red.png")
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    raw = tiny_config(folder, **{"optim.max_steps": 1, "run.eval_every": 1})
    raw["data"].append({"kind": "llava", "role": "mmu", "path": str(folder / "eval.jsonl"), "resolution": 32,
                        "split": "eval"})
    train(parse_config(raw, source="c.toml"), progress=on_event)


def test_a_held_out_file_edited_during_the_run_stops_it_saying_so(tmp_path):
    """A held-out records file edited while the run read it: each of its items raised "changed since it
    was indexed", which eval_loss took for unreadable items and passed over, then stopped the run with
    "none of the 0 held-out item(s) could be read" (the reason lost, and 0: a batch with no readable
    item was not counted). The change is said as it is; items all unreadable are counted."""

    records = [_record(i, "red.png") for i in range(3)]
    edited = []

    def edit(ev):  # the first line deleted once the run has started, before its first evaluation
        if ev.get("event") == "start":
            edited.append(1)
            (tmp_path / "a" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[1:]))

    with pytest.raises(InputError, match=r"eval.jsonl' changed since it was indexed \(record 0 .*restart the run"):
        _held_out_run(tmp_path / "a", records, edit)
    assert edited == [1]
    with pytest.raises(InputError, match=r"eval_loss: none of the 3 held-out item\(s\) could be read"):
        _held_out_run(tmp_path / "b", [_record(i, "missing.png") for i in range(3)])


def test_a_training_file_edited_during_the_run_is_not_passed_over_item_by_item(tmp_path):
    """In training, the change was one more unreadable item: 64 of them were passed over before the run
    stopped (or, with another source of the role, its items silently trained on instead)."""
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.data import TrainingData, make_sources
    from test_train import tiny_config

    path = tmp_path / "d.jsonl"
    records = [{"path": f"{i}.png", "prompt": f"caption {i}"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = [{"kind": "pairs", "role": "t2i", "path": str(path), "resolution": 32},
            {"kind": "shapes", "role": "t2i", "resolution": 32}]
    cfg = parse_config(tiny_config(tmp_path, data=data, batch={"t2i": 1}), source="c.toml")
    dataset = TrainingData(cfg, make_sources(cfg, get_spec("tiny"), tmp_path / "index"), {})
    path.write_text("".join(json.dumps(r) + "\n" for r in records[1:]))
    with pytest.raises(InputError, match="changed since it was indexed"):
        for n in range(8):  # the keys pick either source
            dataset[("t2i", n)]


def test_the_nan_error_names_the_dtype_a_server_client_or_python_caller_reads(tiny_model_dir, tmp_path):
    """A NaN model's error said "try --dtype bf16 or fp32" to a Python caller (who passes torch_dtype=)
    and to a server's client (the dtype is the server's setting), where every other option is renamed."""
    import shutil

    from safetensors.torch import load_file, save_file

    from showo2_cli import Showo2Pipeline
    from showo2_cli.errors import NonFiniteOutput, non_finite
    from showo2_cli.serve.errors import api_error_of

    answer = api_error_of(non_finite("the language head gave scores"))
    assert answer.status == 500 and "--dtype" not in answer.message
    assert answer.message.endswith("(try the server's dtype setting at bf16 or fp32)")
    folder = tmp_path / "nan"
    shutil.copytree(tiny_model_dir, folder)
    state = load_file(folder / "model.safetensors")
    key = "showo.model.layers.0.mlp.down_proj.weight"
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    pipe = Showo2Pipeline.from_pretrained(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    from PIL import Image

    for call in (lambda: pipe("a cat", num_inference_steps=2, width=64, height=64, output_type="latent"),
                 lambda: pipe.caption(Image.new("RGB", (64, 64)), max_new_tokens=2)):
        with pytest.raises(NonFiniteOutput, match=r"\(try from_pretrained\(torch_dtype=torch.bfloat16 or "
                                                  r"torch.float32\)\)$"):
            call()


@pytest.mark.parametrize("key, scaling, needle", [
    ("rope_scaling", {"factor": 2.0}, "rope_scaling must be an object with a rope_type among default, linear"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_scaling 'dynamic' (NTK) is not supported"),
    ("rope_scaling", {"type": "linear", "factor": 0.0}, "factor field must be a float or int >= 1, got 0.0"),
    ("rope_parameters", {"rope_type": "linear", "factor": float("nan"), "rope_theta": 1e6}, "must be finite"),
])
def test_an_official_configs_rope_scaling_is_checked_as_a_showo2_configs(tmp_path, key, scaling, needle):
    """The official format's RoPE scaling met the same checks as the showo2 format's, except one with
    numbers and no type ({"factor": 2.0}: refused in a showo2 config, and the official code's
    transformers stops on it), which loaded as plain RoPE, its factor dropped silently."""
    import shutil

    from conftest import PARITY_DIR
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load

    if not (PARITY_DIR / "model" / "config.json").is_file():
        pytest.skip(f"no parity fixtures at {PARITY_DIR}")
    folder = tmp_path / "official"
    shutil.copytree(PARITY_DIR / "model", folder, ignore=shutil.ignore_patterns("pytorch_model.bin"))
    config = json.loads((folder / "llm" / "config.json").read_text())
    config.pop("rope_scaling")
    config[key] = scaling
    (folder / "llm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load(folder, need=())


def test_an_error_in_a_loader_worker_is_one_line(tmp_path):
    """With `run.num_workers`, torch re-raises a worker's error in the run as its type with the text
    "Caught InputError in DataLoader worker process 0. Original Traceback (...)": the whole traceback
    was the command line's error line. It keeps its type and its own message."""
    from showo2_cli.specs import get_spec
    from showo2_cli.training.config import parse_config
    from showo2_cli.training.control import chunks
    from showo2_cli.training.data import StepSampler, TrainingData, loader, make_sources
    from showo2_cli.training.records import RecordsChanged
    from test_train import tiny_config

    path = tmp_path / "d.jsonl"
    records = [{"path": f"{i}.png", "prompt": f"caption {i}"} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    data = [{"kind": "pairs", "role": "t2i", "path": str(path), "resolution": 32}]
    cfg = parse_config(tiny_config(tmp_path, data=data, batch={"t2i": 1}), source="c.toml")
    dataset = TrainingData(cfg, make_sources(cfg, get_spec("tiny"), tmp_path / "index"), {})
    path.write_text("".join(json.dumps(r) + "\n" for r in records[1:]))
    with pytest.raises(InputError) as caught:
        list(chunks(loader(dataset, StepSampler({"t2i": 1}, 0, 2, 0, 1), num_workers=1), 1))
    assert caught.type is RecordsChanged
    assert str(caught.value).startswith(f"'{path}' changed since it was indexed (record ")
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
