"""Training past one small run: gradient accumulation, gradient checkpointing, trackers, resuming
with another number of processes, and the official stage configs against the paper's recipe."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from showo2_cli.training.config import parse_config
from showo2_cli.training.trainer import Run, train

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_train import _env, metrics, tiny_config, write_toml  # noqa: E402


def _grads(run: Run) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in run.module.network.named_parameters() if p.grad is not None}


def test_gradient_accumulation_averages_the_micro_batches(tmp_path):
    """optim.grad_accumulation = 2: one optimizer step's gradient is the mean of the two
    micro-batches' gradients (its norm is what clipping sees), and the step logs their mean loss."""
    cfg = parse_config(tiny_config(tmp_path, **{"optim.max_steps": 1, "optim.grad_accumulation": 2,
                                                "optim.grad_clip": 1e9}), source="acc")
    run = Run(cfg)
    run.setup()
    chunk = [[run.dataset[k] for k in keys] for keys in _micro_keys(run, 2)]
    out, norm = run._step(0, copy.deepcopy(chunk))

    single = Run(parse_config(tiny_config(tmp_path / "one", **{"optim.max_steps": 1}), source="one"))
    single.setup()
    grads, losses = [], []
    for j, samples in enumerate(copy.deepcopy(chunk)):
        single.module.zero_grad(set_to_none=True)
        part = single._forward(samples, single._generator("step", 0, j), backward=True)
        grads.append(_grads(single))
        losses.append(float(part["loss"]))
    mean = {k: (grads[0][k] + grads[1][k]) / 2 for k in grads[0]}
    expected = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in mean.values()]))
    assert math.isclose(float(norm), float(expected), rel_tol=1e-5)
    assert math.isclose(float(out["loss"]), sum(losses) / 2, rel_tol=1e-6)


def _micro_keys(run: Run, n: int):
    from showo2_cli.training.data import step_keys

    return [step_keys(run.batch_roles, j, run.rank, run.world) for j in range(n)]


def test_accumulated_runs_resume_bit_identically(tmp_path):
    raw = {"optim.max_steps": 4, "optim.grad_accumulation": 3}
    train(parse_config(tiny_config(tmp_path / "a", **raw), source="a"))
    split = tiny_config(tmp_path / "b", **raw)
    train(parse_config(split, source="b"), stop_after=2)
    train(parse_config(split, source="b"))
    ma, mb = metrics(tmp_path / "a" / "run"), metrics(tmp_path / "b" / "run")
    assert [m["step"] for m in ma] == [1, 2, 3, 4]
    assert [(m["data"], m["loss"]) for m in ma] == [(m["data"], m["loss"]) for m in mb]


def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes(tmp_path):
    """run.gradient_checkpointing: every LLM, SigLIP and flow-head layer runs its forward twice
    (once more in the backward) and the gradients equal the plain ones."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 1})
    grads, calls = [], []
    for on in (False, True):
        run = Run(parse_config({**raw, "run": {**raw["run"], "gradient_checkpointing": on}}, source="gc"))
        run.setup()
        net = run.module.network
        counts = {"llm": 0, "semantic": 0, "head": 0}
        for name, module in (("llm", net.showo.model.layers[0].mlp), ("semantic", net.und_trans.layers[0].mlp),
                             ("head", net.diffusion_head_a[0])):
            module.register_forward_pre_hook(lambda m, a, name=name, counts=counts: counts.__setitem__(name, counts[name] + 1))
        samples = [run.dataset[k] for k in _micro_keys(run, 1)[0]]
        run.module.zero_grad(set_to_none=True)
        run._forward(samples, torch.Generator().manual_seed(3), backward=True)
        grads.append(_grads(run))
        calls.append(counts)
    assert all(v > 0 for v in calls[0].values())
    assert {k: 2 * v for k, v in calls[0].items()} == calls[1]
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        assert torch.allclose(grads[0][k], grads[1][k], atol=1e-6, rtol=1e-5), k


def test_tensorboard_tracker_logs_the_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(parse_config(tiny_config(tmp_path, **{"optim.max_steps": 4, "run.log_with": ["tensorboard"],
                                                "run.eval_every": 2}), source="tb"))
    run = tmp_path / "run"
    folder = run / "logs" / "train"
    assert list(folder.glob("events.out.tfevents.*"))
    acc = EventAccumulator(str(folder))
    acc.Reload()
    lines = metrics(run)
    for e, m in zip(sorted(acc.Scalars("loss"), key=lambda e: e.step), [m for m in lines if "loss" in m], strict=True):
        assert e.step == m["step"] and math.isclose(e.value, m["loss"], rel_tol=1e-6)
    assert [e.step for e in acc.Scalars("eval_loss")] == [0, 2, 4]
    assert "ntp" in acc.Tags()["scalars"] and "lr" in acc.Tags()["scalars"]
    evals = [m for m in lines if "eval_loss" in m]  # each term's eval too (probe EN)
    for k in ("eval_loss", "eval_ntp", "eval_flow"):
        got = acc.Scalars(k)
        assert [e.step for e in got] == [m["step"] for m in evals]
        assert all(math.isclose(e.value, m[k], rel_tol=1e-6) for e, m in zip(got, evals, strict=True))


def test_tensorboard_forgets_the_steps_a_resumed_run_redoes(tmp_path):
    """A run killed after its checkpoint at step 2 had logged step 3; resumed from step 2 it logs it
    again: TensorBoard shows each step once, with the resumed run's values, as metrics.jsonl does
    (it showed step 3 twice, the dead run's and the new one's)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from showo2_cli.training import checkpoint as ckpt

    raw = tiny_config(tmp_path, **{"optim.max_steps": 4, "run.log_with": ["tensorboard"], "run.save_every": 2})
    train(parse_config(raw, source="tb"), stop_after=3)
    run = tmp_path / "run"
    dead = {m["step"]: m["loss"] for m in metrics(run) if "loss" in m}
    ckpt.write_pointer(run, ckpt.checkpoint_name(2))  # killed before the save at step 3 was published
    raw["seed"] = 1  # (other losses from step 3 on, to tell the two runs' lines apart)
    train(parse_config(raw, source="tb"))
    acc = EventAccumulator(str(run / "logs" / "train"))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("loss")]
    lines = [(m["step"], m["loss"]) for m in metrics(run) if "loss" in m]
    assert [s for s, _ in logged] == [1, 2, 3, 4] and [s for s, _ in lines] == [1, 2, 3, 4]
    assert all(math.isclose(a, b, rel_tol=1e-6) for (_, a), (_, b) in zip(logged, lines, strict=True))
    assert not math.isclose(lines[2][1], dead[3], rel_tol=1e-6)


def test_a_run_killed_before_its_first_checkpoint_leaves_no_line_in_the_next(tmp_path):
    """Probe EE: a run killed (SIGKILL) before its first checkpoint had written its step-0
    eval_loss; started again (from step 0, nothing to resume) it kept that line and wrote its own:
    metrics.jsonl (and TensorBoard) showed step 0 twice. Now both hold what one uninterrupted run
    writes."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from showo2_cli.training import checkpoint as ckpt

    def lines(run):
        return [{k: v for k, v in m.items() if k not in ("steps_per_s", "seconds", "peak_rss_mb")} for m in metrics(run)]

    raw = tiny_config(tmp_path, **{"optim.max_steps": 2, "run.log_with": ["tensorboard"], "run.eval_every": 2})
    train(parse_config(raw, source="tb"), stop_after=1)
    run = tmp_path / "run"
    shutil.rmtree(run / ckpt.checkpoint_name(1))  # killed before its save was published: no checkpoint
    (run / ckpt.LATEST).unlink()
    train(parse_config(raw, source="tb"))
    alone = tiny_config(tmp_path / "alone", **{"optim.max_steps": 2, "run.eval_every": 2})
    train(parse_config(alone, source="tb"))
    assert [m["step"] for m in lines(run)] == [0, 1, 2, 2]
    assert lines(run) == lines(tmp_path / "alone" / "run")
    acc = EventAccumulator(str(run / "logs" / "train"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval_loss")] == [0, 2]
    assert [e.step for e in acc.Scalars("loss")] == [1, 2]


@pytest.mark.slow
def test_resume_with_another_world_size_continues_the_loss_curve(tmp_path):
    """4 steps on 2 processes (DDP over gloo, the shipped examples/accelerate/cpu_2_processes.yaml),
    then 12 more on 1: the checkpoint holds full weights and
    optimizer state, so the run continues where it was (the loss keeps falling from its level at
    step 4, far from where a fresh run starts); only the sample order differs from a 2-process run."""
    raw = tiny_config(tmp_path, **{"optim.max_steps": 16, "optim.lr": 2e-3, "run.eval_every": 4,
                                   "optim.schedule": "constant", "run.save_every": 4, "run.keep_last": 0})
    cfg = write_toml(tmp_path / "c.toml", raw)
    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    cmd = [*launcher, "--config_file", str(REPO / "examples" / "accelerate" / "cpu_2_processes.yaml"),
           "-m", "showo2_cli.training", str(cfg), "--quiet", "--json", "--stop-after", "4"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["world_size"] == 2
    proc = subprocess.run([sys.executable, "-m", "showo2_cli.training", str(cfg), "--json"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 1 and result["step"] == 16 and result["resumed_from"].endswith("checkpoint-000004")
    states = [torch.load(tmp_path / "run" / f"checkpoint-{n:06d}" / "trainer_state.pt", weights_only=True)
              for n in (4, 16)]
    assert [s["world_size"] for s in states] == [2, 1]
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())  # (probe HN: it said 1 alone)
    assert [(i["start_step"], i["world_size"]) for i in record["invocations"]] == [(0, 2), (4, 1)]
    evals = {m["step"]: m["eval_loss"] for m in metrics(tmp_path / "run") if "eval_loss" in m}
    assert sorted(evals) == [0, 4, 8, 12, 16]
    # a fresh single-process run from step 0 for comparison: the resumed curve starts where the
    # two-process run left it, not back at the start
    fresh = train(parse_config(tiny_config(tmp_path / "fresh", **{"optim.max_steps": 16, "optim.lr": 2e-3,
                                                                  "optim.schedule": "constant"}), source="fresh"),
                  stop_after=1)
    first = [m["loss"] for m in metrics(tmp_path / "fresh" / "run") if "loss" in m][0]
    resumed = [m for m in metrics(tmp_path / "run") if "loss" in m and m["step"] == 5][0]["loss"]
    assert evals[4] < evals[0] - 0.3 and resumed < first - 0.3, (evals, first, resumed)
    assert evals[16] < evals[4], evals
    assert fresh.step == 1


# ---- the official stage configs against the paper's recipe (spec §12) -----------------------------

# spec §12.1 (common machinery) and §12.3 rows 1a and 2b, field by field: config path -> value
COMMON = {
    "mode": "showo2", "optim.betas": [0.9, 0.999], "optim.eps": 1e-8, "optim.weight_decay": 0.0,
    "optim.grad_clip": 1.0, "optim.grad_accumulation": 1, "run.mixed_precision": "bf16", "run.tf32": True,
    "loss.cond_dropout": 0.1, "loss.t_sampling": "logit_normal", "loss.t_mean": 0.0, "loss.t_std": 1.0,
    "loss.t_shift": True, "loss.vae_sample": True, "lora.rank": 0,
    "data[0].role": "t2i", "data[0].kind": "pairs", "data[0].resolution": 432, "data[0].max_seq_len": 1024,
    "data[1].role": "mmu", "data[1].resolution": 432, "data[1].max_seq_len": 1024,
}
STAGE1 = {  # 1a: Qwen2.5 + SigLIP + pre-distilled semantic layers; projector, fusion, time, flow head train
    **COMMON, "seed": 10086, "model.init_spec": "1.5B", "model.tokenizer": "Qwen/Qwen2.5-1.5B-Instruct",
    "model.weights[0].prefix": "showo.", "batch.t2i": 6, "batch.mmu": 2, "optim.lr": 1e-4,
    "optim.frozen": ["showo", "image_embedder_und", "und_trans", "position_embedding"], "optim.groups": [],
    "optim.schedule": "constant", "optim.warmup_steps": 2000, "optim.max_steps": 150000, "loss.ntp": 0.2,
    "loss.flow": 1.0, "data[0].min_res": 256, "data[1].kind": "pairs", "data[1].format": "captioning",
    "data[1].min_res": 256,
}
STAGE2 = {  # 2b: everything trains in three lr groups, time_embed in none; one MMU epoch, cosine, 3% warmup
    **COMMON, "seed": 10086, "batch.t2i": 4, "batch.mmu": 4, "optim.frozen": [], "optim.ungrouped": "frozen",
    "optim.groups[0].name": "ve", "optim.groups[0].patterns": ["und_trans", "image_embedder", "position_embedding"],
    "optim.groups[0].lr": 2e-6, "optim.groups[1].name": "proj", "optim.groups[1].patterns": ["fusion_proj"],
    "optim.groups[1].lr": 1e-5, "optim.groups[2].name": "showo",
    "optim.groups[2].patterns": ["showo", "diffusion", "diff_proj", "time_embed_proj"], "optim.groups[2].lr": 1e-5,
    "optim.schedule": "cosine", "optim.warmup_ratio": 0.03, "optim.warmup_steps": 0, "optim.max_steps": None,
    "optim.epochs": 1.0, "optim.epoch_role": "mmu", "loss.ntp": 1.0, "loss.flow": 1.0, "data[0].min_res": 512,
    "data[1].kind": "llava", "data[1].format": "pretraining", "data[1].preprocess": "pad",
}


def _field(cfg, path: str):
    import re

    node = cfg
    for part in path.split("."):
        m = re.fullmatch(r"(\w+)\[(\d+)\]", part)
        node = getattr(node, m[1])[int(m[2])] if m else getattr(node, part)
    return node


@pytest.mark.parametrize("name, recipe", [("showo2_1.5b_stage1.toml", STAGE1), ("showo2_1.5b_stage2.toml", STAGE2)])
def test_official_stage_configs_match_the_paper_recipe_field_by_field(tmp_path, name, recipe):
    from test_train import _official

    cfg = _official(tmp_path, name)
    wrong = {path: (_field(cfg, path), want) for path, want in recipe.items() if _field(cfg, path) != want}
    assert not wrong, wrong
    assert len(cfg.data) == 2 and len(cfg.optim.groups) == (3 if recipe is STAGE2 else 0)
