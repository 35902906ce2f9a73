"""`showo2 train`: config validation, data order, the recipe's rows, checkpoints, and short runs.

The runs use the `tiny` spec on the shapes world with a base-4 random VAE, so each step takes
tens of milliseconds on a CPU. The multi-process and Ctrl-C tests start subprocesses and are
marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import set_dotted, sigint_reaches_child
from showo2_cli.errors import UsageError
from showo2_cli.training import checkpoint as ckpt
from showo2_cli.training.config import load_config, parse_config
from showo2_cli.training.data import (
    Permutation,
    StepSampler,
    TrainingData,
    make_sources,
    step_keys,
)
from showo2_cli.training.records import build_index
from showo2_cli.training.schedule import lr_factor
from showo2_cli.training.trainer import LOCK_FILE, train

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, **changes) -> dict:
    """A small from-scratch config as a mapping (what a TOML file would hold)."""
    cfg = {
        "mode": "showo2",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "model": {"init_spec": "tiny", "vae_base_dim": 4},
        "data": [
            {"kind": "shapes", "role": "t2i", "resolution": 64},
            {"kind": "shapes", "role": "mmu", "format": "pretraining", "resolution": 64},
        ],
        "batch": {"t2i": 2, "mmu": 1},
        "optim": {"lr": 1e-3, "max_steps": 8, "warmup_steps": 2, "schedule": "cosine"},
        "loss": {"ntp": 1.0, "flow": 1.0},
        "run": {"save_every": 0, "log_every": 1, "device": "cpu"},
    }
    return set_dotted(cfg, changes)


def write_toml(path: Path, cfg: dict) -> Path:
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in cfg.items() if not isinstance(v, (dict, list))]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    for item in cfg.get("data", []):
        lines.append("[[data]]")
        lines += [f"{kk} = {value(vv)}" for kk, vv in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def model_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ---- config validation -----------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"data.0.kind": "shape"}, "data[0].kind"),
    ({"data.1.role": "vqa"}, "data[1].role"),
    ({"optim.lr": -1.0}, "optim.lr"),
    ({"optim.lr": "fast"}, "optim.lr"),
    ({"optim.schedule": "linear"}, "optim.schedule"),
    ({"batch.t2i": 0}, "data[0].role"),
    ({"data.0.resolution": 60}, "data[0].resolution"),
    ({"loss.cond_dropout": 1.5}, "loss.cond_dropout"),
    ({"run.mixed_precision": "fp8"}, "run.mixed_precision"),
    ({"model.init_spec": "huge"}, "model.init_spec"),
    ({"optim.betas": [0.9]}, "optim.betas"),
    ({"data.0.frames": 4}, "data[0].frames"),
])
def test_config_errors_are_one_line_and_name_the_field(tmp_path, change, field):
    cfg = tiny_config(tmp_path)
    for key, value in change.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if p.isdigit() else node[p]
        node[parts[-1]] = value
    with pytest.raises(UsageError) as err:
        parse_config(cfg, source="c.toml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("c.toml: ") and field in message, message


def test_config_unknown_fields_and_missing_pieces(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg["optim"]["lrr"] = 1.0
    with pytest.raises(UsageError, match=r"optim\.lrr: unknown field"):
        parse_config(cfg, source="c.toml")
    cfg = tiny_config(tmp_path)
    cfg["model"]["init"] = "x"
    with pytest.raises(UsageError, match="exactly one of model.init"):
        parse_config(cfg, source="c.toml")
    cfg = tiny_config(tmp_path)
    cfg["data"].append({"kind": "pairs", "role": "t2i", "path": str(tmp_path / "nope.jsonl")})
    with pytest.raises(UsageError, match=r"data\[2\]\.path: .* does not exist"):
        parse_config(cfg, source="c.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("mode = \n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(bad)


def test_epochs_over_a_role_without_rows_names_the_roles_there_are(tmp_path):
    """optim.epochs on a run of t2i rows alone was refused for the default epoch_role ('mmu') with
    no word of what to set it to."""
    raw = tiny_config(tmp_path, **{"optim.epochs": 2})
    del raw["optim"]["max_steps"], raw["batch"]["mmu"]
    raw["data"] = [{"kind": "shapes", "role": "t2i", "resolution": 64, "size": 8}]
    with pytest.raises(UsageError, match=r"optim.epoch_role: 'mmu' has batch size 0: .*\(one of t2i\)$"):
        parse_config(raw, source="c.toml")
    raw["optim"]["epoch_role"] = "t2i"
    assert parse_config(raw, source="c.toml").optim.epochs == 2


def test_example_configs_are_valid():
    names = sorted(p.name for p in (REPO / "examples").glob("*.toml"))
    assert {"train_tiny.toml", "train_tiny_vae.toml", "showo2_1.5b_stage1.toml", "showo2_1.5b_stage2.toml"} <= set(names)
    for name in ("train_tiny.toml", "train_tiny_vae.toml"):
        assert load_config(REPO / "examples" / name).output_dir


def _official(tmp_path: Path, name: str):
    """An official example with placeholder data files next to a copy of it."""
    examples = tmp_path / "examples"
    (examples / "data" / "images").mkdir(parents=True, exist_ok=True)
    (examples / "data" / "llava_images").mkdir(exist_ok=True)
    for f in ("t2i.jsonl", "llavaov_stage_1_5_all_with_densefusion.json"):
        (examples / "data" / f).write_text("")
    (examples / name).write_text((REPO / "examples" / name).read_text())
    return load_config(examples / name)


def test_official_stage_configs_follow_the_recipe(tmp_path):
    """Stage 1: only projector/fusion/time/flow head train; stage 2: three lr groups, time_embed frozen."""
    from showo2_cli.modeling.showo2 import Showo2Model
    from showo2_cli.specs import get_spec
    from showo2_cli.training.params import parameter_groups

    with torch.device("meta"):
        network = Showo2Model(get_spec("1.5B"))
    s1 = _official(tmp_path, "showo2_1.5b_stage1.toml")
    assert (s1.loss.ntp, s1.loss.flow, s1.batch.t2i, s1.batch.mmu) == (0.2, 1.0, 6, 2)
    assert (s1.optim.lr, s1.optim.warmup_steps, s1.optim.max_steps, s1.optim.schedule) == (1e-4, 2000, 150000, "constant")
    groups, report = parameter_groups(network, s1)
    trainable = {n for n, p in network.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith(("showo.", "und_trans.", "image_embedder_und.", "position_embedding."))
                                 for n in trainable)
    assert {"image_embedder_gen.proj.weight", "fusion_proj.1.weight", "time_embed.mlp.0.weight",
            "diffusion_head_b.linear.weight", "time_embed_proj.weight"} <= trainable
    s2 = _official(tmp_path, "showo2_1.5b_stage2.toml")
    assert (s2.loss.ntp, s2.loss.flow, s2.optim.schedule, s2.optim.warmup_ratio) == (1.0, 1.0, "cosine", 0.03)
    groups, report = parameter_groups(network, s2)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == {"ve": 2e-6, "proj": 1e-5, "showo": 1e-5}
    frozen = {n for n, p in network.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in network.named_parameters() if n.startswith("time_embed.")}
    by_name = {id(p): g["name"] for g in groups for p in g["params"]}
    named = dict(network.named_parameters())
    assert by_name[id(named["image_embedder_gen.proj.weight"])] == "ve"
    assert by_name[id(named["diffusion_head_a.0.mlp.up_proj.weight"])] == "showo"


# ---- pure pieces ---------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 1000])
def test_permutation_is_a_bijection(n):
    perm = Permutation(n, key=12345)
    assert sorted(perm(i) for i in range(n)) == list(range(n))


def test_ranks_draw_disjoint_samples():
    roles = {"t2i": 3, "mmu": 2}
    seen = set()
    for step in range(4):
        for rank in range(2):
            keys = step_keys(roles, step, rank, 2)
            assert not seen & set(keys)
            seen |= set(keys)
    assert list(StepSampler(roles, 2, 4, 0, 1)) == [step_keys(roles, 2, 0, 1), step_keys(roles, 3, 0, 1)]


def test_lr_schedule():
    assert lr_factor(0, 100, 10, "constant", 0.0) == 0.0
    assert lr_factor(5, 100, 10, "constant", 0.0) == 0.5
    assert lr_factor(50, 100, 10, "constant", 0.0) == 1.0
    assert lr_factor(10, 100, 10, "cosine", 0.0) == 1.0
    assert lr_factor(100, 100, 10, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, "cosine", 0.0) == pytest.approx(0.5)


def test_shifted_logit_normal_matches_the_spec():
    from showo2_cli.training.recipe import shift_t

    t = torch.tensor([0.5])
    k = 1.786  # S = 730 (spec §7.2)
    expected = 1 - k * 0.5 / (1 + (k - 1) * 0.5)
    assert float(shift_t(t, 730)) == pytest.approx(expected, abs=2e-3)
    assert float(shift_t(torch.tensor([0.0]), 730)) == 0.0
    assert float(shift_t(torch.tensor([1.0]), 730)) == 1.0


def test_training_rows_are_the_inference_prompts():
    """A stage-2 image row starts with exactly the prompt captioning sends at inference (template
    and mask "training"), an empty question included; a t2i row is the generation row."""
    from showo2_cli.sequences import IGNORE, TrainingRows, generation_layout, understanding_layout
    from showo2_cli.tokenizer import add_showo2_tokens, byte_level_tokenizer, encode_text
    from showo2_cli.training.data import Sample

    tok = byte_level_tokenizer()
    tk = add_showo2_tokens(tok)
    rows = TrainingRows(tok, tk)
    for question in ("What shape is it?", ""):
        sample = Sample("mmu", 0, 0, format="tuning", turns=[("<image>\n" + question, "a red circle")])
        ids, labels, slot = rows.understanding(sample, 5, 400)
        infer = understanding_layout(encode_text(tok, question) if question else [], 4, tk, rows.system, rows.user,
                                     rows.assistant, mask_mode="training", template="training", newline=rows.newline)
        prompt = infer.input_ids[0].tolist()
        assert ids[:len(prompt)] == prompt and slot == tuple(infer.slots[0, 0].tolist())
        assert ids[len(prompt):] == encode_text(tok, "a red circle") + [tk.eos]
        assert all(lab == IGNORE for lab in labels[1:len(prompt)]) and labels[len(prompt):] == ids[len(prompt):]
    ids, slot = rows.generation("a cat", 17, 64, video=False)
    gen = generation_layout([encode_text(tok, "a cat")], 17, tk, 64)
    assert ids == gen.input_ids[0, :len(ids)].tolist() and slot == tuple(gen.slots[0, 0].tolist())


def test_rows_follow_the_training_formats():
    from showo2_cli.tokenizer import add_showo2_tokens, byte_level_tokenizer
    from showo2_cli.training.data import Sample
    from showo2_cli.training.recipe import IGNORE, TextBuilder

    tok = byte_level_tokenizer()
    tk = add_showo2_tokens(tok)
    text = TextBuilder(tok, tk)
    # stage-1 captioning: [bos][boi](P)[eoi] caption [eos], labels on boi, eoi, caption, eos
    s = Sample("mmu", 0, 0, format="captioning", text="ab")
    ids, labels, slot = text.understanding(s, 5, 100)
    assert ids == [tk.bos, tk.boi] + [tk.img_pad] * 5 + [tk.eoi, ord("a"), ord("b"), tk.eos]
    assert labels == [tk.bos, tk.boi] + [IGNORE] * 5 + [tk.eoi, ord("a"), ord("b"), tk.eos]
    assert slot == (2, 5)
    # stage-2 tuning: system, user tag, image block, question, eos, assistant tag; answer supervised
    s = Sample("mmu", 0, 0, format="tuning", turns=[("<image>\nq?", "yes")])
    ids, labels, slot = text.understanding(s, 3, 200)
    prefix = [tk.bos] + text.system + text.user
    assert ids[:len(prefix)] == prefix and slot == (len(prefix) + 1, 3)
    assert ids[slot[0] - 1] == tk.boi and ids[slot[0] + 3] == tk.eoi
    supervised = [i for i, lab in zip(ids, labels, strict=True) if lab != IGNORE and i != tk.bos]
    assert supervised == [ord("y"), ord("e"), ord("s"), tk.eos]
    # generation: [bos] prompt [boi] (P) [eoi] [eos], block at len(prompt) + 2
    ids, slot = text.generation("hi", 5, 64, video=False)
    assert ids == [tk.bos, ord("h"), ord("i"), tk.boi] + [tk.img_pad] * 5 + [tk.eoi, tk.eos]
    assert slot == (4, 5)


def test_write_checkpoint_is_atomic(tmp_path):
    def good(dst):
        (dst / ckpt.STATE_FILE).write_text("ok")

    def crash(dst):
        (dst / "half").write_text("x")
        raise RuntimeError("disk on fire")

    first = ckpt.write_checkpoint(tmp_path, 1, good)
    assert ckpt.latest_checkpoint(tmp_path) == first
    with pytest.raises(RuntimeError):
        ckpt.write_checkpoint(tmp_path, 2, crash)
    assert ckpt.latest_checkpoint(tmp_path) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000001", "latest"]
    for step in (2, 3, 4):
        ckpt.write_checkpoint(tmp_path, step, good, keep_last=2)
    assert [p.name for _, p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-000003", "checkpoint-000004"]


def test_file_sources_stream_from_an_index(tmp_path):
    from PIL import Image

    media = tmp_path / "media"
    media.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (40 + 8 * i, 32), colour).save(media / f"img{i}.png")
        (media / f"img{i}.txt").write_text(f"The image features colour {i}\n")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"path": f"media/img{i}.png", "prompt": f"p{i}"}) + "\n"
                                                  for i in range(3)))
    llava = [{"image": f"img{i}.png", "conversations": [{"from": "human", "value": "What?\n<image>"},
                                                        {"from": "gpt", "value": f"a{i}"}]} for i in range(3)]
    llava.append({"conversations": [{"from": "human", "value": "text only"}, {"from": "gpt", "value": "ok"}]})
    (tmp_path / "llava.json").write_text(json.dumps(llava, indent=2))
    cfg = parse_config(tiny_config(tmp_path, data=[
        {"kind": "pairs", "role": "t2i", "path": str(media), "resolution": 32},
        {"kind": "pairs", "role": "t2i", "path": str(tmp_path / "pairs.jsonl"), "resolution": 32},
        {"kind": "llava", "role": "mmu", "path": str(tmp_path / "llava.json"), "root": str(media), "resolution": 32},
    ]), source="c.toml")
    from showo2_cli.specs import get_spec

    sources = make_sources(cfg, get_spec("tiny"), tmp_path / "index")
    assert [s.size() for s in sources] == [3, 3, 4]
    sample = sources[0].get(1)
    assert sample.pixels.shape == (1, 32, 32, 3) and sample.text == "colour 1"  # the official phrase removed
    assert sources[1].get(2).text == "p2"
    sample = sources[2].get(0)
    assert sample.turns == [("What?\n<image>", "a0")] and sample.pixels.shape == (1, 32, 32, 3)
    assert not sources[2].get(3).has_visual
    records, _ = build_index(cfg.data[2], tmp_path / "index")
    assert records.suffix == ".jsonl"  # the JSON array was converted once, streamed
    data = TrainingData(cfg, sources)
    epoch = sorted(data.pick("mmu", n)[1] for n in range(4))
    assert epoch == [0, 1, 2, 3]  # one epoch visits every item once


# ---- short runs (in process) ---------------------------------------------------------------

def test_smoke_run_learns_and_writes_a_loadable_checkpoint(tmp_path):
    """~20 steps on the tiny spec: the loss on a fixed batch goes down; the checkpoint loads and generates."""
    from showo2_cli.loading import load
    from showo2_cli.sampling import generate_latents
    from showo2_cli.sequences import generation_layout
    from showo2_cli.tokenizer import encode_text

    raw = tiny_config(tmp_path, **{"optim.max_steps": 20, "optim.lr": 2e-3, "run.eval_every": 20,
                                   "run.log_every": 5, "run.save_every": 10, "run.sample_every": 20,
                                   "run.sample_steps": 3})
    raw["data"].append({"kind": "shapes", "role": "t2v", "resolution": 32, "frames": 5, "max_seq_len": 128})
    raw["data"].append({"kind": "shapes", "role": "mmu_vid", "resolution": 32, "frames": 3, "format": "tuning",
                        "max_seq_len": 256})
    raw["batch"].update(t2v=1, mmu_vid=1)
    events = []
    result = train(parse_config(raw, source="tiny"), progress=events.append)
    run = tmp_path / "run"
    assert result.step == 20 and not result.interrupted
    evals = [m["eval_loss"] for m in metrics(run) if "eval_loss" in m]
    assert len(evals) == 2 and evals[1] < evals[0] - 0.2, evals
    assert {"start", "step", "log", "checkpoint", "samples", "done"} <= {e["event"] for e in events}
    assert ckpt.latest_checkpoint(run) == run / "checkpoint-000020"
    assert (run / "checkpoint-000010").is_dir() and len(list((run / "samples").glob("*.png"))) == 4

    model = load(run / "checkpoint-000020")
    assert model.spec.name == "tiny" and model.vae is not None
    grid = 64 // model.spec.latent_multiple
    layout = generation_layout([encode_text(model.tokenizer, "a red circle on a black background")],
                               1 + grid * grid, model.tokens, 64)
    z = generate_latents(model.network, layout, torch.randn(1, 16, 8, 8), 5.0, 4, 3.0)
    assert z.shape == (1, 16, 8, 8) and torch.isfinite(z).all()
    assert torch.isfinite(model.vae.decode(z)).all()


def test_resume_continues_bit_identically(tmp_path):
    """N steps straight == N/2 steps, stop, resume N/2: same data order, same weights, same optimizer,
    the same global random state saved (the run's own: whatever state each started in, torch's is
    seeded from the OS in each process), and the caller's random state left as it was."""
    straight = tiny_config(tmp_path / "a", **{"optim.max_steps": 6})
    torch.manual_seed(1)
    caller = torch.get_rng_state()
    train(parse_config(straight, source="a"))
    assert torch.equal(torch.get_rng_state(), caller)  # (the data loader drew its workers' seed from it)
    split = tiny_config(tmp_path / "b", **{"optim.max_steps": 6})
    torch.manual_seed(2)
    first = train(parse_config(split, source="b"), stop_after=3)
    assert first.step == 3 and ckpt.latest_checkpoint(tmp_path / "b" / "run").name == "checkpoint-000003"
    torch.manual_seed(3)
    second = train(parse_config(split, source="b"))
    assert second.step == 6 and second.resumed_from.name == "checkpoint-000003"

    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    ma, mb = metrics(a), metrics(b)
    assert [m["step"] for m in mb] == list(range(1, 7))
    assert [m["data"] for m in ma] == [m["data"] for m in mb]
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]
    sa, sb = model_state(a / "checkpoint-000006"), model_state(b / "checkpoint-000006")
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    oa = torch.load(a / "checkpoint-000006" / ckpt.STATE_FILE, weights_only=True)["optimizer"]["state"]
    ob = torch.load(b / "checkpoint-000006" / ckpt.STATE_FILE, weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(oa[i]["exp_avg_sq"], ob[i]["exp_avg_sq"]) for i in oa)
    ra = torch.load(a / "checkpoint-000006" / ckpt.STATE_FILE, weights_only=True)["rng"]["torch"]
    rb = torch.load(b / "checkpoint-000006" / ckpt.STATE_FILE, weights_only=True)["rng"]["torch"]
    assert torch.equal(ra, rb)


def test_metrics_lines_cover_every_step_across_a_crash_and_a_stop(tmp_path):
    """A metrics line averages the steps since the line before. After a crash the first line of the
    resumed run averaged only the steps after the checkpoint (those between the last line and the
    checkpoint were in no line): it now equals the uninterrupted run's. A stop signal writes a line
    for the steps since the last one (they were in none)."""
    def config(name, save_every):
        return tiny_config(tmp_path / name, **{"optim.max_steps": 6, "run.log_every": 3, "run.save_every": save_every})

    events = []
    train(parse_config(config("a", 0), source="a"), progress=events.append)
    losses = {e["step"]: e["loss"] for e in events if e["event"] == "step"}
    straight = [(m["step"], m["loss"], m["ntp"]) for m in metrics(tmp_path / "a" / "run")]
    assert [s for s, _, _ in straight] == [3, 6]

    crash = config("b", 2)
    train(parse_config(crash, source="b"), stop_after=5)
    ckpt.write_pointer(tmp_path / "b" / "run", ckpt.checkpoint_name(4))  # killed at step 5, before its save
    assert train(parse_config(crash, source="b")).resumed_from.name == "checkpoint-000004"
    assert [(m["step"], m["loss"], m["ntp"]) for m in metrics(tmp_path / "b" / "run")] == straight

    def stop_at_4(event):
        if event["event"] == "step" and event["step"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = config("c", 0)
    assert train(parse_config(stopped, source="c"), progress=stop_at_4).interrupted
    train(parse_config(stopped, source="c"))
    lines = [(m["step"], m["loss"]) for m in metrics(tmp_path / "c" / "run")]
    assert lines == [(3, straight[0][1]), (4, losses[4]), (6, lines[2][1])]
    assert abs(lines[2][1] - (losses[5] + losses[6]) / 2) < 1e-6


def test_items_passed_over_are_named_once_each(tmp_path):
    """Unreadable media in a pairs file are passed over for other items, as before, and counted in
    metrics.jsonl; a notice now says which file and why, once per reason (nothing named them)."""
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    rows = [{"path": "good.png", "caption": "red"}, {"path": "cut.png", "caption": "cut"},
            {"path": "gone.png", "caption": "missing"}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = tiny_config(tmp_path, **{"optim.max_steps": 3, "batch.t2i": 4})
    raw["data"] = [{"kind": "pairs", "role": "t2i", "path": str(tmp_path / "pairs.jsonl"), "resolution": 64}]
    del raw["batch"]["mmu"]
    events = []
    train(parse_config(raw, source="p"), progress=events.append)
    said = [e["message"] for e in events if e["event"] == "notice"]
    assert said[0].startswith("a step takes 4 t2i items")  # (probe HN: 4 items a step of 3)
    said = said[1:]
    assert sum(m.get("skipped", 0) for m in metrics(tmp_path / "run")) >= len(said) == 2, said
    assert len([m for m in said if "cut.png" in m and "truncated or corrupt" in m]) == 1
    assert len([m for m in said if "gone.png" in m and "no such file" in m]) == 1


def test_resuming_on_a_data_file_that_grew_says_the_order_changed(tmp_path):
    """Records appended to a pairs file between a stop and its resume change every later sample (the
    order is a permutation of the file's items): a notice says so, as for a changed config; an
    unchanged file resumes with none."""
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (64, 64), (60 * i, 90, 30)).save(tmp_path / f"{i}.png")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"path": f"{i}.png", "caption": f"c{i}"}) + "\n" for i in range(3)))
    raw = tiny_config(tmp_path, **{"optim.max_steps": 4, "batch.t2i": 1})
    raw["data"] = [{"kind": "pairs", "role": "t2i", "path": str(data), "resolution": 64}]
    del raw["batch"]["mmu"]

    def notices():
        events = []
        train(parse_config(raw, source="g"), progress=events.append, stop_after=1)
        return [e["message"] for e in events if e["event"] == "notice"]

    assert notices() == [] and notices() == []
    with open(data, "a") as f:
        f.write(json.dumps({"path": "3.png", "caption": "c3"}) + "\n")
    assert notices() == ["data[0] has 4 items (3 at the checkpoint): the sample order differs from an "
                         "uninterrupted run"]


def test_resuming_with_another_step_total_says_the_schedule_changed(tmp_path):
    """A cosine schedule is recomputed for a new optim.max_steps (the rate jumps): a notice says so
    with both rates; a checkpoint at or past the total says there is nothing left to train."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 4, "optim.warmup_steps": 1})
    train(parse_config(raw, source="c"))

    def notices(**changes):
        events = []
        result = train(parse_config(set_dotted(raw, changes), source="c"), progress=events.append, stop_after=1)
        return result, [e["message"] for e in events if e["event"] == "notice"]

    result, said = notices(**{"optim.max_steps": 8})
    old, new = (1e-3 * lr_factor(4, total, 1, "cosine", 0.0) for total in (4, 8))
    assert result.step == 5 and len(said) == 1 and old == 0.0 and new > 5e-4
    assert "had 4 steps and this one has 8" in said[0] and f"at step 4: {new:.3g} instead of 0" in said[0], said
    result, said = notices(**{"optim.max_steps": 3})
    assert result.step == 5 and said == ["the checkpoint is at step 5 and optim.max_steps is 3: nothing left to "
                                         "train (raise optim.max_steps or --max-steps to continue)"]
    assert notices(**{"optim.max_steps": 8})[1] == []  # the same total: no notice


def test_vae_mode_reconstruction_improves(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 80 steps from scratch: the margin is measured single-threaded
    try:
        _vae_mode_reconstruction_improves(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _vae_mode_reconstruction_improves(tmp_path):
    raw = {
        "mode": "vae", "seed": 0, "output_dir": str(tmp_path / "vae"),
        "model": {"vae_base_dim": 8},
        "data": [{"kind": "shapes", "role": "vae", "resolution": 64, "crop": 32, "size": 4}],
        "batch": {"vae": 4},
        # 80 steps: on an AVX2-only CPU the seed-0 run plateaus at steps 20-40 (eval 0.639 -> 0.591 at
        # 40, 0.381 at 80), where AVX-512 hosts cleared the margin by 40
        "optim": {"lr": 1e-3, "max_steps": 80},
        "vae_loss": {"l1": 1.0, "kl": 1e-6, "stats_samples": 8},
        "run": {"eval_every": 80, "log_every": 10, "device": "cpu", "sample_every": 80},
    }
    result = train(parse_config(raw, source="vae"))
    run = tmp_path / "vae"
    evals = [m["eval_loss"] for m in metrics(run) if "eval_loss" in m]
    assert evals[1] < evals[0] * 0.85, evals
    assert len(list((run / "samples").glob("*.png"))) == 4
    from showo2_cli.modeling.vae_files import load_vae

    vae = load_vae(result.checkpoint)  # the checkpoint folder holds a diffusers vae/
    assert vae.base_dim == 8
    assert not torch.allclose(vae.latents_std, torch.tensor(1.0))  # latent statistics were fitted
    # a Show-o2 config can point model.vae at the VAE run folder (its latest checkpoint)
    cfg = parse_config(tiny_config(tmp_path, **{"model.vae": str(run)}), source="c")
    assert ckpt.resolve_run_path(cfg.model.vae) == result.checkpoint


# ---- subprocesses -------------------------------------------------------------------------

def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.mark.slow
def test_ctrl_c_saves_a_complete_checkpoint_and_exits_130(tmp_path):
    cfg = write_toml(tmp_path / "c.toml", tiny_config(tmp_path, **{"optim.max_steps": 100000}))
    proc = subprocess.Popen([sys.executable, "-m", "showo2_cli.training", str(cfg), "--quiet"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_reaches_child)
    run = tmp_path / "run"
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len(metrics(run)) >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    latest = ckpt.latest_checkpoint(run)
    assert latest is not None and int(latest.name.split("-")[1]) >= 3
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name not in (".data-index", LOCK_FILE)]
    from showo2_cli.loading import load

    assert load(latest).spec.name == "tiny"
    # running the same command again resumes from there
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.training", str(cfg), "--quiet", "--stop-after", "1", "--json"],
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["resumed_from"] == str(latest) and result["step"] == int(latest.name.split("-")[1]) + 1


@pytest.mark.slow
def test_two_processes_under_accelerate_end_with_identical_weights(tmp_path):
    cfg = write_toml(tmp_path / "c.toml", tiny_config(tmp_path, **{"optim.max_steps": 4}))
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = [*launcher, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "showo2_cli.training", str(cfg), "--quiet", "--json"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 2 and result["step"] == 4
    digests = [json.loads(p.read_text()) for p in sorted((tmp_path / "run" / "rank-digests").glob("*.json"))]
    assert [d["rank"] for d in digests] == [0, 1]
    assert digests[0]["sha256"] == digests[1]["sha256"]
    # and process 0's checkpoint is those weights
    from showo2_cli.loading import load
    from showo2_cli.training.params import weights_digest

    assert weights_digest(load(tmp_path / "run" / "checkpoint-000004").network) == digests[0]["sha256"]
    # each line's loss terms are of the same rows: every process's (the per-task terms were process 0's
    # alone while the loss was averaged over both: loss != ntp + flow by up to 0.04)
    lines = [m for m in metrics(tmp_path / "run") if "loss" in m]
    assert [m["step"] for m in lines] == [1, 2, 3, 4]
    assert all(abs(m["loss"] - (m["ntp"] + m["flow"])) < 1e-5 for m in lines), lines


def test_pretrained_parts_load_into_a_from_scratch_network(tmp_path):
    """model.weights: Qwen-style keys with a prefix, the embedding shrunk to the vocabulary."""
    from safetensors.torch import save_file

    from showo2_cli.loading import build_network
    from showo2_cli.specs import get_spec
    from showo2_cli.training.schema import WeightsConfig
    from showo2_cli.training.showo2_objective import load_partial

    spec = get_spec("tiny")
    donor = build_network(spec, None, torch.float32)
    donor.init_weights(seed=1)
    llm = {k[len("showo."):]: v.clone() for k, v in donor.state_dict().items()
           if k.startswith("showo.model.")}
    llm["model.embed_tokens.weight"] = torch.cat([llm["model.embed_tokens.weight"], torch.ones(7, spec.hidden_size)])
    save_file(llm, str(tmp_path / "model.safetensors"))
    network = build_network(spec, None, torch.float32)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    n = load_partial(network, WeightsConfig(path=str(tmp_path), prefix="showo."), "c.toml: model.weights[0]")
    assert n == len(llm)
    ours = network.state_dict()
    for k, v in donor.state_dict().items():
        if not torch.equal(before[k], v):  # (zero-initialised tensors, biases, norms start equal anyway)
            assert torch.equal(ours[k], v) == k.startswith("showo."), k  # the LLM (and the tied head) came from the file
    with pytest.raises(UsageError, match="no place in the network"):
        load_partial(network, WeightsConfig(path=str(tmp_path), prefix="llm."), "c.toml: model.weights[0]")


def test_a_deeper_flow_head_grown_from_a_model_starts_as_that_model(tmp_path):
    """model.weights (strict) of a trained model into a spec with more flow-head blocks: the new
    blocks start as the identity (zero adaLN modulation, so every gate is 0) and the grown network
    computes exactly the donor's velocities; a training step then moves the new blocks."""
    from safetensors.torch import save_file

    from showo2_cli.loading import build_network
    from showo2_cli.modeling.attention import omni_attention_mask
    from showo2_cli.specs import get_spec
    from showo2_cli.training.schema import WeightsConfig
    from showo2_cli.training.showo2_objective import load_partial

    spec = get_spec("tiny")
    donor = build_network(spec, None, torch.float32)
    donor.init_weights(seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a "trained" donor: non-zero modulation, so its head is not the identity
        for p in [b.adaLN_modulation[-1].weight for b in donor.diffusion_head_a] + \
                 [donor.diffusion_head_b.adaLN_modulation[-1].weight, donor.diffusion_head_b.linear.weight]:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    save_file({k: v.contiguous() for k, v in donor.state_dict().items() if k != "showo.lm_head.weight"},
              str(tmp_path / "model.safetensors"))
    grown = build_network(spec.replace(head_layers=spec.head_layers + 2), None, torch.float32)
    grown.init_weights(seed=2)
    n = load_partial(grown, WeightsConfig(path=str(tmp_path / "model.safetensors")), "c.toml: model.weights[0]")
    assert n == len(donor.state_dict()) - 1 and len(grown.diffusion_head_a) == len(donor.diffusion_head_a) + 2
    new = grown.diffusion_head_a[-1]
    assert new.self_attn.q_proj.weight.abs().sum() > 0  # the new blocks' own weights are fresh, not zero

    ids = torch.tensor([[1, 2, 3, 4] + [0] * 18])
    blocks = torch.tensor([[[4, 17]]])
    mask = omni_attention_mask(blocks, ids.shape[1])
    x = torch.randn(1, spec.latent_channels, 8, 8, generator=g)
    want = donor.velocity(ids, x, torch.tensor([0.4]), blocks, mask)
    got = grown.velocity(ids, x, torch.tensor([0.4]), blocks, mask)
    assert want.abs().max() > 1e-3
    assert torch.allclose(got, want, atol=1e-6, rtol=0), float((got - want).abs().max())
    got.square().mean().backward()
    assert new.adaLN_modulation[-1].weight.grad.abs().sum() > 0  # the gates learn from step 1


def test_latent_cache_gives_the_same_batches_and_workers_the_same_order(tmp_path):
    """Cached VAE posteriors reproduce the uncached run exactly; so do data-loading workers."""
    def run(name, **changes):
        raw = tiny_config(tmp_path / name, **{"optim.max_steps": 5, **changes})
        for d in raw["data"]:
            d["size"] = 5
        train(parse_config(raw, source=name))
        return [(m["data"], m["loss"]) for m in metrics(tmp_path / name / "run")]

    def same(a, b):  # the same data, and losses equal up to the last bits (a cached latent was encoded
        # in another batch composition than the fresh one, which moves float32 sums by ~1e-7)
        return [d for d, _ in a] == [d for d, _ in b] and all(abs(x - y) <= 1e-5 * max(1.0, abs(x))
                                                              for (_, x), (_, y) in zip(a, b, strict=True))

    cache = str(tmp_path / "cache")
    plain = run("plain")
    cached = [{**d, "cache": cache} for d in tiny_config(tmp_path)["data"]]
    assert same(run("fill", data=cached), plain)
    files = list(Path(cache).rglob("*.safetensors"))
    assert len(files) == 10  # 5 items per source, each encoded once
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert same(run("hit", data=cached), plain)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps  # read, not re-encoded
    assert run("workers", **{"run.num_workers": 2}) == plain


def test_cached_latents_follow_their_files_when_the_records_change(tmp_path):
    """The latent cache is per item; a records file edited between runs (a bad line removed) moves
    the items, and the cache gave each caption the latent of the image that was there before. An
    entry now names the file it was encoded from and is encoded anew when that is not the item's."""
    from PIL import Image
    from safetensors.torch import load_file

    from showo2_cli.training.trainer import Run

    for i, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        Image.new("RGB", (64, 64), colour).save(tmp_path / f"{i}.png")
    data = tmp_path / "pairs.jsonl"

    def write(items):
        data.write_text("".join(json.dumps({"path": f"{i}.png", "caption": f"c{i}"}) + "\n" for i in items))

    write([0, 1, 2])
    raw = tiny_config(tmp_path, **{"batch.t2i": 1})
    raw["data"] = [{"kind": "pairs", "role": "t2i", "path": str(data), "resolution": 64,
                    "cache": str(tmp_path / "cache")}]
    del raw["batch"]["mmu"]
    first = Run(parse_config(raw, source="c")).pre_encode()
    assert (first["encoded"], first["cached"]) == (3, 0)
    files = sorted((tmp_path / "cache").rglob("*.safetensors"))
    before = [load_file(str(f)) for f in files]
    write([1, 2])  # the first line removed: items 0 and 1 are now the green and blue images
    again = Run(parse_config(raw, source="c"))
    counts = again.pre_encode()
    assert (counts["encoded"], counts["cached"]) == (2, 0), counts
    after = [load_file(str(f)) for f in files[:2]]
    for new, old in zip(after, before[1:], strict=True):
        assert torch.allclose(new["mu"], old["mu"], atol=1e-5)
    sample = again.dataset.load(again.sources[0], 0)
    assert sample.text == "c1" and torch.equal(sample.latent["mu"], after[0]["mu"])
    assert Run(parse_config(raw, source="c")).pre_encode()["cached"] == 2  # unchanged files: read


def test_yaml_configs_read_the_same(tmp_path):
    yaml = pytest.importorskip("yaml")
    raw = tiny_config(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    toml = write_toml(tmp_path / "c.toml", raw)
    assert load_config(tmp_path / "c.yaml").to_dict() == load_config(toml).to_dict()


def test_json_arrays_are_parsed_incrementally(tmp_path):
    from showo2_cli.training.records import iter_json_array

    items = [{"id": i, "text": "é" * (i % 5), "n": 12345678 * i} for i in range(40)] + [1234567, "x", [1, 2]]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=1), encoding="utf-8")
    for chunk in (3, 7, 64, 1 << 20):
        assert list(iter_json_array(path, chunk=chunk)) == items


# ---- per-role forwards, EMA, pre-encoding, the temporal cue -------------------------------------

def _step_grads(cfg, samples, split: str):
    """Loss terms and gradients of one step's samples run as one padded batch or per role."""
    from showo2_cli.training.trainer import Run

    run = Run(cfg)
    run.setup()
    run.cfg.batch.split = split
    run.module.zero_grad(set_to_none=True)
    out = run._forward(samples, torch.Generator().manual_seed(5), backward=True)
    grads = {n: p.grad.clone() for n, p in run.module.network.named_parameters() if p.grad is not None}
    return out, grads


def test_per_role_forwards_equal_the_padded_batch(tmp_path):
    """batch.split = "role": the same loss terms and gradients as one padded batch, to 1e-5."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 1})
    raw["data"].append({"kind": "shapes", "role": "t2v", "resolution": 32, "frames": 5, "max_seq_len": 128})
    raw["data"].append({"kind": "shapes", "role": "mmu_vid", "resolution": 32, "frames": 3, "format": "tuning",
                        "max_seq_len": 256})
    raw["data"][1]["format"] = "tuning"
    raw["batch"].update(t2i=3, mmu=3, t2v=1, mmu_vid=2)
    cfg = parse_config(raw, source="split")
    from showo2_cli.training.data import TrainingData as TD
    from showo2_cli.training.recipe import batch_counts, prepare_batches
    from showo2_cli.training.trainer import Run

    run = Run(cfg)
    run.setup()
    keys = step_keys(run.batch_roles, 0, 0, 1)
    samples = [run.dataset[k] for k in keys]
    assert isinstance(run.dataset, TD)
    batches = prepare_batches(samples, run.objective.ctx, torch.Generator().manual_seed(5), "role")
    assert [b.roles[0] for b in batches] == ["t2i", "mmu", "t2v", "mmu_vid"]
    assert all(len(set(b.roles)) == 1 for b in batches)
    one = prepare_batches(samples, run.objective.ctx, torch.Generator().manual_seed(5), "none")[0]
    assert sum(b.input_ids.numel() for b in batches) < one.input_ids.numel()  # less padding
    assert tuple(map(sum, zip(*[batch_counts(b) for b in batches], strict=True))) == batch_counts(one)

    import copy

    padded, g_pad = _step_grads(copy.deepcopy(cfg), [copy.deepcopy(s) for s in samples], "none")
    split, g_split = _step_grads(copy.deepcopy(cfg), [copy.deepcopy(s) for s in samples], "role")
    for k in ("loss", "ntp", "flow"):
        assert abs(float(padded[k]) - float(split[k])) <= 1e-5 * max(1.0, abs(float(padded[k]))), k
    assert int(padded["tokens"]) == int(split["tokens"]) > 0
    assert int(padded["flow_elements"]) == int(split["flow_elements"]) > 0
    assert g_pad.keys() == g_split.keys() and len(g_pad) > 10
    for name in g_pad:
        assert torch.allclose(g_pad[name], g_split[name], atol=1e-5, rtol=1e-4), name


def test_ema_is_saved_resumed_and_loadable(tmp_path):
    """[ema]: the checkpoint holds an ema/ model folder that differs from the trained weights and
    follows diffusers' EMAModel; resuming continues the average bit-identically."""
    from showo2_cli.loading import load

    def cfg(name):
        return parse_config(tiny_config(tmp_path / name, **{"optim.max_steps": 6, "ema": {"decay": 0.9, "start_step": 1}}),
                            source=name)

    train(cfg("a"))
    train(cfg("b"), stop_after=3)
    train(cfg("b"))
    a, b = tmp_path / "a" / "run" / "checkpoint-000006", tmp_path / "b" / "run" / "checkpoint-000006"
    ema_a, ema_b = model_state(a / "ema"), model_state(b / "ema")
    online = model_state(a)
    assert ema_a.keys() == online.keys()
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    moved = [k for k in online if not torch.equal(online[k], ema_a[k])]
    assert len(moved) > len(online) // 2
    st = torch.load(a / ckpt.STATE_FILE, weights_only=True)["ema"]
    assert st["optimization_step"] == 6 and st["decay"] == 0.9
    assert load(a / "ema").spec.name == "tiny"


def test_ema_config_is_checked(tmp_path):
    with pytest.raises(UsageError, match=r"ema\.decay"):
        parse_config(tiny_config(tmp_path, ema={"decay": 1.5}), source="x")
    with pytest.raises(UsageError, match=r"batch\.split"):
        parse_config(tiny_config(tmp_path, **{"batch.split": "bucket"}), source="x")


def test_pre_encode_fills_the_cache_once_in_shards(tmp_path):
    """--pre-encode K/N: disjoint shards cover every item; training afterwards never encodes and
    gives the same losses as an uncached run."""
    from showo2_cli.training.trainer import Run

    def raw(name, cache=None):
        r = tiny_config(tmp_path / name, **{"optim.max_steps": 4})
        for d in r["data"]:
            d["size"] = 6
            if cache:
                d["cache"] = cache
        return r

    cache = str(tmp_path / "cache")
    s0 = Run(parse_config(raw("fill", cache), source="fill")).pre_encode((0, 2), batch_size=4)
    assert s0["encoded"] == 6 and s0["items"] == 6  # 3 items of each of 2 sources
    s1 = Run(parse_config(raw("fill", cache), source="fill")).pre_encode((1, 2), batch_size=4)
    assert s1["encoded"] == 6
    files = list(Path(cache).rglob("*.safetensors"))
    assert len(files) == 12
    again = Run(parse_config(raw("fill", cache), source="fill")).pre_encode((0, 1))
    assert again["encoded"] == 0 and again["cached"] == 12
    stamps = {f: f.stat().st_mtime_ns for f in files}
    train(parse_config(raw("plain"), source="plain"))
    train(parse_config(raw("hit", cache), source="hit"))
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert [m["loss"] for m in metrics(tmp_path / "plain" / "run")] == \
        [m["loss"] for m in metrics(tmp_path / "hit" / "run")]


def test_frame_embeddings_mark_frame_order_and_are_off_officially():
    """ModelSpec.frame_embeddings: reversing a video's frames changes its tokens beyond the reorder
    (the network sees which frame is which); official specs have no such parameter."""
    from showo2_cli.loading import build_network
    from showo2_cli.specs import REGISTRY, get_spec

    assert all(s.frame_embeddings == 0 for s in REGISTRY.values())
    plain = build_network(get_spec("tiny"), None, torch.float32)
    assert not any("frame_embedding" in k for k in plain.state_dict())
    net = build_network(get_spec("tiny").replace(frame_embeddings=4), None, torch.float32)
    net.init_weights(seed=0)
    assert net.state_dict()["frame_embedding.weight"].shape == (4, net.spec.hidden_size)
    video = torch.randn(1, 16, 3, 4, 4)
    n = 4  # tokens per frame (2x2 patches of a 4x4 latent)
    tok = net.visual_tokens(video)[0].reshape(3, n, -1)
    rev = net.visual_tokens(video.flip(2))[0].reshape(3, n, -1).flip(0)
    assert not torch.allclose(tok, rev, atol=1e-4)
    tok_plain = plain.visual_tokens(video)[0].reshape(3, n, -1)
    rev_plain = plain.visual_tokens(video.flip(2))[0].reshape(3, n, -1).flip(0)
    assert torch.allclose(tok_plain, rev_plain, atol=1e-5)
    pooled = net.pooled_frame_tokens(video[0].transpose(0, 1), 2).reshape(3, 4, -1)
    pooled_rev = net.pooled_frame_tokens(video[0].flip(1).transpose(0, 1), 2).reshape(3, 4, -1).flip(0)
    assert not torch.allclose(pooled, pooled_rev, atol=1e-4)


def _init_config(tmp_path: Path, base: Path, spec: dict) -> dict:
    cfg = tiny_config(tmp_path, **{"optim.max_steps": 2})
    cfg["model"] = {"init": str(base), "spec": spec}
    return cfg


def test_spec_overrides_of_an_init_model_keep_its_weights(tmp_path, tiny_model_dir):
    """model.spec with model.init: a field that keeps every weight's shape (velocity_layout) is
    applied to the fine-tuned model, its weights start from init's and the checkpoint records it."""
    from showo2_cli.loading import load
    from showo2_cli.training.showo2_objective import build_showo2

    base = load(tiny_model_dir, dtype=torch.float32)
    assert base.spec.velocity_layout == "raster"
    cfg = parse_config(_init_config(tmp_path, tiny_model_dir, {"velocity_layout": "patch"}), source="c")
    spec, network, *_ = build_showo2(cfg, None)
    assert spec.velocity_layout == "patch" and network.spec is spec
    start = network.state_dict()
    assert all(torch.equal(start[k], v) for k, v in base.network.state_dict().items())
    result = train(cfg)
    tuned = load(result.checkpoint, dtype=torch.float32)
    assert tuned.spec.velocity_layout == "patch"
    assert tuned.spec.replace(velocity_layout="raster") == base.spec


@pytest.mark.parametrize("spec, match", [
    ({"hidden_size": 96, "head_dim": 24}, "do not fit model.init's weights"),
    ({"velocity_layout": "zigzag"}, "velocity_layout"),
])
def test_spec_overrides_of_an_init_model_that_do_not_fit_are_refused(tmp_path, tiny_model_dir, spec, match):
    with pytest.raises(UsageError, match=match) as err:
        train(parse_config(_init_config(tmp_path, tiny_model_dir, spec), source="c"))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("checkpoint-*"))


def test_unknown_spec_override_of_an_init_model_is_refused_at_parse(tmp_path, tiny_model_dir):
    with pytest.raises(UsageError, match=r"model\.spec\.hidden: unknown ModelSpec field"):
        parse_config(_init_config(tmp_path, tiny_model_dir, {"hidden": 3}), source="c")
