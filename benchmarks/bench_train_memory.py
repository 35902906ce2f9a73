"""Training memory on CPU: a 1.5B-shaped Show-o2 (real widths, a few layers) with and without
gradient checkpointing, with gradient accumulation, and with a LoRA adapter.

    python benchmarks/bench_train_memory.py [--layers 2] [--steps 2] [--out benchmarks/results/train-memory-cpu.json]

Each variant runs in a fresh process (peak RSS, ``ru_maxrss``, only grows) and reports the peak
after building (weights, frozen VAE, data) and the peak after ``--steps`` optimizer steps (plus
gradients, AdamW state and the largest step's activations). The model: the registry spec "1.5B"
(hidden 1536, MLP 8960, 12/2 heads, SigLIP width 1152, the 2048-wide flow head) with ``--layers``
LLM, semantic and flow-head layers, a byte-level vocabulary, from scratch; a small random VAE
(frozen; not what is measured); t2i + mmu rows at 256 px (256 visual tokens a row), fp32.

Variants (the same samples per optimizer step in all but "lora"):
  baseline     batch 4 t2i + 4 mmu, one forward
  checkpoint   the same with run.gradient_checkpointing = true
  accumulate   batch 2 + 2 with optim.grad_accumulation = 2
  both         accumulate + checkpoint
  lora         baseline with a rank-16 LoRA on the LLM (frozen base: no AdamW state or gradients for it)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "baseline": {},
    "checkpoint": {"run.gradient_checkpointing": True},
    "accumulate": {"batch.t2i": 2, "batch.mmu": 2, "optim.grad_accumulation": 2},
    "both": {"batch.t2i": 2, "batch.mmu": 2, "optim.grad_accumulation": 2, "run.gradient_checkpointing": True},
    "lora": {"lora.rank": 16, "lora.alpha": 32},
}


def raw_config(out: Path, layers: int, steps: int) -> dict:
    return {
        "mode": "showo2", "seed": 0, "output_dir": str(out),
        "model": {"init_spec": "1.5B", "vae_base_dim": 8,
                  "spec": {"num_layers": layers, "semantic_layers": layers, "head_layers": layers}},
        "data": [{"kind": "shapes", "role": "t2i", "resolution": 256, "max_seq_len": 384},
                 {"kind": "shapes", "role": "mmu", "format": "pretraining", "resolution": 256, "max_seq_len": 384}],
        "batch": {"t2i": 4, "mmu": 4},
        "optim": {"lr": 1e-5, "max_steps": steps},
        "run": {"save_every": 0, "log_every": 1, "device": "cpu", "mixed_precision": "no"},
    }


def one(name: str, layers: int, steps: int) -> dict:
    import torch

    from showo2_cli.training.config import parse_config
    from showo2_cli.training.control import peak_rss_mb
    from showo2_cli.training.trainer import Run

    torch.set_num_threads(1)
    marks = {}

    def progress(ev):
        if ev["event"] == "start":
            marks["after_build_mb"] = round(peak_rss_mb(), 1)
            marks["trainable"] = ev["trainable"]
            marks["parameters"] = sum(v["params"] for v in ev["groups"].values())

    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_config(Path(tmp) / "run", layers, steps)
        for key, value in VARIANTS[name].items():
            node = raw
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        cfg = parse_config(raw, source=f"bench-{name}")
        cfg.run.save_every = 0
        t0 = time.perf_counter()
        run = Run(cfg, progress=progress, stop_after=steps)
        result = run.run()
        lines = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    return {"variant": name, "overrides": VARIANTS[name], **marks, "peak_mb": round(result.peak_rss_mb, 1),
            "train_peak_over_build_mb": round(result.peak_rss_mb - marks["after_build_mb"], 1),
            "losses": [round(x["loss"], 4) for x in lines], "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.layers, a.steps)))
        return 0
    rows = []
    for name in a.variants.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--layers", str(a.layers), "--steps", str(a.steps)],
                              capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
        write(rows, a)  # after every variant: a long run keeps what it measured
    print(json.dumps(summary(rows, a), indent=1))
    return 0


def summary(rows: list[dict], a) -> dict:
    import torch

    base = next((r for r in rows if r["variant"] == "baseline"), None)
    for r in rows:
        if base:
            r["peak_saving_vs_baseline_mb"] = round(base["peak_mb"] - r["peak_mb"], 1)
    return {"model": f"1.5B-shaped, {a.layers} LLM / semantic / flow-head layers, byte vocabulary, fp32",
            "rows_per_step": "4 t2i + 4 mmu at 256 px (256 visual tokens each)", "steps": a.steps, "threads": 1,
            "torch": torch.__version__, "device": "cpu", "variants": rows}


def write(rows: list[dict], a) -> None:
    if a.out:
        a.out.write_text(json.dumps(summary(rows, a), indent=1) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
