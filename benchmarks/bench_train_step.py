"""Demo training throughput, before and after the training-speed changes, side by side.

    python benchmarks/bench_train_step.py [--steps 30] [--rounds 2] [--vae PATH] [--out FILE.json]

"before": every row of a step in one forward padded to the longest row (``batch.split = "none"``)
and the VAE encoding every sample (no cache hit: data sets larger than what a run sees).
"after": one forward per role (``batch.split = "role"``) reading latents the pre-encode pass
wrote (``--pre-encode``; its cost per item is reported separately, it is paid once per data set).
Both use examples/demo/showo2.toml's model and batch, the bundled VAE unless --vae, one thread,
and alternate (before, after, before, after, ...) so machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def config(tmp: Path, name: str, split: str, cache: bool, steps: int, vae: str):
    from showo2_cli.training.config import load_config

    over = {"output_dir": str(tmp / name), "model.vae": vae, "batch.split": split, "optim.max_steps": steps,
            "optim.warmup_steps": 1, "run.save_every": 0, "run.eval_every": 0, "run.sample_every": 0,
            "run.log_every": steps, "ema.decay": 0.0}
    cfg = load_config(REPO / "examples/demo/showo2.toml", overrides=over)
    for d in cfg.data:
        d.cache = str(tmp / "cache" / d.role) if cache else None
        if cache:  # exactly the items the run reads, pre-encoded once
            d.size = steps * cfg.batch.of(d.role)
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--vae", default=str(REPO / "src/showo2_cli/assets/demo/vae"))
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(1)
    from showo2_cli.training.trainer import Run, train

    rows = {"before": [], "after": []}
    pre = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        summary = Run(config(tmp, "pre", "role", True, a.steps, a.vae)).pre_encode()
        pre = {**summary, "seconds_per_item": (time.perf_counter() - t0) / max(summary["encoded"], 1)}
        for r in range(a.rounds):
            for name, split, cache in (("before", "none", False), ("after", "role", True)):
                res = train(config(tmp, f"{name}-{r}", split, cache, a.steps, a.vae))
                rows[name].append(res.steps_per_s)
                print(f"round {r} {name}: {res.steps_per_s:.3f} steps/s", file=sys.stderr)
    before = sum(rows["before"]) / len(rows["before"])
    after = sum(rows["after"]) / len(rows["after"])
    out = {"steps": a.steps, "rounds": a.rounds, "threads": 1, "before_steps_per_s": rows["before"],
           "after_steps_per_s": rows["after"], "mean_before": round(before, 3), "mean_after": round(after, 3),
           "speedup": round(after / before, 2), "pre_encode": pre}
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
